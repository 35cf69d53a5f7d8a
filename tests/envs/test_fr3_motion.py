"""The FR3 motion model: libfranka's limits never broken at 1 kHz, tracking with little lag, the env's fr3 mode,
and the servo mode unchanged (byte for byte against values recorded before the fr3 mode existed).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robot_rl
from robot_rl.envs.franka.experts import make_expert
from robot_rl.envs.franka.fr3_motion import (
    FR3_POSITION_LOWER,
    FR3_POSITION_UPPER,
    MAX_ACCELERATION,
    MAX_JERK,
    Fr3Motion,
    ReflexCheck,
    velocity_limits,
)

HOME = np.array([0.0, -0.1848, 0.0, -2.4967, 0.0, 2.3119, 0.785])
MARGIN = 0.8
ACCELERATION = MARGIN * MAX_ACCELERATION
JERK = MARGIN * MAX_JERK

# sha256 over a 50-step rollout (observations, rewards, qpos, act) with actions uniform in [-1.2, 1.2] from
# default_rng(7), reset seed 7, recorded before the `motion` kwarg existed (git 0f11b55): the servo mode must
# reproduce them exactly, so every shipped policy keeps its numbers.
SERVO_DIGESTS = {
    ("robot_rl/PandaPush-v0", None): "351b96e31013ca594134001769c57e94c1bd182b66b49f82ffbeebe7c0312b37",
    ("robot_rl/PandaReach-v0", None): "f228c5bf603507643f9978601e9668ad9715fa010812b81c4a8452c5c30ad8b4",
    ("robot_rl/PandaPickAndPlace-v0", None): "edaedc7665597a8d8075a68f23d0b4a06a0f3e6c03683991b24f80194328d71a",
    ("robot_rl/PandaSlide-v0", None): "10f8dbe2e31c71a33c904b8cde01121d03051faff4159b4f86c20fdfde8d60dd",
    # Randomized rows re-recorded when a randomized mass started to update MuJoCo's mass-derived constants
    # (robot_rl/envs/base.py _refresh_mass_constants): the object's inertial mass now follows its weight.
    ("robot_rl/PandaPush-v0", "train"): "aefceb3c59d266fd121ff83c88c9fddb9f2d6bd33d2015c61fa5a1d0d40e3753",
    ("robot_rl/PandaPickAndPlaceDense-v0", "train"): "28ac50ee9d094640d145ac14a1ee5d513660b1917041e3ad82cd239f064ec73d",
}


def rollout_digest(env_id: str, randomize: str | None, **kwargs) -> str:
    env = robot_rl.make(env_id, **({"randomize": randomize} if randomize else {}), **kwargs)
    rng = np.random.default_rng(7)
    obs, _ = env.reset(seed=7)
    digest = hashlib.sha256(obs["observation"].tobytes())
    for _ in range(50):
        obs, reward, *_ = env.step(rng.uniform(-1.2, 1.2, 4))
        digest.update(obs["observation"].tobytes())
        digest.update(np.float64(reward).tobytes())
        digest.update(env.unwrapped.data.qpos.tobytes())
        digest.update(env.unwrapped.data.act.tobytes())
    env.close()
    return digest.hexdigest()


def judged(motion: Fr3Motion, targets: np.ndarray) -> ReflexCheck:
    """Every period's 1 kHz setpoints towards ``targets`` through libfranka's check; fails on a reflex."""
    check = ReflexCheck()
    check.reset(motion.q)
    for target in targets:
        q, _, _ = motion.plan(target)
        reflex = check.check(q)
        assert reflex is None, str(reflex)
    return check


def assert_within_margin(check: ReflexCheck) -> None:
    assert np.all(check.peak["acceleration"] <= ACCELERATION + 1e-6), check.peak["acceleration"]
    assert np.all(check.peak["jerk"] <= JERK + 1e-2), check.peak["jerk"]
    # The velocity bound is taken at the farthest position a period can reach: within a hair of the margin.
    assert np.all(check.velocity_use <= MARGIN + 0.01), check.velocity_use


class TestServoModeUnchanged:
    @pytest.mark.parametrize(("env_id", "randomize"), list(SERVO_DIGESTS))
    def test_a_fixed_action_sequence_gives_the_values_recorded_before_the_fr3_mode(self, env_id, randomize):
        assert rollout_digest(env_id, randomize) == SERVO_DIGESTS[(env_id, randomize)]
        assert rollout_digest(env_id, randomize, motion="servo") == SERVO_DIGESTS[(env_id, randomize)]

    def test_servo_is_the_default_and_has_no_generator(self):
        env = robot_rl.make("robot_rl/PandaPush-v0").unwrapped
        assert env.motion_mode == "servo" and env.motion is None


class TestGenerator:
    def test_a_ramp_at_1_rad_per_s_is_followed_with_zero_lag_once_caught_up(self):
        motion = Fr3Motion(0.04)
        motion.reset(HOME)
        lag = []
        for k in range(40):
            target = HOME + 0.04 * (k + 1) * np.eye(7)[0]
            motion.plan(target)
            lag.append(target[0] - motion.q[0])
        # Catching up from rest takes about 8 periods at 8 rad/s^2 (the most it ever lags: 0.064 rad); then the
        # feed-forward holds it on the ramp exactly (MotionShaper's approach filter lags ~0.1 rad for good).
        assert max(lag) < 0.07
        assert max(abs(v) for v in lag[12:]) < 1e-6

    def test_a_step_is_reached_without_overshoot_in_ten_periods(self):
        motion = Fr3Motion(0.04)
        motion.reset(HOME)
        positions = []
        for _ in range(30):
            motion.plan(HOME + 0.3 * np.eye(7)[1])
            positions.append(motion.q[1] - HOME[1])
        assert abs(positions[10] - 0.3) < 1e-3
        assert max(positions) < 0.3 + 1e-3
        assert abs(positions[-1] - 0.3) < 1e-9 and abs(motion.dq[1]) < 1e-9

    def test_joints_change_velocity_together_when_one_is_at_the_acceleration_bound(self):
        step = np.array([0.2, 0.002, 0.0, 0.0, 0.0, 0.0, 0.001])
        alone, together = Fr3Motion(0.04, synchronize=False), Fr3Motion(0.04)
        for motion in (alone, together):
            motion.reset(HOME)
            motion.plan(HOME + step)
        # Alone, joint 1 saturates and joints 2 and 7 take what they want; together, all are scaled by one factor,
        # so the joint-space direction of the velocity change (and the TCP's course) is kept.
        assert alone.ddq[0] == pytest.approx(ACCELERATION) and together.ddq[0] == pytest.approx(ACCELERATION)
        scale = together.ddq[[1, 6]] / alone.ddq[[1, 6]]
        assert scale[0] == pytest.approx(scale[1], rel=1e-12) and 0.0 < scale[0] < 0.5

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        start=hnp.arrays(np.float64, 7, elements=st.floats(0.0, 1.0)),
        targets=hnp.arrays(np.float64, (30, 7), elements=st.floats(-0.5, 1.5)),
        hold=st.integers(1, 6),
    )
    def test_arbitrary_targets_never_break_libfrankas_limits(self, start, targets, hold):
        """Targets anywhere, beyond the joint limits too, each held a few periods or jumping every period."""
        span = FR3_POSITION_UPPER - FR3_POSITION_LOWER
        motion = Fr3Motion(0.04)
        motion.reset(FR3_POSITION_LOWER + 0.05 * span + 0.9 * span * start)
        sequence = np.repeat(FR3_POSITION_LOWER + span * targets, hold, axis=0)
        check = judged(motion, sequence)
        assert_within_margin(check)
        assert np.all(motion.q >= FR3_POSITION_LOWER) and np.all(motion.q <= FR3_POSITION_UPPER)

    def test_bang_bang_targets_at_the_joint_limits_keep_within_the_margin(self):
        rng = np.random.default_rng(0)
        for _ in range(20):
            motion = Fr3Motion(0.04)
            motion.reset(HOME)
            targets = np.where(rng.random((60, 7)) < 0.5, FR3_POSITION_LOWER - 1.0, FR3_POSITION_UPPER + 1.0)
            assert_within_margin(judged(motion, np.repeat(targets, 4, axis=0)))
            # A joint parked at the box edge still has velocity room (libfranka's limit is zero at its end).
            low, high = velocity_limits(motion.target)
            assert np.all(high > 0.2) and np.all(low < -0.2)

    def test_setpoints_at_any_times_are_the_same_trajectory_and_leave_the_same_state(self):
        a, b = Fr3Motion(0.04), Fr3Motion(0.04)
        a.reset(HOME)
        b.reset(HOME)
        rng = np.random.default_rng(3)
        coarse = np.array([0.0, 0.008, 0.016, 0.024, 0.032, 0.04])
        for _ in range(20):
            target = HOME + rng.uniform(-0.2, 0.2, 7)
            fine = a.plan(target)
            sparse = b.plan(target, coarse)
            np.testing.assert_array_equal(a.q, b.q)
            np.testing.assert_array_equal(a.dq, b.dq)
            np.testing.assert_array_equal(a.ddq, b.ddq)
            np.testing.assert_allclose(sparse[0][1:], fine[0][[7, 15, 23, 31, 39]], rtol=0, atol=1e-12)

    def test_the_same_targets_give_bit_identical_setpoints(self):
        rng = np.random.default_rng(5)
        targets = HOME + rng.uniform(-0.4, 0.4, (25, 7))
        runs = []
        for _ in range(2):
            motion = Fr3Motion(0.04)
            motion.reset(HOME)
            runs.append(np.concatenate([motion.plan(t)[0] for t in targets]).tobytes())
        assert runs[0] == runs[1]

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"period": 0.0}, r"`period` must be > 0 s\. Got 0\.0"),
            ({"period": 0.04, "margin": 1.2}, r"`margin` must be in \(0, 1\]\. Got 1\.2"),
            ({"period": 0.04, "braking": 0.0}, r"`braking` must be in \(0, 1\]\. Got 0\.0"),
        ],
    )
    def test_bad_arguments_are_refused(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            Fr3Motion(**kwargs)

    def test_sample_times_must_end_at_the_period(self):
        motion = Fr3Motion(0.04)
        motion.reset(HOME)
        with pytest.raises(ValueError, match="must end at the period 0.04"):
            motion.plan(HOME, np.array([0.0, 0.02]))


def fr3_rollout(env, actions_or_expert, seed: int, steps: int = 50) -> ReflexCheck:
    """A rollout in fr3 mode whose every period's 1 kHz setpoints go through libfranka's check."""
    obs, _ = env.reset(seed=seed)
    check = ReflexCheck()
    check.reset(env.unwrapped.data.qpos[:7])
    motion = env.unwrapped.motion
    for k in range(steps):
        action = actions_or_expert(obs) if callable(actions_or_expert) else actions_or_expert[k]
        obs, *_ = env.step(action)
        q, _, _ = motion.sample(motion.ticks)
        reflex = check.check(q)
        assert reflex is None, f"step {k}: {reflex}"
    return check


class TestEnvFr3Mode:
    def test_a_bad_motion_value_names_the_valid_ones(self):
        with pytest.raises(ValueError, match=r"`motion` must be one of 'servo', 'fr3'\. Got 'fast'\."):
            robot_rl.make("robot_rl/PandaPush-v0", motion="fast")

    @pytest.mark.parametrize("task", ["PandaReach", "PandaPush", "PandaPickAndPlace", "PandaSlide"])
    def test_expert_rollouts_stay_within_libfrankas_limits(self, task):
        env = robot_rl.make(f"robot_rl/{task}-v0", motion="fr3")
        expert = make_expert(task, "fr3")
        for seed in (11, 12):
            expert.reset()
            assert_within_margin(fr3_rollout(env, expert, seed))

    @settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        actions=hnp.arrays(np.float64, (50, 4), elements=st.sampled_from([-1.0, -0.3, 0.0, 0.3, 1.0])),
        seed=st.integers(0, 1000),
    )
    def test_random_and_extreme_actions_stay_within_libfrankas_limits(self, actions, seed):
        env = _fr3_push()
        assert_within_margin(fr3_rollout(env, actions, seed))

    def test_full_speed_reversals_into_the_workspace_corners_stay_within_the_limits(self):
        env = _fr3_push()
        corners = np.array([[1, 1, 1, 1], [-1, -1, -1, -1], [1, -1, -1, 1], [-1, 1, 1, -1]], dtype=float)
        assert_within_margin(fr3_rollout(env, np.repeat(corners, [10, 15, 12, 13], axis=0), seed=4))

    def test_the_arm_follows_the_setpoints_and_the_ik_target_is_the_generators_target(self):
        env = robot_rl.make("robot_rl/PandaReach-v0", motion="fr3")
        u = env.unwrapped
        obs, _ = env.reset(seed=2)
        expert = make_expert("PandaReach", "fr3")
        for _ in range(50):
            obs, *_ = env.step(expert(obs))
            # The joint impedance servos track (q_d, dq_d) within a few mrad in free motion.
            assert np.max(np.abs(u.data.qpos[:7] - u.motion.q)) < 5e-3
            # The generator tracks the controller's commanded posture (the IK works from it, unchanged).
            np.testing.assert_array_equal(u.motion.target, np.clip(u.controller._q_cmd, u.motion.lower, u.motion.upper))
        assert obs["observation"][:3] == pytest.approx(obs["desired_goal"], abs=0.02)

    def test_same_seed_and_actions_give_identical_rollouts(self):
        actions = np.random.default_rng(9).uniform(-1, 1, (30, 4))
        runs = []
        for _ in range(2):
            env = robot_rl.make("robot_rl/PandaPush-v0", motion="fr3")
            obs, _ = env.reset(seed=21)
            out = [obs["observation"].tobytes()]
            for action in actions:
                obs, *_ = env.step(action)
                out.append(obs["observation"].tobytes() + env.unwrapped.motion.q.tobytes())
            runs.append(out)
        assert runs[0] == runs[1]

    def test_randomization_applies_in_fr3_mode(self):
        env = robot_rl.make(
            "robot_rl/PandaPush-v0",
            motion="fr3",
            randomize={"actuator_gain_scale": [0.6, 0.6], "action_latency_steps": [1, 1]},
        )
        u = env.unwrapped
        env.reset(seed=3)
        nominal = robot_rl.make("robot_rl/PandaPush-v0").unwrapped.model.actuator_gainprm[:7, 0]
        np.testing.assert_allclose(u.model.actuator_gainprm[:7, 0], 0.6 * nominal)
        start = u.data.qpos[:7].copy()
        env.step(np.array([1.0, 0.0, 0.0, 0.0]))  # one period of latency: the neutral action, the arm holds
        assert np.max(np.abs(u.motion.q - start)) < 1e-3
        for _ in range(10):
            env.step(np.array([1.0, 0.0, 0.0, 0.0]))
        assert u.tcp_position[0] > u.initial_tcp[0] + 0.05
        # Softer servos: the setpoints are the same kind of motion, the arm lags them more but follows.
        assert np.max(np.abs(u.data.qpos[:7] - u.motion.q)) < 0.02


def _fr3_push():
    if not hasattr(_fr3_push, "env"):
        _fr3_push.env = robot_rl.make("robot_rl/PandaPush-v0", motion="fr3")
    return _fr3_push.env
