"""Quadrotor: simulation speed with the rate controller in the loop (one core), and the expert's flight quality.

Speed, in ONE process pinned to ONE core, for QuadrotorHover and QuadrotorWaypoint (``harness.env_id``: v1) with
physics at 500 Hz (``sim_dt=0.002``, 10 physics steps per 50 Hz policy step) and at 1 kHz
(``sim_dt=0.001``, 20 per step). The on-board rate controller and mixer run in Python at every
physics step, so they are always in the loop. The four configurations run in several alternating
repetitions (the order flips every repetition); every number reported is a median over them.
Per configuration and repetition, on seeded episodes (resets not timed):

* expert-flown through ``gym.make``: ``env.step`` timed alone; the expert's call timed apart;
* seeded uniform random actions through ``gym.make`` (episodes end early on crashes);
* the per-physics-step split, paired on the unwrapped env flown by the expert: before each
  ``env.step`` the full integration state and the controller state are saved; after it the step's
  physics-step loop is replayed from the saved state with a timer between the rate controller +
  mixer and ``mj_step`` (the replay must reproduce the env's next state bit for bit), then raw
  ``mj_step(nstep=n_substeps)`` with the inputs held is timed from the same state, and the env's
  post-step state is put back.

Simulated seconds per wall second = env steps/s x ctrl_dt (0.02 s).

Quality, with the expert over seeds 0..N-1 at the default physics rate, randomization off
(``nominal``) and on (``randomize="train"``): Hover RMS position error over the last 1 s, Waypoint
success rate (Wilson 95% interval), Track RMSE (``info["tracking_rmse"]`` at the episode's end).

Usage::

    robot-rl bench quadrotor [--steps 3000] [--reps 5] [--episodes 100] [--out bench/results]

Writes ``quadrotor.md`` and ``quadrotor.json`` to ``--out``.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

import robot_rl  # noqa: F401  (registers robot_rl/*)
from bench import harness
from robot_rl.envs.quadrotor.expert import QuadrotorExpert
from robot_rl.envs.quadrotor.quadrotor_env import MAX_RATES
from robot_rl.evaluation.evaluate import wilson_interval

HOVER = harness.env_id("QuadrotorHover")
WAYPOINT = harness.env_id("QuadrotorWaypoint")
TRACK = harness.env_id("QuadrotorTrack")
SPEED_ENVS = (HOVER, WAYPOINT)
SIM_DTS = (0.002, 0.001)
"""Physics steps timed: 500 Hz and 1 kHz."""
RANDOMIZATIONS = ("nominal", "train")


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuadrotorOptions(harness.Options):
    """Options of ``robot-rl bench quadrotor``."""

    steps: int = 3000
    """Env steps per configuration, phase and repetition (about 1 min for the speed part on one core)."""
    reps: int = 5
    """Alternating repetitions; the medians are reported."""
    episodes: int = 100
    """Expert episodes (seeds 0..N-1) per task and randomization for Hover and Waypoint; Track runs half, rounded
    up (its episodes are twice as long); 0 skips the quality part."""
    seed: int = 0
    """Seed of the speed runs' random actions and episode resets (not of the quality episodes)."""
    progress: bool = True
    """Show progress bars on stderr."""
    min_realtime: float | None = None
    """Report whether the slowest 500 Hz configuration reaches at least this many simulated seconds per wall
    second."""
    max_hover_rms_cm: float | None = None
    """Report whether Hover's mean RMS error over the last 1 s is at most this [cm] (and no crash)."""
    min_waypoint_success: float | None = None
    """Report whether Waypoint's success rate is at least this."""

    positive = ("steps", "reps")


PUBLISHED = [
    {
        "name": "safe-control-gym quadrotor (PyBullet)",
        "control_hz": 50,
        "physics_hz": 1000,
        "sim_s_per_wall_s": 9.28,
        "conditions": "open-loop random actions, no GUI, no constraints/disturbances (7.62x with them)",
    },
    {
        "name": "gym-pybullet-drones (PyBullet)",
        "control_hz": 50,
        "physics_hz": 1000,
        "sim_s_per_wall_s": 21.50,
        "conditions": "open-loop random actions, no GUI",
    },
]
PUBLISHED_SOURCE = (
    "safe-control-gym README, performance table (github.com/utiasDSL/safe-control-gym): 'Speed-Up = "
    "Elapsed Simulation Time / Elapsed Wall Clock Time; on a 2.30GHz Quad-Core i7-1068NG7 with 32GB "
    "3733MHz LPDDR4X; no GPU'"
)

