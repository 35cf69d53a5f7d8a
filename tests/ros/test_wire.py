"""The wire, checked by a DDS implementation that is not ROS's: topic, type name and CDR bytes of the commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytest.importorskip("cyclonedds", reason="cyclonedds not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, QUAD_POLICY, spin_until  # noqa: E402

WITNESS = Path(__file__).with_name("cyclone_witness.py")
LOOPBACK = (
    '<CycloneDDS><Domain Id="any"><General><Interfaces><NetworkInterface name="lo" multicast="false"/></Interfaces>'
    "<AllowMulticast>false</AllowMulticast></General><Discovery><ParticipantIndex>auto</ParticipantIndex>"
    '<MaxAutoParticipantIndex>32</MaxAutoParticipantIndex><Peers><Peer Address="127.0.0.1"/></Peers></Discovery>'
    "</Domain></CycloneDDS>"
)
CASES = {
    "fr3": ("robot_rl/PandaPush-v0", PUSH_POLICY, "/forward_position_controller/commands", "Float64MultiArray",
            Float64MultiArray, "std_msgs/msg/Float64MultiArray"),
    "crazyflie": ("robot_rl/QuadrotorWaypoint-v1", QUAD_POLICY, "/cf231/cmd_vel_legacy", "Twist", Twist,
                  "geometry_msgs/msg/Twist"),
}  # fmt: skip


def witness(domain: int, topic: str, kind: str, count: int, timeout: float) -> subprocess.Popen:
    env = dict(os.environ, CYCLONEDDS_URI=LOOPBACK)
    return subprocess.Popen(
        [sys.executable, str(WITNESS), str(domain), topic, kind, str(count), str(timeout)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


@pytest.mark.parametrize("robot", list(CASES))
def test_commands_carry_the_ros_type_name_and_cdr_bytes(robot, ros_context, executor, ros_domain):
    from rosbags.typesys import Stores, get_typestore

    env_id, policy_dir, topic, kind, msg_type, ros_type = CASES[robot]
    wrong = "Twist" if kind == "Float64MultiArray" else "Float64MultiArray"
    right = witness(ros_domain, topic, kind, count=5, timeout=20.0)
    mismatched = witness(ros_domain, topic, wrong, count=1, timeout=6.0)
    # The FR3 case witnesses the forward path's Float64MultiArray (sim only: the bridge without FR3 limits).
    forward = robot == "fr3"
    bridge = SimBridge(
        context=ros_context,
        parameter_overrides=[
            Parameter("env_id", value=env_id),
            Parameter("seed", value=EVAL_SEED),
            Parameter("fr3_limits", value=not forward),
        ],
    )
    policy = PolicyNode(
        context=ros_context,
        parameter_overrides=[
            Parameter("policy", value=policy_dir),
            Parameter("require_safety", value=False),
            Parameter("monitor", value=False),
            *([Parameter("command_interface", value="forward"), Parameter("allow_forward", value=True)] if forward
              else []),
        ],
    )  # fmt: skip
    executor.add_node(bridge)
    executor.add_node(policy)
    raw: list[bytes] = []
    policy.create_subscription(msg_type, topic, raw.append, 100, raw=True)
    policy.trigger_configure()
    policy.trigger_activate()
    spin_until(executor, lambda: right.poll() is not None and mismatched.poll() is not None, timeout=25.0)
    right_out, mismatched_out = right.communicate(timeout=5)[0], mismatched.communicate(timeout=5)[0]
    samples = [bytes.fromhex(json.loads(line)["sample"]) for line in right_out.splitlines() if '"sample"' in line]
    # A DDS reader matches on topic name and type name: samples arrive only for the ROS type name.
    assert len(samples) == 5, right_out
    assert '"sample"' not in mismatched_out
    typestore = get_typestore(Stores.ROS2_JAZZY)
    for sample in samples:
        assert sample[:4] == b"\x00\x01\x00\x00"  # CDR little endian, the ROS 2 encapsulation
        assert sample in raw  # the bytes rclpy received, as Cyclone re-encodes them
        decoded = typestore.deserialize_cdr(sample, ros_type)
        assert bytes(typestore.serialize_cdr(decoded, ros_type)) == sample  # and as rosbags encodes them
    if robot == "crazyflie":
        twist = typestore.deserialize_cdr(samples[-1], ros_type)
        assert 0.0 <= twist.linear.z <= 60000.0 and twist.angular.x == twist.angular.y == 0.0
    else:
        array = typestore.deserialize_cdr(samples[-1], ros_type)
        assert len(array.data) == 7 and array.layout.dim[0].label == "fr3_joint1..7"
