"""Base policies learned by behaviour cloning: BC-MLP and a diffusion policy over action chunks.

The configs (:mod:`robot_rl.policies.config`) import without torch; everything else loads torch on
first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from robot_rl.policies.config import BCConfig, ChunkConfig, DiffusionConfig, TrainBC, TrainConfig, TrainDiffusion

_LAZY = {
    "ChunkedActor": "robot_rl.policies.layout",
    "ObsLayout": "robot_rl.policies.layout",
    "Policy": "robot_rl.policies.layout",
    "RunError": "robot_rl.policies.checkpoint",
    "load_policy": "robot_rl.policies.checkpoint",
    "read_config": "robot_rl.policies.checkpoint",
    "BCPolicy": "robot_rl.policies.models",
    "DiffusionPolicy": "robot_rl.policies.models",
    "train": "robot_rl.policies.train",
}

__all__ = ["BCConfig", "ChunkConfig", "DiffusionConfig", "TrainBC", "TrainConfig", "TrainDiffusion", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robot_rl.policies' has no attribute {name!r}")
