"""Does the shipped waypoint policy adapt online to an unknown thrust-to-weight ratio and a steady wind?

The shipped ``policies/quadrotor_waypoint_diffusion`` (runtime Controller, onnxruntime, safety chain on)
and the scripted expert fly QuadrotorWaypoint on a grid of fixed vehicle masses (0.65-1.35x nominal) and
motor constants (0.85-1.15x), and under a steady horizontal wind of fixed force at nominal mass; each cell
on the same ``--episodes`` seeds (from 4300000: used by nothing else). Success is the task's: within
0.1 m of the waypoint for 1 s. Per cell: success with its 95% interval, the mean final distance, and the
policy's disturbance estimate (its observation feature ``quadrotor_disturbance``) at the end of the
episode beside the offset it should converge to, ``g (1 - m / k)`` upward for a mass scale m and a
motor constant scale k: the estimate is what lets the policy adapt.

Usage::

    python bench/bench_quadrotor_adaptation.py [--episodes 40] [--out bench/results]

Writes ``quadrotor_adaptation.md`` and ``quadrotor_adaptation.json``.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_rl.envs.randomization import DomainRandomization  # noqa: E402
from robot_rl.evaluation.evaluate import EvalConfig, evaluate, wilson_interval  # noqa: E402
from robot_rl.policies.features import GRAVITY  # noqa: E402
from robot_rl.provenance import machine_info  # noqa: E402

POLICY = REPO / "policies" / "quadrotor_waypoint_diffusion"
SEED = 4_300_000
MASSES = (0.65, 0.8, 1.0, 1.2, 1.35)
MOTORS = (0.85, 1.0, 1.15)
NOMINAL_MASS = 0.027
"""[kg], the vehicle's (assets/quadrotor) and the observer's nominal mass."""
WINDS = (0.01, 0.02, 0.03)
"""Steady wind forces [N]: 0.03 N is 11% of the vehicle's weight (a tilt of about 6 degrees to hold)."""


def _cells() -> list[tuple[str, dict[str, Any]]]:
    cells = [(f"mass {m:g}x, motors {k:g}x", {"mass_scale": [m, m], "motor_constant_scale": [k, k]}) for m in MASSES
             for k in MOTORS]  # fmt: skip
    cells += [(f"steady wind {w:g} N", {"wind_steady": [w, w]}) for w in WINDS]
    return cells


def _estimates(policy: Path, randomize: dict[str, Any], seeds: list[int]) -> np.ndarray:
    """The policy's disturbance estimate at each episode's end (runtime Controller, as deployed). (len(seeds), 3)."""
    from robot_rl.envs.registry import make
    from robot_rl.runtime import Controller, ControllerConfig

    env = make("robot_rl/QuadrotorWaypoint-v0", randomize=randomize)
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


def run(episodes: int = 40, out_dir: Path | None = None) -> dict:
    """Fly every cell; write the reports; returns the JSON."""
    out_dir = Path(out_dir or REPO / "bench" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for name, randomize in _cells():
        config_kwargs = {"episodes": episodes, "seed": SEED, "safety": "on", "progress": False}
        row: dict[str, Any] = {"cell": name, "randomize": randomize}
        for who, config in (
            ("policy", EvalConfig(policy=str(POLICY), **config_kwargs)),
            ("expert", EvalConfig(env="robot_rl/QuadrotorWaypoint-v0", policy="expert", **config_kwargs)),
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
        estimates = _estimates(POLICY, randomize, list(range(SEED, SEED + 10)))
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
    info = machine_info(("mujoco", "onnxruntime", "numpy"))
    lines = [
        "# Quadrotor adaptation: unknown mass, motor constant and steady wind",
        "",
        f"`python bench/bench_quadrotor_adaptation.py --episodes {episodes}` on {datetime.date.today().isoformat()} "
        f"({(time.perf_counter() - started) / 60:.1f} min; {info.get('cpu', 'this machine')}).",
        "",
        f"`policies/quadrotor_waypoint_diffusion` (runtime Controller, onnxruntime, safety chain on) and the scripted "
        f"expert, {episodes} episodes per cell on seeds from {SEED}; success: within 0.1 m of the waypoint for 1 s. "
        "Estimate: the policy's disturbance estimate at the episode's end (mean of 10 episodes) beside the offset it "
        "converges to in a hover: vertically g (1 - m / k) for mass scale m and motor constant scale k; horizontally "
        "the wind force over the nominal mass.",
        "",
        "| condition | policy success [95% CI] | final distance | expert success | estimate / expected (m/s^2) |",
        "|---|---|---:|---:|---|",
    ]
    for row in rows:
        p, e = row["policy"], row["expert"]
        lines.append(
            f"| {row['cell']} | {p['success_rate']:.2f} [{p['success_ci95'][0]:.2f}, {p['success_ci95'][1]:.2f}] | "
            f"{p['mean_final_distance']:.3f} m | {e['success_rate']:.2f} | "
            f"{row['axis']} {row['offset_estimated']:+.2f} / {row['offset_expected']:+.2f} |"
        )
    (out_dir / "quadrotor_adaptation.md").write_text("\n".join(lines) + "\n")
    payload = {"episodes": episodes, "seed": SEED, "machine": info, "cells": rows}
    (out_dir / "quadrotor_adaptation.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=40, help="episodes per cell and controller")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    run(args.episodes, args.out)


if __name__ == "__main__":
    main()
