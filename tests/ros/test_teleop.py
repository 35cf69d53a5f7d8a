"""The teleop node: device commands through the safety chain, flagged as interventions; the policy yields."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from robot_rl_ros.teleop_node import JoyDevice, TeleopNode  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402

from robot_rl.teleop.base import TeleopCommand  # noqa: E402
from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, spin_for  # noqa: E402


class ScriptedDevice:
    """Pushes +x while ``pushing`` is set, like a held key."""

    name = "scripted"

    def __init__(self):
        self.pushing = False

    def connect(self):
        pass

    def close(self):
        pass

    def read(self):
        twist = np.zeros(6)
        twist[0] = 1.0 if self.pushing else 0.0
        return TeleopCommand(twist=twist, gripper=-1.0)


@pytest.mark.usefixtures("safety_chain_available")
def test_takeover_commands_through_the_chain_and_the_policy_yields(ros_context, executor):
    from robot_rl.safety.chain import ChainReport

    # Two command sources on one arm: each node's trajectory plan starts from what it measured, so a takeover
    # mid-motion is a step for a real FR3 (not solved yet: ros2_ws/README.md). This test covers the takeover
    # logic on the forward path and the bridge without FR3 limits.
    forward = [Parameter("command_interface", value="forward"), Parameter("allow_forward", value=True)]
    bridge = SimBridge(context=ros_context, parameter_overrides=[Parameter("seed", value=EVAL_SEED),
                                                                 Parameter("fr3_limits", value=False)])  # fmt: skip
    policy = PolicyNode(
        context=ros_context,
        parameter_overrides=[Parameter("policy", value=PUSH_POLICY), Parameter("seed", value=EVAL_SEED), *forward],
    )
    device = ScriptedDevice()
    teleop = TeleopNode(
        context=ros_context,
        device=device,
        parameter_overrides=[Parameter("env_id", value="robot_rl/PandaPush-v0"), Parameter("hold_time", value=0.2),
                             *forward],
    )  # fmt: skip
    for node in (bridge, policy, teleop):
        executor.add_node(node)
    flags, records = [], []
    teleop.create_subscription(Bool, "/robot_rl/intervention", lambda m: flags.append(m.data), 100)
    teleop.create_subscription(Float64MultiArray, "/robot_rl/steps", records.append, 100)
    policy.trigger_configure()
    policy.trigger_activate()
    spin_for(executor, 0.4)
    policy_steps = policy.stats.steps
    assert policy_steps >= 5 and not any(flags)
    x_before = bridge.unwrapped.robot_state()["tcp_pos"][0]
    device.pushing = True
    spin_for(executor, 0.1)
    during = policy.stats.steps
    spin_for(executor, 0.6)
    assert policy.stats.steps == during  # the policy yields while the operator drives
    assert teleop.commanded_steps >= 10 and isinstance(teleop.last_report, ChainReport)
    assert bridge.unwrapped.robot_state()["tcp_pos"][0] > x_before + 0.02
    device.pushing = False
    spin_for(executor, 0.6)
    assert policy.stats.steps > during  # released after hold_time: the policy runs again
    assert True in flags and flags[-1] is False
    human = [r for r in records if r.data[-1] == 1.0]
    assert len(human) >= 10


def test_joy_device_needs_the_deadman_button():
    from sensor_msgs.msg import Joy

    device = JoyDevice([1, 0, 4, -1, -1, 3], [1.0] * 6, deadman=4, gripper=0)
    device.msg = Joy(axes=[0.0, 0.8, 0.0, 0.0, -0.5, 0.0], buttons=[0, 0, 0, 0, 0])
    assert not device.engaged() and not device.read().twist.any()
    device.msg = Joy(axes=[0.0, 0.8, 0.0, 0.0, -0.5, 0.0], buttons=[1, 0, 0, 0, 1])
    command = device.read()
    assert device.engaged()
    np.testing.assert_allclose(command.twist, [0.8, 0.0, -0.5, 0.0, 0.0, 0.0])
    assert command.gripper == -1.0  # button 0 pressed: toggled closed
