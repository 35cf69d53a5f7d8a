"""Quadrotor adaptation: the shipped waypoint policy under unknown masses, motor constants and steady winds.

The shipped ``policies/quadrotor_waypoint_diffusion`` (runtime Controller, onnxruntime, safety chain on, as
``robot-rl eval`` runs it) and the scripted expert fly QuadrotorWaypoint on a grid of fixed vehicle masses
(0.65-1.35x nominal) and motor constants (0.85-1.15x), and under a steady horizontal wind of fixed force at nominal
mass; each cell on the same ``--episodes`` seeds (from 4300000: used by nothing else). Success is the task's: within
0.1 m of the waypoint for 1 s. Per cell: success with its 95% interval, the mean final distance, and the policy's
disturbance estimate (its observation feature ``quadrotor_disturbance``) at the end of the episode beside the offset
it should converge to, ``g (1 - m / k)`` upward for a mass scale m and a motor constant scale k: the estimate is
what lets the policy adapt.

Usage::

    robot-rl bench adaptation [--episodes 40] [--out bench/results]

Writes ``quadrotor_adaptation.md`` and ``quadrotor_adaptation.json``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness
from robot_rl.envs.randomization import DomainRandomization
from robot_rl.evaluation.evaluate import EvalConfig, evaluate, wilson_interval
from robot_rl.policies.features import GRAVITY

POLICY = harness.REPO / "policies" / "quadrotor_waypoint_diffusion"
NOMINAL_MASS = 0.027
"""[kg], the vehicle's (assets/quadrotor) and the observer's nominal mass."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdaptationOptions(harness.Options):
    """Options of ``robot-rl bench adaptation``."""

    episodes: int = 40
    """Episodes per cell, for the policy and for the expert (the same seeds)."""
    seed: int = 4_300_000
    """First seed of every cell (4300000...: used by no demo, training evaluation or card figure)."""
    estimate_episodes: int = 10
    """Episodes per cell whose final disturbance estimate is averaged (seeds from --seed)."""
    masses: tuple[float, ...] = (0.65, 0.8, 1.0, 1.2, 1.35)
    """Vehicle mass scales of the grid."""
    motors: tuple[float, ...] = (0.85, 1.0, 1.15)
    """Motor constant scales of the grid."""
    winds: tuple[float, ...] = (0.01, 0.02, 0.03)
    """Steady wind forces [N] at nominal mass; 0.03 N is 11% of the vehicle's weight (a tilt of about 6 degrees)."""

    positive = ("episodes", "estimate_episodes")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not ((self.masses and self.motors) or self.winds):
            raise ValueError("the grid is empty: give --masses and --motors (their product), or --winds, or both.")


def _cells(options: AdaptationOptions) -> list[tuple[str, dict[str, Any]]]:
    cells = [
        (f"mass {m:g}x, motors {k:g}x", {"mass_scale": [m, m], "motor_constant_scale": [k, k]})
        for m in options.masses
        for k in options.motors
    ]
    cells += [(f"steady wind {w:g} N", {"wind_steady": [w, w]}) for w in options.winds]
    return cells


def _estimates(policy: Path, env_id: str, randomize: dict[str, Any], seeds: list[int]) -> np.ndarray:
    """The policy's disturbance estimate at each episode's end (runtime Controller, no chain). (len(seeds), 3)."""
    from robot_rl.envs.registry import make
    from robot_rl.runtime import Controller, ControllerConfig

    env = make(env_id, randomize=randomize)
    controller = Controller.load(policy, ControllerConfig(ctrl_dt=env.unwrapped.ctrl_dt))
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        controller.reset(seed)
        done, t = False, 0
        while not done:
            action = controller.step(obs, t * env.unwrapped.ctrl_dt).action
            obs, _, terminated, truncated, _ = env.step(action)
            done, t = terminated or truncated, t + 1
        out.append(controller.feature_values)
    env.close()
    return np.array(out)


