"""Probe: which failure-monitor settings predict PandaPush failures best, on fresh seeds?

Each variant recalibrates a copy of the policy's monitor (``robot-rl monitor calibrate`` with one
option changed), then runs ``robot-rl monitor eval`` on ``--episodes`` nominal rollouts on each of
three seed blocks (3000000..., 6000000..., 9000000...). The thresholds for window 2 and 3 and
alpha 0.1 and 0.15 are then recomputed from the stored calibration scores (what ``monitor eval
--window W --alpha A`` does). The same rollouts serve every window and alpha of a variant.

The second table ranks the episode statistic (the largest windowed score) by its own quantile on the
evaluation successes (an oracle threshold, no calibration). That is the best detection a signal can
give at a given false-alarm rate. It also checks whether standardizing each chunk's score by the
calibration successes' mean and std at the same chunk index ranks failures better.

    python experiments/probe_monitor_settings.py --out bench/results/monitor_settings.md

About 15 minutes on this project's 2-core CPU machine. The runs go to a temporary folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data import collect
from robot_rl.monitor.calibrate import calibrate
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.monitor.conformal import calibrate_detectors, windowed_mean
from robot_rl.monitor.evaluate import evaluate_monitor
from robot_rl.monitor.metrics import detector_metrics, first_alarm_steps
from robot_rl.monitor.rollouts import EpisodeTrace

SEED_BLOCKS = (3_000_000, 6_000_000, 9_000_000)
ALPHAS = (0.1, 0.15)
WINDOWS = (2, 3)
DETECTORS = ("fiper", "rnd", "entropy")


def variants(demos_1000: Path) -> dict[str, dict[str, Any]]:
    """Variant name -> MonitorCalibrate overrides (the rest: the defaults)."""
    return {
        "defaults (RND 3000 steps, 128 wide, clip 3; K 3; 50 episodes)": {},
        "RND 10000 steps": {"rnd_steps": 10_000},
        "RND 1000 steps": {"rnd_steps": 1_000},
        "RND 256 wide, 64 features": {"rnd_hidden": 256, "rnd_features": 64},
        "RND clip 2": {"rnd_clip": 2.0},
        "RND without clip": {"rnd_clip": None},
        "RND on 1000 expert demos": {"data": demos_1000},
        "K = 8 chunks": {"samples": 8},
        "200 calibration episodes": {"episodes": 200},
    }


def traces(report: dict[str, Any]) -> list[EpisodeTrace]:
    """The evaluation rollouts of a ``monitor eval`` report."""
    drop = ("condition", "first_alarm_step")
    return [EpisodeTrace.from_json({k: v for k, v in e.items() if k not in drop}) for e in report["per_episode"]]


def replay(calibration: dict[str, Any], rollouts: list[EpisodeTrace], alpha: float, window: int) -> dict[str, Any]:
    """Detector metrics over ``rollouts`` with thresholds recomputed at ``alpha`` and ``window``."""
    cal = [EpisodeTrace.from_json(e).scores() for e in calibration["episodes"] if e["success"]]
    thresholds = calibrate_detectors(cal, alpha, window)
    return detector_metrics(rollouts, [first_alarm_steps(t, thresholds, window) for t in rollouts])["detectors"]


def pick(metrics: dict[str, Any]) -> dict[str, Any]:
    """The learned detectors' metrics."""
    return {d: metrics[d] for d in DETECTORS}


def oracle(calibration: dict[str, Any], rollouts: list[EpisodeTrace], window: int) -> dict[str, dict[str, float]]:
    """Detection at false-alarm rates 0.10 and 0.15 with thresholds at the successes' own quantiles."""
    cal = [EpisodeTrace.from_json(e).scores() for e in calibration["episodes"] if e["success"]]
    length = min(len(c["rnd"]) for c in cal)
    stats = {}
    for signal in ("rnd", "entropy"):
        values = np.array([c[signal][:length] for c in cal])
        stats[signal] = (values.mean(axis=0), values.std(axis=0) + 1e-9)

    def statistic(trace: EpisodeTrace, signal: str, standardized: bool) -> float:
        scores = np.asarray(trace.scores()[signal], dtype=np.float64)
        if standardized:
            mean, std = stats[signal]
            k = np.minimum(np.arange(scores.size), length - 1)
            scores = (scores - mean[k]) / std[k]
        return float(windowed_mean(scores, window).max())

    success = np.array([t.success for t in rollouts])
    out = {}
    for signal in ("rnd", "entropy"):
        for standardized in (False, True):
            s = np.array([statistic(t, signal, standardized) for t in rollouts])
            row = {}
            for rate in (0.10, 0.15):
                threshold = np.quantile(s[success], 1.0 - rate)
                row[f"{rate:.2f}"] = float((s[~success] > threshold).mean())
            out[f"{signal}, {'time-standardized' if standardized else 'raw'}"] = row
    return out