_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_INPUTS = mujoco.mjtState.mjSTATE_USER  # ctrl, applied forces, mocap, eq_active, userdata


def _hz(sim_dt: float) -> str:
    hz = round(1.0 / sim_dt)
    return f"{hz // 1000} kHz" if hz % 1000 == 0 else f"{hz} Hz"


def _short(env_id: str) -> str:
    return harness.short(env_id).removeprefix("Quadrotor")


def _task(row: dict[str, Any]) -> str:
    """A quality row's task (``Hover``), whatever the version of its env id."""
    return _short(row["env_id"])


# ----------------------------------------------------------------------------- speed subject
class _Subject:
    """One env id at one physics step: its gym.make instance, unwrapped env, model, data, expert."""

    def __init__(self, env_id: str, sim_dt: float) -> None:
        self.env_id = env_id
        self.sim_dt = sim_dt
        self.label = f"{_short(env_id)} {_hz(sim_dt)}"
        self.env = gym.make(env_id, sim_dt=sim_dt)
        self.unwrapped = self.env.unwrapped
        self.model: mujoco.MjModel = self.unwrapped.model
        self.data: mujoco.MjData = self.unwrapped.data
        self.n_substeps = int(self.unwrapped.n_substeps)
        self.ctrl_dt = float(self.unwrapped.ctrl_dt)
        self.max_episode_steps = int(self.env.spec.max_episode_steps)
        self.expert = QuadrotorExpert(self.unwrapped.params, self.unwrapped.ctrl_dt)
        self.body = self.model.body("cf2").id
        size = mujoco.mj_stateSize(self.model, _STATE)
        self._pre = np.empty(size)
        self._post = np.empty(size)
        self._check = np.empty(size)
        self._inputs = np.empty(mujoco.mj_stateSize(self.model, _INPUTS))

    # ----------------------------------------------------------------------- phases
    def time_expert(self, steps: int, seed: int, tick: Callable[[int], None]) -> dict[str, Any]:
        """Expert-flown episodes through gym.make: per-step env.step times and the expert's total."""
        env, expert, clock = self.env, self.expert, time.perf_counter
        step_times: list[float] = []
        expert_s = 0.0
        episode = 0
        while len(step_times) < steps:
            obs, _ = env.reset(seed=seed + episode)
            expert.reset()
            episode += 1
            start = len(step_times)
            while len(step_times) < steps:
                t0 = clock()
                action = expert(obs)
                t1 = clock()
                obs, _, terminated, truncated, _ = env.step(action)
                t2 = clock()
                expert_s += t1 - t0
                step_times.append(t2 - t1)
                if terminated or truncated:
                    break
            tick(len(step_times) - start)
        return {"step_s": math.fsum(step_times), "step_median_s": statistics.median(step_times), "expert_s": expert_s}

    def time_random(self, actions: np.ndarray, seed: int, tick: Callable[[int], None]) -> dict[str, Any]:
        """Seeded random actions through gym.make; an episode ends on a crash or the time limit."""
        env, clock = self.env, time.perf_counter
        total, done, episode, crashes = 0.0, 0, 0, 0
        step = env.step
        while done < len(actions):
            env.reset(seed=seed + episode)
            episode += 1
            start = done
            t0 = clock()
            while done < len(actions):
                _, _, terminated, truncated, _ = step(actions[done])
                done += 1
                if terminated or truncated:
                    crashes += int(terminated)
                    break
            total += clock() - t0
            tick(done - start)
        return {"step_s": total, "episodes": episode, "crashes": crashes}

    def _replay(self, action: np.ndarray, rate_ctl: Any, mixer: Any) -> tuple[float, float]:
        """The env's physics-step loop (quadrotor_env.QuadrotorEnv._simulate) with timers.

        Returns the time [s] in the rate controller + mixer (with the reads and writes of qvel,
        ctrl and the drag/gust force) and in ``mj_step``, summed over the ``n_substeps`` steps.
        """
        env = self.unwrapped
        clock = time.perf_counter
        a0, a1, a2, a3 = np.minimum(np.maximum(action, -1.0), 1.0).tolist()
        thrust = 0.5 * (a0 + 1.0) * env.params.max_thrust
        rates_des = (a1 * MAX_RATES[0], a2 * MAX_RATES[1], a3 * MAX_RATES[2])
        # Randomization is off in the speed runs (drag 0, no gust), read from the env all the same
        # so that the replay matches _simulate; its exactness is checked by the caller.
        drag = env._sample.drag_coefficient
        gx, gy, gz = env._gust
        model, data = self.model, self.data
        qvel, ctrl, force = data.qvel, data.ctrl, data.xfrc_applied[self.body]
        step = mujoco.mj_step
        ctl_s = phys_s = 0.0
        for _ in range(self.n_substeps):
            t0 = clock()
            vx, vy, vz, p, q, r = qvel[0:6].tolist()
            ctrl[:] = mixer.rotor_thrusts(thrust, rate_ctl.torque(rates_des, (p, q, r)))
            force[0:3] = (gx - drag * vx, gy - drag * vy, gz - drag * vz)
            t1 = clock()
            step(model, data)
            t2 = clock()
            ctl_s += t1 - t0
            phys_s += t2 - t1
        return ctl_s, phys_s

    def time_split(self, steps: int, seed: int, tick: Callable[[int], None]) -> dict[str, Any]:
        """Unwrapped env.step vs its controller and physics, replayed from the same states."""
        env, expert, m, d, n = self.unwrapped, self.expert, self.model, self.data, self.n_substeps
        pre, post, check, inputs = self._pre, self._post, self._check, self._inputs
        clock = time.perf_counter
        env_times: list[float] = []
        ctl_total = phys_total = raw_total = 0.0
        replay_exact = True
        episode = 0
        while len(env_times) < steps:
            obs, _ = env.reset(seed=seed + episode)
            expert.reset()
            episode += 1
            start = len(env_times)
            for _ in range(self.max_episode_steps):
                action = expert(obs)
                mujoco.mj_getState(m, d, pre, _STATE)
                rate_ctl, mixer = copy.deepcopy(env.rate_controller), copy.deepcopy(env.mixer)
                t0 = clock()
                obs, _, terminated, _, _ = env.step(action)
                t1 = clock()
                env_times.append(t1 - t0)
                mujoco.mj_getState(m, d, post, _STATE)
                mujoco.mj_getState(m, d, inputs, _INPUTS)  # the inputs of the last physics step
                # 1) the env's loop, instrumented, from the same state and controller state
                mujoco.mj_setState(m, d, pre, _STATE)
                ctl_s, phys_s = self._replay(action, rate_ctl, mixer)
                mujoco.mj_getState(m, d, check, _STATE)
                replay_exact = replay_exact and bool(np.array_equal(check, post))
                # 2) raw mj_step x n_substeps, inputs held, no timer inside the loop
                mujoco.mj_setState(m, d, pre, _STATE)
                mujoco.mj_setState(m, d, inputs, _INPUTS)
                t2 = clock()
                mujoco.mj_step(m, d, nstep=n)
                t3 = clock()
                mujoco.mj_setState(m, d, post, _STATE)
                ctl_total += ctl_s
                phys_total += phys_s
                raw_total += t3 - t2
                if terminated or len(env_times) >= steps:
                    break
            tick(len(env_times) - start)
        return {
            "env_step_s": math.fsum(env_times),
            "ctl_s": ctl_total,
            "phys_s": phys_total,
            "raw_nstep_s": raw_total,
            "replay_exact": replay_exact,
        }

    def run_rep(self, steps: int, seed: int, tick: Callable[[int], None]) -> dict[str, Any]:
        """All phases once; times per env step or per physics step in microseconds."""
        space = self.env.action_space
        actions = np.random.default_rng(seed).uniform(space.low, space.high, size=(steps, *space.shape))
        gc.collect()
        flown = self.time_expert(steps, seed, tick)
        gc.collect()
        rand = self.time_random(actions, seed, tick)
        gc.collect()
        split = self.time_split(steps, seed, tick)
        us, n = 1e6 / steps, self.n_substeps
        return {
            "expert_flown_step_us": flown["step_s"] * us,
            "expert_flown_step_median_us": flown["step_median_s"] * 1e6,
            "expert_call_us": flown["expert_s"] * us,
            "random_step_us": rand["step_s"] * us,
            "random_steps": steps,
            "random_episodes": rand["episodes"],
            "random_crashes": rand["crashes"],
            "paired_env_step_us": split["env_step_s"] * us,
            "paired_env_step_per_physics_us": split["env_step_s"] * us / n,
            "controller_mixer_per_physics_us": split["ctl_s"] * us / n,
            "mj_step_per_physics_us": split["phys_s"] * us / n,
            "raw_nstep_per_physics_us": split["raw_nstep_s"] * us / n,
            "rest_per_env_step_us": (split["env_step_s"] - split["ctl_s"] - split["phys_s"]) * us,
            "replay_exact": split["replay_exact"],
        }


