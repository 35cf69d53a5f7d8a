"""The recorder's Foxglove file (parameter ``foxglove``): a policy episode on the sim bridge, read back typed."""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytest.importorskip("rosbags", reason="rosbags not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.recorder import BagRecorder  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402

from tests.evaluation.test_mcap_log import read_mcap  # noqa: E402
from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, spin_for, spin_until  # noqa: E402


def test_recorder_writes_a_foxglove_file_of_the_episode(ros_context, executor, tmp_path):
    foxglove = tmp_path / "run.mcap"
    recorder = BagRecorder(
        context=ros_context,
        parameter_overrides=[Parameter("output", value=str(tmp_path / "bag")),
                             Parameter("foxglove", value=str(foxglove)), Parameter("discovery_period", value=0.05)],
    )  # fmt: skip
    bridge = SimBridge(context=ros_context, parameter_overrides=[Parameter("seed", value=EVAL_SEED)])
    policy = PolicyNode(
        context=ros_context,
        parameter_overrides=[Parameter("policy", value=PUSH_POLICY), Parameter("require_safety", value=False),
                             Parameter("seed", value=EVAL_SEED), Parameter("monitor", value=False)],
    )  # fmt: skip
    for node in (recorder, bridge, policy):
        executor.add_node(node)
    policy.trigger_configure()
    spin_until(executor, lambda: "/robot_rl/steps" in recorder._connections, timeout=5.0)
    spin_for(executor, 0.3)
    bridge.reset_episode()
    policy.trigger_activate()
    assert spin_until(executor, lambda: bridge.done, timeout=10.0)
    spin_for(executor, 0.2)
    policy.trigger_deactivate()
    spin_for(executor, 0.1)
    recorder.close()

    messages = read_mcap(foxglove)
    actions = [m for _, m in messages["/robot_rl/action"]]
    assert len(actions) >= 50 and len(messages["/robot_rl/goal"]) == len(actions)
    # One pose per start event (the bridge's resets, the policy's activation), then one per step record.
    starts = sum(m.message.endswith(")") and "starts" in m.message for _, m in messages["/robot_rl/events"])
    assert len(messages["/tf"]) == len(actions) + starts
    assert all(a["command"] == a["policy"] for a in actions)  # the records carry the command sent only
    episodes = [m for _, m in messages["/robot_rl/episode"]]
    assert episodes and episodes[-1]["seed"] == EVAL_SEED and episodes[-1]["success"] == bridge.success
    # The arm moved: /joint_states posed it (the model's joint1.. from fr3_joint1..).
    first, last = messages["/tf"][-len(actions)][1], messages["/tf"][-1][1]
    hand = [next(t for t in m.transforms if t.child_frame_id == "hand").translation for m in (first, last)]
    assert abs(hand[0].x - hand[1].x) + abs(hand[0].y - hand[1].y) + abs(hand[0].z - hand[1].z) > 0.01
    # The object sits at the last achieved goal.
    obj = next(t for t in last.transforms if t.child_frame_id == "object").translation
    assert [obj.x, obj.y, obj.z] == pytest.approx(messages["/robot_rl/goal"][-1][1]["achieved"], abs=1e-12)
