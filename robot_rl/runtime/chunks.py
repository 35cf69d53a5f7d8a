"""The action chunks in play: which step takes up a new chunk, and the command blended from them.

A chunk computed at step ``s`` holds the actions for steps ``s, s + 1, ..., s + horizon - 1``; the
action of step ``t`` is always ``chunk[t - s]``. :class:`ChunkQueue` keeps the chunks whose actions
still matter and the step at which the next chunk is due (``n_action_steps`` after the newest one
took effect, or ``replan_every`` with ``blend="ensemble"``), and blends the command of a step from
them (:class:`~robot_rl.runtime.interface.ControllerConfig` ``blend``). Inference and its timing are
the :class:`~robot_rl.runtime.controller.Controller`'s. Numpy only.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from robot_rl.runtime.interface import ControllerConfig


@dataclasses.dataclass
class Chunk:
    """One predicted action chunk."""

    actions: np.ndarray
    """(horizon, A): actions for steps origin, origin + 1, ..."""
    origin: int
    """Step whose observation the chunk was computed from."""
    index: int = -1
    """Chunks taken up before it in this episode (-1 until it is taken up)."""
    arrived: int = -1
    """Step at which it took effect."""
    inference_s: float = 0.0
    """Wall time of its inference [s]."""


class ChunkQueue:
    """The chunks in play for one episode, the step at which the next is due, and blending.

    Args:
        config: ``blend`` and its settings, ``n_action_steps`` or ``replan_every``.
        horizon: Actions per chunk.
        n_action_steps: The policy's own actions per chunk (used when ``config.n_action_steps`` is None).

    Raises:
        ValueError: steps between chunks, or the cross-fade, that do not fit in ``horizon``.
    """

    def __init__(self, config: ControllerConfig, horizon: int, n_action_steps: int) -> None:
        self.config = config
        self.horizon = horizon
        if config.blend == "ensemble":
            self.period = config.replan_every
            if self.period > horizon:
                raise ValueError(f"`replan_every` must be in [1, horizon={horizon}]. Got {self.period}.")
        else:
            self.period = config.n_action_steps or n_action_steps
            if self.period > horizon:
                raise ValueError(f"`n_action_steps` must be in [1, horizon={horizon}]. Got {self.period}.")
        """Steps between chunks."""
        if config.blend == "crossfade" and config.crossfade_steps > horizon - self.period:
            raise ValueError(
                f"`crossfade_steps` must be in [1, horizon - n_action_steps = {horizon - self.period}] (the previous "
                f"chunk has no actions beyond). Got {config.crossfade_steps}."
            )
        self.chunks: list[Chunk] = []
        """Chunks in play, oldest first."""
        self.due = 0
        """Step at which the next chunk is due."""
        self.taken = 0
        """Chunks taken up this episode."""

    def clear(self) -> None:
        """New episode: no chunks, the first due at once."""
        self.chunks.clear()
        self.due = self.taken = 0

    @property
    def newest(self) -> Chunk | None:
        """The newest chunk in play (None before the episode's first)."""
        return self.chunks[-1] if self.chunks else None

    def is_due(self, t: int) -> bool:
        """Step ``t`` takes up a new chunk."""
        return not self.chunks or t >= self.due

    def queue_length(self, t: int) -> int:
        """Steps left after step ``t`` before the next chunk is due."""
        return max(self.due - t - 1, 0)

    def covers(self, chunk: Chunk, t: int) -> bool:
        """``chunk`` holds an action for step ``t``."""
        return chunk.origin <= t < chunk.origin + self.horizon

    def take(self, chunk: Chunk, t: int) -> bool:
        """Put ``chunk`` in play at step ``t`` (False, and dropped, when it no longer covers ``t``)."""
        if not self.covers(chunk, t):
            return False
        chunk.arrived, chunk.index = t, self.taken
        self.taken += 1
        self.chunks.append(chunk)
        keep = {"none": 1, "crossfade": 2}.get(self.config.blend)
        if keep is not None:
            del self.chunks[:-keep]
        self.due = min(t + self.period, chunk.origin + self.horizon)
        return True

    def blend(self, t: int) -> tuple[np.ndarray, float, int]:
        """The policy action for step ``t``, the newest chunk's weight in it and how many chunks it mixes."""
        self.chunks = [c for c in self.chunks if c.origin + self.horizon > t]
        newest = self.chunks[-1]
        own = newest.actions[t - newest.origin]
        blend = self.config.blend
        if blend == "crossfade" and len(self.chunks) == 2:
            j = t - newest.arrived
            if j < self.config.crossfade_steps:
                old = self.chunks[0]
                weight = (j + 1) / (self.config.crossfade_steps + 1)
                return (1.0 - weight) * old.actions[t - old.origin] + weight * own, weight, 2
        if blend == "ensemble" and len(self.chunks) > 1:
            first = self.chunks[0].origin
            weights = np.array([math.exp(-self.config.ensemble_decay * (c.origin - first)) for c in self.chunks])
            weights /= weights.sum()
            stacked = np.stack([c.actions[t - c.origin] for c in self.chunks])
            return weights @ stacked, float(weights[-1]), len(self.chunks)
        return own.copy(), 1.0, 1
