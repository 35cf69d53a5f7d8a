"""Plots of a training run: success rate and return of the periodic evaluations, and the losses.

A base run (``train bc|diffusion``) has its validation loss in metrics.jsonl; a residual run (``train
residual``) has its stable-baselines3 losses in losses.jsonl (:mod:`robot_rl.rl.train_log`) and, in the first
line of metrics.jsonl, the base alone evaluated on the same seeds (its reference line).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOSSES_FILE = "losses.jsonl"
"""A residual run's stable-baselines3 training scalars, one line per log dump (robot_rl.rl.train_log)."""

LOSS_CURVES = (
    ("train/critic_loss", "critic loss", "tab:red"),
    ("train/actor_loss", "actor loss", "tab:purple"),
    ("train/value_loss", "value loss", "tab:red"),
    ("train/policy_gradient_loss", "policy-gradient loss", "tab:purple"),
    ("train/entropy_loss", "entropy loss", "tab:brown"),
)
"""The losses drawn, when logged: SAC/DSRL (critic, actor) and PPO (value, policy gradient, entropy)."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The run's evaluations, one dict per line of metrics.jsonl (empty when none yet)."""
    return _read_jsonl(Path(run_dir) / "metrics.jsonl")


def read_losses(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A residual run's logged losses, oldest first (empty for a base run, or a run from before they were logged)."""
    return _read_jsonl(Path(run_dir) / LOSSES_FILE)


def losses_from_tensorboard(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The same lines rebuilt from the run's TensorBoard files (``tb/``), for runs from before losses.jsonl.

    stable-baselines3 wrote the same ``train/`` scalars there at each dump, against agent steps: env steps for
    ``sac`` and ``ppo``; a ``dsrl`` run (one agent step per chunk) is not converted and gives none.
    """
    run_dir = Path(run_dir)
    try:
        algo = json.loads((run_dir / "config.json").read_text()).get("algo")
    except (OSError, ValueError):
        return []
    folders = sorted(p for p in (run_dir / "tb").glob("*") if p.is_dir()) if algo in ("sac", "ppo") else []
    if not folders:
        return []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    rows: dict[int, dict[str, Any]] = {}
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags().get("scalars", []):
            if tag.startswith("train/"):
                for event in events.Scalars(tag):
                    rows.setdefault(event.step, {"env_steps": event.step})[tag] = float(event.value)
    return [rows[step] for step in sorted(rows)]


def _episodes_per_point(run_dir: Path, metrics: list[dict[str, Any]]) -> int | None:
    """Evaluation episodes per point: metrics.jsonl, else the run's config (runs from before it was logged)."""
    if metrics[-1].get("eval_episodes") is not None:
        return int(metrics[-1]["eval_episodes"])
    try:
        config = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    episodes = config.get("options", config.get("train", {})).get("eval_episodes")
    return int(episodes) if isinstance(episodes, int) else None


def plot_training(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], title: str | None = None) -> Path:
    """Write a PNG: the evaluations against training steps (left), the losses (right).

    Left: success rate and mean return of each evaluation, titled with the episodes per point; for a residual
    run, the base alone on the same seeds as a dashed line. Right: a base run's validation loss, or a residual
    run's critic and actor losses (SAC; PPO: value, policy-gradient and entropy losses) with the entropy
    coefficient on a second axis.

    Raises:
        ValueError: the run has no evaluations yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if not metrics:
        raise ValueError(f"{run_dir} has no evaluations in metrics.jsonl yet; nothing to plot.")
    steps = [m.get("step", m.get("env_steps")) for m in metrics]
    unit = "env steps" if "env_steps" in metrics[0] else "training step"
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    if any("success_rate" in m for m in metrics):
        handles = left.plot(steps, [m.get("success_rate") for m in metrics], "o-", color="tab:green", label="success")
        base = metrics[0].get("base_success_rate")
        if base is not None:
            handles.append(left.axhline(base, ls="--", color="tab:gray", label=f"base alone, same seeds: {base:.2f}"))
        left.set_ylim(-0.02, 1.02)
        left.set_ylabel("success rate")
        twin = left.twinx()
        handles += twin.plot(steps, [m.get("mean_return") for m in metrics], "s--", color="tab:blue", label="return")
        twin.set_ylabel("mean return", color="tab:blue")
        left.legend(handles=handles, loc="lower right", fontsize=8)
        episodes = _episodes_per_point(run_dir, metrics)
        per_point = f"{episodes} episodes per point" if episodes else "episodes per point not recorded"
        left.set_title(f"evaluation ({per_point}, held-out seeds)")
    else:
        left.text(0.5, 0.5, "no evaluation rollouts", ha="center", va="center", transform=left.transAxes)
    left.set_xlabel(unit)
    left.grid(alpha=0.3)
    _plot_losses(right, run_dir, metrics, steps)
    from matplotlib.ticker import FuncFormatter

    for axis in (left, right):  # 200k, not 200000 crowding its neighbours
        axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if abs(x) >= 1000 else f"{x:g}"))
    if title:
        fig.suptitle(title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_losses(axis: Any, run_dir: Path, metrics: list[dict[str, Any]], steps: list[Any]) -> None:
    """The right panel: validation loss (base run) or stable-baselines3's losses (residual run)."""
    losses, source = read_losses(run_dir), "stable-baselines3"
    if not losses and not any("val_loss" in m for m in metrics):
        losses, source = losses_from_tensorboard(run_dir), "stable-baselines3, from tb/"
    if any("val_loss" in m for m in metrics):
        axis.semilogy(steps, [m.get("val_loss") for m in metrics], "o-", color="tab:red")
        axis.set_title("validation loss")
        axis.set_xlabel("training step")
        axis.set_ylabel("loss")
    elif losses:
        handles = []
        for key, label, color in LOSS_CURVES:
            points = [(line["env_steps"], line[key]) for line in losses if key in line]
            if points:
                handles += axis.plot(*zip(*points, strict=True), "-", color=color, lw=1.2, label=label)
        axis.set_ylabel("loss")
        entropy = [(line["env_steps"], line["train/ent_coef"]) for line in losses if "train/ent_coef" in line]
        if entropy:
            twin = axis.twinx()
            handles += twin.semilogy(*zip(*entropy, strict=True), "--", color="tab:olive", label="entropy coef.")
            twin.set_ylabel("entropy coefficient", color="tab:olive")
        axis.legend(handles=handles, loc="upper right", fontsize=8)
        axis.set_title(f"training losses ({source}, {len(losses)} log dumps)")
        axis.set_xlabel("env steps")
    else:
        axis.text(
            0.5,
            0.5,
            f"no losses logged ({LOSSES_FILE} and tb/ absent)",
            ha="center",
            va="center",
            transform=axis.transAxes,
        )
        axis.set_xlabel("env steps")
    axis.grid(alpha=0.3)