def measure(options: AdaptationOptions, run: harness.Run) -> dict[str, Any]:
    """Fly every cell; the results of ``quadrotor_adaptation.json``."""
    env_id = harness.env_id("QuadrotorWaypoint")
    machine = run.machine()
    rows = []
    for name, randomize in _cells(options):
        config_kwargs = {"episodes": options.episodes, "seed": options.seed, "safety": "on", "progress": False}
        row: dict[str, Any] = {"cell": name, "randomize": randomize}
        for who, config in (
            ("policy", EvalConfig(policy=str(POLICY), **config_kwargs)),
            ("expert", EvalConfig(env=env_id, policy="expert", **config_kwargs)),
        ):
            report = evaluate(config, randomization=DomainRandomization.from_dict(randomize), label=name)
            successes = sum(e["success"] for e in report["per_episode"])
            row[who] = {
                "success_rate": report["success_rate"],
                "success_ci95": list(wilson_interval(successes, report["episodes"])),
                "mean_final_distance": report["mean_final_distance"],
            }
        mass = randomize.get("mass_scale", [1.0])[0]
        motor = randomize.get("motor_constant_scale", [1.0])[0]
        estimates = _estimates(POLICY, env_id, randomize, harness.seeds(options.seed, options.estimate_episodes))
        row["estimates"] = estimates.tolist()
        if "wind_steady" in randomize:  # horizontal (the direction differs per episode): force over nominal mass
            row["axis"] = "horizontal"
            row["offset_expected"] = randomize["wind_steady"][0] / NOMINAL_MASS
            row["offset_estimated"] = float(np.hypot(estimates[:, 0], estimates[:, 1]).mean())
        else:
            row["axis"] = "vertical"
            row["offset_expected"] = GRAVITY * (1.0 - mass / motor)
            row["offset_estimated"] = float(estimates[:, 2].mean())
        rows.append(row)
        print(
            f"{name}: policy {row['policy']['success_rate']:.2f}, expert {row['expert']['success_rate']:.2f}, "
            f"{row['axis']} estimate {row['offset_estimated']:+.2f} vs {row['offset_expected']:+.2f} m/s^2",
            flush=True,
        )
    return {
        "episodes": options.episodes,
        "seed": options.seed,
        "estimate_episodes": options.estimate_episodes,
        "env": env_id,
        "machine": machine,
        "wall_time_s": run.elapsed(),
        "cells": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    episodes, seed = results["episodes"], results["seed"]
    lines = [
        *harness.header("Quadrotor adaptation: unknown mass, motor constant and steady wind", results),
        f"- Wall time {results.get('wall_time_s', float('nan')) / 60:.1f} min.",
        "",
        f"`policies/quadrotor_waypoint_diffusion` (runtime Controller, onnxruntime, safety chain on) and the scripted "
        f"expert on {results.get('env', 'QuadrotorWaypoint')}, {episodes} episodes per cell on seeds from {seed}; "
        "success: within 0.1 m of the "
        f"waypoint for 1 s. Estimate: the policy's disturbance estimate at the episode's end (mean of "
        f"{results.get('estimate_episodes', 10)} episodes) beside the offset it converges to in a hover: vertically "
        "g (1 - m / k) for mass scale m and motor constant scale k; horizontally the wind force over the nominal mass.",
        "",
        "| condition | policy success [95% CI] | final distance | expert success | estimate / expected (m/s^2) |",
        "|---|---|---:|---:|---|",
    ]
    for row in results["cells"]:
        p, e = row["policy"], row["expert"]
        lines.append(
            f"| {row['cell']} | {p['success_rate']:.2f} [{p['success_ci95'][0]:.2f}, {p['success_ci95'][1]:.2f}] | "
            f"{p['mean_final_distance']:.3f} m | {e['success_rate']:.2f} | "
            f"{row['axis']} {row['offset_estimated']:+.2f} / {row['offset_expected']:+.2f} |"
        )
    return "\n".join(lines) + "\n"


BENCHMARK = harness.Benchmark(
    name="adaptation",
    options=AdaptationOptions,
    measure=measure,
    markdown=markdown,
    stem="quadrotor_adaptation",
    packages=("mujoco", "onnxruntime", "numpy"),
)
