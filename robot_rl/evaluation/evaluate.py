"""Roll a policy out on an env over consecutive seeds and build the eval report."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.envs.registry import check_env_id, make

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how."""

    env: str = "robot_rl/PandaPush-v0"
    """Environment id (``robot-rl envs`` lists them)."""
    policy: str = "expert"
    """``expert`` (the scripted expert) or ``random`` (uniform random actions)."""
    episodes: int = 100
    """Number of episodes; episode k uses seed ``seed + k``."""
    seed: int = 0
    """First episode's seed."""
    randomize: str = "nominal"
    """Domain randomization: ``nominal`` (off), ``train``, or a YAML file (keys in the README)."""
    video: Path | None = None
    """Write an MP4 of the first episodes here (offscreen rendering; MUJOCO_GL=osmesa on CPU)."""
    video_episodes: int = 3
    """How many episodes the video shows."""
    json: Path | None = None
    """Write the eval report (JSON) here."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"`episodes` must be >= 1. Got {self.episodes}.")
        if self.video_episodes < 1:
            raise ValueError(f"`video_episodes` must be >= 1. Got {self.video_episodes}.")
        if self.policy not in ("expert", "random"):
            raise ValueError(
                f"`policy` must be 'expert' or 'random' (trained runs and policy folders arrive with "
                f"the policy issues). Got {self.policy!r}."
            )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Rounded so that p = 0 or 1 gives exact interval ends (not 0.9999999999999999).
    return (round(max(0.0, centre - half), 12), round(min(1.0, centre + half), 12))


def _make_policy(name: str, env_id: str, env: Any) -> tuple[Policy, Callable[[], None]]:
    if name == "random":
        space = env.action_space
        rng = np.random.default_rng(0)

        def random_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            return rng.uniform(space.low, space.high)

        return random_policy, lambda: None
    if "/Quadrotor" in env_id:
        from robot_rl.envs.quadrotor.expert import QuadrotorExpert

        unwrapped = env.unwrapped
        quad_expert = QuadrotorExpert(unwrapped.params, unwrapped.ctrl_dt)
        return quad_expert, quad_expert.reset
    from robot_rl.envs.franka.experts import make_expert

    expert = make_expert(env_id)
    return expert, expert.reset


def evaluate(config: EvalConfig) -> dict[str, Any]:
    """Run ``config.episodes`` episodes and return the eval report (see ARCHITECTURE.md)."""
    env_id = check_env_id(config.env)
    want_video = config.video is not None
    if want_video:
        os.environ.setdefault("MUJOCO_GL", "osmesa")
    env = make(env_id, randomize=config.randomize, render_mode="rgb_array" if want_video else None)
    policy, reset_policy = _make_policy(config.policy, env_id, env)
    frames: list[np.ndarray] = []
    per_episode = []
    start = time.perf_counter()
    iterator = range(config.episodes)
    if config.progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=f"eval {env_id.split('/')[-1]} ({config.policy})", unit="ep")
    for k in iterator:
        seed = config.seed + k
        obs, _ = env.reset(seed=seed)
        reset_policy()
        record = want_video and k < config.video_episodes
        if record:
            frames.append(env.render())
        total, length, info = 0.0, 0, {"is_success": 0.0}
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated
            if record:
                frames.append(env.render())
        episode = {
            "seed": seed,
            "success": bool(info["is_success"]),
            "return": total,
            "length": length,
            "first_alarm_step": None,
        }
        for key in ("crash", "distance", "tracking_rmse", "clipped_commands", "motor_saturations"):
            if key in info:
                episode[key] = info[key]
        per_episode.append(episode)
    elapsed = time.perf_counter() - start
    env.close()
    successes = sum(e["success"] for e in per_episode)
    n = len(per_episode)
    report = {
        "env": env_id,
        "policy": config.policy,
        "episodes": n,
        "seed": config.seed,
        "randomize": config.randomize,
        "success_rate": successes / n,
        "success_ci95": list(wilson_interval(successes, n)),
        "mean_return": float(np.mean([e["return"] for e in per_episode])),
        "mean_episode_length": float(np.mean([e["length"] for e in per_episode])),
        "safety_interventions": None,
        "safety_violations": None,
        "monitor_alarms": None,
        "wall_time_s": elapsed,
        "per_episode": per_episode,
    }
    if want_video and frames:
        import imageio.v2 as imageio

        config.video.parent.mkdir(parents=True, exist_ok=True)
        fps = round(1.0 / env.unwrapped.ctrl_dt)
        imageio.mimwrite(config.video, frames, fps=fps, macro_block_size=8)
        report["video"] = str(config.video)
    if config.json is not None:
        import json

        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps(report, indent=2) + "\n")
    return report
