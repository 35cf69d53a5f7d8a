"""``robot-rl data view FILE.hdf5``: a demonstration file as an MCAP file for Foxglove.

Each demo becomes an episode on one timeline, with the channels of :mod:`robot_rl.data.mcap_log`: the scene
from the env's MuJoCo model, the bodies' poses from the saved simulator states (``states``, restored with
``mj_setState`` and a kinematics pass: what was recorded, not a re-simulation), the recorded action (as both
the policy's and the command: a demo stores what was sent), the goal, the reward, the human-intervention flag
when the demo tracked one, and each demo's success. A demo without states (recorded on a robot, converted
from a ROS bag) gets every channel but the moving scene (the static scene and the goal are still drawn).
There is no safety or monitor channel: a demo file does not record them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from robot_rl.data.dataset import DemoDataset
from robot_rl.data.mcap_log import RolloutLog

_STATE_SPEC = int(mujoco.mjtState.mjSTATE_INTEGRATION)


def demos_to_mcap(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    episodes: Sequence[int | str] | None = None,
) -> dict[str, Any]:
    """Write the demos of ``path`` into an MCAP file (see the module docstring).

    Args:
        path: The demonstration HDF5 file.
        out: The MCAP file (default: ``path`` with the suffix ``.mcap``).
        episodes: Demo indices or names (default: all).

    Returns:
        ``out``, ``env_id``, ``episodes`` (demo names), ``steps``, ``without_states`` (demos drawn without the
        moving scene), ``messages`` (per topic) and ``notes``.

    Raises:
        RuntimeError: the MCAP file cannot be written (the reason in the message).
        ValueError: the demo file is refused (:class:`~robot_rl.data.dataset.DemoDataset`).
    """
    from robot_rl.envs.registry import make

    target = Path(out) if out is not None else Path(path).with_suffix(".mcap")
    errors: list[str] = []
    with DemoDataset(path) as ds:
        names = [ds.resolve(e) for e in episodes] if episodes is not None else list(ds.demo_names)
        kwargs = {k: v for k, v in ds.meta.env_kwargs.items() if k not in ("render_mode", "width", "height")}
        env = make(ds.meta.env_id, **kwargs)
        try:
            unwrapped = env.unwrapped
            model, data = unwrapped.model, unwrapped.data
            log = RolloutLog(
                target, model, getattr(unwrapped, "distance_threshold", None), label=str(target), warn=errors.append
            )
            if not log.enabled:
                raise RuntimeError(errors[0] if errors else f"{target}: cannot be written.")
            dt_ns = round(ds.meta.ctrl_dt * 1e9)
            clock = time.time_ns()
            log.info(
                clock,
                {"source": str(path), "env_id": ds.meta.env_id, "ctrl_dt": ds.meta.ctrl_dt, "demos": len(names)},
            )
            steps, without = 0, []
            for k, name in enumerate(names):
                demo = ds[name]
                env.reset(seed=demo.seed)  # the randomized model parameters and the goal of that episode
                has_states = demo.states.ndim == 2 and demo.states.shape[1] > 0
                if has_states:
                    mujoco.mj_setState(model, data, demo.states[0], _STATE_SPEC)
                    mujoco.mj_kinematics(model, data)
                else:
                    without.append(name)
                goal = demo.obs["desired_goal"][0] if "desired_goal" in demo.obs else None
                log.start_episode(clock, k, demo.seed, data, goal)
                total = 0.0
                for t in range(demo.num_samples):
                    stamp = clock + t * dt_ns
                    action = demo.actions[t]
                    human = None if demo.interventions is None else bool(demo.interventions[t])
                    log.action(stamp, k, t, action, action, None, human)
                    reward = float(demo.rewards[t])
                    total += reward
                    if has_states and t + 1 < demo.num_samples:
                        mujoco.mj_setState(model, data, demo.states[t + 1], _STATE_SPEC)
                        mujoco.mj_kinematics(model, data)
                        log.poses(stamp + dt_ns, data)
                    if "desired_goal" in demo.next_obs and "achieved_goal" in demo.next_obs:
                        desired, achieved = demo.next_obs["desired_goal"][t], demo.next_obs["achieved_goal"][t]
                        log.goal(stamp + dt_ns, k, t, desired, achieved, reward, total)
                end = clock + demo.num_samples * dt_ns
                summary = {
                    "demo": name,
                    "seed": demo.seed,
                    "success": bool(demo.success),
                    "return": total,
                    "length": demo.num_samples,
                    "source": demo.source,
                    "intervention_steps": None if demo.interventions is None else int(np.sum(demo.interventions)),
                }
                log.end_episode(end, k, summary)
                clock = end + dt_ns
                steps += demo.num_samples
            counts = dict(log.file.counts)
            result = log.close()
        finally:
            env.close()
    if result.startswith("off:"):
        raise RuntimeError(result[len("off: ") :])
    notes = list(log.scene.notes) if log.scene is not None else []
    if without:
        notes.append(f"{len(without)} demos have no simulator states: drawn without the moving scene")
    return {
        "out": str(target),
        "env_id": ds.meta.env_id,
        "episodes": names,
        "steps": steps,
        "without_states": without,
        "messages": counts,
        "notes": notes,
    }
