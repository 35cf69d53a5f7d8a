"""The false-alarm promise: ranks, the Beta spread of one calibration's rate, the budget, and the statistics.

The statistical tests draw synthetic exchangeable episodes (random-walk scores, so the per-rollout maximum of the
windowed statistic is what the detectors rank), calibrate every detector many times with fixed seeds, and measure
each calibration's false-alarm rate on a large fresh set.
"""

import math

import numpy as np
import pytest

from robot_rl.monitor.budget import in_fit_split, plan
from robot_rl.monitor.conformal import DETECTORS, calibrate_detectors, detector_promises, windowed_mean
from robot_rl.monitor.guarantee import (
    binom_cdf,
    calibration_budget,
    check_calibration_size,
    conformal_rank,
    min_calibration_size,
    promise,
)


class TestRanks:
    def test_marginal_rank_by_hand(self):
        assert conformal_rank(10, 0.1) == 10  # ceil(11 * 0.9) = ceil(9.9)
        assert conformal_rank(9, 0.1) == 9  # ceil(10 * 0.9) = 9 exactly, not 10
        assert conformal_rank(8, 0.1) == 9  # > n: no finite threshold
        assert min_calibration_size(0.1) == 9 and min_calibration_size(0.05) == 19 and min_calibration_size(0.2) == 4

    def test_binomial_cdf_by_hand(self):
        # Binom(3, 0.5): pmf 1/8, 3/8, 3/8, 1/8.
        np.testing.assert_allclose(binom_cdf(3, 3, 0.5), [0.125, 0.5, 0.875, 1.0])
        np.testing.assert_allclose(binom_cdf(1, 4, 0.1), [0.9**4, 0.9**4 + 4 * 0.1 * 0.9**3])

    def test_training_conditional_rank_by_hand(self):
        # n = 45, alpha = 0.05, confidence 0.9: P(Binom(45, 0.05) <= 0) = 0.95^45 = 0.0994 <= 0.1, and
        # P(<= 1) = 0.0994 + 45 * 0.05 * 0.95^44 = 0.33 > 0.1: one score may lie above the threshold, k = 45.
        assert conformal_rank(45, 0.05, 0.9) == 45
        assert conformal_rank(44, 0.05, 0.9) == 45  # 0.95^44 = 0.105 > 0.1: none finite
        assert min_calibration_size(0.05, 0.9) == 45

    def test_promise_of_one_threshold(self):
        # n = 19, alpha = 0.05: k = 19, the rate ~ Beta(1, 19): mean 1/20, quantile q = 1 - (1 - q)^(1/19).
        p = promise(19, 0.05)
        assert (p.k, p.expected) == (19, 0.05)
        assert p.interval[0] == pytest.approx(1 - 0.95 ** (1 / 19), abs=1e-9)
        assert p.interval[1] == pytest.approx(1 - 0.05 ** (1 / 19), abs=1e-9)
        assert p.p_above_alpha == pytest.approx(0.95**19, abs=1e-12)  # P(Beta(1, 19) > 0.05)
        assert "<= 0.05 on average over calibrations" in p.describe() and "n=19" in p.describe()
        assert "never alarms" in promise(10, 0.05).describe()

    def test_budget_is_the_smallest_n_with_the_width(self):
        n = calibration_budget(0.05, 0.05)
        assert n == 190
        width = lambda m: np.subtract(*promise(m, 0.05).interval[::-1])  # noqa: E731
        assert width(n) <= 0.05 < width(n - 1)
        # About (2 * 1.645)^2 alpha (1 - alpha) / width^2 successes.
        assert abs(n - (2 * 1.645) ** 2 * 0.05 * 0.95 / 0.05**2) < 20
        budget = plan(0.05, None, 0.9, None, 0.25, 0.3, success_rate=0.8)
        assert budget.successes == 190 and budget.rollouts == math.ceil(190 / (0.8 * 0.75))
        # The split detector's smaller part (0.3 * 0.05) needs ceil(1 / 0.015 - 1) = 66 successes at least.
        assert budget.minimum == 66 and plan(0.05, 0.5, 0.9, None, 0.25, 0.3, None).successes == 66

    def test_fit_split_is_by_index(self):
        assert [i for i in range(12) if in_fit_split(i, 0.25)] == [3, 7, 11]
        assert [i for i in range(6) if in_fit_split(i, 0.5)] == [1, 3, 5]