def _summary(s: _Subject, reps: list[dict[str, Any]]) -> dict[str, Any]:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in reps)

    def spread(key: str) -> list[float]:
        values = [r[key] for r in reps]
        return [min(values), max(values)]

    dt = s.ctrl_dt
    sim_x = [dt * 1e6 / r["expert_flown_step_us"] for r in reps]
    rand_x = [dt * 1e6 / r["random_step_us"] for r in reps]
    out = {
        "env_id": s.env_id,
        "sim_dt_s": s.sim_dt,
        "physics_hz": round(1.0 / s.sim_dt),
        "ctrl_dt_s": dt,
        "n_substeps": s.n_substeps,
        "expert_flown_sim_s_per_wall_s": statistics.median(sim_x),
        "expert_flown_sim_s_per_wall_s_range": [min(sim_x), max(sim_x)],
        "expert_flown_sim_s_per_wall_s_from_step_medians": dt * 1e6 / med("expert_flown_step_median_us"),
        "random_sim_s_per_wall_s": statistics.median(rand_x),
        "random_sim_s_per_wall_s_range": [min(rand_x), max(rand_x)],
        "closed_loop_with_expert_sim_s_per_wall_s": statistics.median(
            dt * 1e6 / (r["expert_flown_step_us"] + r["expert_call_us"]) for r in reps
        ),
        "expert_flown_steps_per_s": 1e6 / med("expert_flown_step_us"),
        "random_steps_per_s": 1e6 / med("random_step_us"),
        "random_mean_episode_steps": statistics.median(r["random_steps"] / r["random_episodes"] for r in reps),
        "replay_exact": all(r["replay_exact"] for r in reps),
        "expert_flown_step_us_range": spread("expert_flown_step_us"),
        "repetitions": reps,
    }
    for key in (
        "expert_flown_step_us",
        "expert_flown_step_median_us",
        "expert_call_us",
        "random_step_us",
        "paired_env_step_us",
        "paired_env_step_per_physics_us",
        "controller_mixer_per_physics_us",
        "mj_step_per_physics_us",
        "raw_nstep_per_physics_us",
        "rest_per_env_step_us",
    ):
        out[key] = med(key)
    out["controller_share_of_env_step"] = (
        out["controller_mixer_per_physics_us"] * s.n_substeps / out["paired_env_step_us"]
    )
    return out


