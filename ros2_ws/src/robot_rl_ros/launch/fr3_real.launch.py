"""FR3 + franka_ros2: the policy node on the real arm (started inactive; activate it by hand).

    ros2 launch robot_rl_ros fr3_real.launch.py policy:=/path/to/policies/panda_push_diffusion
    ros2 lifecycle set /robot_rl_policy configure && ros2 lifecycle set /robot_rl_policy activate

Topics, joint names and the command interface come from the ``ros:`` section of
``hardware/fr3.yaml``; the safety chain from its ``safety:`` section (required). franka_ros2 must
run the JointTrajectoryController of ``hardware/fr3_controllers.yaml`` (``robot_rl_arm_controller``;
ros2_ws/README.md, FR3 command path checklist), and a perception node must publish /object_pose and
/goal in fr3_link0.
"""

from __future__ import annotations

from typing import Any

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from robot_rl_ros.control import hardware_ros_parameters
from robot_rl_ros.launching import argument_reader, flag, policy_node


def _nodes(context: Any, *args: object, **kwargs: object) -> list[Any]:
    arg = argument_reader(context)
    params = hardware_ros_parameters("fr3", arg("hardware_dir"))
    params.update(
        policy=arg("policy"),
        hardware_dir=arg("hardware_dir"),
        require_safety=True,
        command_interface=arg("command_interface") or params["command_interface"],
        autostart=flag(arg("autostart")),
    )
    return [policy_node(params)]


def generate_launch_description() -> LaunchDescription:
    """The policy node for the FR3."""
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value="panda_push_diffusion", description="policy folder or name"),
            DeclareLaunchArgument("hardware_dir", default_value="", description="folder of fr3.yaml (default: repo)"),
            DeclareLaunchArgument("command_interface", default_value="", description="forward or trajectory"),
            DeclareLaunchArgument("autostart", default_value="false", description="configure and activate at once"),
            OpaqueFunction(function=_nodes),
        ]
    )
