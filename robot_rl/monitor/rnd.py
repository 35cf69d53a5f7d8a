"""Random network distillation (RND) on the observation embedding: an out-of-distribution score.

A fixed, randomly initialized *target* MLP maps an embedding to ``out_dim`` features; a *predictor*
MLP is trained to reproduce them on the training distribution (the policy's demonstrations). On
embeddings like the training ones the predictor is accurate; away from them its error grows. The
score of an embedding is the predictor's mean squared error over the target features, each feature
standardized by its standard deviation over the training embeddings (so that every feature counts
alike): ``score = mean_j ((p_j(x) - t_j(x)) / s_j)^2`` (dimensionless; about the training loss
in distribution).

The embedding is clipped to ``[-clip, clip]`` first (default 3: standardized units). Without it, a
single entry far outside its training range dominates the score: on PandaPush the cube's Euler
angles, whose demo spread is about 0.02 rad, reach 70 standard deviations in *successful* rollouts
(a symmetric cube turned by a quarter turn is the same cube), so successful rollouts scored 100-300
and the conformal thresholds swung by 100x between calibration sets. Clipped, an entry counts as at
most ``clip`` standard deviations out, and the score says how many entries are out and how far.

Architecture: target ``D -> hidden -> out_dim`` (one ReLU layer), predictor
``D -> hidden -> hidden -> out_dim`` (two ReLU layers), so the predictor can represent the target.
Scoring is numpy only (a few small matrix products: microseconds); :func:`train_rnd` imports torch
and is needed only to calibrate. Weights are saved as ``.npz``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

Layers = list[tuple[np.ndarray, np.ndarray]]
"""An MLP as (weight (in, out), bias (out,)) pairs; ReLU between layers, none after the last."""


def mlp(layers: Layers, x: np.ndarray) -> np.ndarray:
    """Forward pass: ReLU after every layer but the last. Shapes: (B, in) -> (B, out)."""
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight + bias
        if i < len(layers) - 1:
            np.maximum(x, 0.0, out=x)
    return x


@dataclasses.dataclass
class RND:
    """A trained RND pair and the scale of its features."""

    target: Layers
    predictor: Layers
    feature_std: np.ndarray
    """Standard deviation of each target feature over the training embeddings. Shape: (out_dim,)."""
    clip: float | None = None
    """Embeddings are clipped to [-clip, clip] before both networks (None: not clipped)."""
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Training summary (steps, losses, sizes)."""

    @property
    def input_dim(self) -> int:
        """Embedding length D."""
        return int(self.target[0][0].shape[0])

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """RND score per embedding (non-finite inputs give NaN). Shape: (B, D) -> (B,)."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"embeddings must have shape (B, {self.input_dim}). Got {tuple(x.shape)}.")
        if self.clip is not None:
            x = np.clip(x, -self.clip, self.clip)  # NaN stays NaN
        error = (mlp(self.predictor, x) - mlp(self.target, x)) / self.feature_std
        return np.mean(error * error, axis=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the weights to an ``.npz`` file (``target_w0``, ``target_b0``, ..., ``feature_std``, ``clip``)."""
        clip = np.array(np.inf if self.clip is None else self.clip)
        arrays = {"feature_std": self.feature_std, "clip": clip}
        return save_layers(path, arrays, target=self.target, predictor=self.predictor)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RND:
        """Read weights written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not an RND weight file.
        """
        arrays = read_arrays(path, "RND weights")
        target, predictor = read_layers(arrays, "target"), read_layers(arrays, "predictor")
        if not target or not predictor or "feature_std" not in arrays:
            raise ValueError(f"{path} is not an RND weight file (expected target_w0, predictor_w0, feature_std).")
        clip = float(arrays.get("clip", np.inf))
        return cls(target, predictor, arrays["feature_std"], clip=clip if np.isfinite(clip) else None)


