"""Recorder -> rosbag2 (MCAP) -> demonstration HDF5 (`robot-rl data from-bag`), with real nodes in process."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytest.importorskip("rosbags", reason="rosbags not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.recorder import BagRecorder  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from robot_rl.data.bag import STEP_FIELDS, parse_step_record  # noqa: E402
from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, spin_for, spin_until  # noqa: E402


@pytest.mark.parametrize("storage", ["mcap"])
def test_recorded_episode_becomes_a_demo(storage, ros_context, executor, tmp_path):
    from robot_rl.cli.main import run
    from robot_rl.data import DemoDataset

    bag = tmp_path / "run_bag"
    topics = ["/robot_rl/steps", "/robot_rl/episode", "/joint_states", "/robot_rl_arm_controller/joint_trajectory"]
    recorder = BagRecorder(
        context=ros_context,
        parameter_overrides=[Parameter("output", value=str(bag)), Parameter("topics", value=topics),
                             Parameter("storage", value=storage), Parameter("discovery_period", value=0.05)],
    )  # fmt: skip
    bridge = SimBridge(context=ros_context, parameter_overrides=[Parameter("seed", value=EVAL_SEED)])
    policy = PolicyNode(
        context=ros_context,
        parameter_overrides=[Parameter("policy", value=PUSH_POLICY), Parameter("require_safety", value=False),
                             Parameter("seed", value=EVAL_SEED), Parameter("monitor", value=False)],
    )  # fmt: skip
    for node in (recorder, bridge, policy):
        executor.add_node(node)
    published = []
    policy.create_subscription(Float64MultiArray, "/robot_rl/steps", published.append, 100)
    policy.trigger_configure()
    spin_until(executor, lambda: "/robot_rl/steps" in recorder._connections, timeout=5.0)
    spin_for(executor, 0.3)  # let the new subscriptions match their publishers
    # The episode's start: a fresh reset once the recorder listens (the start-up reset was before it).
    bridge.reset_episode()
    policy.trigger_activate()
    assert spin_until(executor, lambda: bridge.done, timeout=10.0)
    spin_for(executor, 0.2)
    policy.trigger_deactivate()
    spin_for(executor, 0.1)
    recorder.close()
    assert (bag / "metadata.yaml").is_file() and list(bag.glob("*.mcap"))
    assert recorder.counts["/robot_rl/steps"] >= 50 and recorder.counts["/joint_states"] >= 50

    out = tmp_path / "demos.hdf5"
    assert run(["data", "from-bag", str(bag), "--out", str(out)]) == 0
    with DemoDataset(out) as data:
        assert len(data) == 1 and data.env_id == "robot_rl/PandaPush-v0"
        demo = data[0]
    assert demo.seed == EVAL_SEED and demo.success == bridge.success
    assert demo.actions.shape == (50, 4) and demo.states.shape == (50, 0)
    assert demo.dones[-1] and not demo.dones[:-1].any() and not demo.interventions.any()
    first = parse_step_record(list(STEP_FIELDS), [d.size for d in published[0].layout.dim], np.array(published[0].data))
    np.testing.assert_array_equal(demo.actions[0], np.clip(first["action"], -1, 1))
    np.testing.assert_array_equal(demo.obs["observation"][0], first["observation"])
    np.testing.assert_array_equal(demo.next_obs["observation"][:-1], demo.obs["observation"][1:])
    assert demo.rewards.sum() == pytest.approx(bridge.total_return, abs=2.0)
    json.dumps(demo.randomization)


def test_a_bag_without_step_records_is_refused_with_its_topics(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from robot_rl.data.bag import bag_to_demos
    from robot_rl.data.schema import DatasetError

    typestore = get_typestore(Stores.ROS2_JAZZY)
    bag = tmp_path / "other"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore)
        message = typestore.types["std_msgs/msg/String"](data="hi")
        writer.write(connection, 1, typestore.serialize_cdr(message, "std_msgs/msg/String"))
    with pytest.raises(DatasetError, match=r"no /robot_rl/steps topic.*\['/chatter'\]"):
        bag_to_demos(bag, tmp_path / "x.hdf5")
