"""Crazyflie in MuJoCo: the sim bridge (crazyswarm2's topics and services) and the policy node, running.

    ros2 launch robot_rl_ros crazyflie_sim.launch.py policy:=quadrotor_waypoint_diffusion seed:=1000000

Each episode starts in the air at the task's start state (takeoff is a no-op in the sim); the
bridge reads cmd_vel_legacy back into CTBR with the same conventions the policy node sends.
"""

from __future__ import annotations

from launch import Action, LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from robot_rl_ros.control import hardware_ros_parameters, resolve_policy_dir


def _nodes(context: LaunchContext, *args: object, **kwargs: object) -> list[Action]:
    from robot_rl.export.metadata import read_metadata

    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    env_id = read_metadata(resolve_policy_dir(arg("policy"))).env_id
    seed = int(arg("seed"))
    params = hardware_ros_parameters("crazyflie")
    legacy = {k: v for k, v in params.items() if k.startswith(("legacy_", "thrust_", "max_thrust", "attitude_",
                                                                "pitch_", "yaw_"))}  # fmt: skip
    params.update(policy=arg("policy"), seed=seed, autostart=True, follow_episodes=True)
    params["require_safety"] = params["safety"] = arg("safety").lower() == "true"
    bridge = {"env_id": env_id, "seed": seed, "mode": arg("mode"), "autoreset": True,
              "robot_name": params["robot_name"], **legacy}  # fmt: skip
    nodes = [
        Node(package="robot_rl_ros", executable="sim_bridge", name="sim_bridge", output="screen", parameters=[bridge]),
        LifecycleNode(
            package="robot_rl_ros",
            executable="policy_node",
            name="robot_rl_policy",
            namespace="",
            output="screen",
            parameters=[params],
        ),
    ]
    if arg("record"):
        nodes.append(
            Node(
                package="robot_rl_ros",
                executable="bag_recorder",
                output="screen",
                parameters=[{"output": arg("record")}],
            )  # fmt: skip
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    """The sim bridge, the policy node and optionally the recorder."""
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", default_value="quadrotor_waypoint_diffusion"),
            DeclareLaunchArgument("seed", default_value="1000000", description="first episode's seed"),
            DeclareLaunchArgument("mode", default_value="lockstep", description="lockstep or realtime"),
            DeclareLaunchArgument("safety", default_value="true", description="run the safety chain"),
            DeclareLaunchArgument("record", default_value="", description="bag folder to record (empty: none)"),
            OpaqueFunction(function=_nodes),
        ]
    )