# --------------------------------------------------------------------------------- quality
def _quality(env_id: str, randomize: str, episodes: int, tick: Callable[[int], None]) -> dict[str, Any]:
    """The expert over seeds 0..episodes-1: per-episode final info, crash and RMS error of the last 1 s."""
    env = gym.make(env_id, randomize=randomize)
    u = env.unwrapped
    expert = QuadrotorExpert(u.params, u.ctrl_dt)
    last = round(1.0 / u.ctrl_dt)
    rows = []
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        expert.reset()
        distances: list[float] = []
        while True:
            obs, _, terminated, truncated, info = env.step(expert(obs))
            distances.append(info["distance"])
            if terminated or truncated:
                break
        tail = distances[-last:]
        rows.append(
            {
                "seed": seed,
                "steps": len(distances),
                "crash": info["crash"],
                "is_success": bool(info["is_success"]),
                "rms_last_1s_m": math.sqrt(math.fsum(x * x for x in tail) / len(tail)),
                "final_distance_m": distances[-1],
                "tracking_rmse_m": info.get("tracking_rmse"),
            }
        )
        tick(1)
    env.close()
    n = len(rows)
    successes = sum(r["is_success"] for r in rows)
    low, high = wilson_interval(successes, n)
    rms = [r["rms_last_1s_m"] for r in rows]
    out: dict[str, Any] = {
        "env_id": env_id,
        "randomize": randomize,
        "episodes": n,
        "seeds": [0, n - 1],
        "sim_dt_s": float(u.sim_dt),
        "crashes": sum(r["crash"] is not None for r in rows),
        "success_rate": successes / n,
        "success_ci95": [low, high],
        "rms_last_1s_cm_mean": 100.0 * statistics.fmean(rms),
        "rms_last_1s_cm_median": 100.0 * statistics.median(rms),
        "rms_last_1s_cm_max": 100.0 * max(rms),
        "rms_last_1s_cm_pooled": 100.0 * math.sqrt(statistics.fmean(x * x for x in rms)),
    }
    rmse = [r["tracking_rmse_m"] for r in rows if r["tracking_rmse_m"] is not None]
    if rmse:
        out["tracking_rmse_m_mean"] = statistics.fmean(rmse)
        out["tracking_rmse_m_max"] = max(rmse)
    worst = max(rows, key=lambda r: r["rms_last_1s_m"])
    out["worst_rms_seed"] = worst["seed"]
    out["failed_seeds"] = [r["seed"] for r in rows if not r["is_success"]]
    out["crashes_by_seed"] = {str(r["seed"]): r["crash"] for r in rows if r["crash"] is not None}
    # Per seed (index = seed), rounded to keep the JSON small.
    out["per_seed_rms_last_1s_cm"] = [round(100.0 * r["rms_last_1s_m"], 3) for r in rows]
    if rmse:
        out["per_seed_tracking_rmse_m"] = [round(x, 5) for x in rmse]
    return out