class TestRefusals:
    @pytest.mark.parametrize("alpha", [0.0, 1.0, -0.2, 1.5])
    def test_alpha_outside_0_1(self, alpha):
        with pytest.raises(ValueError, match=r"`alpha` .* must be in \(0, 1\), e.g. 0.05. Got"):
            promise(100, alpha)

    def test_too_few_successes_names_the_numbers(self):
        with pytest.raises(ValueError, match=r"alpha=0.05 needs at least 19 .*\(n >= 1/alpha - 1\); got 12"):
            check_calibration_size(12, 0.05)
        check_calibration_size(19, 0.05)
        with pytest.raises(ValueError, match="needs at least 45"):
            check_calibration_size(44, 0.05, confidence=0.9)

    def test_confidence_outside_0_1(self):
        with pytest.raises(ValueError, match="`confidence`"):
            conformal_rank(100, 0.1, 1.0)


T, WINDOW = 12, 3


def episodes(rng, n):
    """Exchangeable episodes: random-walk RND, noisy entropy, drifting progress, heavy-tailed risk (T chunks each)."""
    return [
        {
            "rnd": np.cumsum(rng.normal(0.0, 0.3, T)) + rng.exponential(1.0, T),
            "entropy": rng.standard_normal(T),
            "progress": rng.standard_normal(T) + np.linspace(0, rng.normal(), T),
            "risk": rng.gumbel(size=T),
        }
        for _ in range(n)
    ]


def alarms(w, thresholds):
    """Whether each detector alarms on each fresh episode (vectorized replay of robot_rl.monitor.conformal.exceeds).

    Args:
        w: Signal -> windowed scores of the fresh episodes. Shape: (episodes, T).
        thresholds: Detector -> signal -> threshold.
    """
    out = {}
    for detector, rule in DETECTORS.items():
        over = {s: w[s] > thresholds[detector][s] for s in w}
        fires = {
            "both": over["rnd"] & over["entropy"],
            "rnd": over["rnd"],
            "entropy": over["entropy"],
            "progress": over["progress"],
            "risk": over["risk"],
            "both_or_progress": (over["rnd"] & over["entropy"]) | over["progress"],
        }[rule]
        out[detector] = fires.any(axis=1)
    return out


@pytest.fixture(scope="module")
def fresh():
    """4000 fresh episodes' windowed scores per signal. Shapes: (4000, T)."""
    drawn = episodes(np.random.default_rng(12345), 4000)
    return {s: np.stack([windowed_mean(e[s], WINDOW) for e in drawn]) for s in ("rnd", "entropy", "progress", "risk")}


class TestFalseAlarmsStayWithinAlpha:
    """Every detector, calibrated on a fit split and a disjoint calibration split, keeps its promise."""

    def rates(self, fresh, alpha, draws, n_fit, n_cal, confidence=None, seed=0):
        rng = np.random.default_rng(seed)
        rates = {d: [] for d in DETECTORS}
        for _ in range(draws):
            fit, cal = episodes(rng, n_fit), episodes(rng, n_cal)
            thresholds = calibrate_detectors(cal, alpha, WINDOW, fit=fit, confidence=confidence)
            for detector, fired in alarms(fresh, thresholds).items():
                rates[detector].append(fired.mean())
        return {d: np.array(v) for d, v in rates.items()}

    def test_marginal_promise_over_many_calibrations(self, fresh):
        alpha, draws, n_fit, n_cal = 0.1, 150, 20, 40
        rates = self.rates(fresh, alpha, draws, n_fit, n_cal)
        promises = detector_promises(n_fit, n_cal, alpha)
        for detector, values in rates.items():
            # Mean over calibrations of each calibration's rate on 4000 fresh episodes, within 3 standard errors.
            se = values.std(ddof=1) / math.sqrt(draws) + math.sqrt(alpha / len(fresh["rnd"]))
            assert values.mean() <= promises[detector].expected + 3 * se, (detector, values.mean())
            assert promises[detector].expected <= alpha
        # Single signals without a fitted part and the joint ones are exact: near their expectation, not far below.
        for detector in ("rnd", "entropy", "fiper", "progress", "risk"):
            assert rates[detector].mean() >= promises[detector].expected - 0.02, detector

    def test_training_conditional_promise(self, fresh):
        alpha, confidence = 0.1, 0.9
        rates = self.rates(fresh, alpha, 120, 20, 60, confidence=confidence, seed=3)
        for detector in ("rnd", "fiper", "progress", "fiper_progress_split", "risk"):
            above = np.mean(rates[detector] > alpha + 0.01)  # 0.01: the rate's own error on 4000 episodes
            assert above <= 1 - confidence + 0.06, (detector, above)

    def test_the_stated_interval_holds_the_rate(self, fresh):
        """About 90% of calibrations have their rate inside the promise's 90% interval."""
        rates = self.rates(fresh, 0.1, 150, 20, 80, seed=5)["rnd"]
        low, high = detector_promises(20, 80, 0.1)["rnd"].interval
        inside = np.mean((rates >= low - 0.005) & (rates <= high + 0.005))
        assert 0.8 <= inside <= 0.98
