"""Plots of a training run: success rate and return of the periodic evaluations, and the losses."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's evaluations, one dict per line of metrics.jsonl (empty when none yet)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write a PNG: success rate and mean return against training step (left), validation loss (right).

    Raises:
        ValueError: the run has no evaluations yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_metrics(run_dir)
    if not metrics:
        raise ValueError(f"{run_dir} has no evaluations in metrics.jsonl yet; nothing to plot.")
    steps = [m.get("step", m.get("env_steps")) for m in metrics]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    if any("success_rate" in m for m in metrics):
        left.plot(steps, [m.get("success_rate") for m in metrics], "o-", color="tab:green", label="success rate")
        left.set_ylim(-0.02, 1.02)
        left.set_ylabel("success rate")
        twin = left.twinx()
        twin.plot(steps, [m.get("mean_return") for m in metrics], "s--", color="tab:blue", label="mean return")
        twin.set_ylabel("mean return", color="tab:blue")
        episodes = metrics[-1].get("eval_episodes", "?")
        left.set_title(f"evaluation ({episodes} held-out seeds per point)")
    else:
        left.text(0.5, 0.5, "no evaluation rollouts", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel("env steps" if "env_steps" in metrics[0] else "training step")
    left.grid(alpha=0.3)
    if any("val_loss" in m for m in metrics):
        right.semilogy(steps, [m.get("val_loss") for m in metrics], "o-", color="tab:red")
        right.set_title("validation loss")
    right.set_xlabel("training step")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
