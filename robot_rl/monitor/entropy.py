"""Action-chunk entropy: how much a generative policy's chunks disagree for the same history.

For the current observation history the monitor samples ``K`` chunks under ``K`` independent
initial noises in one batched ``predict_batch`` call (shape (K, horizon, A)). The estimate is the
entropy of a Gaussian with a *diagonal* covariance fitted per chunk step, averaged over the steps
and the action dims:

    H = mean over (h, a) of 0.5 * log(2 pi e (var_k chunk[k, h, a] + eps))   [nats per entry]

with the unbiased sample variance over the K samples (raw action units) and ``eps`` a variance
floor (identical chunks give ``0.5 log(2 pi e eps)``, a finite minimum). The diagonal form was
chosen over the log-determinant of the full per-step covariance because K (4-16) is comparable to
A: a full covariance estimate is singular or badly conditioned at these sample sizes, while the
per-entry variances stay well defined and the mean of their logarithms is monotone in the spread.

Only the *active* action dims count: those the training demonstrations actually varied (the
normalization range on the card spans more than 1% of the action space's width). A dim the demos
held constant (the blocked gripper of PandaPush, at -1) carries no information and its sampling
noise would only add variance to the score. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from robot_rl.export.metadata import PolicyMetadata

DEFAULT_EPS = 1e-6
"""Variance floor [action units^2]."""


def active_action_dims(metadata: PolicyMetadata, min_fraction: float = 0.01) -> list[int]:
    """Action dims whose training range spans more than ``min_fraction`` of the action space's width.

    Falls back to every dim when none qualifies.
    """
    norm, space = metadata.normalization, metadata.action
    dims = [
        i
        for i in range(metadata.action_dim)
        if (norm.action_high[i] - norm.action_low[i]) > min_fraction * (space.high[i] - space.low[i])
    ]
    return dims or list(range(metadata.action_dim))


def chunk_entropy(chunks: np.ndarray, dims: Sequence[int] | None = None, eps: float = DEFAULT_EPS) -> float:
    """Diagonal-Gaussian entropy estimate of K sampled chunks [nats per chunk entry].

    Args:
        chunks: K chunks for the same history. Shape: (K, horizon, A), K >= 2.
        dims: Action dims to include (default: all).
        eps: Variance floor [action units^2].

    Returns:
        ``mean_{h, a} 0.5 log(2 pi e (var_k + eps))``; NaN chunks give NaN.
    """
    x = np.asarray(chunks, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] < 2:
        raise ValueError(f"chunks must have shape (K >= 2, horizon, A). Got {tuple(x.shape)}.")
    if dims is not None:
        x = x[:, :, list(dims)]
    var = x.var(axis=0, ddof=1)
    return float(0.5 * np.mean(np.log(2.0 * math.pi * math.e * (var + eps))))


def sample_chunks(policy: object, history: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """``samples`` chunks for one raw history under independent noises, in one batched call.

    Args:
        policy: An :class:`~robot_rl.runtime.OnnxPolicy` (anything with ``predict_batch``, ``horizon``,
            ``action_dim``).
        history: Raw flattened history. Shape: (n_obs_steps, obs_dim).
        samples: K.
        rng: Source of the standard-normal noises.

    Returns:
        Shape (K, horizon, A).
    """
    histories = np.repeat(np.asarray(history, dtype=np.float32)[None], samples, axis=0)
    noise = rng.standard_normal((samples, policy.horizon, policy.action_dim), dtype=np.float32)
    return policy.predict_batch(histories, noise)
