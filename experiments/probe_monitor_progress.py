"""Probe: does a goal-progress score catch the PandaPush failures FIPER misses, and how early?

FIPER's two signals (RND, chunk entropy) detect about 0.7 of the nominal PandaPush failures at
alpha 0.1 (bench/results/monitor_settings.md). Most of the rest are near misses: the policy pushes
the object to 6-10 cm from the goal and stops, in familiar states, without hesitation. The progress
score (robot_rl/monitor/progress.py) compares each chunk's goal distance with the successful
calibration rollouts' at the same chunk index. Two ways to combine it with FIPER's rule are
measured: ``fiper_progress`` (one jointly calibrated level) and ``fiper_progress_split`` (alpha
split: FIPER's rule at (1 - share) alpha, goal progress at share alpha).

Every detector is evaluated on the same rollouts:

1. nominal rollouts on five fresh seed blocks: three *development* blocks (3000000..., 6000000...,
   9000000...), on which the split's share was chosen, and two *confirmation* blocks (12000000...,
   15000000...) run after the choice; with the thresholds of two calibrations (the policy folder's
   own, and a copy recalibrated on 50 episodes: the first 50 of the folder's 200 seeds), each
   replayed at alpha 0.05 to 0.25;
2. the split's share swept from 0.1 to 0.5 on both sets of blocks (the folder's calibration);
3. ``robot-rl monitor eval`` over every condition (nominal and shifted) with the folder's calibration.

    python experiments/probe_monitor_progress.py --out bench/results/monitor_progress.md

About 5 minutes on this project's 2-core CPU machine. The runs go to a temporary folder.
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

from robot_rl.monitor.calibrate import calibrate
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.monitor.conformal import DEFAULT_PROGRESS_SHARE, calibrate_detectors
from robot_rl.monitor.evaluate import DETECTOR_LABELS, LEARNED, evaluate_monitor, format_report
from robot_rl.monitor.failure_monitor import read_calibration
from robot_rl.monitor.metrics import detector_metrics, first_alarm_steps
from robot_rl.monitor.rollouts import EpisodeTrace

DEVELOPMENT = (3_000_000, 6_000_000, 9_000_000)
CONFIRMATION = (12_000_000, 15_000_000)
SEED_BLOCKS = DEVELOPMENT + CONFIRMATION
ALPHAS = (0.05, 0.1, 0.15, 0.2, 0.25)
SHARES = (0.1, 0.2, 0.3, 0.4, 0.5)
SWEEP_ALPHAS = (0.1, 0.15, 0.2)


def traces(report: dict[str, Any]) -> list[EpisodeTrace]:
    """The evaluation rollouts of a ``monitor eval`` report (``from_json`` skips its extra keys)."""
    return [EpisodeTrace.from_json(e) for e in report["per_episode"]]


def replay(
    policy: Path, rollouts: list[EpisodeTrace], alpha: float, share: float = DEFAULT_PROGRESS_SHARE
) -> dict[str, Any]:
    """Every learned detector's metrics over ``rollouts``, thresholds recomputed at ``alpha`` (and ``share``)."""
    calibration = read_calibration(policy)
    window = calibration.settings.window
    stored = [EpisodeTrace.from_json(e) for e in calibration.extra["episodes"]]
    successes = [t.scores(calibration.progress) for t in stored if t.success]
    thresholds = calibrate_detectors(successes, alpha, window, share)
    alarms = [first_alarm_steps(t, thresholds, window, calibration.progress) for t in rollouts]
    metrics = detector_metrics(rollouts, alarms)["detectors"]
    return {d: metrics[d] for d in LEARNED}


