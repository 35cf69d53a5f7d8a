"""Conformal thresholds, windowed scores and the alarm rules on hand-made numbers."""

import math

import numpy as np
import pytest

from robot_rl.monitor.conformal import (
    WindowedScore,
    calibrate_detectors,
    conformal_threshold,
    episode_statistic,
    exceeds,
    first_alarm,
    joint_thresholds,
    min_calibration_size,
    split_thresholds,
    windowed_mean,
)
from robot_rl.monitor.failure_monitor import MonitorSettings


class TestConformalThreshold:
    def test_hand_computed_quantile(self):
        # n = 10, alpha = 0.1: k = ceil(11 * 0.9) = ceil(9.9) = 10 -> the largest score.
        scores = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0, 5.5, 3.5]
        assert conformal_threshold(scores, 0.1) == 9.0
        # alpha = 0.2: k = ceil(11 * 0.8) = ceil(8.8) = 9 -> the 9th smallest (6.0).
        assert conformal_threshold(scores, 0.2) == 6.0
        # alpha = 0.5: k = ceil(5.5) = 6 -> 4.0.
        assert conformal_threshold(scores, 0.5) == 4.0

    def test_exact_products_are_not_rounded_up(self):
        # n = 9, alpha = 0.1: (n + 1)(1 - alpha) = 9 exactly (9.000000000000002 in floats) -> k = 9, not 10.
        assert conformal_threshold(np.arange(1.0, 10.0), 0.1) == 9.0

    def test_too_few_scores_give_inf(self):
        assert min_calibration_size(0.1) == 9
        assert min_calibration_size(0.2) == 4
        assert conformal_threshold(np.arange(8.0), 0.1) == math.inf
        assert math.isfinite(conformal_threshold(np.arange(9.0), 0.1))

    def test_coverage_on_exchangeable_scores(self):
        rng = np.random.default_rng(0)
        alpha, n = 0.2, 30
        misses = [rng.standard_normal() > conformal_threshold(rng.standard_normal(n), alpha) for _ in range(4000)]
        # P(miss) = 1 - ceil(31 * 0.8) / 31 = 1 - 25 / 31 = 0.194 <= alpha.
        assert abs(np.mean(misses) - 6 / 31) < 0.02

    @pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1])
    def test_bad_alpha(self, alpha):
        with pytest.raises(ValueError, match="alpha"):
            conformal_threshold([1.0, 2.0], alpha)

    def test_refuses_empty_or_nan(self):
        with pytest.raises(ValueError):
            conformal_threshold([], 0.1)
        with pytest.raises(ValueError):
            conformal_threshold([1.0, math.nan], 0.1)


class TestWindows:
    def test_trailing_mean_by_hand(self):
        np.testing.assert_allclose(windowed_mean([1.0, 3.0, 5.0, 7.0], 2), [1.0, 2.0, 4.0, 6.0])
        np.testing.assert_allclose(windowed_mean([1.0, 3.0, 5.0, 7.0], 3), [1.0, 2.0, 3.0, 5.0])
        assert episode_statistic([1.0, 3.0, 5.0, 7.0], 3) == 5.0

    def test_streaming_matches_offline_exactly(self):
        values = np.random.default_rng(1).standard_normal(20)
        stream = WindowedScore(3)
        online = [stream.push(v) for v in values]
        assert online == windowed_mean(values, 3).tolist()


class TestRules:
    THRESHOLDS = {"rnd": 1.0, "entropy": 0.0}

    def test_both_needs_the_two_signals_at_the_same_chunk(self):
        # rnd exceeds at chunks 1 and 3, entropy at chunks 2 and 3: FIPER fires first at chunk 3.
        scores = {"rnd": [0.5, 2.0, 0.5, 2.0], "entropy": [-1.0, -1.0, 1.0, 1.0]}
        assert first_alarm(scores, self.THRESHOLDS, 1, "both") == 3
        assert first_alarm(scores, self.THRESHOLDS, 1, "rnd") == 1
        assert first_alarm(scores, self.THRESHOLDS, 1, "entropy") == 2
        assert first_alarm(scores, self.THRESHOLDS, 1, "either") == 1

    def test_window_smooths_a_single_spike(self):
        scores = {"rnd": [0.0, 3.0, 0.0, 0.0], "entropy": [1.0, 1.0, 1.0, 1.0]}
        assert first_alarm(scores, self.THRESHOLDS, 1, "both") == 1
        # window 4: means 0, 1.5, 1.0, 0.75 -> above 1.0 only at chunk 1.
        assert first_alarm(scores, self.THRESHOLDS, 4, "both") == 1
        scores["rnd"] = [0.0, 1.8, 0.0, 0.0]  # window-2 means 0, 0.9, 0.9, 0: never above 1.0
        assert first_alarm(scores, self.THRESHOLDS, 2, "both") is None

    def test_no_alarm_and_nan(self):
        quiet = {"rnd": [0.0, 0.1], "entropy": [-1.0, -2.0]}
        assert first_alarm(quiet, self.THRESHOLDS, 2, "both") is None
        assert exceeds({"rnd": math.nan, "entropy": 5.0}, self.THRESHOLDS, "both")

    def test_unknown_rule(self):
        with pytest.raises(ValueError, match="rule"):
            exceeds({"rnd": 0.0, "entropy": 0.0}, self.THRESHOLDS, "all")


