"""Whole-chunk validation: judge a policy's action chunk before any of it runs.

A chunk is a (H, A) array of commands for H consecutive control steps. :class:`ChunkValidator` flags
non-finite entries, entries outside [``low``, ``high``], step-to-step jumps larger than ``max_jump``
and second differences (discrete jerk) larger than ``max_jerk``, and reports the offending steps. It
plugs into :class:`robot_rl.runtime.Controller` as a monitor (it raises the alarm on a bad new chunk),
and :class:`~robot_rl.safety.chain.SafetyChain` uses it to refuse a bad chunk before it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robot_rl.safety.config import ChunkConfig

KINDS = ("nonfinite", "below_low", "above_high", "jump", "jerk")
"""The issue kinds, in the order they are checked."""


@dataclasses.dataclass(frozen=True)
class ChunkIssue:
    """One offending step of a chunk."""

    step: int
    """Index in the chunk (0 = the chunk's first action)."""
    kind: str
    """One of :data:`KINDS`; ``jump`` at step t compares t with t - 1, ``jerk`` t with t - 1 and t - 2."""
    dims: tuple[int, ...]
    """The action dimensions at fault."""
    value: float
    """The worst offence: distance past ``low``/``high``, |jump| or |second difference| (NaN for non-finite)."""


@dataclasses.dataclass
class ChunkReport:
    """The verdict on one chunk."""

    issues: list[ChunkIssue] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No issue."""
        return not self.issues

    @property
    def steps(self) -> list[int]:
        """The offending steps, ascending, each once."""
        return sorted({issue.step for issue in self.issues})

    def summary(self) -> str:
        """One line for logs: ``ok`` or ``step 3: jump (dims 0, 2; 1.6); ...``."""
        if self.ok:
            return "ok"
        return "; ".join(
            f"step {i.step}: {i.kind} (dims {', '.join(map(str, i.dims))}; {i.value:.3g})" for i in self.issues
        )


class ChunkValidator:
    """Checks whole action chunks against value, jump and jerk limits.

    Args:
        low: Lowest allowed entry per action dimension. Shape: (A,).
        high: Highest allowed entry per action dimension. Shape: (A,).
        max_jump: Largest |c[t] - c[t-1]| [action units / step]: one for all dimensions, or per dimension (A,).
        max_jerk: Largest |c[t] - 2 c[t-1] + c[t-2]| [action units / step^2], likewise.
    """

    name = "chunk_validator"

    def __init__(
        self,
        low: Sequence[float],
        high: Sequence[float],
        max_jump: float | Sequence[float],
        max_jerk: float | Sequence[float],
    ) -> None:
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        if self.low.shape != self.high.shape or self.low.ndim != 1:
            raise ValueError(f"`low` and `high` must be 1-D of one length. Got {self.low.shape}, {self.high.shape}.")
        if (self.low > self.high).any():
            raise ValueError(f"`low` must be <= `high` entrywise. Got {self.low} and {self.high}.")
        self.max_jump = np.broadcast_to(np.asarray(max_jump, dtype=np.float64), self.low.shape).copy()
        self.max_jerk = np.broadcast_to(np.asarray(max_jerk, dtype=np.float64), self.low.shape).copy()
        if not ((self.max_jump > 0).all() and (self.max_jerk > 0).all()):
            raise ValueError(f"`max_jump` and `max_jerk` must be > 0. Got {max_jump}, {max_jerk}.")
        self.last_report: ChunkReport | None = None
        """The verdict on the newest chunk seen as a monitor."""

    @classmethod
    def from_config(cls, config: ChunkConfig) -> ChunkValidator:
        """A validator with a hardware file's ``chunk`` thresholds."""
        return cls(config.low, config.high, config.max_jump, config.max_jerk)

    def validate(self, chunk: np.ndarray, previous: np.ndarray | None = None) -> ChunkReport:
        """Judge ``chunk`` (H, A).

        Args:
            chunk: The commands for H consecutive steps. Shape: (H, A).
            previous: The command sent just before the chunk (A,); with it the jump into step 0 and the
                jerk at step 1 are checked too.

        Returns:
            The issues, ordered by step then kind.
        """
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or chunk.shape[1] != self.low.shape[0]:
            raise ValueError(f"`chunk` must have shape (H, {self.low.shape[0]}). Got {chunk.shape}.")
        offset = 0
        if previous is not None:
            chunk = np.vstack([np.asarray(previous, dtype=np.float64).reshape(1, -1), chunk])
            offset = 1
        issues: list[ChunkIssue] = []
        finite = np.isfinite(chunk)
        with np.errstate(invalid="ignore"):
            self._collect(issues, ~finite, None, "nonfinite", offset)
            self._collect(issues, chunk < self.low, self.low - chunk, "below_low", offset)
            self._collect(issues, chunk > self.high, chunk - self.high, "above_high", offset)
            jump = np.abs(np.diff(chunk, axis=0))
            self._collect(issues, jump > self.max_jump, jump, "jump", offset - 1)
            jerk = np.abs(np.diff(chunk, n=2, axis=0))
            self._collect(issues, jerk > self.max_jerk, jerk, "jerk", offset - 2)
        issues.sort(key=lambda issue: (issue.step, KINDS.index(issue.kind)))
        return ChunkReport(issues)

    @staticmethod
    def _collect(issues: list[ChunkIssue], mask: np.ndarray, size: np.ndarray | None, kind: str, offset: int) -> None:
        """Append one issue per row of ``mask`` with a True entry; row r is chunk step r - offset."""
        for row in np.flatnonzero(mask.any(axis=1)):
            step = int(row) - offset
            if step < 0:
                continue  # a row of `previous` alone
            dims = tuple(int(d) for d in np.flatnonzero(mask[row]))
            value = float("nan") if size is None else float(size[row, list(dims)].max())
            issues.append(ChunkIssue(step, kind, dims, value))

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: Any) -> bool:
        """Controller monitor: validate each new chunk; raise the alarm when it fails."""
        if getattr(status, "new_chunk", True) or self.last_report is None:
            self.last_report = self.validate(chunk)
        return not self.last_report.ok
