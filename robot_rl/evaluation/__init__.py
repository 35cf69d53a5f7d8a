"""Policy evaluation: rollouts, the eval report (ARCHITECTURE.md) and rollout videos."""

from robot_rl.evaluation.evaluate import EvalConfig, evaluate, wilson_interval

__all__ = ["EvalConfig", "evaluate", "wilson_interval"]
