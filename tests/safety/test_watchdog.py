"""Watchdog and e-stop with a fake clock: times are passed in, the wall clock is never read."""

import math

import pytest

from robot_rl.safety.watchdog import EStop, Watchdog


class FakeClock:
    """Steps of ``dt`` [s], with gaps on request."""

    def __init__(self, dt=0.04):
        self.now, self.dt = 0.0, dt

    def tick(self, periods=1):
        self.now += periods * self.dt
        return self.now


class TestWatchdog:
    def test_on_time_steps_with_fresh_state_are_ok(self):
        clock, dog = FakeClock(), Watchdog(deadline_s=0.1, ctrl_dt=0.04, late_factor=1.5)
        first = dog.check(clock.now, stamp=clock.now)
        assert first.ok and first.period_s is None and first.age_s == 0.0
        for _ in range(10):
            now = clock.tick()
            report = dog.check(now, stamp=now - 0.01)
            assert report.ok and report.reason is None
            assert report.period_s == pytest.approx(0.04) and report.age_s == pytest.approx(0.01)

    def test_state_older_than_the_deadline_is_stale(self):
        dog = Watchdog(0.1, 0.04)
        assert dog.check(1.0, stamp=0.95).ok
        report = dog.check(1.04, stamp=0.93)  # 0.11 s old
        assert report.stale and report.reason == "stale_state"

    def test_a_stamp_from_the_future_or_not_finite_is_stale(self):
        dog = Watchdog(0.1, 0.04)
        assert dog.check(1.0, stamp=1.2).stale
        assert dog.check(1.04, stamp=math.nan).stale

    def test_no_stamp_means_no_staleness_check(self):
        report = Watchdog(0.1, 0.04).check(5.0)
        assert report.ok and report.age_s is None

    def test_missed_periods_are_counted(self):
        clock, dog = FakeClock(), Watchdog(0.1, 0.04, late_factor=1.5)
        dog.check(clock.now)
        assert dog.check(clock.tick(1.4)).missed == 0  # within 1.5 periods: on time
        report = dog.check(clock.tick(5))  # four periods skipped
        assert report.missed == 4 and report.reason == "missed_period"
        assert dog.check(clock.tick(2)).missed == 1
        assert dog.check(clock.tick()).ok

    def test_reset_forgets_the_previous_step(self):
        dog = Watchdog(0.1, 0.04)
        dog.check(0.0)
        dog.reset()
        assert dog.check(10.0).ok

    def test_a_clock_that_goes_backwards_or_is_not_finite_is_a_fault(self):
        dog = Watchdog(0.1, 0.04)
        dog.check(1.0)
        report = dog.check(0.9)
        assert report.clock_fault and report.reason == "clock_fault"
        assert dog.check(math.inf).clock_fault
        assert dog.check(1.04).ok  # the clock recovered; the last good time was 1.0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"deadline_s": 0.0, "ctrl_dt": 0.04}, "deadline_s"),
            ({"deadline_s": 0.1, "ctrl_dt": -1.0}, "ctrl_dt"),
            ({"deadline_s": 0.1, "ctrl_dt": 0.04, "late_factor": 1.0}, "late_factor"),
        ],
    )
    def test_invalid_settings_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            Watchdog(**kwargs)


class TestEStop:
    def test_trigger_latches_until_an_explicit_reset(self):
        stop = EStop()
        assert not stop.latched
        stop.trigger("operator button", now=2.5)
        stop.trigger("second reason", now=3.0)
        assert stop.latched and stop.reason == "operator button" and stop.since == 2.5
        stop.reset()
        assert not stop.latched and stop.reason is None and stop.since is None

    def test_an_empty_reason_is_refused(self):
        with pytest.raises(ValueError, match="reason"):
            EStop().trigger("")