def save_layers(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], **layers: Layers) -> Path:
    """Write ``arrays`` and each named list of layers (``NAME_w0``, ``NAME_b0``, ...; ``w0``, ``b0`` for ``_``)."""
    arrays = dict(arrays)
    for prefix, weights in layers.items():
        stem = "" if prefix == "_" else f"{prefix}_"
        for i, (weight, bias) in enumerate(weights):
            arrays[f"{stem}w{i}"], arrays[f"{stem}b{i}"] = weight, bias
    path = Path(path)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def read_arrays(path: str | os.PathLike[str], what: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file as float64.

    Raises:
        FileNotFoundError: no such file (the message says ``no WHAT``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {what}.")
    with np.load(path) as data:
        return {k: np.asarray(data[k], dtype=np.float64) for k in data.files}


def read_layers(arrays: dict[str, np.ndarray], prefix: str = "_") -> Layers:
    """The layers :func:`save_layers` wrote under ``prefix``, in order (empty when there are none)."""
    stem = "" if prefix == "_" else f"{prefix}_"
    out, i = [], 0
    while f"{stem}w{i}" in arrays:
        out.append((arrays[f"{stem}w{i}"], arrays[f"{stem}b{i}"]))
        i += 1
    return out


def _init_layers(sizes: list[int], rng: np.random.Generator) -> Layers:
    """He-normal weights, zero biases."""
    pairs = zip(sizes[:-1], sizes[1:], strict=True)
    return [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a), np.zeros(b)) for a, b in pairs]


def train_rnd(
    embeddings: np.ndarray,
    hidden: int = 128,
    out_dim: int = 32,
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 1e-3,
    val_fraction: float = 0.1,
    seed: int = 0,
    threads: int = 1,
    clip: float | None = 3.0,
) -> RND:
    """Train the predictor to match a fixed random target on ``embeddings`` (imports torch).

    Args:
        embeddings: Training embeddings. Shape: (N, D).
        hidden: Width of the hidden layers.
        out_dim: Target features.
        steps: Adam steps.
        batch_size: Embeddings per step.
        lr: Adam learning rate.
        val_fraction: Share of the embeddings held out to report the in-distribution score
            (taken as contiguous blocks at the end, so whole demos are held out).
        seed: Seeds the target, the predictor's initialization and the batches.
        threads: torch CPU threads.
        clip: Clip the embeddings to [-clip, clip] (standardized units) in training and scoring; None: no clip.

    Returns:
        The trained pair; ``info`` holds the final training and held-out mean scores.
    """
    import torch

    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"embeddings must have shape (N >= 2, D). Got {tuple(x.shape)}.")
    if not np.all(np.isfinite(x)):
        raise ValueError("the training embeddings hold NaN or inf.")
    if clip is not None:
        if not clip > 0.0:
            raise ValueError(f"`clip` must be > 0 (or None). Got {clip}.")
        x = np.clip(x, -clip, clip)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    n_val = int(round(val_fraction * len(x))) if len(x) >= 10 else 0
    train, val = (x[:-n_val], x[-n_val:]) if n_val else (x, x[:0])
    dim = x.shape[1]
    target = _init_layers([dim, hidden, out_dim], rng)
    feature_std = np.maximum(mlp(target, train).std(axis=0), 1e-6)
    predictor = _init_layers([dim, hidden, hidden, out_dim], rng)

    torch.manual_seed(seed)
    modules = []
    for weight, bias in predictor:
        layer = torch.nn.Linear(*weight.shape, dtype=torch.float64)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(weight.T.copy()))
            layer.bias.copy_(torch.from_numpy(bias))
        modules += [layer, torch.nn.ReLU()]
    net = torch.nn.Sequential(*modules[:-1])
    inputs = torch.from_numpy(train)
    goals = torch.from_numpy(mlp(target, train) / feature_std)
    scale = torch.from_numpy(1.0 / feature_std)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        loss = torch.mean((net(inputs[index]) * scale - goals[index]) ** 2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    trained = [
        (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy().copy())
        for layer in net
        if isinstance(layer, torch.nn.Linear)
    ]
    rnd = RND(target, trained, feature_std, clip=clip)
    rnd.info = {
        "clip": clip,
        "hidden": hidden,
        "out_dim": out_dim,
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "train_embeddings": len(train),
        "val_embeddings": len(val),
        "train_score_mean": float(rnd.score(train).mean()),
        "val_score_mean": float(rnd.score(val).mean()) if len(val) else None,
    }
    return rnd
