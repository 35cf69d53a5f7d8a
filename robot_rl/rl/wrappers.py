"""Residual RL on a frozen base policy, as Gymnasium wrappers around any robot_rl env.

:class:`ResidualEnv` (ResFiT / ResiP style): the base proposes an action every control period
(a chunked base runs through its receding-horizon queue, so the residual corrects each executed
step); the RL agent sees the flattened observation together with the base action and outputs a
correction in [-1, 1]^A; the env applies ``clip(base + scale * correction)``. A zero correction
reproduces the base exactly, so training starts at the base's performance when the agent's
output starts near zero. With ``feedback`` the agent also sees the previous step's applied action
(the current base action at an episode's first step): since ``previous applied - base`` is what it
added last step, it can integrate an error (cancel a steady offset from an unobserved parameter).

:class:`NoiseEnv` (DSRL style): the RL action is the diffusion sampler's initial noise, bounded
in magnitude; one RL step samples a chunk from that noise (DDIM, deterministic given the noise)
and executes its ``n_action_steps`` actions; the reward is the sum over them. The base's weights
are untouched and it stays a black box (``predict_batch(history, noise)`` is all it needs).

Both expose the base's per-episode seed handling: ``reset(seed=s)`` reseeds the base's sampling
noise with ``s`` so evaluations are reproducible.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from robot_rl.policies.layout import ChunkedActor, check_layout
from robot_rl.policies.residual import apply_correction, resolve_scale


def _check_base(base: Any, env: gym.Env) -> None:
    check_layout(base.layout, env.observation_space, base.action_dim, env.action_space)


class ResidualEnv(gym.Wrapper):
    """The env seen by a residual agent: observation + base action in, bounded correction out.

    Args:
        env: A robot_rl env (gym.make'd).
        base: A frozen policy with the Policy protocol (a trained run or an exported ONNX policy).
        scale: The correction's magnitude: the applied action is ``base + scale * correction``; one
            number, or one per action dimension (see :func:`robot_rl.policies.residual.resolve_scale`).
        base_seed: Seed of the base's sampling noise when reset without a seed.
        feedback: Append the previous step's applied action to the observation (the current base
            action at an episode's first step), so the agent can integrate.

    Raises:
        ValueError: the base's observation or action layout does not match the env, or ``scale``
            is out of range.
    """

    def __init__(
        self,
        env: gym.Env,
        base: Any,
        scale: float | Sequence[float] = 0.2,
        base_seed: int = 0,
        feedback: bool = False,
    ) -> None:
        super().__init__(env)
        self.scale = resolve_scale(scale, int(np.prod(env.action_space.shape)))
        _check_base(base, env)
        self.base = base
        self.feedback = bool(feedback)
        self.actor = ChunkedActor(base, seed=base_seed)
        self._episode_seed = base_seed
        space = env.action_space
        self._low, self._high = space.low, space.high
        dim = base.layout.dim + base.action_dim * (2 if self.feedback else 1)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)
        self._base_action = np.zeros(space.shape)
        self._previous: np.ndarray | None = None
        self._obs: dict[str, np.ndarray] | None = None

    def _observe(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        self._obs = obs
        self._base_action = np.asarray(self.actor(obs), dtype=np.float64)
        parts = [self.actor.current, self._base_action]  # the base's own flattening (features included)
        if self.feedback:
            parts.append(self._base_action if self._previous is None else self._previous)
        return np.concatenate(parts).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset the env and the base (its noise reseeded with ``seed``)."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_seed = seed if seed is not None else self._episode_seed + 1
        self.actor.reset(self._episode_seed)
        self._previous = None
        return self._observe(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Apply base + scale * correction."""
        applied = apply_correction(self._base_action, action, self.scale, self._low, self._high)
        self.actor.sent(applied)  # a base with observation features learns what was actually sent
        obs, reward, terminated, truncated, info = self.env.step(applied)
        info = dict(info)
        info["base_action"] = self._base_action
        info["applied_action"] = applied
        self._previous = applied
        return self._observe(obs), float(reward), terminated, truncated, info


class NoiseEnv(gym.Wrapper):
    """The env seen by a DSRL agent: its action is the diffusion sampler's initial noise.

    Args:
        env: A robot_rl env (gym.make'd).
        base: A frozen diffusion policy with ``predict_batch(histories, noise)`` (torch run or ONNX).
        noise_bound: The noise's largest magnitude per entry (the action space is [-b, b]).

    Raises:
        ValueError: the base is not a diffusion policy, its layout does not match the env, or the
            bound is out of range.
    """

    def __init__(self, env: gym.Env, base: Any, noise_bound: float = 1.5) -> None:
        super().__init__(env)
        if not hasattr(base, "predict_batch") or getattr(base, "kind", "diffusion") != "diffusion":
            raise ValueError("DSRL steers a diffusion policy's noise; the base is not a diffusion policy.")
        if not 0.0 < noise_bound <= 3.0:
            raise ValueError(f"`noise_bound` must be in (0, 3]. Got {noise_bound}.")
        _check_base(base, env)
        self.base = base
        self.n_steps = base.n_action_steps
        self._history: deque[np.ndarray] = deque(maxlen=base.n_obs_steps)
        shape = (base.horizon * base.action_dim,)
        self.action_space = gym.spaces.Box(-noise_bound, noise_bound, shape, np.float32)
        dim = base.n_obs_steps * base.layout.dim
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)

    def _observe(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        flat = self.base.layout.flatten(obs)
        if not self._history:
            self._history.extend([flat] * self.base.n_obs_steps)
        else:
            self._history.append(flat)
        return np.concatenate(self._history).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Reset the env and the observation history."""
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        return self._observe(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Sample a chunk from the given noise and execute ``n_action_steps`` of it."""
        noise = np.asarray(action, dtype=np.float64).reshape(1, self.base.horizon, self.base.action_dim)
        history = np.stack(self._history)[None]
        chunk = self.base.predict_batch(history, noise)[0]
        total, terminated, truncated, info = 0.0, False, False, {}
        for k in range(self.n_steps):
            obs, reward, terminated, truncated, info = self.env.step(chunk[k])
            total += float(reward)
            if k + 1 < self.n_steps and not (terminated or truncated):
                self._observe(obs)
            if terminated or truncated:
                break
        info = dict(info)
        info["chunk"] = chunk
        return self._observe(obs), total, terminated, truncated, info


class ResidualActor:
    """A trained residual run as an ``obs -> action`` function (the same arithmetic as :class:`ResidualEnv`).

    Args:
        agent: The stable-baselines3 agent (``predict(features, deterministic=True)``).
        base: The frozen base.
        scale: The run's correction scale (one number or one per dimension).
        action_space: The env's action space (for the final clip).
        feedback: The run's agent also observes the previous applied action (``--feedback``).
    """

    def __init__(
        self, agent: Any, base: Any, scale: float | Sequence[float], action_space: Any, feedback: bool = False
    ) -> None:
        self.agent, self.base = agent, base
        self.scale = resolve_scale(scale, int(np.prod(action_space.shape)))
        self.actor = ChunkedActor(base)
        self.feedback = bool(feedback)
        self._previous: np.ndarray | None = None
        self._low, self._high = action_space.low, action_space.high
        expected = base.layout.dim + base.action_dim * (2 if self.feedback else 1)
        space = getattr(agent, "observation_space", None)
        if space is not None and tuple(space.shape) != (expected,):
            raise ValueError(
                f"the agent observes {tuple(space.shape)} features; with feedback={self.feedback} the residual's "
                f"observation has ({expected},) (observation {base.layout.dim} + base action {base.action_dim}"
                f"{f' + previous action {base.action_dim}' if self.feedback else ''}). Was the run trained with "
                "another --feedback setting?"
            )

    def reset(self, seed: int) -> None:
        """New episode: the base's noise reseeded with the episode seed, no previous action."""
        self.actor.reset(seed)
        self._previous = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Base action plus the agent's deterministic correction."""
        base_action = np.asarray(self.actor(obs), dtype=np.float64)
        parts = [self.actor.current, base_action]
        if self.feedback:
            parts.append(base_action if self._previous is None else self._previous)
        features = np.concatenate(parts).astype(np.float32)
        correction = self.agent.predict(features, deterministic=True)[0]
        applied = apply_correction(base_action, correction, self.scale, self._low, self._high)
        self._previous = applied.copy()
        self.actor.sent(applied)
        return applied


class NoiseActor:
    """A trained DSRL run as an ``obs -> action`` function: the agent picks each chunk's noise."""

    def __init__(self, agent: Any, base: Any) -> None:
        self.agent, self.base = agent, base
        self._history: deque[np.ndarray] = deque(maxlen=base.n_obs_steps)
        self._queue: deque[np.ndarray] = deque()

    def reset(self, seed: int) -> None:
        """New episode (the agent is deterministic; the seed is not needed)."""
        self._history.clear()
        self._queue.clear()

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The next action of the current chunk, sampling a new chunk when it runs out."""
        flat = self.base.layout.flatten(obs)
        if not self._history:
            self._history.extend([flat] * self.base.n_obs_steps)
        else:
            self._history.append(flat)
        if not self._queue:
            features = np.concatenate(self._history).astype(np.float32)
            noise = np.asarray(self.agent.predict(features, deterministic=True)[0], dtype=np.float64)
            noise = noise.reshape(1, self.base.horizon, self.base.action_dim)
            chunk = self.base.predict_batch(np.stack(self._history)[None], noise)[0]
            self._queue.extend(chunk[: self.base.n_action_steps])
        return self._queue.popleft()
