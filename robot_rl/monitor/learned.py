"""Learned failure risk: a small classifier of failure from the monitor's own per-chunk signals.

The two FIPER signals and goal progress each see one side of a failure. Here a small MLP reads them
together, chunk by chunk, and is trained to tell the rollouts that failed from those that succeeded,
on the *fit* split of the calibration rollouts only (its failures are the only failure data the
monitor ever uses; the thresholds still come from the calibration split's successes alone, so the
false-alarm promise is untouched by how good or bad the model is). Inputs per chunk ``k``:

- ``rnd``, ``entropy``: the FIPER scores;
- ``consistency``: chunk-to-chunk consistency of the policy's own predictions (as Sentinel's STAC
  does): the RMS difference, over the active action dims, between the steps the previous chunk and
  this one both cover [action units]; 0 at the first chunk;
- goal tasks: the goal distance ``d_k`` [m], the episode's first one ``d_0`` and the change ``d_k -
  d_{k-1}``;
- ``k / n_ref``: the time in the episode (``n_ref``: chunks of a calibration episode).

Architecture ``F -> hidden -> hidden -> 1`` (ReLU), inputs standardized by the fit split. Its logit
at chunk ``k`` is standardized by the mean and standard deviation of the logits of the fit split's
*successes* at the same chunk (so every chunk spends a like share of the false-alarm budget): that
is the ``risk`` score, windowed and conformally calibrated like the others.

On PandaPush (1,500 development rollouts, seeds 5000000..) the risk alone detected 0.94 of the
failures at a false-alarm rate of 0.04 (alpha 0.05) with a median lead of 0.61 s, against 0.87 and
0.61 s for goal progress alone and 0.72 and 0.72 s for ``fiper_progress_split``: docs/monitor.md.

Scoring is numpy only; :func:`fit_risk` imports torch (calibration only).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.monitor.rnd import Layers, _init_layers, mlp, read_arrays, read_layers, save_layers

RISK_FILE = "risk.npz"
MIN_FIT_FAILURES = 5
"""Fewer failures (or successes) in the fit split than this: no risk model, the ``risk`` detector is off."""


def consistency(previous: np.ndarray | None, shift: int, chunk: np.ndarray, dims: Sequence[int] | None) -> float:
    """RMS difference between two chunks over the steps both cover (0 when they share none).

    Args:
        previous: The previous chunk (horizon, A), or None at the first chunk.
        shift: Steps from the previous chunk's first action to this one's.
        chunk: This chunk (horizon, A).
        dims: Active action dims (None: all).
    """
    if previous is None or not 0 < shift < len(chunk):
        return 0.0
    a, b = np.asarray(previous, dtype=np.float64)[shift:], np.asarray(chunk, dtype=np.float64)[: len(chunk) - shift]
    if dims is not None:
        a, b = a[:, list(dims)], b[:, list(dims)]
    return float(np.sqrt(np.mean((a - b) ** 2)))


def risk_features(
    rnd: Sequence[float],
    entropy: Sequence[float],
    consistency: Sequence[float],
    goal_distance: Sequence[float] | None,
    n_ref: int,
) -> np.ndarray:
    """The model's inputs for one episode's chunks. Shape: (T, 4) or (T, 7) on goal tasks."""
    columns = [np.asarray(rnd, float), np.asarray(entropy, float), np.asarray(consistency, float)]
    if goal_distance is not None:
        d = np.asarray(goal_distance, dtype=np.float64)
        change = np.diff(d, prepend=d[:1]) if d.size else d
        columns += [d, np.full(d.shape, d[0] if d.size else 0.0), change]
    columns.append(np.arange(len(columns[0]), dtype=np.float64) / max(n_ref, 1))
    return np.stack(columns, axis=-1)


def trace_features(trace: Any, model_goal: bool, n_ref: int) -> np.ndarray | None:
    """:func:`risk_features` of a traced episode (an EpisodeTrace); None when it lacks an input.

    An input is missing when the trace has no consistency (traced before it existed) or, for a goal model, no goal
    distance.
    """
    if trace.consistency is None or (model_goal and trace.goal_distance is None):
        return None
    goal = trace.goal_distance if model_goal else None
    return risk_features(trace.rnd, trace.entropy, trace.consistency, goal, n_ref)


def trace_scores(trace: Any, envelope: Any = None, model: RiskModel | None = None) -> dict[str, np.ndarray]:
    """Per-chunk scores of a traced episode per signal, the learned ``risk`` included when ``model`` is given.

    Args:
        trace: An :class:`~robot_rl.monitor.rollouts.EpisodeTrace`.
        envelope: The calibration's goal-distance envelope (None: no ``progress``).
        model: The risk model (None: no ``risk``).
    """
    scores = trace.scores(envelope)
    features = None if model is None else trace_features(trace, model.goal, model.n_ref)
    if features is not None and model is not None:
        scores["risk"] = model.scores(features)
    return scores


@dataclasses.dataclass
class RiskModel:
    """The trained classifier and the standardization of its inputs and outputs."""

    layers: Layers
    in_mean: np.ndarray
    """Mean of each input over the fit split's chunks. Shape: (F,)."""
    in_std: np.ndarray
    """Standard deviation of each input (floored). Shape: (F,)."""
    chunk_mean: np.ndarray
    """Mean logit of the fit split's successes at chunk k (the last holds past the end). Shape: (K,)."""
    chunk_std: np.ndarray
    """Standard deviation of those logits (floored). Shape: (K,)."""
    n_ref: int
    """Chunks of a calibration episode (the time input is ``k / n_ref``)."""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def goal(self) -> bool:
        """Whether the model reads the goal distance (goal tasks)."""
        return self.in_mean.size == 7

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Risk per chunk of one episode (chunk k at row k). Shape: (T, F) -> (T,)."""
        x = (np.asarray(features, dtype=np.float64) - self.in_mean) / self.in_std
        logit = mlp(self.layers, x)[:, 0]
        k = np.minimum(np.arange(len(logit)), self.chunk_mean.size - 1)
        return (logit - self.chunk_mean[k]) / self.chunk_std[k]

    def score_at(self, chunk: int, row: np.ndarray) -> float:
        """Risk of chunk ``chunk`` of an episode from its inputs (F,): the run-time side of :meth:`scores`."""
        x = (np.asarray(row, dtype=np.float64)[None] - self.in_mean) / self.in_std
        k = min(max(int(chunk), 0), self.chunk_mean.size - 1)
        return float((mlp(self.layers, x)[0, 0] - self.chunk_mean[k]) / self.chunk_std[k])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to an ``.npz`` file."""
        arrays = {"in_mean": self.in_mean, "in_std": self.in_std, "chunk_mean": self.chunk_mean,
                  "chunk_std": self.chunk_std, "n_ref": np.array(self.n_ref)}  # fmt: skip
        return save_layers(path, arrays, _=self.layers)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RiskModel:
        """Read a model written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a risk model file.
        """
        arrays = read_arrays(path, "learned risk model")
        layers = read_layers(arrays)
        needed = {"in_mean", "in_std", "chunk_mean", "chunk_std", "n_ref"}
        if not layers or not needed <= set(arrays):
            raise ValueError(f"{path} is not a risk model file (expected w0, b0, {', '.join(sorted(needed))}).")
        return cls(
            layers, arrays["in_mean"], arrays["in_std"], arrays["chunk_mean"], arrays["chunk_std"],
            int(arrays["n_ref"]),
        )  # fmt: skip


