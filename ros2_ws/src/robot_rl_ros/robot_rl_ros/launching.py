"""The pieces the launch files share: their arguments and the nodes they start.

``launch`` and ``launch_ros`` are imported when a function runs, not with this module, so that
the rest of the package imports without them (they come with a ROS 2 install, not from PyPI).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PACKAGE = "robot_rl_ros"


def argument_reader(context: Any) -> Callable[[str], str]:
    """``read(name)``: the value a launch argument has in this launch."""
    from launch.substitutions import LaunchConfiguration

    return lambda name: LaunchConfiguration(name).perform(context)


def flag(value: str) -> bool:
    """A launch argument's ``true``/``false`` (any case) as a bool."""
    return value.lower() == "true"


def policy_node(params: dict[str, Any]) -> Any:
    """The policy node (a lifecycle node, ``/robot_rl_policy``) with these parameters."""
    from launch_ros.actions import LifecycleNode

    return LifecycleNode(
        package=PACKAGE,
        executable="policy_node",
        name="robot_rl_policy",
        namespace="",
        output="screen",
        parameters=[params],
    )


def sim_nodes(bridge: dict[str, Any], policy: dict[str, Any], record: str) -> list[Any]:
    """The MuJoCo sim bridge, the policy node and, when ``record`` names a folder, the bag recorder."""
    from launch_ros.actions import Node

    nodes = [
        Node(package=PACKAGE, executable="sim_bridge", name="sim_bridge", output="screen", parameters=[bridge]),
        policy_node(policy),
    ]
    if record:
        nodes.append(Node(package=PACKAGE, executable="bag_recorder", output="screen", parameters=[{"output": record}]))
    return nodes


def sim_launch_description(default_policy: str, nodes: Callable[..., list[Any]]) -> Any:
    """A sim launch: policy, seed, mode, safety and record arguments, then ``nodes(context)``."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value=default_policy),
            DeclareLaunchArgument("seed", default_value="1000000", description="first episode's seed"),
            DeclareLaunchArgument("mode", default_value="lockstep", description="lockstep or realtime"),
            DeclareLaunchArgument("safety", default_value="true", description="run the safety chain"),
            DeclareLaunchArgument("record", default_value="", description="bag folder to record (empty: none)"),
            OpaqueFunction(function=nodes),
        ]
    )
