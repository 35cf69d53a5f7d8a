"""Plain monitors on fake steps; the shift wrappers of monitor eval on PandaPush."""

import numpy as np
import pytest

from robot_rl.envs.registry import make
from robot_rl.monitor.plain import LimitHitRate, NonFiniteObservation, TrackingError
from robot_rl.monitor.shift import CONDITIONS, GoalShift, ObjectKick, ObservationDelay, conditions_for
from robot_rl.runtime.controller import ControlStatus

PUSH = "robot_rl/PandaPush-v0"


def status(step, chunk_step=0):
    return ControlStatus(
        step=step,
        now=0.0,
        period_s=None,
        late=False,
        chunk_index=0,
        chunk_step=chunk_step,
        new_chunk=False,
        computed_chunk=False,
        inference_s=None,
        queue_length=0,
        blend_weight=1.0,
        active_chunks=1,
    )


class TestPlainMonitors:
    def test_nonfinite_observation(self):
        monitor = NonFiniteObservation(["observation"])
        chunk = np.zeros((4, 2))
        assert not monitor({"observation": np.zeros(3)}, chunk, status(0))
        assert monitor({"observation": np.array([0.0, np.nan, 0.0])}, chunk, status(1))
        assert not monitor({"observation": np.zeros(3), "other": np.array([np.inf])}, chunk, status(2))

    def test_limit_hit_rate_over_a_full_window(self):
        monitor = LimitHitRate([-1, -1], [1, 1], dims=[0], window=4, max_rate=0.5)
        at_bound, inside = np.array([[1.0, 0.0]]), np.array([[0.2, 1.0]])  # dim 1 is not checked
        fired = [monitor({}, chunk, status(t)) for t, chunk in enumerate([at_bound, inside, at_bound, inside])]
        assert fired == [False, False, False, True] and monitor.rate == 0.5
        assert not monitor({}, inside, status(0))  # a new episode starts over

    def test_tracking_error(self):
        monitor = TrackingError(max_displacement=0.05, window=2, max_error_m=0.01)
        chunk = np.array([[1.0, 0.0, 0.0, -1.0]])  # +0.05 m along x each step
        tcp = [0.0, 0.05, 0.10, 0.10, 0.10]  # follows, then stops
        fired = [monitor({"observation": np.array([x, 0.0, 0.0])}, chunk, status(t)) for t, x in enumerate(tcp)]
        assert fired == [False, False, False, True, True]  # errors 0, 0, 0.05, 0.05: means over 2 steps
        assert monitor.mean_error == pytest.approx(0.05)


class TestShift:
    def test_kick_changes_the_object_velocity_at_its_step(self):
        env = ObjectKick(make(PUSH), steps=(3, 3), speed=(0.5, 0.5))
        _, info = env.reset(seed=5)
        assert info["kick"]["step"] == 3
        speeds = []
        for _ in range(5):
            obs, *_ = env.step(np.zeros(4))
            speeds.append(np.linalg.norm(obs["observation"][14:16] + obs["observation"][20:22]))
        assert max(speeds[:3]) < 0.01 and speeds[3] > 0.1
        env.close()

    def test_goal_outside_the_training_square(self):
        env = GoalShift(make(PUSH))
        unwrapped = env.unwrapped
        for seed in range(20):
            obs, _ = env.reset(seed=seed)
            offset = obs["desired_goal"][:2] - unwrapped.sample_center
            assert 0.15 < np.max(np.abs(offset)) <= 0.25
            np.testing.assert_array_equal(unwrapped._goal, obs["desired_goal"])
        env.close()

    def test_observation_delay(self):
        plain, delayed = make(PUSH), ObservationDelay(make(PUSH), steps=2)
        first, _ = plain.reset(seed=1)
        delayed.reset(seed=1)
        actions = np.random.default_rng(0).uniform(-1, 1, (4, 4))
        truth = [plain.step(a)[0] for a in actions]
        seen = [delayed.step(a)[0] for a in actions]
        np.testing.assert_array_equal(seen[0]["observation"], first["observation"])
        np.testing.assert_array_equal(seen[3]["observation"], truth[1]["observation"])
        plain.close()
        delayed.close()

    def test_every_condition_makes_a_push_env(self):
        for condition in CONDITIONS.values():
            env = condition.make(PUSH)
            env.reset(seed=0)
            env.step(np.zeros(4))
            env.close()


def test_quadrotor_conditions_apply_to_the_quadrotor():
    conditions = conditions_for("robot_rl/QuadrotorHover-v1")
    assert conditions is not CONDITIONS and "nominal" in conditions and "kick" not in conditions
    assert conditions_for(PUSH) is CONDITIONS
    for condition in conditions.values():
        env = condition.make("robot_rl/QuadrotorHover-v1")
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape))
        env.close()
