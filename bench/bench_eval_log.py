"""Evaluation timeline: what `robot-rl eval --log FILE.mcap` adds to an evaluation's wall and CPU time.

The same evaluation (the deployed stack: safety chain and failure monitor on, the same seeds) runs with and
without ``--log`` in one process, in pairs whose order flips every repetition, so both sides of a pair see the
same machine conditions, after a short warm-up evaluation that is not counted. Per pair: the evaluation's wall
time (``evaluate()`` end to end, the MCAP written and closed) and this process's CPU time, and their ratios
(log / no log); the report gives the median of the pair ratios and every pair. The two reports of a pair must
be equal apart from the run fields (the log observes, it does not change what runs); the benchmark checks that.

Usage::

    robot-rl bench evallog [--episodes 100] [--repeats 4] [--max-ratio 1.10]

Writes ``eval_log.md`` and ``eval_log.json`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness
from robot_rl.evaluation.evaluate import EvalConfig, evaluate

RUN_FIELDS = ("wall_time_s", "execution", "log")
"""Report fields that describe the run rather than its result: left out when the two reports are compared."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalLogOptions(harness.Options):
    """Options of ``robot-rl bench evallog``."""

    policy: str = "policies/panda_push_diffusion"
    """What to evaluate (``robot-rl eval --policy``)."""
    episodes: int = 100
    """Episodes per evaluation (100 PandaPush episodes: the size of the timeline the docs quote)."""
    repeats: int = 4
    """Pairs (with and without the log); the order flips every pair."""
    seed: int = 1000000
    """First evaluation seed (episode k uses seed + k), the same for both sides of every pair."""

    positive = ("episodes", "repeats")

    max_ratio: float | None = None
    """Report whether the median wall-time ratio (log / no log) is at most this (e.g. 1.10)."""


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


def _timed(config: EvalConfig) -> tuple[dict[str, Any], float, float]:
    start, cpu = time.perf_counter(), _cpu()
    report = evaluate(config)
    return report, time.perf_counter() - start, _cpu() - cpu


def _result(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in RUN_FIELDS}


def measure(options: EvalLogOptions, run: harness.Run) -> dict[str, Any]:
    """The pairs; the results."""
    base = EvalConfig(
        policy=options.policy,
        episodes=options.episodes,
        seed=options.seed,
        safety="on",
        monitor="on",
        progress=False,
    )
    print("warm-up evaluation (not counted)", flush=True)
    evaluate(dataclasses.replace(base, episodes=min(options.episodes, 5)))
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "eval.mcap"
        for repeat in range(options.repeats):
            pair: dict[str, Any] = {"load_before": os.getloadavg()[0]}
            order = ("plain", "log") if repeat % 2 == 0 else ("log", "plain")
            reports = {}
            for who in order:
                config = base if who == "plain" else dataclasses.replace(base, log=log_path)
                print(f"pair {repeat + 1}/{options.repeats}: {who}", flush=True)
                reports[who], wall, cpu = _timed(config)
                pair[who] = {"wall_s": wall, "cpu_s": cpu}
            pair["log_bytes"] = log_path.stat().st_size
            log_path.unlink()
            pair["load_after"] = os.getloadavg()[0]
            pair["wall_ratio"] = pair["log"]["wall_s"] / pair["plain"]["wall_s"]
            pair["cpu_ratio"] = pair["log"]["cpu_s"] / pair["plain"]["cpu_s"]
            pair["equal"] = _result(reports["plain"]) == _result(reports["log"])
            pair["success_rate"] = reports["plain"]["success_rate"]
            pair["steps"] = round(reports["plain"]["mean_episode_length"] * reports["plain"]["episodes"])
            pairs.append(pair)
            print(f"  wall {pair['wall_ratio']:.3f}x, CPU {pair['cpu_ratio']:.3f}x, equal {pair['equal']}", flush=True)
    wall = statistics.median(p["wall_ratio"] for p in pairs)
    return {
        "policy": options.policy,
        "episodes": options.episodes,
        "seed": options.seed,
        "pairs": pairs,
        "median_wall_ratio": wall,
        "median_cpu_ratio": statistics.median(p["cpu_ratio"] for p in pairs),
        "all_equal": all(p["equal"] for p in pairs),
        **harness.thresholds(
            harness.threshold("eval wall time with --log / without", wall, options.max_ratio, at_most=True, unit="x")
        ),
    }


def markdown(results: dict[str, Any]) -> str:
    """The report: every pair, then the medians."""
    lines = [
        *harness.header("Evaluation timeline: `robot-rl eval` with `--log FILE.mcap` and without", results),
        f"- Workload: `robot-rl eval --policy {results['policy']} --episodes {results['episodes']} --seed "
        f"{results['seed']} --safety on --monitor on [--log FILE.mcap]`, through `evaluate()` in one process "
        "(opening the policy, every episode, the report; with the log: the MCAP written and closed).",
        "- Pairs alternate which side runs first. Wall: the evaluation's seconds; CPU: this process's user + system "
        "seconds over the same call (the load-independent figure).",
        "",
        "| pair | load before / after | no log: wall, CPU [s] | log: wall, CPU [s] | wall ratio | CPU ratio "
        "| MCAP size | steps | reports equal |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, pair in enumerate(results["pairs"], 1):
        plain, log = pair["plain"], pair["log"]
        lines.append(
            f"| {i} | {pair['load_before']:.2f} / {pair['load_after']:.2f} | {plain['wall_s']:.2f}, "
            f"{plain['cpu_s']:.2f} | {log['wall_s']:.2f}, {log['cpu_s']:.2f} | {pair['wall_ratio']:.3f} | "
            f"{pair['cpu_ratio']:.3f} | {pair['log_bytes'] / 1e6:.1f} MB | {pair['steps']} | "
            f"{'yes' if pair['equal'] else 'NO'} |"
        )
    lines += [
        "",
        f"Median wall ratio {results['median_wall_ratio']:.3f}, median CPU ratio {results['median_cpu_ratio']:.3f}; "
        f"every pair's reports equal apart from the run fields: {'yes' if results['all_equal'] else 'NO'}.",
        "",
        *harness.threshold_lines(results),
    ]
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="evallog",
    options=EvalLogOptions,
    measure=measure,
    markdown=markdown,
    stem="eval_log",
    packages=("numpy", "mujoco", "onnxruntime", "mcap"),
)
