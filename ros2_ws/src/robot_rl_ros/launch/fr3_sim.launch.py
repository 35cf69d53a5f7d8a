"""FR3 in MuJoCo: the sim bridge (franka_ros2's topics) and the policy node, started and running.

    ros2 launch robot_rl_ros fr3_sim.launch.py policy:=panda_push_diffusion seed:=1000000 record:=runs/bag1

The bridge steps once per command (lockstep: the episodes ``robot-rl eval --seed`` runs) or on its
own timer (``mode:=realtime``) and starts the next episode by itself (autoreset). ``record:=DIR``
also records a bag for ``robot-rl data from-bag``.
"""

from __future__ import annotations

from typing import Any

from robot_rl_ros.control import hardware_ros_parameters, resolve_policy_dir
from robot_rl_ros.launching import argument_reader, flag, sim_launch_description, sim_nodes


def _nodes(context: Any, *args: object, **kwargs: object) -> list[Any]:
    from robot_rl.export.metadata import read_metadata

    arg = argument_reader(context)
    env_id = read_metadata(resolve_policy_dir(arg("policy"))).env_id
    seed = int(arg("seed"))
    params = hardware_ros_parameters("fr3")
    params.update(
        object_twist_topic="/object_twist", policy=arg("policy"), seed=seed, autostart=True, follow_episodes=True
    )
    params["gripper_topic"] = "/robot_rl/gripper_width"  # the bridge's stand-in for a franka_gripper relay
    params["require_safety"] = params["safety"] = flag(arg("safety"))
    bridge = {"env_id": env_id, "seed": seed, "mode": arg("mode"), "autoreset": True}
    return sim_nodes(bridge, params, arg("record"))


def generate_launch_description() -> Any:
    """The sim bridge, the policy node and optionally the recorder."""
    return sim_launch_description("panda_push_diffusion", _nodes)
