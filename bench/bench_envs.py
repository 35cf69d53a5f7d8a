"""Env step throughput: robot_rl/PandaPush-v0 against gymnasium-robotics FetchPush-v4, on one core.

Both envs run in ONE process pinned to ONE core, with seeded random actions, in several
alternating repetitions (the order flips every repetition) so both see the same machine
conditions; every number reported is the median over the repetitions.

Measured per env and repetition, on the same seeded episodes (50 steps each, reset excluded):

* env steps/s through ``gym.make`` (with the registered wrappers) and on the unwrapped env;
* simulated seconds per wall second = steps/s x control period (0.04 s for both);
* env.step against the raw cost of its MuJoCo substeps, from the SAME states: before each
  unwrapped ``env.step`` the full integration state is saved (``mjSTATE_INTEGRATION``: physics,
  warm start, and the inputs ctrl / mocap / applied forces); after it, the state is restored with
  the inputs the env just applied, ``mj_step(model, data, nstep=n_substeps)`` is timed alone,
  and the post-``env.step`` state is put back before the episode continues.

Reported: both envs side by side with their ratios, and our env.step over the raw physics cost.

Usage::

    robot-rl bench envs [--steps 3000] [--reps 5] [--out bench/results]

Writes ``envs.md`` and ``envs.json`` to ``--out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from bench import harness

OURS = "robot_rl/PandaPush-v0"
PEER = "FetchPush-v4"
EPISODE_STEPS = 50
"""Steps per seeded episode (both envs' TimeLimit)."""

_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_INPUTS = mujoco.mjtState.mjSTATE_USER  # ctrl, applied forces, mocap, eq_active, userdata


@dataclasses.dataclass(frozen=True, kw_only=True)
class EnvsOptions(harness.Options):
    """Options of ``robot-rl bench envs``."""

    steps: int = 3000
    """Env steps per env, phase and repetition (rounded up to whole 50-step episodes); 3000: about 1.5 min."""
    reps: int = 5
    """Alternating repetitions; the medians are reported."""
    seed: int = 0
    """Seed of the actions and the episode resets."""
    progress: bool = True
    """Show a progress bar on stderr."""
    min_speed_ratio: float | None = None
    """Report whether ours / FetchPush-v4 simulated seconds per wall second (gym.make) is at least this."""
    max_step_over_raw: float | None = None
    """Report whether our env.step / raw MuJoCo substeps (paired, total times) is at most this."""

    positive = ("steps", "reps")


# --------------------------------------------------------------------------- env construction
def _make(env_id: str) -> gym.Env:
    if env_id == PEER:
        # gymnasium_robotics prints a notice about the Adroit envs to stderr on import.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import gymnasium_robotics

            gym.register_envs(gymnasium_robotics)
            return gym.make(env_id)
    import robot_rl  # noqa: F401  (registers robot_rl/*)

    return gym.make(env_id)


def _wrapper_chain(env: gym.Env) -> str:
    names = []
    while isinstance(env, gym.Wrapper):
        names.append(type(env).__name__)
        env = env.env
    return " > ".join([*names, type(env).__name__])


class _Subject:
    """One env under test: its gym.make instance, unwrapped env, model and data."""

    def __init__(self, env_id: str) -> None:
        self.env_id = env_id
        self.env = _make(env_id)
        self.unwrapped = self.env.unwrapped
        self.model: mujoco.MjModel = self.unwrapped.model
        self.data: mujoco.MjData = self.unwrapped.data
        self.n_substeps = int(self.unwrapped.n_substeps)
        self.control_period = float(self.n_substeps * self.model.opt.timestep)
        self.wrappers = _wrapper_chain(self.env)
        size = mujoco.mj_stateSize(self.model, _STATE)
        self._pre = np.empty(size)
        self._post = np.empty(size)
        self._check = np.empty(size)
        self._inputs = np.empty(mujoco.mj_stateSize(self.model, _INPUTS))

    def actions(self, steps: int, seed: int) -> np.ndarray:
        """Seeded uniform random actions in the action space (the same for every phase)."""
        space = self.env.action_space
        rng = np.random.default_rng(seed)
        return rng.uniform(space.low, space.high, size=(steps, *space.shape)).astype(space.dtype)

    # ------------------------------------------------------------------------- phases
    def time_steps(self, env: gym.Env, actions: np.ndarray, seed: int, tick: Callable[[int], None]) -> float:
        """Wall time [s] of ``env.step`` over seeded 50-step episodes (resets not timed)."""
        clock = time.perf_counter
        total = 0.0
        for start in range(0, len(actions), EPISODE_STEPS):
            env.reset(seed=seed + start // EPISODE_STEPS)
            chunk = actions[start : start + EPISODE_STEPS]
            step = env.step
            t0 = clock()
            for action in chunk:
                step(action)
            total += clock() - t0
            tick(len(chunk))
        return total

    def time_against_raw(self, actions: np.ndarray, seed: int, tick: Callable[[int], None]) -> dict[str, Any]:
        """Unwrapped env.step and raw ``mj_step(nstep=n_substeps)`` timed from the same states."""
        env, m, d, n = self.unwrapped, self.model, self.data, self.n_substeps
        pre, post, check, inputs = self._pre, self._post, self._check, self._inputs
        clock = time.perf_counter
        env_times, raw_times = [], []
        replay_exact = True
        for start in range(0, len(actions), EPISODE_STEPS):
            env.reset(seed=seed + start // EPISODE_STEPS)
            for action in actions[start : start + EPISODE_STEPS]:
                mujoco.mj_getState(m, d, pre, _STATE)
                t0 = clock()
                env.step(action)
                t1 = clock()
                mujoco.mj_getState(m, d, post, _STATE)
                mujoco.mj_getState(m, d, inputs, _INPUTS)  # what the env applied this step
                mujoco.mj_setState(m, d, pre, _STATE)
                mujoco.mj_setState(m, d, inputs, _INPUTS)
                t2 = clock()
                mujoco.mj_step(m, d, nstep=n)
                t3 = clock()
                mujoco.mj_getState(m, d, check, _STATE)
                replay_exact = replay_exact and bool(np.array_equal(check, post))
                mujoco.mj_setState(m, d, post, _STATE)
                env_times.append(t1 - t0)
                raw_times.append(t3 - t2)
            tick(EPISODE_STEPS)
        return {
            "env_step_s": math.fsum(env_times),
            "raw_s": math.fsum(raw_times),
            "env_step_median_s": statistics.median(env_times),
            "raw_median_s": statistics.median(raw_times),
            "replay_exact": replay_exact,
        }

    def run_rep(self, steps: int, seed: int, tick: Callable[[int], None]) -> dict[str, float]:
        """All phases once; per-step times in microseconds."""
        actions = self.actions(steps, seed)
        gc.collect()
        wrapped = self.time_steps(self.env, actions, seed, tick)
        gc.collect()
        unwrapped = self.time_steps(self.unwrapped, actions, seed, tick)
        gc.collect()
        paired = self.time_against_raw(actions, seed, tick)
        us = 1e6 / steps
        return {
            "wrapped_step_us": wrapped * us,
            "unwrapped_step_us": unwrapped * us,
            "paired_env_step_us": paired["env_step_s"] * us,
            "raw_substeps_us": paired["raw_s"] * us,
            "paired_env_step_median_us": paired["env_step_median_s"] * 1e6,
            "raw_substeps_median_us": paired["raw_median_s"] * 1e6,
            "replay_exact": paired["replay_exact"],
        }


# ---------------------------------------------------------------------------- reporting
def _summary(reps: list[dict[str, float]], control_period: float) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in reps)

    def spread(key: str) -> list[float]:
        values = [r[key] for r in reps]
        return [min(values), max(values)]

    ratios = [r["paired_env_step_us"] / r["raw_substeps_us"] for r in reps]
    median_ratios = [r["paired_env_step_median_us"] / r["raw_substeps_median_us"] for r in reps]
    free_ratios = [r["unwrapped_step_us"] / r["raw_substeps_us"] for r in reps]
    wrapped_ratios = [r["wrapped_step_us"] / r["raw_substeps_us"] for r in reps]
    out = {
        "control_period_s": control_period,
        "wrapped_steps_per_s": 1e6 / med("wrapped_step_us"),
        "unwrapped_steps_per_s": 1e6 / med("unwrapped_step_us"),
        "wrapped_step_us": med("wrapped_step_us"),
        "unwrapped_step_us": med("unwrapped_step_us"),
        "paired_env_step_us": med("paired_env_step_us"),
        "raw_substeps_us": med("raw_substeps_us"),
        "env_step_over_raw": statistics.median(ratios),
        "env_step_over_raw_range": [min(ratios), max(ratios)],
        "step_over_raw_medians": statistics.median(median_ratios),
        "unwrapped_free_step_over_raw": statistics.median(free_ratios),
        "wrapped_step_over_raw": statistics.median(wrapped_ratios),
        "overhead_us": med("paired_env_step_us") - med("raw_substeps_us"),
        "wrapped_step_us_range": spread("wrapped_step_us"),
        "raw_substeps_us_range": spread("raw_substeps_us"),
        "replay_exact": all(r["replay_exact"] for r in reps),
        "repetitions": reps,
    }
    out["wrapped_sim_s_per_wall_s"] = out["wrapped_steps_per_s"] * control_period
    out["unwrapped_sim_s_per_wall_s"] = out["unwrapped_steps_per_s"] * control_period
    return out


def _table(results: dict[str, Any]) -> list[str]:
    ours, peer = results["envs"][OURS], results["envs"][PEER]

    def row(label: str, key: str, fmt: str, ratio: bool = True) -> tuple[str, float, float, str, bool]:
        return (label, ours[key], peer[key], fmt, ratio)

    return harness.side_by_side(
        (OURS, PEER),
        [
            row("env steps/s (gym.make)", "wrapped_steps_per_s", ",.0f"),
            row("env steps/s (unwrapped)", "unwrapped_steps_per_s", ",.0f"),
            row("sim s per wall s (gym.make)", "wrapped_sim_s_per_wall_s", ".2f"),
            row("sim s per wall s (unwrapped)", "unwrapped_sim_s_per_wall_s", ".2f"),
            row("env.step, gym.make [us]", "wrapped_step_us", ".1f"),
            row("env.step, unwrapped, paired [us]", "paired_env_step_us", ".1f"),
            row("raw mj_step x n_substeps, same states [us]", "raw_substeps_us", ".1f"),
            row("env.step overhead over raw [us]", "overhead_us", ".1f", ratio=False),
            row("**env.step / raw** (unwrapped, paired, total times)", "env_step_over_raw", ".3f", ratio=False),
            row("env.step / raw (paired, per-step medians)", "step_over_raw_medians", ".3f", ratio=False),
            row("env.step / raw (unwrapped, free-running)", "unwrapped_free_step_over_raw", ".3f", ratio=False),
            row("env.step / raw (gym.make, free-running)", "wrapped_step_over_raw", ".3f", ratio=False),
        ],
        f"metric (median of {results['config']['reps']} reps)",
    )


def _period(env: dict[str, Any]) -> str:
    return f"{env['control_period_s']:g} s ({env['n_substeps']} x {env['timestep_s'] * 1e3:g} ms)"


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    ours, peer = results["envs"][OURS], results["envs"][PEER]
    ratios = results["ratios"]
    return "\n".join(
        [
            *harness.header(f"Env benchmark: {OURS} vs {PEER}", results),
            f"- Run: {cfg['reps']} alternating repetitions x {cfg['steps']} steps per env and phase, pinned to one "
            f"core, seeded random actions (seed {cfg['seed']}), {EPISODE_STEPS}-step seeded episodes; resets are not "
            f"timed. Wall time {results['wall_s']:.0f} s.",
            f"- Control period: ours {_period(ours)}; Fetch {_period(peer)}.",
            f"- gym.make wrappers: ours `{ours['wrappers']}`; Fetch `{peer['wrappers']}`.",
            "",
            *_table(results),
            "",
            f"Ours over Fetch in simulated seconds per wall second: "
            f"{ratios['ours_over_fetch_sim_s_per_wall_s_wrapped']:.2f}x through gym.make, "
            f"{ratios['ours_over_fetch_sim_s_per_wall_s_unwrapped']:.2f}x unwrapped; the raw physics alone (per "
            f"simulated second) runs {ratios['ours_over_fetch_raw_physics_speed']:.2f}x as fast.",
            "",
            *harness.threshold_lines(results),
            "## Method",
            "",
            "Each repetition runs, for each env (the order flips every repetition), the same seeded episodes three "
            "times: through `gym.make`, on the unwrapped env, and paired. Paired: before each unwrapped `env.step` "
            "the full `mjSTATE_INTEGRATION` state (physics, warm start, ctrl/mocap/applied forces) is saved; after "
            "it the saved state is restored with the inputs the env applied (`mjSTATE_USER`), and "
            "`mj_step(model, data, nstep=n_substeps)` alone is timed from that same state; then the post-step state "
            "is put back, so all three passes visit the same states. Raw replay reproduced the env's next state bit "
            f"for bit: ours {ours['replay_exact']}, Fetch {peer['replay_exact']} (Fetch's step also runs a "
            "`_step_callback` that pins the blocked gripper and calls `mj_forward` after the substeps, so its state "
            "differs).",
            "",
            "Every number is the median over repetitions of a per-repetition value. Steps/s and env.step / raw use "
            'total times (means over all steps, interruptions included); "per-step medians" uses per-step medians '
            "instead, which is less sensitive to other load on the machine. The paired env.step runs with a raw "
            "replay between consecutive steps, which evicts the env's code and data from the caches (much like "
            "policy inference in a training loop); the free-running rows divide the env.step time of the plain "
            'passes by the same raw cost. "sim s per wall s" = steps/s x control period.',
            "",
        ]
    )


def measure(options: EnvsOptions, run: harness.Run) -> dict[str, Any]:
    """The two envs, alternating, on one core; the results of ``envs.json``."""
    from tqdm import tqdm

    steps, reps, seed = -(-options.steps // EPISODE_STEPS) * EPISODE_STEPS, options.reps, options.seed
    with harness.one_core():
        machine = run.machine()
        subjects = [_Subject(OURS), _Subject(PEER)]
        for s in subjects:  # warm up caches, lazy allocations and the passive env checker
            s.run_rep(EPISODE_STEPS, seed + 10_000, lambda n: None)
        per_env: dict[str, list[dict[str, float]]] = {s.env_id: [] for s in subjects}
        start = time.perf_counter()
        total = reps * len(subjects) * 3 * steps
        with tqdm(total=total, unit="step", disable=not options.progress, file=sys.stderr) as bar:
            for rep in range(reps):
                order = subjects if rep % 2 == 0 else subjects[::-1]
                for s in order:
                    bar.set_description(f"rep {rep + 1}/{reps} {s.env_id}")
                    per_env[s.env_id].append(s.run_rep(steps, seed, bar.update))
        wall = time.perf_counter() - start
    envs = {}
    for s in subjects:
        summary = _summary(per_env[s.env_id], s.control_period)
        summary.update(n_substeps=s.n_substeps, timestep_s=float(s.model.opt.timestep), wrappers=s.wrappers)
        envs[s.env_id] = summary
        s.env.close()
    ours, peer = envs[OURS], envs[PEER]
    speed = ours["wrapped_sim_s_per_wall_s"] / peer["wrapped_sim_s_per_wall_s"]
    results: dict[str, Any] = {
        "config": {"steps": steps, "reps": reps, "seed": seed, "episode_steps": EPISODE_STEPS},
        "machine": machine,
        "wall_s": wall,
        "envs": envs,
        "ratios": {
            "ours_over_fetch_sim_s_per_wall_s_wrapped": speed,
            "ours_over_fetch_sim_s_per_wall_s_unwrapped": ours["unwrapped_sim_s_per_wall_s"]
            / peer["unwrapped_sim_s_per_wall_s"],
            "ours_over_fetch_raw_physics_speed": peer["raw_substeps_us"]
            / peer["control_period_s"]
            / (ours["raw_substeps_us"] / ours["control_period_s"]),
        },
        **harness.thresholds(
            harness.threshold(
                f"ours / {PEER} simulated seconds per wall second (gym.make)",
                speed,
                options.min_speed_ratio,
                at_most=False,
                unit="x",
            ),
            harness.threshold(
                "our env.step / raw MuJoCo substeps (paired, total times)",
                ours["env_step_over_raw"],
                options.max_step_over_raw,
                at_most=True,
                unit="x",
            ),
        ),
    }
    print("\n".join(_table(results)))
    harness.print_thresholds(results)
    return results


BENCHMARK = harness.Benchmark(
    name="envs",
    options=EnvsOptions,
    measure=measure,
    markdown=markdown,
    stem="envs",
    packages=("numpy", "mujoco", "gymnasium", "gymnasium-robotics", "tqdm"),
)
