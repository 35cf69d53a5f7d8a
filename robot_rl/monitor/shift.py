"""Evaluation conditions for the failure monitor: nominal and shifted (physics, pushes, goals, latency).

A :class:`Condition` is an env-making recipe: a ``randomize=`` dict for the env (unseen object mass
and friction scales, action latency) plus optional wrappers:

- :class:`ObjectKick`: at one random step of the episode the object gets a horizontal velocity kick
  (someone bumps the cube).
- :class:`GoalShift`: the goal is redrawn outside the square the training goals came from.
- :class:`ObservationDelay`: the policy sees observations ``steps`` control periods old.

Every random draw of a wrapper comes from a generator seeded by the episode's reset seed, so a
condition's episodes are reproducible. The wrappers need a Franka task with an object (PandaPush,
PandaSlide, PandaPickAndPlace).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.envs.registry import make, robot_of


class ObjectKick(gym.Wrapper):
    """Give the object a horizontal velocity kick at a random step of each episode.

    Args:
        env: A Franka task env with an object.
        steps: Range (inclusive) of the step at which the kick happens.
        speed: Range of the kick's speed [m/s]; its direction is uniform in the horizontal plane.
    """

    def __init__(self, env: gym.Env, steps: tuple[int, int] = (8, 30), speed: tuple[float, float] = (0.4, 0.8)) -> None:
        super().__init__(env)
        if not getattr(env.unwrapped, "has_object", False):
            raise ValueError(f"{env.unwrapped.__class__.__name__} has no object to kick.")
        self.steps, self.speed = steps, speed
        self._t, self._kick_step, self._velocity = 0, -1, np.zeros(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset and draw this episode's kick (step, velocity)."""
        obs, info = self.env.reset(seed=seed, options=options)
        rng = np.random.default_rng([0 if seed is None else seed, 71])
        self._t = 0
        self._kick_step = int(rng.integers(self.steps[0], self.steps[1] + 1))
        angle, speed = rng.uniform(0.0, 2.0 * np.pi), rng.uniform(*self.speed)
        self._velocity = speed * np.array([np.cos(angle), np.sin(angle)])
        info["kick"] = {"step": self._kick_step, "velocity": self._velocity.tolist()}
        return obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        """Kick (at the drawn step, before the physics runs), then step."""
        if self._t == self._kick_step:
            env = self.env.unwrapped
            env.data.qvel[env._obj_dofadr : env._obj_dofadr + 2] += self._velocity
        self._t += 1
        return self.env.step(action)


class GoalShift(gym.Wrapper):
    """Redraw the goal outside the training square: ``inner < max(|dx|, |dy|) <= outer`` about its centre.

    Args:
        env: A Franka task env with ``sample_center`` and ``target_range`` (Push, Slide, PickAndPlace).
        outer: Half-width of the square the new goal lies in [m].
        min_x: Smallest goal x [m, world] (the arm cannot push an object closer to its base).
        min_object_distance: Smallest goal-to-object distance in the plane [m].
    """

    def __init__(
        self, env: gym.Env, outer: float = 0.25, min_x: float = 0.36, min_object_distance: float = 0.1
    ) -> None:
        super().__init__(env)
        unwrapped = env.unwrapped
        if not hasattr(unwrapped, "sample_center") or not hasattr(unwrapped, "_set_goal"):
            raise ValueError(f"{unwrapped.__class__.__name__} does not draw goals in a square; no goal shift.")
        self.inner = float(unwrapped.target_range)
        if not outer > self.inner:
            raise ValueError(f"`outer` must exceed the training half-width {self.inner} m. Got {outer}.")
        self.outer, self.min_x, self.min_object_distance = outer, min_x, min_object_distance

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset, then move the goal outside the training square (the observation says so)."""
        obs, info = self.env.reset(seed=seed, options=options)
        env = self.env.unwrapped
        rng = np.random.default_rng([0 if seed is None else seed, 72])
        obj = np.asarray(obs["achieved_goal"], dtype=np.float64)
        for _ in range(10_000):
            offset = rng.uniform(-self.outer, self.outer, size=2)
            xy = env.sample_center + offset
            if (
                np.max(np.abs(offset)) > self.inner
                and xy[0] >= self.min_x
                and np.linalg.norm(xy - obj[:2]) >= self.min_object_distance
            ):
                break
        goal = np.array([xy[0], xy[1], obs["desired_goal"][2]])
        env._set_goal(goal)
        obs = dict(obs)
        obs["desired_goal"] = goal.copy()
        info["is_success"] = float(np.linalg.norm(obj - goal) <= env.distance_threshold)
        return obs, info


class ObservationDelay(gym.Wrapper):
    """Return observations ``steps`` control periods old (the reset observation repeated at first)."""

    def __init__(self, env: gym.Env, steps: int = 1) -> None:
        super().__init__(env)
        if steps < 1:
            raise ValueError(f"`steps` must be >= 1. Got {steps}.")
        self.steps = steps
        self._queue: deque[Any] = deque(maxlen=steps + 1)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset and fill the delay line with the reset observation."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._queue.clear()
        self._queue.extend([obs] * (self.steps + 1))
        return obs, info

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        """Step; the observation returned is ``steps`` periods old (reward and success are current)."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._queue.append(obs)
        return self._queue[0], reward, terminated, truncated, info