# ------------------------------------------------------------------------------- reporting
def _speed_table(results: dict[str, Any]) -> str:
    cfgs = list(results["speed"].values())
    head = " | ".join(f"{_short(c['env_id'])} {_hz(c['sim_dt_s'])}" for c in cfgs)

    def row(label: str, key: str, fmt: str) -> str:
        return f"| {label} | " + " | ".join(f"{c[key]:{fmt}}" for c in cfgs) + " |"

    return "\n".join(
        [
            f"| metric (median of {results['config']['reps']} reps, one core) | {head} |",
            "|---|" + "---:|" * len(cfgs),
            row("physics steps per env step (ctrl_dt 0.02 s)", "n_substeps", "d"),
            row("**sim s per wall s, expert-flown** (env.step only, gym.make)", "expert_flown_sim_s_per_wall_s", ".1f"),
            row(
                "sim s per wall s, expert-flown, from per-step medians",
                "expert_flown_sim_s_per_wall_s_from_step_medians",
                ".1f",
            ),
            row("**sim s per wall s, random actions** (gym.make)", "random_sim_s_per_wall_s", ".1f"),
            row(
                "sim s per wall s, closed loop incl. the expert's call",
                "closed_loop_with_expert_sim_s_per_wall_s",
                ".1f",
            ),
            row("env steps/s, expert-flown", "expert_flown_steps_per_s", ",.0f"),
            row("env.step, expert-flown [us]", "expert_flown_step_us", ".1f"),
            row("env.step, random actions [us]", "random_step_us", ".1f"),
            row("expert, per call [us] (not in env.step)", "expert_call_us", ".1f"),
            row("random-action episodes, mean length [env steps]", "random_mean_episode_steps", ".0f"),
            "| *per physics step (paired, unwrapped, expert-flown):* |" + " |" * len(cfgs),
            row("env.step / n_substeps [us]", "paired_env_step_per_physics_us", ".2f"),
            row("mj_step, in the env's loop, same states [us]", "mj_step_per_physics_us", ".2f"),
            row("mj_step(nstep=n), inputs held, same states, / n [us]", "raw_nstep_per_physics_us", ".2f"),
            row("rate controller + mixer (Python) [us]", "controller_mixer_per_physics_us", ".2f"),
            row("rest of env.step per env step (obs, reward, info) [us]", "rest_per_env_step_us", ".1f"),
            row("controller + mixer share of env.step", "controller_share_of_env_step", ".1%"),
        ]
    )


