"""FR3 in MuJoCo: the sim bridge (franka_ros2's topics) and the policy node, started and running.

    ros2 launch robot_rl_ros fr3_sim.launch.py policy:=panda_push_diffusion seed:=1000000 record:=runs/bag1

The bridge steps once per command (lockstep: the episodes ``robot-rl eval --seed`` runs) or on its
own timer (``mode:=realtime``) and starts the next episode by itself (autoreset). ``record:=DIR``
also records a bag for ``robot-rl data from-bag``.
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
    params = hardware_ros_parameters("fr3")
    params.update(
        object_twist_topic="/object_twist", policy=arg("policy"), seed=seed, autostart=True, follow_episodes=True
    )
    params["require_safety"] = arg("safety").lower() == "true"
    params["safety"] = params["require_safety"]
    nodes = [
        Node(
            package="robot_rl_ros",
            executable="sim_bridge",
            name="sim_bridge",
            output="screen",
            parameters=[{"env_id": env_id, "seed": seed, "mode": arg("mode"), "autoreset": True}],
        ),
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
            DeclareLaunchArgument("policy", default_value="panda_push_diffusion"),
            DeclareLaunchArgument("seed", default_value="1000000", description="first episode's seed"),
            DeclareLaunchArgument("mode", default_value="lockstep", description="lockstep or realtime"),
            DeclareLaunchArgument("safety", default_value="true", description="run the safety chain"),
            DeclareLaunchArgument("record", default_value="", description="bag folder to record (empty: none)"),
            OpaqueFunction(function=_nodes),
        ]
    )
