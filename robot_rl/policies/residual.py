"""Residual composition (numpy only): a base action plus a bounded, scaled correction.

One arithmetic for every place a residual acts: the training wrappers (:mod:`robot_rl.rl.wrappers`),
a trained run's actor, the demos' corrections and the exported graph's residual path
(:mod:`robot_rl.rl.residual_export`, which traces the same formula in torch)::

    applied = clip(base + scale * clip(correction, -1, 1), low, high)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

SCALE_RANGE = (0.0, 2.0)
"""Valid residual scales (exclusive of 0): the correction's reach relative to the action range."""


def check_scale(values: tuple[float, ...]) -> None:
    """Refuse a residual scale out of range: one value in (0, 2], or per-dimension values in [0, 2], one above 0."""
    low, high = SCALE_RANGE
    if not values:
        raise ValueError("`scale` needs at least one value.")
    if len(values) == 1 and not low < values[0] <= high:
        raise ValueError(f"`scale` must be in ({low}, {high}]. Got {values[0]}.")
    if len(values) > 1 and (min(values) < low or max(values) > high or max(values) <= low):
        raise ValueError(
            f"Per-dimension `scale` entries must be in [{low}, {high}] (0 leaves a dimension to the base), at "
            f"least one above 0. Got {list(values)}."
        )


def resolve_scale(scale: float | Sequence[float], action_dim: int) -> np.ndarray:
    """The per-dimension correction scale: one number for every dimension, or one per dimension.

    A per-dimension entry of 0 leaves that dimension to the base (the residual cannot touch it).

    Raises:
        ValueError: a single scale outside (0, 2], an entry outside [0, 2], all entries 0, or a count
            that is neither 1 nor ``action_dim``.
    """
    values = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    if values.ndim != 1 or values.size not in (1, action_dim):
        raise ValueError(
            f"`scale` takes 1 value (every action dimension) or {action_dim} (one per dimension). "
            f"Got {values.size}: {values.tolist()}."
        )
    check_scale(tuple(values.tolist()))
    return np.full(action_dim, values[0]) if values.size == 1 else values


def apply_correction(
    base_action: np.ndarray, correction: Any, scale: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """``clip(base + scale * c, low, high)`` with ``c`` the correction bounded to [-1, 1].

    Any agent output is bounded first: NaN counts as no correction, +-inf as the bound. So the applied
    action is finite, inside ``[low, high]`` and within ``scale`` of the base action (per dimension)
    whenever the base action is inside ``[low, high]``.
    """
    c = np.nan_to_num(np.asarray(correction, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(base_action + scale * np.clip(c, -1.0, 1.0), low, high)