class TestCalibrateDetectors:
    def episodes(self, n=40, seed=0):
        rng = np.random.default_rng(seed)
        return [{"rnd": rng.exponential(size=7), "entropy": rng.standard_normal(7)} for _ in range(n)]

    def test_single_signal_detectors_use_the_marginal_quantile(self):
        episodes = self.episodes()
        thresholds = calibrate_detectors(episodes, 0.1, 2)
        expected = conformal_threshold([episode_statistic(e["rnd"], 2) for e in episodes], 0.1)
        assert thresholds["rnd"] == {"rnd": expected, "entropy": math.inf, "progress": math.inf, "risk": math.inf}
        assert thresholds["fiper_marginal"]["rnd"] == expected
        assert thresholds["entropy"]["rnd"] == math.inf

    def test_joint_thresholds_keep_fresh_alarms_within_alpha(self):
        fit, cal = self.episodes(40), self.episodes(200, seed=2)
        alpha = 0.2
        joint = joint_thresholds(fit, cal, alpha, 2)
        marginal = calibrate_detectors(cal, alpha, 2, fit=fit)["fiper_marginal"]
        # Both rules at the same alpha: the joint thresholds are lower (the AND rule is stricter).
        assert joint["rnd"] <= marginal["rnd"] and joint["entropy"] <= marginal["entropy"]
        fresh = [first_alarm(e, joint, 2, "both") is not None for e in self.episodes(3000, seed=1)]
        # k = ceil(201 * 0.8) = 161: expected rate 40 / 201 = 0.199; one calibration's rate has sd ~0.028.
        assert abs(np.mean(fresh) - 40 / 201) < 0.07

    def test_single_signal_detectors_rank_among_both_splits(self):
        fit, cal = self.episodes(10), self.episodes(30, seed=2)
        thresholds = calibrate_detectors(cal, 0.1, 2, fit=fit)
        expected = conformal_threshold([episode_statistic(e["rnd"], 2) for e in fit + cal], 0.1)
        assert thresholds["rnd"]["rnd"] == expected


