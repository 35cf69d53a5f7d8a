"""Crazyflie + crazyswarm2: the policy node on the real vehicle (started inactive; activate it by hand).

    ros2 launch crazyflie launch.py            # crazyswarm2, the vehicle in the air (takeoff) first
    ros2 launch robot_rl_ros crazyflie_real.launch.py policy:=quadrotor_waypoint_diffusion
    ros2 lifecycle set /robot_rl_policy configure && ros2 lifecycle set /robot_rl_policy activate

Topics and the cmd_vel_legacy conventions come from the ``ros:`` section of
``hardware/crazyflie.yaml``; the safety chain (geofence, tilt, hover/land fallback) from its
``safety:`` section (required). ``legacy_mode: rate`` needs the firmware's rate mode for roll and
pitch (crazyflies.yaml ``firmware_params``). A goal comes on /cf231/goal (PointStamped, world).
"""

from __future__ import annotations

from typing import Any

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from robot_rl_ros.control import hardware_ros_parameters
from robot_rl_ros.launching import argument_reader, flag, policy_node


def _nodes(context: Any, *args: object, **kwargs: object) -> list[Any]:
    arg = argument_reader(context)
    params = hardware_ros_parameters("crazyflie", arg("hardware_dir"))
    if arg("robot_name"):
        params["robot_name"] = arg("robot_name")
        params["goal_topic"] = f"/{arg('robot_name')}/goal"
    params.update(
        policy=arg("policy"),
        hardware_dir=arg("hardware_dir"),
        require_safety=True,
        autostart=flag(arg("autostart")),
    )
    return [policy_node(params)]


def generate_launch_description() -> LaunchDescription:
    """The policy node for a Crazyflie."""
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value="quadrotor_waypoint_diffusion"),
            DeclareLaunchArgument("robot_name", default_value="", description="crazyswarm2 name (default: yaml's)"),
            DeclareLaunchArgument("hardware_dir", default_value="", description="folder of crazyflie.yaml"),
            DeclareLaunchArgument("autostart", default_value="false", description="configure and activate at once"),
            OpaqueFunction(function=_nodes),
        ]
    )
