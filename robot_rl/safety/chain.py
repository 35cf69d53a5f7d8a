"""The safety chain: e-stop, watchdog, chunk verdict, finiteness, then each filter in turn.

:class:`SafetyChain` is what runs between a policy and a robot, in simulation and on hardware alike:

1. the e-stop is latched -> fallback (``estop: <reason>``);
2. the watchdog finds the state stale or a control period missed -> fallback;
3. the chunk in play was refused by the chunk validator -> fallback (``chunk_rejected``);
4. a state entry or the command is not finite -> fallback;
5. otherwise each filter in turn (each is minimally invasive: a safe command passes bit for bit).

The output is always finite. ``chain(action, observation, status)`` is the Controller's ``ActionFilter``
(``Controller(policy, filters=[chain], monitors=[chain.monitor])``); ``chain.filter(command, state, now)``
is for direct use (evaluation of non-exported policies, tests). The state mapping is the observation
merged with the robot state (see :mod:`robot_rl.safety.base`), optionally with ``stamp``: the time its
state was measured [s], on the caller's clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robot_rl.safety.base import ConstraintCheck, Fallback, FilterReport, RobotState, SafetyFilter
from robot_rl.safety.chunk import ChunkReport, ChunkValidator
from robot_rl.safety.watchdog import EStop, Watchdog, WatchdogReport


@dataclasses.dataclass
class ChainReport:
    """What the chain did to one command."""

    changed: bool = False
    """The command sent differs from the nominal one (always True when the fallback was sent)."""
    fallback: str | None = None
    """Why the fallback command was sent (``estop: ...``, ``stale_state``, ``missed_period``, ``clock_fault``,
    ``chunk_rejected``, ``nonfinite_state``, ``nonfinite_command``, or a filter's reason such as ``infeasible``);
    None when the filters' output was sent."""
    reports: list[FilterReport] = dataclasses.field(default_factory=list)
    """Each filter's report, in order (empty when the chain fell back before the filters)."""
    active: list[str] = dataclasses.field(default_factory=list)
    """Binding constraints over all filters."""
    watchdog: WatchdogReport | None = None
    """The timing verdict (None without a watchdog)."""
    violations: list[str] = dataclasses.field(default_factory=list)
    """Constraints the measured state breaks now (with a constraint check; the state before this command)."""


class SafetyChain:
    """Filters in order, behind an e-stop, a watchdog and a chunk check, with one fallback.

    Args:
        filters: Applied in order; each returns the command to send and a :class:`FilterReport`.
        fallback: The command to send when the chain cannot trust the nominal one (``fallback.command(state)``).
        watchdog: Stale-state and missed-period guard (None: no timing checks).
        estop: The latch (default: a new one; ``chain.estop.trigger(reason)`` stops the robot).
        check: Constraint check run on every state for the report (None: none).
        chunk_validator: Judges new action chunks through :meth:`monitor` or :meth:`check_chunk`.
    """

    def __init__(
        self,
        filters: Sequence[SafetyFilter],
        fallback: Fallback,
        watchdog: Watchdog | None = None,
        estop: EStop | None = None,
        check: ConstraintCheck | None = None,
        chunk_validator: ChunkValidator | None = None,
    ) -> None:
        self.filters = list(filters)
        self.fallback = fallback
        self.watchdog = watchdog
        self.estop = estop if estop is not None else EStop()
        self.check = check
        self.chunk_validator = chunk_validator
        self.chunk_report: ChunkReport | None = None
        """The verdict on the chunk in play (None: none judged since the reset)."""

    def reset(self) -> None:
        """New episode: the filters' memory, the watchdog's clock and the chunk verdict; the e-stop stays latched."""
        for safety_filter in self.filters:
            safety_filter.reset()
        if self.watchdog is not None:
            self.watchdog.reset()
        self.chunk_report = None

    def check_chunk(self, chunk: np.ndarray, previous: np.ndarray | None = None) -> ChunkReport:
        """Judge a new chunk (H, A) before it runs; while a refused chunk is in play the chain sends the fallback.

        Raises:
            ValueError: the chain has no chunk validator.
        """
        if self.chunk_validator is None:
            raise ValueError("this chain has no chunk validator; pass `chunk_validator=` to SafetyChain.")
        self.chunk_report = self.chunk_validator.validate(chunk, previous)
        return self.chunk_report

    def monitor(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: Any) -> bool:
        """Controller monitor: judge each new chunk (alarm when refused); a no-op without a chunk validator."""
        if self.chunk_validator is None:
            return False
        if getattr(status, "new_chunk", True) or self.chunk_report is None:
            self.check_chunk(chunk)
        assert self.chunk_report is not None
        return not self.chunk_report.ok

    def __call__(
        self, action: np.ndarray, observation: Mapping[str, np.ndarray], status: Any
    ) -> tuple[np.ndarray, ChainReport]:
        """The Controller's ``ActionFilter``: :meth:`filter` at ``status.now``."""
        return self.filter(action, observation, float(status.now))

    def filter(self, command: np.ndarray, state: RobotState, now: float) -> tuple[np.ndarray, ChainReport]:
        """The command to send for the nominal ``command`` in ``state`` at time ``now`` [s], and what happened.

        Args:
            command: The nominal command. Shape: (action_dim,).
            state: Observation merged with the robot state; ``state["stamp"]`` (optional) is when it was measured.
            now: The caller's clock [s].

        Returns:
            The command to send (finite, same shape) and the :class:`ChainReport`.
        """
        command = np.asarray(command, dtype=np.float64)
        report = ChainReport()
        if self.watchdog is not None:
            stamp = state.get("stamp")
            report.watchdog = self.watchdog.check(now, None if stamp is None else float(np.asarray(stamp)))
        if self.check is not None:
            report.violations = self.check.violations(state)
        reason = self._fallback_reason(command, state, report)
        if reason is None:
            out = command
            for safety_filter in self.filters:
                out, filter_report = safety_filter.filter(out, state)
                report.reports.append(filter_report)
                report.active += filter_report.active
                report.fallback = report.fallback or filter_report.fallback
            report.changed = any(r.changed for r in report.reports)
            if np.isfinite(out).all():
                return out, report
            reason = "nonfinite_output"
        return self._send_fallback(state, report, reason), report

    def _fallback_reason(self, command: np.ndarray, state: RobotState, report: ChainReport) -> str | None:
        if self.estop.latched:
            return f"estop: {self.estop.reason}"
        if report.watchdog is not None and not report.watchdog.ok:
            return report.watchdog.reason
        if self.chunk_report is not None and not self.chunk_report.ok:
            return "chunk_rejected"
        for value in state.values():
            array = np.asarray(value)
            if array.dtype.kind in "fc" and not np.isfinite(array).all():
                return "nonfinite_state"
        if not np.isfinite(command).all():
            return "nonfinite_command"
        return None

    def _send_fallback(self, state: RobotState, report: ChainReport, reason: str) -> np.ndarray:
        out = np.asarray(self.fallback.command(state), dtype=np.float64)
        if not np.isfinite(out).all():
            out = np.zeros_like(out)  # last resort; a fallback must not produce this
        report.fallback = reason
        report.changed = True
        for safety_filter in self.filters:
            # The rate limits continue from what was actually sent.
            commanded = getattr(safety_filter, "commanded", None)
            if commanded is not None:
                commanded(out)
        return out
