"""Shared builders for the test suite: env construction with cleanup, seeded rollouts."""

from __future__ import annotations

import ctypes.util
import os
import sys

# Offscreen rendering without a display: OSMesa when it is installed. Set before anything imports
# mujoco (it picks its GL backend at import). An explicit MUJOCO_GL (.ci/run exports osmesa) is
# left as it is, and then a render failure is a test failure rather than a skip.
MUJOCO_GL_EXPLICIT = "MUJOCO_GL" in os.environ
if not MUJOCO_GL_EXPLICIT and sys.platform.startswith("linux") and ctypes.util.find_library("OSMesa"):
    os.environ["MUJOCO_GL"] = "osmesa"

from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robot_rl.envs.registry import ENV_SPECS, make  # noqa: E402

ALL_ENV_IDS = list(ENV_SPECS)
"""Every registered id, sparse and Dense variants."""
ENV_IDS = [env_id for env_id in ALL_ENV_IDS if "/Panda" in env_id]
"""The Franka ids (the quadrotor tests have their own)."""
SPARSE_IDS = [env_id for env_id in ENV_IDS if ENV_SPECS[env_id].kwargs["reward_type"] == "sparse"]
"""One id per Franka task."""
QUADROTOR_IDS = [env_id for env_id in ALL_ENV_IDS if "/Quadrotor" in env_id]
"""The quadrotor ids."""


@pytest.fixture
def make_env() -> Iterator[Callable[..., gym.Env]]:
    """``make_env(env_id, **kwargs)``: the unwrapped env, closed after the test."""
    envs: list[gym.Env] = []

    def _make(env_id: str, **kwargs: Any) -> gym.Env:
        env = make(env_id, **kwargs)
        envs.append(env)
        return env.unwrapped

    yield _make
    for env in envs:
        env.close()


def rollout(env: gym.Env, seed: int, n_steps: int = 20, action_seed: int = 0) -> dict[str, Any]:
    """Reset with ``seed`` and step uniform random actions drawn from ``action_seed``.

    Returns the reset observation and info, and per step the observation, reward and info.
    """
    actions = np.random.default_rng(action_seed).uniform(-1.0, 1.0, size=(n_steps, *env.action_space.shape))
    obs, info = env.reset(seed=seed)
    out: dict[str, Any] = {"reset_obs": obs, "reset_info": info, "obs": [], "reward": [], "info": []}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        assert not terminated
        out["obs"].append(obs)
        out["reward"].append(reward)
        out["info"].append(info)
    return out


def assert_rollouts_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Bit-identical observations, rewards and infos."""
    for key in ("observation", "achieved_goal", "desired_goal"):
        np.testing.assert_array_equal(a["reset_obs"][key], b["reset_obs"][key])
        np.testing.assert_array_equal([o[key] for o in a["obs"]], [o[key] for o in b["obs"]])
    assert a["reset_info"] == b["reset_info"]
    assert a["reward"] == b["reward"]
    assert a["info"] == b["info"]
