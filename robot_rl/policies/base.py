"""Normalization saved with the model (torch buffers, so checkpoints and exported graphs carry it).

Observations are standardized per feature; actions are scaled from their per-dimension data range
to [-1, 1].

The torch-free parts every policy shares (observation layout, the Policy protocol, chunked
execution) live in :mod:`robot_rl.policies.layout` and are re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from robot_rl.policies.layout import (
    ChunkedActor,
    ObsLayout,
    Policy,
    check_layout,
    layout_from_space,
    parse_key,
)

__all__ = ["ChunkedActor", "Normalizer", "ObsLayout", "Policy", "check_layout", "layout_from_space", "parse_key"]


class Normalizer(nn.Module):
    """Observation standardization and action range scaling, saved with the model.

    Args:
        obs_dim: Flattened observation length.
        action_dim: Action length.
    """

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("action_low", -torch.ones(action_dim))
        self.register_buffer("action_high", torch.ones(action_dim))

    def fit(self, obs: np.ndarray, actions: np.ndarray, min_std: float = 1e-2, min_range: float = 1e-3) -> None:
        """Set the statistics from training data: obs (N, obs_dim), actions (N, action_dim).

        Features that barely vary (a fixed goal height, an unused gripper) keep a floor on their
        scale so that they are not blown up into noise.
        """
        self.obs_mean.copy_(torch.as_tensor(obs.mean(axis=0)))
        self.obs_std.copy_(torch.as_tensor(np.maximum(obs.std(axis=0), min_std)))
        low, high = actions.min(axis=0), actions.max(axis=0)
        centre = (low + high) / 2
        half = np.maximum((high - low) / 2, min_range)
        self.action_low.copy_(torch.as_tensor(centre - half))
        self.action_high.copy_(torch.as_tensor(centre + half))

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """(..., obs_dim) raw -> standardized."""
        return (obs - self.obs_mean) / self.obs_std

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """(..., action_dim) raw -> [-1, 1] over the data range."""
        return 2 * (action - self.action_low) / (self.action_high - self.action_low) - 1

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_action`."""
        return (action + 1) / 2 * (self.action_high - self.action_low) + self.action_low
