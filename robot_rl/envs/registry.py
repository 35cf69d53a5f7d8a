"""Environment registry: ids, one-line descriptions, and ``make`` with "did you mean"."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import gymnasium as gym

NAMESPACE = "robot_rl"


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    """One registered environment."""

    id: str
    entry_point: str
    description: str
    max_episode_steps: int
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


def _franka(name: str, entry: str, description: str) -> list[EnvSpec]:
    module, cls = entry.split(":")
    point = f"robot_rl.envs.franka.{module}:{cls}"
    return [
        EnvSpec(f"{NAMESPACE}/{name}-v0", point, f"{description} (sparse reward)", 50, {"reward_type": "sparse"}),
        EnvSpec(f"{NAMESPACE}/{name}Dense-v0", point, f"{description} (dense reward)", 50, {"reward_type": "dense"}),
    ]


def _quadrotor(name: str, entry: str, description: str, steps: int) -> list[EnvSpec]:
    module, cls = entry.split(":")
    point = f"robot_rl.envs.quadrotor.{module}:{cls}"
    return [
        EnvSpec(f"{NAMESPACE}/{name}-v0", point, f"{description} (sparse reward)", steps, {"reward_type": "sparse"}),
        EnvSpec(f"{NAMESPACE}/{name}Dense-v0", point, f"{description} (dense reward)", steps, {"reward_type": "dense"}),
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


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if registered, else raise ``ValueError`` with a "did you mean" hint.

    A bare name (``PandaPush-v0``) is accepted for ``robot_rl/PandaPush-v0``.
    """
    if env_id in ENV_SPECS:
        return env_id
    if f"{NAMESPACE}/{env_id}" in ENV_SPECS:
        return f"{NAMESPACE}/{env_id}"
    close = difflib.get_close_matches(env_id, list(ENV_SPECS), n=1, cutoff=0.5)
    if not close:
        bare = {k.split("/", 1)[1]: k for k in ENV_SPECS}
        match = difflib.get_close_matches(env_id.split("/")[-1], list(bare), n=1, cutoff=0.5)
        close = [bare[match[0]]] if match else []
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown environment {env_id!r}.{hint} Run `robot-rl envs` for the list: {', '.join(ENV_SPECS)}.")


def make(env_id: str, **kwargs: Any) -> gym.Env:
    """``gymnasium.make`` for a robot_rl id, with a clear error for unknown ids."""
    register_all()
    return gym.make(check_env_id(env_id), **kwargs)
