"""Residual and noise-space RL on a frozen base policy (wrappers + stable-baselines3 algorithms)."""

from robot_rl.rl.config import TrainResidual

__all__ = ["TrainResidual"]