def fit_risk(
    features: Sequence[np.ndarray],
    failed: Sequence[bool],
    hidden: int = 64,
    steps: int = 1500,
    seed: int = 0,
    threads: int = 1,
) -> RiskModel | None:
    """Train the risk model on the fit split's episodes (imports torch).

    Args:
        features: Per episode, :func:`risk_features`. Shapes: (T_i, F).
        failed: Per episode, whether it failed (every chunk of it is labelled so).
        hidden: Width of the two hidden layers.
        steps: Adam steps (batches of 512 chunks, learning rate 1e-3, weight decay 1e-4).
        seed: Seeds the initialization and the batches.
        threads: torch CPU threads.

    Returns:
        The model, or None with fewer than :data:`MIN_FIT_FAILURES` failed or successful episodes.
    """
    failed = [bool(f) for f in failed]
    if min(sum(failed), len(failed) - sum(failed)) < MIN_FIT_FAILURES:
        return None
    import torch

    x = np.concatenate([np.asarray(f, dtype=np.float64) for f in features])
    y = np.concatenate([np.full(len(f), float(bad)) for f, bad in zip(features, failed, strict=True)])
    in_mean, in_std = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-9)
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    layers = _init_layers([x.shape[1], hidden, hidden, 1], np.random.default_rng(seed))
    modules: list[Any] = []
    for weight, bias in layers:
        layer = torch.nn.Linear(*weight.shape, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight.T.copy()))
            layer.bias.copy_(torch.from_numpy(bias))
        modules += [layer, torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules[:-1])
    inputs, labels = torch.from_numpy((x - in_mean) / in_std), torch.from_numpy(y)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(inputs), (min(512, len(inputs)),), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(inputs[index])[:, 0], labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = [(m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in net
               if isinstance(m, torch.nn.Linear)]  # fmt: skip
    n_ref = max(len(f) for f in features)
    model = RiskModel(trained, in_mean, in_std, np.zeros(n_ref), np.ones(n_ref), n_ref)
    logits = [model.scores(f) for f, bad in zip(features, failed, strict=True) if not bad]  # raw: mean 0, std 1
    chunk_mean, chunk_std = [], []
    for k in range(n_ref):
        values = np.array([row[min(k, len(row) - 1)] for row in logits if len(row)])
        chunk_mean.append(float(values.mean()))
        chunk_std.append(max(float(values.std()), 1e-6))
    model.chunk_mean, model.chunk_std = np.array(chunk_mean), np.array(chunk_std)
    model.info = {"hidden": hidden, "steps": steps, "seed": seed, "episodes": len(failed), "failed": sum(failed),
                  "chunks": len(x), "final_loss": float(loss.detach())}  # fmt: skip
    return model
