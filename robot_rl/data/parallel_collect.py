"""``robot-rl collect --source expert --workers N`` (or ``--ray-address``): attempts on workers, one writer.

Each worker makes the env and its scripted expert once and runs whole attempts: attempt k resets with seed
``seed + k``, exactly as :func:`robot_rl.data.collect.collect` does in one process, and sends back the steps it
recorded. This process alone writes the file, in seed order (:meth:`robot_rl.parallel.EpisodePool.ordered`),
through the same :class:`~robot_rl.data.recorder.DemoRecorder`: each kept attempt is committed atomically before
the next one is looked at, so the file holds the demos one process would have written, in the same order, and a
crash (of this process or of a worker) loses at most the attempts not yet committed. Attempts run past the last
one needed are dropped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot_rl.data.recorder import DemoRecorder, StateReader
from robot_rl.parallel import EpisodePool


def _setup(env_id: str, env_kwargs: Mapping[str, Any], seed: int) -> tuple[Any, Any, StateReader, int]:
    """A worker's env, its scripted expert, its state reader and the first seed."""
    from robot_rl.envs.registry import make, scripted_expert

    env = make(env_id, **dict(env_kwargs))
    return env, scripted_expert(env_id, env), StateReader(env), seed


def _attempt(context: tuple[Any, Any, StateReader, int], k: int) -> dict[str, Any]:
    """Attempt ``k``: the expert from ``env.reset(seed=seed + k)`` until the env ends the episode.

    Returns:
        ``seed``, ``randomization`` (the reset's draw), ``frames`` (the T + 1 observations: step t acts on frame t
        and reaches frame t + 1), ``actions``, ``rewards``, ``dones``, ``states`` (the MuJoCo state before each
        step; shape (T, S)) and ``success`` (the env's ``is_success`` at the end).
    """
    env, expert, read_state, first = context
    seed = first + k
    obs, reset_info = env.reset(seed=seed)
    expert.reset()
    frames, actions, rewards, dones, states = [obs], [], [], [], []
    info: dict[str, Any] = {}
    done = False
    while not done:
        action = expert(obs)
        if action is None:  # pragma: no cover - the scripted experts always act
            raise RuntimeError(f"the scripted expert of {env.spec.id} gave no action at step {len(actions)}.")
        states.append(read_state())
        obs, reward, terminated, truncated, info = env.step(action)
        done = bool(terminated or truncated)
        frames.append(obs)
        actions.append(action)
        rewards.append(reward)
        dones.append(done)
    return {
        "seed": seed,
        "randomization": reset_info.get("randomization"),
        "frames": frames,
        "actions": actions,
        "rewards": rewards,
        "dones": dones,
        "states": np.array(states),
        "success": bool(info.get("is_success", 0.0)),
    }


def collect_parallel(
    recorder: DemoRecorder,
    env_id: str,
    env_kwargs: Mapping[str, Any],
    episodes: int,
    seed: int,
    progress: bool,
    keep_failed: bool,
    max_attempts: int,
    workers: int | None,
    ray_address: str | None,
) -> dict[str, Any]:
    """Run the expert's attempts on workers and commit the kept ones into ``recorder`` in seed order.

    Returns:
        The summary :func:`robot_rl.data.collect.collect` returns, plus ``execution`` (the backend, the workers,
        where each committed or dropped attempt ran, the attempts run again after a worker died).

    Raises:
        RuntimeError: too many failed attempts (the demos kept so far are saved), as in one process.
    """
    bar: Any = None
    options: dict[str, Any] = {}
    if progress:
        from tqdm import tqdm

        options["log"] = tqdm.write
    start = time.perf_counter()
    kept = discarded = attempts = steps_total = ended = ended_success = 0
    args = (env_id, dict(env_kwargs), seed)
    with EpisodePool(_setup, args, _attempt, workers, ray_address, most=episodes, **options) as pool:
        if progress:
            bar = tqdm(total=episodes, desc=f"collect {env_id.split('/')[-1]} (expert)", unit="demo")
        try:
            for _, attempt in pool.ordered(range(max_attempts)):
                attempts += 1
                success = attempt["success"]
                ended += 1
                ended_success += success
                if not (success or keep_failed):
                    discarded += 1
                    continue
                frames = attempt["frames"]
                recorder.start_episode(attempt["seed"], attempt["randomization"])
                rewards, dones, states = attempt["rewards"], attempt["dones"], attempt["states"]
                for t, action in enumerate(attempt["actions"]):
                    # frames[t + 1] is both step t's next_obs and step t + 1's obs, as in one process.
                    recorder.add_step(frames[t], action, rewards[t], dones[t], frames[t + 1], states[t])
                steps_total += recorder.num_steps
                recorder.commit(success=success, env_success=success)
                kept += 1
                if bar is not None:
                    bar.update(1)
                if kept == episodes:
                    break
        finally:
            if bar is not None:
                bar.close()
    execution = pool.execution.to_json()
    if kept < episodes:
        raise RuntimeError(
            f"only {kept} of {episodes} episodes were kept after {attempts} attempts (the source failed the "
            f"rest); the {kept} kept demos are saved in {recorder.path}. Use keep_failed=True to keep failures."
        )
    counts = {"kept": kept, "discarded": discarded, "attempts": attempts, "steps": steps_total}
    report = collection_report(recorder.path, env_id, "expert", recorder, counts, ended, ended_success, False, start)
    return {**report, "execution": execution}


def collection_report(
    out: Any,
    env_id: str,
    source: str,
    recorder: Any,
    counts: dict[str, int],
    ended: int,
    ended_success: int,
    quit_requested: bool,
    start: float,
) -> dict[str, Any]:
    """What :func:`collect` (and the parallel collection) returns: where, what, the counts and how long.

    ``counts``: ``kept``, ``discarded``, ``attempts`` and ``steps``; ``ended`` episodes of which ``ended_success``
    succeeded give the attempts' success rate; ``start`` is the ``time.perf_counter()`` the collection began at.
    """
    return {
        "out": str(out),
        "env_id": env_id,
        "source": source,
        **counts,
        "demos": list(recorder.committed),
        "attempt_success_rate": ended_success / ended if ended else None,
        "quit": quit_requested,
        "wall_time_s": time.perf_counter() - start,
    }