def main() -> None:
    """Run the probe and write its markdown and JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=Path("policies/panda_push_diffusion"))
    parser.add_argument("--episodes", type=int, default=300, help="nominal rollouts per seed block")
    parser.add_argument("--condition-episodes", type=int, default=100, help="rollouts per condition (part 2)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/monitor_progress.md"))
    args = parser.parse_args()
    if read_calibration(args.policy).progress is None:
        hint = f"run `robot-rl monitor calibrate --policy {args.policy}` first"
        raise SystemExit(f"{args.policy}: its calibration has no goal-progress envelope; {hint}.")
    start = time.perf_counter()
    results: dict[str, Any] = {"calibrations": {}, "sweep": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = root / "folder"
        shutil.copytree(args.policy, folder)
        settings = read_calibration(args.policy)
        calibrations = {f"folder's calibration ({len(settings.seeds)} episodes)": folder}
        data = Path(settings.extra["data"]["path"])
        if data.is_file():  # the RND trains on the policy's demos (runs/, not in the repository)
            fewer = root / "cal50"
            shutil.copytree(args.policy, fewer, ignore=shutil.ignore_patterns("monitor"))
            config = MonitorCalibrate(policy=fewer, episodes=50, window=settings.settings.window, progress=False)
            calibrate(dataclasses.replace(config, data=data), log=lambda _: None)
            calibrations["50 calibration episodes"] = fewer
        else:
            print(f"{data} (the policy's demos) is missing: no 50-episode calibration to compare", flush=True)
        blocks: dict[int, list[EpisodeTrace]] = {}
        for seed in SEED_BLOCKS:
            report = evaluate_monitor(
                MonitorEval(policy=folder, episodes=args.episodes, conditions=("nominal",), seed=seed,
                            out=root / f"eval_{seed}", progress=False),
                log=lambda _: None,
            )  # fmt: skip
            blocks[seed] = traces(report)
            print(f"block {seed}: done ({time.perf_counter() - start:.0f} s)", flush=True)
        sets = {
            "development": [t for seed in DEVELOPMENT for t in blocks[seed]],
            "confirmation": [t for seed in CONFIRMATION for t in blocks[seed]],
        }
        for label, policy in calibrations.items():
            calibration = read_calibration(policy)
            results["calibrations"][label] = {
                "successful_calibration_rollouts": calibration.n_successful,
                "pooled": {f"alpha {a}, {name}": replay(policy, ts, a) for a in ALPHAS for name, ts in sets.items()},
                "per_block": {
                    f"alpha {a}, block {seed}": replay(policy, blocks[seed], a) for a in ALPHAS for seed in SEED_BLOCKS
                },
            }
            print(f"{label}: done ({time.perf_counter() - start:.0f} s)", flush=True)
        results["sweep"] = {
            f"alpha {a}, share {share}, {name}": replay(folder, ts, a, share)["fiper_progress_split"]
            for a in SWEEP_ALPHAS
            for share in SHARES
            for name, ts in sets.items()
        }
        results["evaluation"] = {
            name: {"rollouts": len(ts), "successes": int(sum(t.success for t in ts))} for name, ts in sets.items()
        }
        command = (
            f"robot-rl monitor eval --policy {args.policy} --episodes {args.condition_episodes} "
            f"--out out/monitor_eval_progress"
        )
        report = evaluate_monitor(
            MonitorEval(policy=folder, episodes=args.condition_episodes, out=root / "conditions", progress=False),
            log=lambda _: None,
            command=command,
        )
        results["conditions_report"] = format_report(report).replace(str(folder), str(args.policy))
        every = {**report["conditions"], **report["pooled"]}
        results["conditions"] = {name: {d: m["detectors"][d] for d in LEARNED} for name, m in every.items()}
    wall = time.perf_counter() - start
    results["wall_time_s"] = wall
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(markdown(results, args, wall))
    print(f"wrote {args.out}")


def markdown(results: dict[str, Any], args: argparse.Namespace, wall: float) -> str:
    """The tables."""

    def cell(m: dict[str, Any]) -> str:
        lead = m["median_lead_time_s"]
        return f"{m['false_alarm_rate']:.2f} / {m['detection_rate']:.2f} / {'-' if lead is None else f'{lead:.2f}'}"

    evaluation = results["evaluation"]
    header = "| " + " | ".join(DETECTOR_LABELS[d] for d in LEARNED) + " |"
    dev, conf = evaluation["development"], evaluation["confirmation"]
    lines = [
        "# Goal progress as a failure signal on PandaPush",
        "",
        f"Generated by `python experiments/probe_monitor_progress.py --episodes {args.episodes} --condition-episodes "
        f"{args.condition_episodes}` (wall time {wall / 60:.1f} min). Policy `{args.policy}`.",
        "",
        "Each cell: false-alarm rate on successful rollouts / detection rate on failed rollouts / median lead time "
        "[s] (failure time: the end of the timed-out 2 s episode). Targets (issue 8): false alarms at most "
        "alpha + 0.05, detection at least 0.80, median lead at least 1 s.",
        "",
        f"## 1. Nominal rollouts on fresh seeds ({args.episodes} per block)",
        "",
        f"Development blocks {', '.join(str(s) for s in DEVELOPMENT)} ({dev['rollouts']} rollouts, {dev['successes']} "
        f"succeeded): `fiper_progress_split`'s share of alpha for goal progress (0.3) was chosen on them. "
        f"Confirmation blocks {', '.join(str(s) for s in CONFIRMATION)} ({conf['rollouts']} rollouts, "
        f"{conf['successes']} succeeded): first run after that choice.",
        "",
    ]
    for label, r in results["calibrations"].items():
        lines += [f"### {label}: {r['successful_calibration_rollouts']} successful calibration rollouts", ""]
        lines += ["| alpha " + header, "|---|" + "---|" * len(LEARNED)]
        for key, m in r["pooled"].items():
            lines.append(
                f"| {key.split()[1]} {key.split()[2]} (pooled) | " + " | ".join(cell(m[d]) for d in LEARNED) + " |"
            )
        for key, m in r["per_block"].items():
            lines.append(f"| {key.split(maxsplit=1)[1]} | " + " | ".join(cell(m[d]) for d in LEARNED) + " |")
        lines.append("")
    lines += [
        "## 2. `fiper_progress_split`: goal progress's share of alpha (the folder's calibration)",
        "",
        "| alpha | share | development blocks | confirmation blocks |",
        "|---|---|---|---|",
    ]
    for a in SWEEP_ALPHAS:
        for share in SHARES:
            dev_m = results["sweep"][f"alpha {a}, share {share}, development"]
            conf_m = results["sweep"][f"alpha {a}, share {share}, confirmation"]
            lines.append(f"| {a} | {share} | {cell(dev_m)} | {cell(conf_m)} |")
    lines.append("")
    lines += ["## 3. Nominal and shifted conditions (the folder's calibration, alpha from it)", ""]
    body = results["conditions_report"].split("\n", 2)[2]  # without the report's title
    lines += [body]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    main()