def _comparison_table(results: dict[str, Any]) -> str:
    speed = results["speed"]
    lines = [
        "| simulator | control | physics | sim s per wall s | source |",
        "|---|---:|---:|---:|---|",
    ]
    for c in speed.values():
        name = f"robot_rl {_short(c['env_id'])}, rate controller + mixer in the loop"
        lines.append(
            f"| {name}, random actions | 50 Hz | {_hz(c['sim_dt_s'])} | **{c['random_sim_s_per_wall_s']:.1f}** | "
            "measured here |"
        )
        lines.append(
            f"| {name}, expert-flown | 50 Hz | {_hz(c['sim_dt_s'])} | {c['expert_flown_sim_s_per_wall_s']:.1f} | "
            "measured here |"
        )
    for p in PUBLISHED:
        lines.append(
            f"| {p['name']}: {p['conditions']} | {p['control_hz']} Hz | {_hz(1.0 / p['physics_hz'])} | "
            f"{p['sim_s_per_wall_s']:.2f} | published, other machine (not measured here) [1] |"
        )
    return "\n".join(lines)


def _quality_table(results: dict[str, Any]) -> str:
    lines = [
        "| task | randomize | episodes | metric | value | spread | crashes |",
        "|---|---|---:|---|---:|---|---:|",
    ]
    for q in results["quality"]:
        task, rnd, n, crashes = _short(q["env_id"]), q["randomize"], q["episodes"], q["crashes"]
        if _task(q) == "Hover":
            lines.append(
                f"| {task} | {rnd} | {n} | RMS position error over the last 1 s, mean over episodes [cm] | "
                f"**{q['rms_last_1s_cm_mean']:.2f}** | median {q['rms_last_1s_cm_median']:.2f}, "
                f"max {q['rms_last_1s_cm_max']:.2f} | {crashes} |"
            )
        elif _task(q) == "Waypoint":
            low, high = q["success_ci95"]
            lines.append(
                f"| {task} | {rnd} | {n} | success rate (last step) | **{q['success_rate']:.3f}** | "
                f"Wilson 95% CI [{low:.3f}, {high:.3f}] | {crashes} |"
            )
        else:
            lines.append(
                f"| {task} | {rnd} | {n} | tracking RMSE at the end, mean [m] | **{q['tracking_rmse_m_mean']:.4f}** | "
                f"max {q['tracking_rmse_m_max']:.4f}; success (RMSE <= 0.1 m) {q['success_rate']:.2f} | "
                f"{crashes} |"
            )
    return "\n".join(lines)


