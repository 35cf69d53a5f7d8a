"""Crazyflie in MuJoCo: the sim bridge (crazyswarm2's topics and services) and the policy node, running.

    ros2 launch robot_rl_ros crazyflie_sim.launch.py policy:=quadrotor_waypoint_diffusion seed:=1000000

Each episode starts in the air at the task's start state (takeoff is a no-op in the sim); the
bridge reads cmd_vel_legacy as crazyswarm2's `backend` and the firmware would (hardware/crazyswarm2/crazyflies.yaml),
not with the policy node's conventions, so a sign error in hardware/crazyflie.yaml shows in the sim.
"""

from __future__ import annotations

from typing import Any

from robot_rl_ros.control import hardware_ros_parameters, resolve_policy_dir
from robot_rl_ros.launching import argument_reader, flag, sim_launch_description, sim_nodes

# The policy node's parameters the bridge needs too, to read cmd_vel_legacy back into CTBR.
_LEGACY_PREFIXES = ("legacy_", "thrust_", "max_thrust", "attitude_", "pitch_", "yaw_", "backend")


def _nodes(context: Any, *args: object, **kwargs: object) -> list[Any]:
    from robot_rl.export.metadata import read_metadata

    arg = argument_reader(context)
    env_id = read_metadata(resolve_policy_dir(arg("policy"))).env_id
    seed = int(arg("seed"))
    params = hardware_ros_parameters("crazyflie")
    legacy = {k: v for k, v in params.items() if k.startswith(_LEGACY_PREFIXES)}
    params.update(policy=arg("policy"), seed=seed, autostart=True, follow_episodes=True)
    params["require_safety"] = params["safety"] = flag(arg("safety"))
    bridge = {"env_id": env_id, "seed": seed, "mode": arg("mode"), "autoreset": True,
              "robot_name": params["robot_name"], **legacy}  # fmt: skip
    return sim_nodes(bridge, params, arg("record"))


def generate_launch_description() -> Any:
    """The sim bridge, the policy node and optionally the recorder."""
    return sim_launch_description("quadrotor_waypoint_diffusion", _nodes)
