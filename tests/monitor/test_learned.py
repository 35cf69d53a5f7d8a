"""The learned failure risk: its inputs by hand, training on separable episodes, save/load, run time = replay."""

import numpy as np
import pytest

from robot_rl.monitor.learned import RiskModel, consistency, fit_risk, risk_features


class TestInputs:
    def test_consistency_by_hand(self):
        previous = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        chunk = np.array([[1.0, 1.0], [2.0, 4.0], [9.0, 9.0], [9.0, 9.0]])
        # Shift 2: previous steps 2, 3 against this chunk's steps 0, 1: differences (1, 1) and (1, -1) -> RMS 1.
        assert consistency(previous, 2, chunk, None) == pytest.approx(1.0)
        # Dim 0 only: differences 1 and 1 -> 1; shift 1: previous 1..3 against 0..2 on dim 1: 0, 2, 6.
        assert consistency(previous, 2, chunk, [0]) == pytest.approx(1.0)
        assert consistency(previous, 1, chunk, [1]) == pytest.approx(np.sqrt((0 + 4 + 36) / 3))
        assert consistency(None, 2, chunk, None) == 0.0 and consistency(previous, 4, chunk, None) == 0.0

    def test_features_by_hand(self):
        x = risk_features([1.0, 2.0, 3.0], [0.1, 0.2, 0.3], [0.0, 0.5, 0.25], [0.3, 0.2, 0.25], n_ref=4)
        np.testing.assert_allclose(
            x,
            [
                [1.0, 0.1, 0.0, 0.3, 0.3, 0.0, 0.0],
                [2.0, 0.2, 0.5, 0.2, 0.3, -0.1, 0.25],
                [3.0, 0.3, 0.25, 0.25, 0.3, 0.05, 0.5],
            ],
        )
        assert risk_features([1.0], [0.1], [0.0], None, n_ref=4).shape == (1, 4)


def separable(rng, n, failed):
    """Episodes of 6 chunks whose goal distance stalls when they fail."""
    out = []
    for bad in failed:
        d = np.linspace(0.2, 0.1 if bad else 0.0, 6) + rng.normal(0, 0.01, 6)
        out.append(risk_features(rng.exponential(size=6), rng.normal(size=6), rng.exponential(size=6), d, 6))
    return out


class TestTraining:
    def test_learns_separable_failures_and_standardizes_on_successes(self, tmp_path):
        rng = np.random.default_rng(0)
        failed = [i % 4 == 0 for i in range(80)]
        features = separable(rng, 80, failed)
        model = fit_risk(features, failed, hidden=16, steps=300, seed=1)
        assert model is not None and model.goal and model.n_ref == 6 and model.info["failed"] == 20
        success = np.stack([model.scores(f) for f, bad in zip(features, failed, strict=True) if not bad])
        np.testing.assert_allclose(success.mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(success.std(axis=0), 1.0, atol=1e-6)
        fresh_failed = [True] * 20 + [False] * 20
        fresh = [model.scores(f)[-1] for f in separable(rng, 40, fresh_failed)]
        assert np.mean(fresh[:20]) > np.max(fresh[20:])  # stalled episodes score above every fresh success at the end
        # Save/load round trip, and the run-time one-chunk score equals the replayed one.
        again = RiskModel.load(model.save(tmp_path / "risk.npz"))
        np.testing.assert_array_equal(again.scores(features[0]), model.scores(features[0]))
        assert [again.score_at(k, row) for k, row in enumerate(features[0])] == pytest.approx(model.scores(features[0]))

    def test_too_few_failures_train_nothing(self):
        rng = np.random.default_rng(0)
        failed = [i < 4 for i in range(40)]
        assert fit_risk(separable(rng, 40, failed), failed, steps=10) is None

    def test_a_file_that_is_not_a_model_is_refused(self, tmp_path):
        np.savez(tmp_path / "x.npz", a=np.zeros(3))
        with pytest.raises(ValueError, match="not a risk model file"):
            RiskModel.load(tmp_path / "x.npz")
        with pytest.raises(FileNotFoundError):
            RiskModel.load(tmp_path / "missing.npz")