def _thresholds(results: dict[str, Any], options: QuadrotorOptions) -> dict[str, Any]:
    """The thresholds the user passed, against the measured values."""
    items = []
    rows = [c for c in results["speed"].values() if c["physics_hz"] == 500]
    if rows:
        value = min(min(c["expert_flown_sim_s_per_wall_s"], c["random_sim_s_per_wall_s"]) for c in rows)
        which = ", ".join(_short(c["env_id"]) for c in rows)
        items.append(
            harness.threshold(
                f"simulated s per wall s on one core at 500 Hz physics, controller in the loop (slowest of {which} "
                "x expert-flown/random, env.step only)",
                value,
                options.min_realtime,
                at_most=False,
                unit="x",
            )
        )
    for q in results["quality"]:
        task = f"{_short(q['env_id'])} ({q['randomize']})"
        if _task(q) == "Hover" and options.max_hover_rms_cm is not None:
            item = harness.threshold(
                f"{task}: RMS position error over the last 1 s, mean of {q['episodes']} seeds (worst seed "
                f"{q['rms_last_1s_cm_max']:.2f} cm, {q['crashes']} crashes; a crash fails it)",
                q["rms_last_1s_cm_mean"],
                options.max_hover_rms_cm,
                at_most=True,
                unit=" cm",
            )
            item["met"] = item["met"] and q["crashes"] == 0
            items.append(item)
        elif _task(q) == "Waypoint":
            items.append(
                harness.threshold(
                    f"{task}: success rate over {q['episodes']} seeds",
                    q["success_rate"],
                    options.min_waypoint_success,
                    at_most=False,
                )
            )
    return harness.thresholds(*items)


def markdown(results: dict[str, Any]) -> str:
    cfg = results["config"]
    load0, load1 = results["load_average_start"], results["load_average_end"]
    exact = all(c["replay_exact"] for c in results["speed"].values())
    quality = (
        f"""## Quality: the expert, seeds 0..N-1, physics at the env default ({_hz(results["quality"][0]["sim_dt_s"])})

{_quality_table(results)}

Hover: per episode, the RMS of the distance to the goal over the last 50 steps (1 s) of the
250-step episode; the table gives the mean over seeds, the median and the worst seed. Waypoint:
`info["is_success"]` of the last step (held within 0.1 m for the last 1 s). Track:
`info["tracking_rmse"]` at the end of the 500-step episode. "nominal" is randomization off,
"train" is `randomize="train"` (mass +-30%, inertia +-20%, motor constant +-10%, motor lag
0.7-1.5x, drag, gusts, 0-1 step action and observation latency, observation noise). Quality wall
time {results["quality_wall_s"]:.0f} s.
"""
        if results["quality"]
        else "## Quality\n\nSkipped (`--episodes 0`).\n"
    )
    title = "Quadrotor benchmark: speed with the rate controller in the loop, expert quality"
    head = "\n".join(harness.header(title, results))
    given = "\n".join(harness.threshold_lines(results))
    return f"""{head}
- Load: pinned to one core, one BLAS/OpenMP thread; **the machine may have had other load** (another process was
  free to run on the same CPUs); load average (1, 5, 15 min) {load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f} at the
  start and {load1[0]:.2f}, {load1[1]:.2f}, {load1[2]:.2f} at the end. Medians over alternating repetitions limit,
  but do not remove, its effect.
- Speed run: {cfg["reps"]} alternating repetitions x {cfg["steps"]} env steps per configuration and phase,
  seeded episodes (seed {cfg["seed"]} + k), resets not timed; randomization off. Speed wall time
  {results["speed_wall_s"]:.0f} s; timer overhead {results["clock_overhead_us"]:.3f} us per call.

## Speed

{_speed_table(results)}

### Against published figures

{_comparison_table(results)}

[1] {PUBLISHED_SOURCE}. Their PyBullet envs take the motor commands directly (no rate
controller in their step); the figures are from another machine and are not measured here. Both
are quoted from safe-control-gym's README, which measured gym-pybullet-drones too. The closest
like-for-like row here is random actions at 1 kHz.

{given}
{quality}
## Method

Speed: four configurations (Hover and Waypoint x 500 Hz and 1 kHz physics), each a `gym.make`
instance with `sim_dt` set, run in alternating order (the order flips every repetition). Every
number is the median over repetitions of a per-repetition value. "sim s per wall s" = env steps/s
x 0.02 s; steps/s use total times over all steps (interruptions included); the "per-step medians"
row is less sensitive to other load. Expert-flown: the expert's call is timed apart and not in
the env.step time; "closed loop incl. the expert's call" adds it back. Random actions: seeded
uniform actions in [-1, 1]^4; such episodes end on a crash after about 50 steps.

Per physics step split: on the unwrapped env flown by the expert, before each `env.step` the full
`mjSTATE_INTEGRATION` state and copies of the rate controller and mixer are saved. After the step,
the env's physics-step loop (`QuadrotorEnv._simulate`: read qvel, rate controller, mixer, write
ctrl and the drag/gust force, then `mj_step`) is replayed from the saved state with a timer
between the Python part and `mj_step`; the replay reproduced the env's next state bit for bit:
{exact}. Then `mj_step(nstep=n_substeps)` with the last physics step's inputs held is timed from
the same state (no Python per physics step: the binding's per-call cost is amortized), and the
env's post-step state is put back. "rest of env.step" = paired env.step - (controller + mixer +
mj_step) x n_substeps: action checks, the observation, reward, crash checks and info. Each timed
segment carries about one timer call ({results["clock_overhead_us"]:.3f} us), not subtracted.
"""


