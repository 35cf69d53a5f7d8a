"""Timing guards: a watchdog for stale state and missed control periods, and a latching e-stop.

Neither reads the wall clock: the caller passes its time in (simulated time in evaluation and tests,
the node's clock on hardware), as :meth:`robot_rl.runtime.Controller.step` does.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class WatchdogReport:
    """The timing verdict on one step."""

    age_s: float | None
    """``now - stamp`` of the state [s]; None when the state carried no stamp."""
    period_s: float | None
    """``now`` minus the previous step's [s]; None at the first step after a reset."""
    stale: bool
    """The state is older than the deadline, from the future by more than the deadline, or its stamp is not finite."""
    missed: int
    """Control periods missed since the previous step (0 when on time)."""
    clock_fault: bool = False
    """``now`` is not finite or went backwards."""

    @property
    def ok(self) -> bool:
        """Fresh state, no missed period, a sane clock."""
        return not (self.stale or self.missed or self.clock_fault)

    @property
    def reason(self) -> str | None:
        """``clock_fault``, ``stale_state`` or ``missed_period`` (in that precedence); None when ok."""
        if self.clock_fault:
            return "clock_fault"
        if self.stale:
            return "stale_state"
        if self.missed:
            return "missed_period"
        return None


class Watchdog:
    """Flags stale state and missed control periods.

    Args:
        deadline_s: Oldest acceptable state: ``now - stamp > deadline_s`` is stale [s].
        ctrl_dt: Control period [s].
        late_factor: A step more than ``late_factor * ctrl_dt`` after the previous one missed at least
            one period (the Controller's ``late`` rule).
    """

    def __init__(self, deadline_s: float, ctrl_dt: float, late_factor: float = 1.5) -> None:
        if not (math.isfinite(deadline_s) and deadline_s > 0):
            raise ValueError(f"`deadline_s` must be finite and > 0. Got {deadline_s}.")
        if not (math.isfinite(ctrl_dt) and ctrl_dt > 0):
            raise ValueError(f"`ctrl_dt` must be finite and > 0. Got {ctrl_dt}.")
        if not (math.isfinite(late_factor) and late_factor > 1):
            raise ValueError(f"`late_factor` must be finite and > 1. Got {late_factor}.")
        self.deadline_s = float(deadline_s)
        self.ctrl_dt = float(ctrl_dt)
        self.late_factor = float(late_factor)
        self._last_now: float | None = None

    def reset(self) -> None:
        """New episode: forget the previous step's time."""
        self._last_now = None

    def check(self, now: float, stamp: float | None = None) -> WatchdogReport:
        """Judge one step at time ``now`` [s] whose state was measured at ``stamp`` [s] (None: unknown).

        Call it once per control step: it remembers ``now`` to count missed periods.
        """
        now = float(now)
        if not math.isfinite(now) or (self._last_now is not None and now < self._last_now):
            return WatchdogReport(None, None, stale=False, missed=0, clock_fault=True)
        period = None if self._last_now is None else now - self._last_now
        self._last_now = now
        missed = 0
        if period is not None and period > self.late_factor * self.ctrl_dt:
            missed = max(1, round(period / self.ctrl_dt) - 1)
        if stamp is None:
            return WatchdogReport(None, period, stale=False, missed=missed)
        age = now - float(stamp)
        stale = not math.isfinite(age) or abs(age) > self.deadline_s
        return WatchdogReport(age if math.isfinite(age) else None, period, stale=stale, missed=missed)


class EStop:
    """A latching emergency stop: once triggered it stays latched until :meth:`reset`, whatever else resets."""

    def __init__(self) -> None:
        self._reason: str | None = None
        self._since: float | None = None

    @property
    def latched(self) -> bool:
        """Whether the stop is active."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why it was triggered first (later triggers while latched keep the first reason)."""
        return self._reason

    @property
    def since(self) -> float | None:
        """The caller's time of the first trigger [s], when given."""
        return self._since

    def trigger(self, reason: str, now: float | None = None) -> None:
        """Latch the stop (an operator button, a monitor alarm, a fault)."""
        if not reason:
            raise ValueError("`reason` must be a non-empty string (it is logged with every held step).")
        if self._reason is None:
            self._reason = str(reason)
            self._since = now

    def reset(self) -> None:
        """Release the stop: the explicit operator action that resumes control."""
        self._reason = None
        self._since = None
