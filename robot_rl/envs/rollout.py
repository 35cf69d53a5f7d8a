"""The plain episode loop: an ``obs -> action`` function rolled out over given seeds (training and evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

EPISODE_EXTRAS = ("crash", "distance", "tracking_rmse", "clipped_commands", "motor_saturations")
"""Info keys copied into each episode's record when the env reports them."""


def run_episodes(
    env: Any,
    act: Callable[[dict[str, np.ndarray]], np.ndarray],
    reset: Callable[[int], None],
    seeds: Iterable[int],
    on_frame: Callable[[int, Any], None] | None = None,
) -> list[dict[str, Any]]:
    """One episode per seed: ``reset(seed)`` then ``act`` until the env ends the episode.

    Args:
        env: A gym.make'd env (with its time limit).
        act: Chooses the action for an observation.
        reset: Called with the episode's seed after ``env.reset`` (clear policy state, reseed noise).
        seeds: Reset seeds, one episode each.
        on_frame: Called as ``on_frame(k, env)`` after the reset and each step of episode k (video).

    Returns:
        Per-episode records: seed, success, return, length and the env's extras.
    """
    episodes = []
    for k, seed in enumerate(seeds):
        obs, _ = env.reset(seed=int(seed))
        reset(int(seed))
        if on_frame is not None:
            on_frame(k, env)
        total, length, info, done = 0.0, 0, {"is_success": 0.0}, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
            if on_frame is not None:
                on_frame(k, env)
        episode = {"seed": int(seed), "success": bool(info["is_success"]), "return": total, "length": length}
        episode.update({key: info[key] for key in EPISODE_EXTRAS if key in info})
        episodes.append(episode)
    return episodes