# -------------------------------------------------------------------------------------- run
def measure(options: QuadrotorOptions, run: harness.Run) -> dict[str, Any]:
    """Speed on one core, then the expert's quality; the results of ``quadrotor.json``."""
    from tqdm import tqdm

    steps, reps, seed, episodes = options.steps, options.reps, options.seed, options.episodes
    load_start = os.getloadavg()
    with harness.one_core():
        machine = run.machine()
        subjects = [_Subject(env_id, dt) for dt in SIM_DTS for env_id in SPEED_ENVS]
        for s in subjects:  # warm up caches and lazy allocations
            s.run_rep(100, seed + 10_000, lambda n: None)
        clock_overhead = harness.clock_overhead_us()
        per: dict[str, list[dict[str, Any]]] = {s.label: [] for s in subjects}
        start = time.perf_counter()
        total = reps * len(subjects) * 3 * steps
        with tqdm(total=total, unit="step", disable=not options.progress, file=sys.stderr) as bar:
            for rep in range(reps):
                order = subjects if rep % 2 == 0 else subjects[::-1]
                for s in order:
                    bar.set_description(f"speed rep {rep + 1}/{reps} {s.label}")
                    per[s.label].append(s.run_rep(steps, seed, bar.update))
        speed_wall = time.perf_counter() - start
        speed = {s.label: _summary(s, per[s.label]) for s in subjects}
        for s in subjects:
            s.env.close()

        quality: list[dict[str, Any]] = []
        start = time.perf_counter()
        if episodes:
            plan = [(env_id, rnd, episodes) for env_id in (HOVER, WAYPOINT) for rnd in RANDOMIZATIONS]
            plan += [(TRACK, rnd, -(-episodes // 2)) for rnd in RANDOMIZATIONS]
            with tqdm(total=sum(n for *_, n in plan), unit="ep", disable=not options.progress, file=sys.stderr) as bar:
                for env_id, rnd, n in plan:
                    bar.set_description(f"quality {_short(env_id)} {rnd}")
                    quality.append(_quality(env_id, rnd, n, bar.update))
        quality_wall = time.perf_counter() - start

    results: dict[str, Any] = {
        "config": {"steps": steps, "reps": reps, "episodes": episodes, "seed": seed, "sim_dts": list(SIM_DTS)},
        "machine": machine,
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "note": "The machine may have had other load during the run (see the load averages).",
        "clock_overhead_us": clock_overhead,
        "speed_wall_s": speed_wall,
        "quality_wall_s": quality_wall,
        "speed": speed,
        "published": {"source": PUBLISHED_SOURCE, "not_measured_here": True, "figures": PUBLISHED},
        "quality": quality,
    }
    results.update(_thresholds(results, options))
    print(_speed_table(results))
    print()
    print(_comparison_table(results))
    print(f"\n[1] {PUBLISHED_SOURCE}")
    if quality:
        print()
        print(_quality_table(results))
    harness.print_thresholds(results)
    print(f"\nload average at start {load_start[0]:.2f}, at end {results['load_average_end'][0]:.2f} (1 min)")
    return results


BENCHMARK = harness.Benchmark(
    name="quadrotor",
    options=QuadrotorOptions,
    measure=measure,
    markdown=markdown,
    stem="quadrotor",
    packages=("numpy", "mujoco", "gymnasium", "tqdm"),
)
