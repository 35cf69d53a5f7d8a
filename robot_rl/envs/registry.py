"""Environment registry: ids, one-line descriptions, the robot each env simulates, and ``make`` with "did you mean"."""

from __future__ import annotations

import dataclasses
import difflib
import re
from typing import Any

import gymnasium as gym

NAMESPACE = "robot_rl"


@dataclasses.dataclass(frozen=True)
class RobotSpec:
    """A robot family: what its policies act for and the hardware its envs stand in for."""

    family: str
    """``franka`` or ``quadrotor``: the env package (``robot_rl.envs.<family>``) and a policy card's
    ``action.family``."""
    robot: str
    """The hardware: ``fr3`` (the Panda sim stands in for a Franka FR3) or ``crazyflie``."""
    hardware_file: str
    """Its limits, topics and vendor settings: a file in the repository's ``hardware/``."""


ROBOTS: dict[str, RobotSpec] = {
    "franka": RobotSpec("franka", "fr3", "fr3.yaml"),
    "quadrotor": RobotSpec("quadrotor", "crazyflie", "crazyflie.yaml"),
}
"""Robot family -> its spec."""


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One registered environment."""

    id: str
    entry_point: str
    description: str
    max_episode_steps: int
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def robot(self) -> RobotSpec:
        """The robot the env simulates (its family is the env's package, ``robot_rl.envs.<family>``)."""
        return ROBOTS[self.entry_point.removeprefix("robot_rl.envs.").split(".", 1)[0]]


FRANKA_V1_STEPS = {"PandaReach": 50, "PandaPush": 100, "PandaSlide": 100, "PandaPickAndPlace": 100}
"""Episode length of the v1 Franka ids [control periods of 0.04 s]. v1 moves the arm within the FR3's joint
limits (``motion="fr3"``: libfranka's velocity, acceleration and jerk limits, robot_rl/envs/franka/fr3_motion.py),
so the arm is slower than v0's servo: the scripted push expert succeeds in 0.74 of 100 episodes at v0's 50
periods, 0.95 at 75 and 1.00 at 100 (seeds 6100000..., 2026-12-06). Reach keeps 50."""


def _franka(name: str, entry: str, description: str) -> list[EnvSpec]:
    """v0: the simulation's joint servo (what the policies shipped before v1 were trained on); v1: the FR3's limits."""
    module, cls = entry.split(":")
    point = f"robot_rl.envs.franka.{module}:{cls}"
    v1 = FRANKA_V1_STEPS[name]
    return [
        EnvSpec(f"{NAMESPACE}/{name}-v0", point, f"{description} (sparse reward)", 50, {"reward_type": "sparse"}),
        EnvSpec(f"{NAMESPACE}/{name}Dense-v0", point, f"{description} (dense reward)", 50, {"reward_type": "dense"}),
        EnvSpec(
            f"{NAMESPACE}/{name}-v1",
            point,
            f"{description}, FR3 joint limits (sparse reward)",
            v1,
            {"reward_type": "sparse", "motion": "fr3"},
        ),
        EnvSpec(
            f"{NAMESPACE}/{name}Dense-v1",
            point,
            f"{description}, FR3 joint limits (dense reward)",
            v1,
            {"reward_type": "dense", "motion": "fr3"},
        ),
    ]


QUADROTOR_VERSION = 1
"""Version of the quadrotor ids. v1: a crash costs the worst per-step reward for every step left
(``crash_penalty``); dynamics, observations and actions are those of v0, which is retired."""


def _quadrotor(name: str, entry: str, description: str, steps: int) -> list[EnvSpec]:
    module, cls = entry.split(":")
    point = f"robot_rl.envs.quadrotor.{module}:{cls}"
    v = QUADROTOR_VERSION
    return [
        EnvSpec(f"{NAMESPACE}/{name}-v{v}", point, f"{description} (sparse reward)", steps, {"reward_type": "sparse"}),
        EnvSpec(
            f"{NAMESPACE}/{name}Dense-v{v}", point, f"{description} (dense reward)", steps, {"reward_type": "dense"}
        ),
    ]


ENV_SPECS: dict[str, EnvSpec] = {
    spec.id: spec
    for spec in (
        *_franka("PandaReach", "reach:PandaReachEnv", "Franka Panda: move the gripper to a 3-D goal"),
        *_franka("PandaPush", "push:PandaPushEnv", "Franka Panda: push a cube to a goal on the table"),
        *_franka("PandaSlide", "slide:PandaSlideEnv", "Franka Panda: strike a puck to slide it to a far goal"),
        *_franka(
            "PandaPickAndPlace",
            "pick_and_place:PandaPickAndPlaceEnv",
            "Franka Panda: grasp a cube and carry it to a goal, often in the air",
        ),
        *_quadrotor(
            "QuadrotorHover", "hover:QuadrotorHoverEnv", "Quadrotor: hold a point after a disturbed start", 250
        ),
        *_quadrotor(
            "QuadrotorWaypoint", "waypoint:QuadrotorWaypointEnv", "Quadrotor: fly to a 3-D point and hold it", 250
        ),
        *_quadrotor(
            "QuadrotorTrack", "track:QuadrotorTrackEnv", "Quadrotor: follow a figure-eight from upcoming setpoints", 500
        ),
    )
}


RETIRED_IDS: dict[str, tuple[str, str]] = {
    f"{NAMESPACE}/{name}-v0": (
        f"{NAMESPACE}/{name}-v1",
        "v1 adds the crash penalty to the reward; dynamics, observations and actions are unchanged",
    )
    for task in ("QuadrotorHover", "QuadrotorWaypoint", "QuadrotorTrack")
    for name in (task, f"{task}Dense")
}
"""Ids that were registered once, mapped to their successor and what changed (errors name the successor)."""


def register_all() -> None:
    """Register every robot_rl environment with Gymnasium (idempotent)."""
    for spec in ENV_SPECS.values():
        if spec.id not in gym.registry:
            gym.register(
                id=spec.id,
                entry_point=spec.entry_point,
                max_episode_steps=spec.max_episode_steps,
                kwargs=dict(spec.kwargs),
                # The checks of the passive env checker run in the test suite (check_env over
                # every id); in the step loop they would cost more than the controller.
                disable_env_checker=True,
            )


def _stem(env_id: str) -> str:
    """The task name of an id, lower case: ``robot_rl/PandaPush-v0`` -> ``pandapush``."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise ``ValueError`` with a "did you mean" hint.

    A bare name (``PandaPush-v0``) is accepted for ``robot_rl/PandaPush-v0``. A retired id
    (``RETIRED_IDS``) raises with its successor's name.
    """
    if env_id in ENV_SPECS:
        return env_id
    if f"{NAMESPACE}/{env_id}" in ENV_SPECS:
        return f"{NAMESPACE}/{env_id}"
    retired = RETIRED_IDS.get(env_id) or RETIRED_IDS.get(f"{NAMESPACE}/{env_id}")
    if retired:
        raise ValueError(
            f"environment {env_id!r} is retired: use {retired[0]!r} ({retired[1]}; see its Version History)."
        )
    # Task names are compared without namespace, version and case: "CartPole-v1" resembles no task.
    # Of a task's versions, the one asked for is suggested if it exists, else the newest.
    stems: dict[str, list[str]] = {}
    for k in ENV_SPECS:
        stems.setdefault(_stem(k), []).append(k)
    match = difflib.get_close_matches(_stem(env_id), list(stems), n=1, cutoff=0.5)
    close = []
    if match:
        asked = re.search(r"-v\d+$", env_id)
        versions = stems[match[0]]
        same = [k for k in versions if asked and k.endswith(asked.group())]
        close = same or [max(versions, key=lambda k: int(k.rsplit("-v", 1)[1]))]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown environment {env_id!r}.{hint} Run `robot-rl envs` for the list: {', '.join(ENV_SPECS)}.")


def robot_of(env_id: str) -> RobotSpec:
    """The robot ``env_id`` simulates: family, hardware, hardware file (the id checked as :func:`check_env_id`)."""
    return ENV_SPECS[check_env_id(env_id)].robot


def scripted_expert(env_id: str, env: gym.Env) -> Any:
    """The scripted expert of ``env_id``'s task for the made ``env``: ``expert(obs) -> action``, ``expert.reset()``.

    Raises:
        ValueError: an unknown id, or a task without an expert.
    """
    if robot_of(env_id).family == "quadrotor":
        from robot_rl.envs.quadrotor.expert import QuadrotorExpert

        unwrapped = env.unwrapped
        return QuadrotorExpert(unwrapped.params, unwrapped.ctrl_dt)
    from robot_rl.envs.franka.experts import make_expert

    return make_expert(env_id, motion=getattr(env.unwrapped, "motion_mode", "servo"))


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a robot_rl id, with a clear error for unknown ids."""
    register_all()
    return gym.make(check_env_id(env_id), **kwargs)