def main() -> None:
    """Run the probe and write its markdown and JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=Path("policies/panda_push_diffusion"))
    parser.add_argument("--episodes", type=int, default=300, help="evaluation rollouts per seed block")
    parser.add_argument("--out", type=Path, default=Path("bench/results/monitor_settings.md"))
    args = parser.parse_args()
    start = time.perf_counter()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        demos = root / "push_demos_1000.hdf5"
        meta = json.loads((args.policy / "metadata.json").read_text())
        collect(meta["env_id"], "expert", 1000, demos, seed=10_000, progress=False, fsync=False)
        for name, overrides in variants(demos).items():
            policy = root / f"policy_{len(results)}"
            shutil.copytree(args.policy, policy, ignore=shutil.ignore_patterns("monitor"))
            config = dataclasses.replace(MonitorCalibrate(policy=policy, progress=False), **overrides)
            calibrate(config, log=lambda _: None)
            calibration = json.loads((policy / "monitor" / "calibration.json").read_text())
            rollouts: list[EpisodeTrace] = []
            for seed in SEED_BLOCKS:
                report = evaluate_monitor(
                    MonitorEval(policy=policy, episodes=args.episodes, conditions=("nominal",), seed=seed,
                                out=root / f"eval_{seed}", progress=False),
                    log=lambda _: None,
                )  # fmt: skip
                rollouts += traces(report)
            results[name] = {
                "successful_calibration_rollouts": calibration["n_successful"],
                "evaluation": {"successes": int(sum(t.success for t in rollouts)), "rollouts": len(rollouts)},
                "replay": {
                    f"alpha {a}, window {w}": pick(replay(calibration, rollouts, a, w)) for a in ALPHAS for w in WINDOWS
                },
                "oracle": {f"window {w}": oracle(calibration, rollouts, w) for w in WINDOWS},
            }
            print(f"{name}: done ({time.perf_counter() - start:.0f} s)", flush=True)
    wall = time.perf_counter() - start
    args.out.with_suffix(".json").write_text(json.dumps({"wall_time_s": wall, "variants": results}, indent=1) + "\n")
    args.out.write_text(markdown(results, args, wall))
    print(f"wrote {args.out}")


def markdown(results: dict[str, Any], args: argparse.Namespace, wall: float) -> str:
    """The two tables."""

    def cell(m: dict[str, Any]) -> str:
        lead = m["median_lead_time_s"]
        return f"{m['false_alarm_rate']:.2f} / {m['detection_rate']:.2f} / {'-' if lead is None else f'{lead:.1f}'}"

    first = next(iter(results.values()))
    evaluation = first["evaluation"]
    lines = [
        "# Failure-monitor settings on fresh seeds (PandaPush)",
        "",
        f"Generated by `python experiments/probe_monitor_settings.py --episodes {args.episodes}` (wall time "
        f"{wall / 60:.0f} min). Policy `{args.policy}`. Evaluation: {evaluation['rollouts']} nominal rollouts "
        f"({args.episodes} on each of the seed blocks {', '.join(str(s) for s in SEED_BLOCKS)}); "
        f"{evaluation['successes']} succeeded. The calibration rollouts are on seeds 2000000 and up.",
        "",
        "## Calibrated detectors",
        "",
        "Each cell: false-alarm rate on successful rollouts / detection rate on failed rollouts / median lead "
        "time [s], with thresholds from the variant's calibration. Targets: false alarms at most alpha + 0.05, "
        "detection at least 0.80, lead at least 1 s.",
        "",
    ]
    for key in first["replay"]:
        lines += [f"### {key}", "", "| variant | calibration successes | FIPER | RND alone | entropy alone |",
                  "|---|---:|---|---|---|"]  # fmt: skip
        for name, r in results.items():
            m = r["replay"][key]
            cells = " | ".join(cell(m[d]) for d in DETECTORS)
            lines.append(f"| {name} | {r['successful_calibration_rollouts']} | {cells} |")
        lines.append("")
    lines += [
        "## Oracle thresholds (defaults variant)",
        "",
        "Detection when the threshold is the evaluation successes' own quantile, so the false-alarm rate is "
        "exactly 0.10 or 0.15. Time-standardized: each chunk's score minus the calibration successes' mean at "
        "that chunk index, divided by their std.",
        "",
        "| window | score | detection at 0.10 false alarms | at 0.15 |",
        "|---|---|---:|---:|",
    ]
    for window, rows in first["oracle"].items():
        for score, row in rows.items():
            lines.append(f"| {window} | {score} | {row['0.10']:.2f} | {row['0.15']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
