"""The losses of a residual run, logged into its folder: ``losses.jsonl``, one line per stable-baselines3 log dump.

stable-baselines3 records its training scalars (SAC and DSRL: ``train/critic_loss``, ``train/actor_loss``,
``train/ent_coef``, ``train/ent_coef_loss``; PPO: ``train/value_loss``, ``train/policy_gradient_loss``,
``train/entropy_loss``, ``train/approx_kl``, ...) into its logger and writes them to TensorBoard when the logger
dumps (every few episodes, and at each of our evaluations). :class:`LossLog` is one more output of that logger:
each dump that holds ``train/`` values becomes one JSON line with the env steps, so the run's plot
(:func:`robot_rl.policies.plots.plot_training`, :func:`robot_rl.policies.plots.read_losses`) and any script
read them without TensorBoard.
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import KVWriter

from robot_rl.policies.plots import LOSSES_FILE

__all__ = ["LOSSES_FILE", "LossLog"]


class LossLog(KVWriter):
    """Appends each logger dump's ``train/`` scalars to ``path`` (a resumed run continues the file).

    Args:
        path: The run's ``losses.jsonl``.
        env_steps_per_step: Env steps per agent step (DSRL: the base's ``n_action_steps``; else 1).
    """

    def __init__(self, path: str | os.PathLike[str], env_steps_per_step: int = 1) -> None:
        self.path = Path(path)
        self.env_steps_per_step = env_steps_per_step

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        """One line for a dump with training scalars (dumps before the first update hold none)."""
        values = {
            key: float(value)
            for key, value in key_values.items()
            if key.startswith("train/") and isinstance(value, numbers.Real) and not isinstance(value, bool)
        }
        values = {key: value for key, value in values.items() if value == value and abs(value) != float("inf")}
        if not set(values) - {"train/learning_rate", "train/n_updates"}:
            return
        line = {"env_steps": int(step) * self.env_steps_per_step, **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def close(self) -> None:
        """Nothing is held open (each line is appended and closed)."""
