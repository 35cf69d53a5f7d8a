"""A sweep's summary: each trial's final success, mean and spread across seeds per grid point, the curves.

A trial's final success is its final evaluation on fresh seeds (``--eval-episodes``: ``trials/NAME.eval.json``),
else the last evaluation during its training (the run's ``metrics.jsonl``). Per grid point: the number of
trials that finished, and the mean, standard deviation (sample, ``ddof=1``; 0 for one trial), min and max of
their final success. The curves (``curves.png``) are the training evaluations' success rate against steps (env
steps for a residual run): per grid point the mean across seeds with the min-max band.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.policies.plots import read_metrics
from robot_rl.sweep.config import Sweep, Trial, trials
from robot_rl.sweep.runner import eval_path

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES = "curves.png"


def _point_label(point: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in point.items()) or "all trials"


def _curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, success rate) of the run's training evaluations; steps are env steps for a residual run."""
    points = []
    for line in read_metrics(run_dir):
        step = line.get("step", line.get("env_steps"))
        if step is not None and line.get("success_rate") is not None:
            points.append((int(step), float(line["success_rate"])))
    return points


def _final(out: Path, trial: Trial, record: dict[str, Any]) -> dict[str, Any]:
    """The trial's row: its status, final success and where that number comes from."""
    row: dict[str, Any] = {
        "trial": trial.name,
        "seed": trial.seed,
        "point": dict(trial.point),
        "status": record.get("status", "failed"),
        "error": record.get("error"),
        "success_rate": None,
        "success_ci95": None,
        "mean_return": None,
        "final_from": None,
        "wall_time_s": record.get("wall_time_s"),
    }
    if row["status"] != "ok":
        return row
    if record.get("eval"):
        report = json.loads(eval_path(out, trial.name).read_text())
        row.update(
            success_rate=report["success_rate"],
            success_ci95=report.get("success_ci95"),
            mean_return=report.get("mean_return"),
            final_from=f"eval: {report['episodes']} episodes from seed {report['seed']}",
        )
        return row
    lines = [m for m in read_metrics(out / trial.name) if m.get("success_rate") is not None]
    if lines:
        last = lines[-1]
        step = last.get("step", last.get("env_steps"))
        row.update(
            success_rate=last["success_rate"],
            mean_return=last.get("mean_return"),
            final_from=f"training eval at step {step} ({last.get('eval_episodes', '?')} episodes)",
        )
    return row


def _stats(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None}
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "min": float(array.min()), "max": float(array.max())}


def summarize(options: Sweep, command: Sequence[str], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a sweep whose trials have the given records (in trial order)."""
    rows = [_final(options.out, t, r) for t, r in zip(trials(options, command), records, strict=True)]
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        label = _point_label(row["point"])
        group = groups.setdefault(label, {"point": row["point"], "trials": 0, "ok": 0, "finals": [], "seeds": []})
        group["trials"] += 1
        if row["status"] == "ok" and row["success_rate"] is not None:
            group["ok"] += 1
            group["finals"].append(row["success_rate"])
            group["seeds"].append(row["seed"])
    across = [
        {"point": g["point"], "trials": g["trials"], "ok": g["ok"], "seeds": g["seeds"], **_stats(g["finals"])}
        for g in groups.values()
    ]
    return {
        "command": ["robot-rl", *command],
        "seeds": list(options.seeds),
        "grid": list(options.grid),
        "final_eval": (
            {"episodes": options.eval_episodes, "seed": options.eval_seed, "safety": options.eval_safety}
            if options.eval_episodes
            else None
        ),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "trials": rows,
        "groups": across,
        "failed": [{"trial": r["trial"], "error": r["error"]} for r in rows if r["status"] != "ok"],
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_markdown(summary: dict[str, Any]) -> str:
    """summary.md: the command, the across-seeds table, the trials' table, the failures."""
    final = summary["final_eval"]
    source = (
        f"final evaluation of each trial's deployed policy on {final['episodes']} fresh seeds from {final['seed']}"
        if final
        else "each trial's last training evaluation"
    )
    lines = [
        "# Sweep summary",
        "",
        f"`{' '.join(summary['command'])}`, seeds {summary['seeds']}"
        + (f", grid {' '.join(summary['grid'])}" if summary["grid"] else "")
        + f" ({summary['date']}).",
        f"Final success: {source}. std is the sample standard deviation across seeds.",
        "",
        "| grid point | trials ok | success mean | std | min | max |",
        "|---|---|---|---|---|---|",
    ]
    for g in summary["groups"]:
        lines.append(
            f"| {_point_label(g['point'])} | {g['ok']}/{g['trials']} | {_num(g['mean'])} | {_num(g['std'])} | "
            f"{_num(g['min'])} | {_num(g['max'])} |"
        )
    lines += [
        "",
        "| trial | seed | status | final success | 95% CI | mean return | from |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary["trials"]:
        ci = r["success_ci95"]
        lines.append(
            f"| {r['trial']} | {r['seed']} | {r['status']} | {_num(r['success_rate'])} | "
            f"{'-' if ci is None else f'[{ci[0]:.3f}, {ci[1]:.3f}]'} | {_num(r['mean_return'], 2)} | "
            f"{r['final_from'] or '-'} |"
        )
    if summary["failed"]:
        lines += ["", "Failed trials:", ""]
        lines += [f"- {f['trial']}: {f['error']}" for f in summary["failed"]]
    return "\n".join(lines) + "\n"


def plot_curves(options: Sweep, command: Sequence[str], summary: dict[str, Any], path: Path) -> Path | None:
    """curves.png: per grid point, the mean training-evaluation success across seeds with its min-max band.

    Seeds are compared on the steps every one of them evaluated at. None when no trial has a curve.
    """
    by_point: dict[str, list[list[tuple[int, float]]]] = {}
    for trial, row in zip(trials(options, command), summary["trials"], strict=True):
        curve = _curve(options.out / trial.name) if row["status"] == "ok" else []
        if curve:
            by_point.setdefault(_point_label(row["point"]), []).append(curve)
    if not by_point:
        return None
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, curves in by_point.items():
        steps = sorted(set.intersection(*(set(s for s, _ in c) for c in curves)))
        if not steps:
            continue
        values = np.array([[dict(c)[s] for s in steps] for c in curves])
        line = ax.plot(steps, values.mean(axis=0), marker="o", markersize=3, label=f"{label} ({len(curves)} seeds)")
        ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=line[0].get_color(), alpha=0.2)
    ax.set_xlabel("training step (env steps for residual runs)")
    ax.set_ylabel("success rate (training evaluations)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("mean across seeds, band: min to max")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_summary(options: Sweep, command: Sequence[str], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Write summary.json, summary.md and curves.png into the sweep folder; returns the summary."""
    summary = summarize(options, command, records)
    curves = plot_curves(options, command, summary, options.out / CURVES)
    summary["curves"] = str(curves) if curves is not None else None
    (options.out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (options.out / SUMMARY_MD).write_text(format_markdown(summary))
    return summary