class TestProgressRules:
    THRESHOLDS = {"rnd": 1.0, "entropy": 0.0, "progress": 2.0}

    def test_or_rule_by_hand(self):
        # chunk 0: only progress; chunk 1: rnd and entropy; chunk 2: rnd alone; chunk 3: nothing.
        windowed = {
            "rnd": np.array([0.0, 2.0, 2.0, 0.0]),
            "entropy": np.array([-1.0, 1.0, -1.0, -1.0]),
            "progress": np.array([3.0, 0.0, 0.0, 0.0]),
        }
        np.testing.assert_array_equal(exceeds(windowed, self.THRESHOLDS, "both_or_progress"), [1, 1, 0, 0])
        np.testing.assert_array_equal(exceeds(windowed, self.THRESHOLDS, "progress"), [1, 0, 0, 0])
        np.testing.assert_array_equal(exceeds(windowed, self.THRESHOLDS, "both"), [0, 1, 0, 0])

    def test_a_missing_signal_never_exceeds(self):
        windowed = {"rnd": np.array([2.0, 2.0]), "entropy": np.array([1.0, -1.0])}
        np.testing.assert_array_equal(exceeds(windowed, self.THRESHOLDS, "progress"), [0, 0])
        np.testing.assert_array_equal(exceeds(windowed, self.THRESHOLDS, "both_or_progress"), [1, 0])
        assert first_alarm({"rnd": [5.0], "entropy": [5.0]}, self.THRESHOLDS, 1, "progress") is None

    def episodes(self, n, seed):
        rng = np.random.default_rng(seed)
        return [
            {"rnd": rng.exponential(size=9), "entropy": rng.standard_normal(9), "progress": rng.standard_normal(9)}
            for _ in range(n)
        ]

    def test_joint_or_calibration_keeps_false_alarms_near_alpha(self):
        alpha = 0.2
        fit, cal = self.episodes(30, 0), self.episodes(200, 2)
        thresholds = calibrate_detectors(cal, alpha, 2, fit=fit)
        joint = thresholds["fiper_progress"]
        # The OR rule fires more easily than FIPER's AND, so at the same alpha each threshold is higher.
        assert joint["rnd"] >= thresholds["fiper"]["rnd"] and joint["entropy"] >= thresholds["fiper"]["entropy"]
        assert thresholds["fiper"]["progress"] == math.inf and thresholds["progress"]["rnd"] == math.inf
        expected = conformal_threshold([episode_statistic(e["progress"], 2) for e in cal], alpha)
        assert thresholds["progress"]["progress"] == expected  # ranked among the calibration split only
        fresh = [first_alarm(e, joint, 2, "both_or_progress") is not None for e in self.episodes(3000, 1)]
        assert abs(np.mean(fresh) - 40 / 201) < 0.07

    def test_split_calibration_gives_each_part_its_share_of_alpha(self):
        alpha, share = 0.2, 0.3
        fit, cal = self.episodes(30, 0), self.episodes(300, 2)
        split = calibrate_detectors(cal, alpha, 2, progress_share=share, fit=fit)["fiper_progress_split"]
        fiper = joint_thresholds(fit, cal, (1 - share) * alpha, 2, "both")
        progress = conformal_threshold([episode_statistic(e["progress"], 2) for e in cal], share * alpha)
        assert split == {"rnd": fiper["rnd"], "entropy": fiper["entropy"], "progress": progress, "risk": math.inf}
        assert split_thresholds(fit, cal, alpha, 2, share) == split
        # Union bound: each part's false alarms within its level, so the OR within alpha (on fresh episodes too).
        fresh = self.episodes(4000, 1)
        both = np.mean([first_alarm(e, split, 2, "both") is not None for e in fresh])
        alone = np.mean([first_alarm(e, split, 2, "progress") is not None for e in fresh])
        either = np.mean([first_alarm(e, split, 2, "both_or_progress") is not None for e in fresh])
        assert abs(both - (1 - share) * alpha) < 0.05 and abs(alone - share * alpha) < 0.03
        assert max(both, alone) <= either <= both + alone and either <= alpha + 0.03

    @pytest.mark.parametrize("share", [0.0, 1.0, -0.1, 1.5])
    def test_a_progress_share_outside_0_1_is_refused(self, share):
        with pytest.raises(ValueError, match=r"`progress_share` .* must be in \(0, 1\). Got"):
            calibrate_detectors(self.episodes(20, 0), 0.2, 2, progress_share=share)
        with pytest.raises(ValueError, match="progress_share"):
            MonitorSettings(progress_share=share)

    def test_joint_statistic_by_hand(self):
        # Window 1. Fit split: rnd pooled {0, 2} (mean 1, std 1), entropy {0, 4} (mean 2, std 2), progress {1, 3}
        # (mean 2, std 1). Calibration rollouts with one chunk each: z = (rnd - 1, (entropy - 2) / 2, progress - 2).
        fit = [{"rnd": [0.0], "entropy": [0.0], "progress": [1.0]}, {"rnd": [2.0], "entropy": [4.0], "progress": [3.0]}]
        cal = [{"rnd": [1.0 + i], "entropy": [2.0 + 2.0 * i], "progress": [2.0 - i]} for i in range(9)]
        # both: min(z_rnd, z_entropy) = i; n = 9, alpha = 0.2: k = ceil(10 * 0.8) = 8 -> lambda = 7.
        both = joint_thresholds(fit, cal, 0.2, 1, "both")
        assert both == {"rnd": 1.0 + 7.0, "entropy": 2.0 + 2.0 * 7.0, "progress": math.inf, "risk": math.inf}
        # both_or_progress: max(i, 2 - i - 2 = -i) = i, the same lambda; progress threshold 2 + 7 * 1.
        joint = joint_thresholds(fit, cal, 0.2, 1, "both_or_progress")
        assert joint == {"rnd": 8.0, "entropy": 16.0, "progress": 9.0, "risk": math.inf}
        # Too few calibration rollouts for alpha (n = 3 < 1 / 0.2 - 1 = 4): no finite threshold.
        assert set(joint_thresholds(fit, cal[:3], 0.2, 1).values()) == {math.inf}

    def test_without_progress_scores_the_progress_detectors_never_fire(self):
        rng = np.random.default_rng(2)
        episodes = [{"rnd": rng.exponential(size=5), "entropy": rng.standard_normal(5)} for _ in range(20)]
        thresholds = calibrate_detectors(episodes, 0.2, 2)
        assert set(thresholds["progress"].values()) == {math.inf}
        assert set(thresholds["fiper_progress"].values()) == {math.inf}
        assert set(thresholds["fiper_progress_split"].values()) == {math.inf}
        with pytest.raises(ValueError, match="no \\['progress'\\] scores"):
            joint_thresholds(episodes, episodes, 0.2, 2, "both_or_progress")