@dataclasses.dataclass(frozen=True)
class Condition:
    """One evaluation condition."""

    description: str
    randomize: Mapping[str, Any] | None = None
    """The env's ``randomize=`` dict (keys of robot_rl.envs.randomization)."""
    kick: bool = False
    """Wrap in :class:`ObjectKick`."""
    goal_shift: bool = False
    """Wrap in :class:`GoalShift`."""
    obs_delay: int = 0
    """Wrap in :class:`ObservationDelay` with this many steps (0: none)."""

    def make(self, env_id: str) -> gym.Env:
        """The env for this condition (gym.make'd, with its time limit, then the wrappers)."""
        env = make(env_id, randomize=dict(self.randomize) if self.randomize else None)
        try:
            if self.goal_shift:
                env = GoalShift(env)
            if self.kick:
                env = ObjectKick(env)
            if self.obs_delay:
                env = ObservationDelay(env, self.obs_delay)
        except BaseException:
            env.close()
            raise
        return env


CONDITIONS: dict[str, Condition] = {
    "nominal": Condition("nominal physics, goals and timing (the training conditions)"),
    "heavy": Condition("object mass x [3, 5] (demos: x 1)", randomize={"object_mass_scale": [3.0, 5.0]}),
    "slippery": Condition(
        "object sliding friction x [0.1, 0.3] (demos: x 1)", randomize={"object_friction_scale": [0.1, 0.3]}
    ),
    "kick": Condition("object kicked once at a random step 8-30, 0.4-0.8 m/s in a random direction", kick=True),
    "far_goal": Condition("goal 0.15-0.25 m from the centre of the goal square (training: <= 0.15 m)", goal_shift=True),
    "latency": Condition(
        "actions applied 2-3 periods late and observations 1 period old (demos: none)",
        randomize={"action_latency_steps": [2, 3]},
        obs_delay=1,
    ),
}
"""The Franka object tasks' conditions (PandaPush, PandaSlide, PandaPickAndPlace)."""

QUADROTOR_CONDITIONS: dict[str, Condition] = {
    "nominal": Condition("nominal physics and timing (the training conditions)"),
    "heavy": Condition("vehicle mass x [1.4, 1.6] (train preset: x [0.7, 1.3])", randomize={"mass_scale": [1.4, 1.6]}),
    "weak_motors": Condition(
        "rotor thrust per command x [0.75, 0.85]", randomize={"motor_constant_scale": [0.75, 0.85]}
    ),
    "gusts": Condition("wind gusts of 0.05 N std (train preset: 0.01 N)", randomize={"wind_gust_std": 0.05}),
    "latency": Condition(
        "actions applied 2-3 periods late and observations 1 period old",
        randomize={"action_latency_steps": [2, 3], "obs_latency_steps": [1, 1]},
    ),
}
"""The quadrotor tasks' conditions."""


def conditions_for(env_id: str) -> dict[str, Condition]:
    """The evaluation conditions that apply to an env (by robot family)."""
    return QUADROTOR_CONDITIONS if robot_of(env_id).family == "quadrotor" else CONDITIONS
