"""The goal-progress score: envelope fit and z-scores by hand."""

import math

import numpy as np
import pytest

from robot_rl.monitor.progress import ProgressEnvelope, goal_distance


def test_goal_distance():
    obs = {"achieved_goal": np.array([0.0, 0.0, 0.0]), "desired_goal": np.array([0.03, 0.04, 0.0])}
    assert goal_distance(obs) == pytest.approx(0.05)
    assert goal_distance({"observation": np.zeros(3)}) is None
    assert goal_distance({"achieved_goal": np.zeros(3), "desired_goal": np.zeros(2)}) is None


def test_fit_by_hand_with_ragged_rollouts():
    # Three rollouts; only one reaches chunk 2, so the envelope stops at chunk 1 (needs two values).
    envelope = ProgressEnvelope.fit([[0.2, 0.1], [0.4, 0.3, 0.0], [0.3]], floor=0.01)
    assert envelope.mean == pytest.approx((0.3, 0.2))
    assert envelope.std == pytest.approx((math.sqrt(2 / 3) * 0.1, 0.1))
    assert envelope.rollouts == 3
    # z = (d - mean_k) / max(std_k, floor); past the last chunk the last values hold.
    assert envelope.score(1, 0.4) == pytest.approx(2.0)
    assert envelope.score(7, 0.4) == pytest.approx(2.0)
    np.testing.assert_allclose(envelope.scores([0.3, 0.4, 0.4]), [0.0, 2.0, 2.0], atol=1e-12)


def test_floor_bounds_the_score_where_every_success_is_at_the_goal():
    envelope = ProgressEnvelope.fit([[0.2, 0.01], [0.2, 0.01]], floor=0.005)
    assert envelope.std[1] == 0.0
    assert envelope.score(1, 0.02) == pytest.approx(2.0)  # 1 cm over, 5 mm floor


def test_json_round_trip():
    envelope = ProgressEnvelope.fit([[0.2, 0.1], [0.3, 0.0]])
    assert ProgressEnvelope.from_json(envelope.to_json()) == envelope


@pytest.mark.parametrize(
    ("distances", "match"),
    [([[0.1]], "two or more"), ([], "two or more"), ([[0.1, math.nan], [0.1, 0.2]], "finite")],
)
def test_bad_fits_are_refused(distances, match):
    with pytest.raises(ValueError, match=match):
        ProgressEnvelope.fit(distances)


def test_bad_envelopes_are_refused():
    with pytest.raises(ValueError, match="same, non-zero length"):
        ProgressEnvelope((0.1, 0.2), (0.1,))
    with pytest.raises(ValueError, match="floor"):
        ProgressEnvelope((0.1,), (0.1,), floor=0.0)
    with pytest.raises(ValueError, match="std >= 0"):
        ProgressEnvelope((0.1,), (-0.1,))
