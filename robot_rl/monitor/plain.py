"""Plain run-time monitors: fixed rules that need no learning or calibration.

Each implements the Controller's Monitor protocol (``__call__(observation, chunk, status) -> bool``,
``name``, ``reset()``) and resets itself at the first step of an episode (``status.step == 0``).
The policy command they read is the newest chunk's action for this step, ``chunk[status.chunk_step]``
(the command before the filters under ``blend="none"``). numpy only.

- :class:`NonFiniteObservation`: any NaN or inf in the observation entries the policy reads.
- :class:`LimitHitRate`: the share of the last ``window`` steps whose command sits at (or beyond)
  the action bounds in an active dim is at least ``max_rate`` (a policy pinned at its limits).
- :class:`TrackingError` (Franka): the measured TCP misses the target the previous command set
  (``tcp_prev + max_displacement * clip(a_prev)``) by more than ``max_error_m`` on average over the
  last ``window`` steps (a blocked or colliding arm). The env clips targets to its workspace box, so
  near the box's faces the error overstates the miss; keep the threshold above that.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence

import numpy as np

from robot_rl.runtime.controller import ControlStatus


class NonFiniteObservation:
    """Alarm on any NaN or inf in the observation entries named by ``keys`` (default: all)."""

    name = "nonfinite_obs"

    def __init__(self, keys: Sequence[str] | None = None) -> None:
        self.keys = None if keys is None else tuple(keys)

    def reset(self) -> None:
        """Nothing to forget."""

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: ControlStatus) -> bool:
        """True when an observed value is NaN or inf."""
        keys = self.keys if self.keys is not None else tuple(observation)
        return any(not np.all(np.isfinite(observation[k])) for k in keys if k in observation)


class LimitHitRate:
    """Alarm when the command sat at its bounds in at least ``max_rate`` of the last ``window`` steps.

    Args:
        low: Action lower bounds. Shape: (A,).
        high: Action upper bounds. Shape: (A,).
        dims: Action dims checked (default: all); leave out dims the policy always holds at a bound.
        window: Steps in the rate [steps].
        max_rate: Alarm threshold on the rate, in (0, 1].
        tol: A value within ``tol`` of a bound (or beyond it) is at the bound [action units].
    """

    name = "limit_hit"

    def __init__(
        self,
        low: Sequence[float],
        high: Sequence[float],
        dims: Sequence[int] | None = None,
        window: int = 25,
        max_rate: float = 0.5,
        tol: float = 1e-3,
    ) -> None:
        if window < 1 or not 0.0 < max_rate <= 1.0:
            raise ValueError(f"`window` must be >= 1 and `max_rate` in (0, 1]. Got {window}, {max_rate}.")
        self.dims = list(range(len(low))) if dims is None else list(dims)
        self.low = np.asarray(low, dtype=np.float64)[self.dims] + tol
        self.high = np.asarray(high, dtype=np.float64)[self.dims] - tol
        self.window, self.max_rate = window, max_rate
        self._hits: deque[bool] = deque(maxlen=window)

    def reset(self) -> None:
        """Forget the recent steps."""
        self._hits.clear()

    @property
    def rate(self) -> float:
        """Share of the recent steps at a bound (over the steps seen, up to ``window``)."""
        return sum(self._hits) / len(self._hits) if self._hits else 0.0

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: ControlStatus) -> bool:
        """True when the rate over a full window reaches ``max_rate``."""
        if status.step == 0:
            self.reset()
        action = np.asarray(chunk[status.chunk_step], dtype=np.float64)[self.dims]
        self._hits.append(bool(np.any(action <= self.low) or np.any(action >= self.high)))
        return len(self._hits) == self.window and self.rate >= self.max_rate


class TrackingError:
    """Alarm when the TCP misses its commanded target by more than ``max_error_m`` on average (Franka).

    Args:
        max_displacement: TCP displacement per step at |action| = 1 [m] (the env's ``max_displacement``).
        position_slice: Where the measured TCP position sits in ``observation["observation"]``.
        window: Steps averaged [steps].
        max_error_m: Alarm threshold on the mean error [m].
    """

    name = "tracking"

    def __init__(
        self,
        max_displacement: float = 0.05,
        position_slice: slice = slice(0, 3),
        window: int = 5,
        max_error_m: float = 0.04,
    ) -> None:
        if window < 1 or not max_error_m > 0.0:
            raise ValueError(f"`window` must be >= 1 and `max_error_m` > 0. Got {window}, {max_error_m}.")
        self.max_displacement, self.position_slice = max_displacement, position_slice
        self.window, self.max_error_m = window, max_error_m
        self._errors: deque[float] = deque(maxlen=window)
        self._target: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the target and the errors."""
        self._errors.clear()
        self._target = None

    @property
    def mean_error(self) -> float:
        """Mean tracking error over the recent steps [m] (NaN before the second step)."""
        return sum(self._errors) / len(self._errors) if self._errors else math.nan

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: ControlStatus) -> bool:
        """True when the mean error over a full window exceeds ``max_error_m``."""
        if status.step == 0:
            self.reset()
        tcp = np.asarray(observation["observation"], dtype=np.float64)[self.position_slice]
        if self._target is not None:
            self._errors.append(float(np.linalg.norm(tcp - self._target)))
        action = np.clip(np.asarray(chunk[status.chunk_step], dtype=np.float64)[:3], -1.0, 1.0)
        self._target = tcp + self.max_displacement * action
        return len(self._errors) == self.window and self.mean_error > self.max_error_m


def plain_monitors(metadata: object, active_dims: Sequence[int] | None = None) -> list[object]:
    """The plain monitors that apply to a policy: non-finite observations, limit hits, and tracking (Franka).

    Args:
        metadata: The policy card (:class:`~robot_rl.export.metadata.PolicyMetadata`).
        active_dims: Action dims for the limit-hit rate (default: those the demos varied).
    """
    from robot_rl.monitor.entropy import active_action_dims

    action = metadata.action
    dims = list(active_dims) if active_dims is not None else active_action_dims(metadata)
    names = [k.split("[")[0] for k in metadata.observation.keys]
    monitors: list[object] = [NonFiniteObservation(names), LimitHitRate(action.low, action.high, dims)]
    if action.family == "franka" and "observation" in names:
        monitors.append(TrackingError())
    return monitors
