"""Goal progress: how far behind the successful rollouts' pace the task is, as a failure score.

The two FIPER signals ask whether the state looks like the training data (RND) and whether the
policy is unsure (chunk entropy). Neither sees a policy that confidently stops short of the goal: on
PandaPush most failures push the object to 6-10 cm from the goal (the success radius is 5 cm) and
leave it there, in states and with chunks that look like those of successes.

Goal-conditioned tasks (the Gymnasium-Robotics API) report ``achieved_goal`` and ``desired_goal``
in every observation, so the distance between them can be compared, chunk by chunk, with the
distances the policy's own *successful* calibration rollouts had at the same chunk index:

    z_k = (d_k - mean_k) / max(std_k, floor)

where ``mean_k`` and ``std_k`` are the mean and standard deviation of the goal distance at chunk
``k`` over the successful calibration rollouts (the *envelope*; past its last chunk the last
values hold). A large ``z_k`` says the task is further from done than a success usually is at that
time. The score is windowed and conformally calibrated like the other two
(:mod:`robot_rl.monitor.conformal`): only successful rollouts are needed, never failure data.

The envelope and the threshold come from the same successful rollouts, so the conformal guarantee
is approximate (as for the joint FIPER calibration); the false-alarm rates measured on fresh seeds
are in ``robot-rl monitor eval``'s report and bench/results/monitor_progress.md.

numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DEFAULT_FLOOR_M = 0.005
"""Smallest standard deviation used in the score [m]: where every success sits at the goal (std
near 0), a few millimetres more must not read as many standard deviations."""


def goal_distance(observation: Mapping[str, Any]) -> float | None:
    """Distance between ``achieved_goal`` and ``desired_goal`` of a goal observation [m] (None: not a goal task)."""
    if "achieved_goal" not in observation or "desired_goal" not in observation:
        return None
    achieved = np.asarray(observation["achieved_goal"], dtype=np.float64).ravel()
    desired = np.asarray(observation["desired_goal"], dtype=np.float64).ravel()
    if achieved.shape != desired.shape:
        return None
    return float(np.linalg.norm(achieved - desired))


@dataclasses.dataclass(frozen=True)
class ProgressEnvelope:
    """Per-chunk mean and standard deviation of the goal distance over successful rollouts."""

    mean: tuple[float, ...]
    """Mean goal distance at chunk k [m]."""
    std: tuple[float, ...]
    """Standard deviation of the goal distance at chunk k [m]."""
    floor: float = DEFAULT_FLOOR_M
    """Smallest standard deviation used in the score [m]."""
    rollouts: int = 0
    """Successful rollouts it was fitted on."""

    def __post_init__(self) -> None:
        if not self.mean or len(self.mean) != len(self.std):
            lengths = f"{len(self.mean)} and {len(self.std)}"
            raise ValueError(f"envelope: mean and std need the same, non-zero length; got {lengths}.")
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) < 0.0:
            raise ValueError("envelope: mean and std must be finite, std >= 0.")
        if not self.floor > 0.0:
            raise ValueError(f"envelope: `floor` must be > 0 [m]. Got {self.floor}.")

    @classmethod
    def fit(cls, distances: Sequence[Sequence[float]], floor: float = DEFAULT_FLOOR_M) -> ProgressEnvelope:
        """Fit on the per-chunk goal distances of successful rollouts.

        Args:
            distances: One sequence per successful rollout: goal distance at each chunk [m].
            floor: Smallest standard deviation used in the score [m].

        Returns:
            The envelope over the chunk indices at least two rollouts reach.

        Raises:
            ValueError: fewer than two rollouts reach the first chunk, or a non-finite distance.
        """
        rows = [np.asarray(d, dtype=np.float64).ravel() for d in distances]
        if any(not np.all(np.isfinite(r)) for r in rows):
            raise ValueError("envelope: goal distances must be finite.")
        length = 0
        while sum(r.size > length for r in rows) >= 2:
            length += 1
        if length == 0:
            raise ValueError(f"envelope: needs two or more successful rollouts with chunks; got {len(rows)}.")
        mean, std = [], []
        for k in range(length):
            values = np.array([r[k] for r in rows if r.size > k])
            mean.append(float(values.mean()))
            std.append(float(values.std()))
        return cls(tuple(mean), tuple(std), float(floor), len(rows))

    def score(self, chunk: int, distance: float) -> float:
        """``z`` of the goal distance at chunk index ``chunk`` (0: the episode's first chunk)."""
        k = min(max(int(chunk), 0), len(self.mean) - 1)
        return (float(distance) - self.mean[k]) / max(self.std[k], self.floor)

    def scores(self, distances: Sequence[float] | np.ndarray) -> np.ndarray:
        """``z`` of an episode's per-chunk goal distances. Shape: (T,) -> (T,)."""
        d = np.asarray(distances, dtype=np.float64).ravel()
        k = np.minimum(np.arange(d.size), len(self.mean) - 1)
        return (d - np.asarray(self.mean)[k]) / np.maximum(np.asarray(self.std)[k], self.floor)

    def to_json(self) -> dict[str, Any]:
        """Plain form."""
        return {"mean": list(self.mean), "std": list(self.std), "floor": self.floor, "rollouts": self.rollouts}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ProgressEnvelope:
        """Inverse of :meth:`to_json`."""
        return cls(
            tuple(float(v) for v in value["mean"]),
            tuple(float(v) for v in value["std"]),
            float(value.get("floor", DEFAULT_FLOOR_M)),
            int(value.get("rollouts", 0)),
        )
