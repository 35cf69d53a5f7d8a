"""The launch files, run against stand-ins for `launch`/`launch_ros` (not on PyPI): their nodes configure."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "robot_rl_ros" / "launch"


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class _Configuration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.arguments[self.name]


def _stand_ins(monkeypatch):
    launch = types.ModuleType("launch")
    launch.LaunchDescription = _Recorded
    launch.Action = object
    launch.LaunchContext = object
    actions = types.ModuleType("launch.actions")
    actions.DeclareLaunchArgument = _Recorded
    actions.OpaqueFunction = _Recorded
    substitutions = types.ModuleType("launch.substitutions")
    substitutions.LaunchConfiguration = _Configuration
    launch_ros = types.ModuleType("launch_ros")
    ros_actions = types.ModuleType("launch_ros.actions")
    ros_actions.Node = ros_actions.LifecycleNode = _Recorded
    for name, module in {"launch": launch, "launch.actions": actions, "launch.substitutions": substitutions,
                         "launch_ros": launch_ros, "launch_ros.actions": ros_actions}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)


def _nodes(path: Path, **overrides):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    entities = description.args[0]
    defaults = {e.args[0]: e.kwargs.get("default_value", "") for e in entities if "function" not in e.kwargs}
    opaque = next(e for e in entities if "function" in e.kwargs)
    context = types.SimpleNamespace(arguments={**defaults, **overrides})
    return {node.kwargs["executable"]: node.kwargs["parameters"][0] for node in opaque.kwargs["function"](context)}


@pytest.mark.usefixtures("safety_chain_available")
@pytest.mark.parametrize("launch_file", sorted(p.name for p in LAUNCH_DIR.glob("*.launch.py")))
def test_launch_file_nodes_configure(launch_file, monkeypatch, ros_context, executor):
    _stand_ins(monkeypatch)
    nodes = _nodes(LAUNCH_DIR / launch_file)
    assert "policy_node" in nodes
    if "sim" in launch_file:
        assert "sim_bridge" in nodes and nodes["policy_node"]["follow_episodes"] is True
        bridge_params = [Parameter(k, value=v) for k, v in nodes["sim_bridge"].items()]
        bridge = SimBridge(context=ros_context, parameter_overrides=bridge_params)
        executor.add_node(bridge)
    else:
        assert nodes["policy_node"]["require_safety"] is True and nodes["policy_node"]["autostart"] is False
    params = [Parameter(k, value=v) for k, v in nodes["policy_node"].items()]
    policy = PolicyNode(context=ros_context, parameter_overrides=params)
    executor.add_node(policy)
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert policy.runtime.chain is not None
    expected = "/robot_rl_arm_controller/joint_trajectory" if "fr3" in launch_file else "/cf231/cmd_vel_legacy"
    assert policy.adapter.command_topic == expected
