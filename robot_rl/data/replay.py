"""Re-simulate recorded demos (determinism check) and render them to video from their saved states."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from robot_rl.data.dataset import Demo, DemoDataset
from robot_rl.data.recorder import mujoco_state

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION


def _set_state(env: Any, state: np.ndarray) -> None:
    unwrapped = env.unwrapped
    mujoco.mj_setState(unwrapped.model, unwrapped.data, state, _STATE_SPEC)
    mujoco.mj_forward(unwrapped.model, unwrapped.data)


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, dtype=np.float64) - b))) if np.size(b) else 0.0


def _check_states(demo: Demo, where: str = "") -> None:
    """Refuse a demo without simulator states (recorded on a robot or converted from a ROS bag)."""
    states = demo.states
    if states.ndim != 2 or states.shape[1] == 0:
        raise ValueError(
            f"{where}{': ' if where else ''}{demo.name} has no simulator states (states of shape "
            f"{tuple(states.shape)}; demos recorded on a robot or converted with `robot-rl data from-bag` have "
            "none): replay and render need demos recorded in simulation. Training uses them as they are."
        )


def replay_demo(env: Any, demo: Demo, where: str = "") -> dict[str, Any]:
    """Re-simulate one demo on ``env`` and compare with what was saved.

    Resets with the demo's seed (which redraws the same goal, objects and randomization), restores
    the first saved state with ``mj_setState``, then applies the saved actions through
    ``env.step``. Compares the state before every action with ``states`` and each observation
    and reward after it with ``next_obs`` and ``rewards``.

    Returns:
        ``demo``, ``seed``, ``steps``, ``replayed_steps``, ``reset_state_deviation`` (the reset state
        vs the first saved state: 0 when recording started at the reset), ``max_state_deviation``,
        ``max_obs_deviation``, ``max_reward_deviation``, ``worst_step`` (step of the largest state
        deviation), ``saved_success``, ``replayed_success``, ``ended_early`` (the env ended the
        episode before the demo did).

    Raises:
        ValueError: the env refuses a step; the message names ``where`` (the file), the demo and the step.
    """
    _check_states(demo, where)
    env.reset(seed=demo.seed)
    reset_deviation = _max_abs(mujoco_state(env), demo.states[0])
    _set_state(env, demo.states[0])
    state_dev = obs_dev = reward_dev = 0.0
    worst = 0
    info: dict[str, Any] = {}
    ended_early = False
    steps = demo.num_samples
    t = 0
    for t in range(steps):
        deviation = _max_abs(mujoco_state(env), demo.states[t])
        if deviation > state_dev:
            state_dev, worst = deviation, t
        try:
            obs, reward, terminated, truncated, info = env.step(demo.actions[t])
        except ValueError as err:
            raise ValueError(f"{where}{': ' if where else ''}{demo.name}/actions step {t}: {err}") from None
        for key, saved in demo.next_obs.items():
            obs_dev = max(obs_dev, _max_abs(obs[key], saved[t]))
        reward_dev = max(reward_dev, abs(float(reward) - float(demo.rewards[t])))
        if (terminated or truncated) and t < steps - 1:
            ended_early = True
            break
    return {
        "demo": demo.name,
        "seed": demo.seed,
        "steps": steps,
        "replayed_steps": t + 1,
        "reset_state_deviation": reset_deviation,
        "max_state_deviation": state_dev,
        "max_obs_deviation": obs_dev,
        "max_reward_deviation": reward_dev,
        "worst_step": worst,
        "saved_success": demo.env_success,
        "replayed_success": bool(info.get("is_success", 0.0)),
        "ended_early": ended_early,
    }


def replay(
    path: str | os.PathLike[str], episodes: Sequence[int | str] | None = None, progress: bool = False
) -> dict[str, Any]:
    """Re-simulate demos through the env they were recorded on and report the largest deviations.

    The env is rebuilt from the file's ``env_id`` and ``env_kwargs``; see :func:`replay_demo` for
    what is compared. A deterministic recording replays with deviations of exactly 0.

    Args:
        path: Demonstration file.
        episodes: Demo indices or names (default: all).
        progress: Show a progress bar.

    Returns:
        ``path``, ``env_id``, ``episodes``, the maxima over demos of each deviation, the number of
        success mismatches, and ``per_episode`` (one :func:`replay_demo` dict each).
    """
    from robot_rl.envs.registry import make

    with DemoDataset(path) as ds:
        names = [ds.resolve(e) for e in episodes] if episodes is not None else list(ds.demo_names)
        env = make(ds.meta.env_id, **ds.meta.env_kwargs)
        iterator: Any = names
        if progress:
            from tqdm import tqdm

            iterator = tqdm(names, desc=f"replay {Path(path).name}", unit="demo")
        try:
            per_episode = [replay_demo(env, ds[name], str(ds.path)) for name in iterator]
        finally:
            env.close()
    keys = ("reset_state_deviation", "max_state_deviation", "max_obs_deviation", "max_reward_deviation")
    report: dict[str, Any] = {"path": str(path), "env_id": ds.meta.env_id, "episodes": len(per_episode)}
    for key in keys:
        report[key] = max((e[key] for e in per_episode), default=0.0)
    report["success_mismatches"] = sum(e["saved_success"] != e["replayed_success"] for e in per_episode)
    report["ended_early"] = sum(e["ended_early"] for e in per_episode)
    report["per_episode"] = per_episode
    return report


def format_replay(report: dict[str, Any]) -> str:
    """One summary line plus the demos that did not replay exactly."""
    lines = [
        f"{report['path']}: replayed {report['episodes']} demos of {report['env_id']}: max state deviation "
        f"{report['max_state_deviation']:.3g}, max obs deviation {report['max_obs_deviation']:.3g}, max reward "
        f"deviation {report['max_reward_deviation']:.3g}, success mismatches {report['success_mismatches']}"
    ]
    if report["reset_state_deviation"] > 0.0:
        lines.append(
            f"note: some demos do not start at their reset state (largest difference "
            f"{report['reset_state_deviation']:.3g}); they were recorded from mid-episode."
        )
    for e in report["per_episode"]:
        if e["max_state_deviation"] > 0.0 or e["ended_early"] or e["saved_success"] != e["replayed_success"]:
            lines.append(
                f"  {e['demo']} (seed {e['seed']}): state {e['max_state_deviation']:.3g} at step {e['worst_step']}, "
                f"obs {e['max_obs_deviation']:.3g}, success saved {e['saved_success']} replayed "
                f"{e['replayed_success']}{', ended early' if e['ended_early'] else ''}"
            )
    return "\n".join(lines)


def render(
    path: str | os.PathLike[str],
    out_mp4: str | os.PathLike[str],
    episodes: Sequence[int | str] | None = None,
    fps: float | None = None,
    width: int | None = None,
    height: int | None = None,
    stride: int = 1,
) -> dict[str, Any]:
    """Render demos into an MP4 from their saved states (no re-simulation: what was recorded).

    Each frame restores one saved state with ``mj_setState`` and calls ``env.render()``. Rendering
    is offscreen: on a machine without a display set ``MUJOCO_GL=osmesa`` (CPU) or ``egl`` before
    Python starts (this function sets ``osmesa`` only if MuJoCo was not imported yet).

    Args:
        path: Demonstration file.
        out_mp4: Output video.
        episodes: Demo indices or names (default: all).
        fps: Frames per second (default: real time, ``1 / ctrl_dt``).
        width: Frame width [px] (default: the env's, 480).
        height: Frame height [px] (default: the env's, 360).
        stride: Render every ``stride``-th saved state (a quicker preview; fps is divided to match).

    Returns:
        ``{"out", "episodes", "frames", "fps"}``.
    """
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    import imageio.v2 as imageio

    from robot_rl.envs.registry import make

    if stride < 1:
        raise ValueError(f"`stride` must be >= 1. Got {stride}.")
    out = Path(out_mp4)
    with DemoDataset(path) as ds:
        names = [ds.resolve(e) for e in episodes] if episodes is not None else list(ds.demo_names)
        kwargs = {k: v for k, v in ds.meta.env_kwargs.items() if k not in ("render_mode", "width", "height")}
        size = {k: v for k, v in (("width", width), ("height", height)) if v is not None}
        env = make(ds.meta.env_id, **kwargs, **size, render_mode="rgb_array")
        rate = fps or max(1, round(1.0 / (ds.meta.ctrl_dt * stride)))
        frames = 0
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with imageio.get_writer(out, fps=rate, macro_block_size=8) as writer:
                for name in names:
                    demo = ds[name]
                    _check_states(demo, str(ds.path))
                    env.reset(seed=demo.seed)  # goal marker and randomized model parameters
                    for state in demo.states[::stride]:
                        _set_state(env, state)
                        try:
                            frame = env.render()
                        except Exception as err:  # noqa: BLE001 - GL setup errors vary by backend
                            raise RuntimeError(
                                f"offscreen rendering failed ({err}). Set MUJOCO_GL=osmesa (CPU) or egl before "
                                "starting Python."
                            ) from None
                        writer.append_data(frame)
                        frames += 1
        finally:
            env.close()
    return {"out": str(out), "episodes": names, "frames": frames, "fps": rate}
