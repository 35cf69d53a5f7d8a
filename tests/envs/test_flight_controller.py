"""The on-board flight stack: mixer, rate loop and attitude loop by hand, the rate loop in the env."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from robot_rl.envs.base import ASSETS_DIR
from robot_rl.envs.quadrotor.flight_controller import (
    AttitudeControllerConfig,
    Mixer,
    QuadrotorParams,
    RateController,
    RateControllerConfig,
    attitude_rates,
    quat_to_matrix,
)
from robot_rl.envs.quadrotor.quadrotor_env import MAX_RATES

PARAMS = QuadrotorParams()
"""The nominal Crazyflie: arm a = 0.0325 m, torque ratio c = 0.0251 m, 0.149 N per rotor."""
A, C, TOP = 0.0325, 0.0251, 0.149
JX, JY, JZ = 1.395e-5, 1.436e-5, 2.173e-5


def rot_x(angle: float) -> tuple[tuple[float, float, float], ...]:
    return quat_to_matrix((math.cos(angle / 2), math.sin(angle / 2), 0.0, 0.0))


def rot_y(angle: float) -> tuple[tuple[float, float, float], ...]:
    return quat_to_matrix((math.cos(angle / 2), 0.0, math.sin(angle / 2), 0.0))


def rot_z(angle: float) -> tuple[tuple[float, float, float], ...]:
    return quat_to_matrix((math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)))


class TestMixer:
    """Rotors: 1 front-right, 2 back-right, 3 back-left, 4 front-left (FLU body frame)."""

    def test_nominal_params_match_the_mjcf(self, make_env):
        assert make_env("robot_rl/QuadrotorHover-v1").params == PARAMS

    def test_pure_thrust_splits_evenly(self):
        np.testing.assert_allclose(Mixer(PARAMS).rotor_thrusts(0.2, (0.0, 0.0, 0.0)), [0.05] * 4, rtol=1e-12)

    def test_positive_roll_torque_raises_the_left_rotors_3_and_4(self):
        # Each rotor carries tau / (4 a) = 1e-3 / 0.13 = 0.0076923 N of the roll torque.
        d = 1e-3 / (4 * A)
        thrusts = Mixer(PARAMS).rotor_thrusts(0.2, (1e-3, 0.0, 0.0))
        np.testing.assert_allclose(thrusts, [0.05 - d, 0.05 - d, 0.05 + d, 0.05 + d], rtol=1e-12)
        assert thrusts[2] > 0.05 and thrusts[3] > 0.05

    def test_positive_pitch_torque_raises_the_back_rotors_2_and_3(self):
        d = 1e-3 / (4 * A)
        thrusts = Mixer(PARAMS).rotor_thrusts(0.2, (0.0, 1e-3, 0.0))
        np.testing.assert_allclose(thrusts, [0.05 - d, 0.05 + d, 0.05 + d, 0.05 - d], rtol=1e-12)

    def test_positive_yaw_torque_raises_the_clockwise_rotors_2_and_4(self):
        # tau / (4 c) = 1e-4 / 0.1004 = 0.000996 N per rotor.
        d = 1e-4 / (4 * C)
        thrusts = Mixer(PARAMS).rotor_thrusts(0.2, (0.0, 0.0, 1e-4))
        np.testing.assert_allclose(thrusts, [0.05 - d, 0.05 + d, 0.05 - d, 0.05 + d], rtol=1e-12)
        assert d == pytest.approx(0.000996015936)

    def test_more_than_four_times_the_rotor_limit_saturates_every_rotor(self):
        mixer = Mixer(PARAMS)
        assert mixer.rotor_thrusts(1.0, (0.0, 0.0, 0.0)) == [TOP] * 4  # 0.25 N asked of each
        assert mixer.saturations == 4
        mixer.rotor_thrusts(1.0, (0.0, 0.0, 0.0))
        assert mixer.saturations == 8
        mixer.reset()
        assert mixer.saturations == 0

    def test_negative_rotor_commands_are_clipped_to_zero_and_counted(self):
        mixer = Mixer(PARAMS)
        d = 1e-3 / (4 * A)
        np.testing.assert_allclose(mixer.rotor_thrusts(0.0, (1e-3, 0.0, 0.0)), [0.0, 0.0, d, d], rtol=1e-12)
        assert mixer.saturations == 2

    def test_commands_at_the_ends_of_the_rotor_range_are_not_saturations(self):
        mixer = Mixer(PARAMS)
        assert mixer.rotor_thrusts(PARAMS.max_thrust, (0.0, 0.0, 0.0)) == [TOP] * 4
        assert mixer.rotor_thrusts(0.0, (0.0, 0.0, 0.0)) == [0.0] * 4
        assert mixer.saturations == 0

    @pytest.mark.parametrize(
        "wrench",
        [(0.2, 0.0, 0.0, 0.0), (0.3, 1e-3, 0.0, 0.0), (0.3, 0.0, -1e-3, 0.0), (0.25, 2e-4, 3e-4, -1e-4)],
        ids=["thrust", "roll", "pitch", "mixed"],
    )
    def test_mujoco_applies_the_commanded_wrench_from_the_mixed_rotor_thrusts(self, wrench):
        """The mixer's rotor layout and spin directions agree with the MJCF's sites and gears."""
        model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "quadrotor/scene.xml"))
        data = mujoco.MjData(model)
        mujoco.mj_resetDataKeyframe(model, data, model.key("hover").id)  # level: body frame = world
        thrusts = Mixer(PARAMS).rotor_thrusts(wrench[0], wrench[1:])
        data.ctrl[:] = thrusts
        data.act[:] = thrusts  # the rotors' actual thrust
        mujoco.mj_forward(model, data)
        # Free joint: world force on dofs 0-2, body-frame torque on 3-5.
        np.testing.assert_allclose(data.qfrc_actuator, [0.0, 0.0, *wrench], atol=1e-12)


class TestRateController:
    def test_torque_is_inertia_times_kp_times_error_without_integral_and_rates(self):
        ctl = RateController(PARAMS, 0.002, RateControllerConfig(ki=(0.0, 0.0, 0.0)))
        # J kp e: 1.395e-5 * 40 * 2 = 1.116e-3; 1.436e-5 * 40 * -1 = -5.744e-4; 2.173e-5 * 20 * 1 = 4.346e-4.
        np.testing.assert_allclose(ctl.torque((2.0, -1.0, 1.0), (0.0, 0.0, 0.0)), [1.116e-3, -5.744e-4, 4.346e-4])

    def test_first_call_adds_one_period_of_integral(self):
        ctl = RateController(PARAMS, 0.002)
        # J (kp e + ki e dt): 1.395e-5 * (40 * 2 + 20 * 2 * 0.002) = 1.117116e-3.
        np.testing.assert_allclose(ctl.torque((2.0, 0.0, 0.0), (0.0, 0.0, 0.0)), [1.117116e-3, 0.0, 0.0])

    def test_torque_depends_on_the_rate_error_only(self):
        config = RateControllerConfig(ki=(0.0, 0.0, 0.0))
        a, b = RateController(PARAMS, 0.002, config), RateController(PARAMS, 0.002, config)
        np.testing.assert_allclose(
            a.torque((1.0, 0.0, 0.0), (0.0, 0.0, 0.0)), b.torque((3.0, 0.0, 0.0), (2.0, 0.0, 0.0))
        )

    def test_zero_error_gives_the_gyroscopic_feed_forward(self):
        ctl = RateController(PARAMS, 0.002)
        w = (1.0, 2.0, 3.0)
        # w x J w with J w = (1.395e-5, 2.872e-5, 6.519e-5): (4.422e-5, -2.334e-5, 8.2e-7).
        np.testing.assert_allclose(ctl.torque(w, w), [4.422e-5, -2.334e-5, 8.2e-7], rtol=1e-9)
        np.testing.assert_allclose(ctl.torque(w, w), np.cross(w, np.multiply((JX, JY, JZ), w)), rtol=1e-9)

    def test_integral_is_bounded_and_cleared_by_reset(self):
        ctl = RateController(PARAMS, 0.002, RateControllerConfig(kp=(0.0, 0.0, 0.0)))
        for _ in range(2000):  # 4 s of a 1 rad/s error would integrate to 4 rad
            torque = ctl.torque((1.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        np.testing.assert_allclose(torque, [JX * 20.0 * 2.0, 0.0, 0.0])  # ki x integral_limit
        ctl.reset()
        np.testing.assert_allclose(ctl.torque((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), [0.0, 0.0, 0.0])

    @pytest.mark.parametrize("kwargs", [{"kp": (1.0, 2.0)}, {"ki": (1.0, -1.0, 1.0)}])
    def test_bad_gains_are_refused(self, kwargs):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            RateControllerConfig(**kwargs)


class TestAttitudeRates:
    """rates = -kp e_R with e_R = 0.5 vee(R_d^T R - R^T R_d); kp = (8, 8, 4)."""

    def test_level_body_with_level_goal_gives_zero_rates(self):
        assert attitude_rates(rot_x(0.0), (0.0, 0.0, 1.0), 0.0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-15)

    def test_body_rolled_positive_gets_a_negative_roll_rate_back(self):
        # R = Rx(0.2), R_d = I: e_R = (sin 0.2, 0, 0) -> roll rate -8 sin 0.2 = -1.5893.
        rates = attitude_rates(rot_x(0.2), (0.0, 0.0, 1.0), 0.0)
        assert rates == pytest.approx((-8.0 * math.sin(0.2), 0.0, 0.0), abs=1e-12)
        assert rates[0] == pytest.approx(-1.58936, abs=1e-5)

    def test_body_pitched_positive_gets_a_negative_pitch_rate_back(self):
        assert attitude_rates(rot_y(0.2), (0.0, 0.0, 1.0), 0.0) == pytest.approx(
            (0.0, -8.0 * math.sin(0.2), 0.0), abs=1e-12
        )

    def test_body_yawed_positive_gets_a_negative_yaw_rate_back(self):
        assert attitude_rates(rot_z(0.3), (0.0, 0.0, 1.0), 0.0) == pytest.approx(
            (0.0, 0.0, -4.0 * math.sin(0.3)), abs=1e-12
        )

    def test_thrust_direction_towards_plus_x_pitches_the_nose_down(self):
        # Tilting body z towards +x is a positive rotation about body y.
        z_des = (math.sin(0.2), 0.0, math.cos(0.2))
        assert attitude_rates(rot_x(0.0), z_des, 0.0) == pytest.approx((0.0, 8.0 * math.sin(0.2), 0.0), abs=1e-12)

    def test_thrust_direction_towards_plus_y_rolls_left_side_up(self):
        # Tilting body z towards +y is a negative rotation about body x.
        z_des = (0.0, math.sin(0.2), math.cos(0.2))
        assert attitude_rates(rot_x(0.0), z_des, 0.0) == pytest.approx((-8.0 * math.sin(0.2), 0.0, 0.0), abs=1e-12)

    def test_heading_goal_gives_a_positive_yaw_rate(self):
        assert attitude_rates(rot_x(0.0), (0.0, 0.0, 1.0), 0.3) == pytest.approx(
            (0.0, 0.0, 4.0 * math.sin(0.3)), abs=1e-12
        )

    def test_gains_scale_the_rates(self):
        rates = attitude_rates(rot_x(0.2), (0.0, 0.0, 1.0), 0.0, AttitudeControllerConfig(kp=(1.0, 1.0, 1.0)))
        assert rates == pytest.approx((-math.sin(0.2), 0.0, 0.0), abs=1e-12)

    def test_reached_attitude_gives_zero_rates(self):
        # R_d = Ry(0.3): z_des is its third column.
        rot = rot_y(0.3)
        z_des = (rot[0][2], rot[1][2], rot[2][2])
        assert attitude_rates(rot, z_des, 0.0) == pytest.approx((0.0, 0.0, 0.0), abs=1e-12)


def rate_step_response(env, axis: int, command: float, duration: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Body rates [rad/s] after each physics step, from level hover, for a rate step on ``axis``.

    The env runs with ``ctrl_dt = sim_dt`` so every ``step`` is one physics step; the rate loop,
    mixer, rotor lag and rigid-body physics are all in the loop, as in normal use.
    """
    env.reset(seed=0)
    env._set_state(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(3))
    action = env.hover_action
    action[1 + axis] = command / MAX_RATES[axis]
    rates = []
    for _ in range(round(duration / env.ctrl_dt)):
        env.step(action)
        rates.append(env.data.qvel[3:6].copy())
    time = env.ctrl_dt * np.arange(1, len(rates) + 1)
    return time, np.array(rates)


def settling_time(time: np.ndarray, rate: np.ndarray, command: float, band: float = 0.05) -> float:
    """First time after which ``rate`` stays within ``band`` x ``command`` of ``command`` [s]."""
    outside = np.flatnonzero(np.abs(rate - command) > band * abs(command))
    return 0.0 if outside.size == 0 else float(time[outside[-1]]) + (time[1] - time[0])


class TestRateStepResponse:
    @pytest.mark.parametrize(("axis", "command"), [(0, 2.0), (0, -2.0), (1, 2.0)], ids=["roll", "-roll", "pitch"])
    def test_roll_and_pitch_rate_steps_settle_within_5_percent_in_under_0_18_s(self, make_env, axis, command):
        """Measured (500 Hz physics, 0.02 s rotor lag): 0.126 s to within 5 % of 2 rad/s, 17 % overshoot."""
        env = make_env("robot_rl/QuadrotorHover-v1", ctrl_dt=0.002)
        time, rates = rate_step_response(env, axis, command)
        assert settling_time(time, rates[:, axis], command) <= 0.18
        assert np.max(np.abs(rates[:, axis])) <= 1.25 * abs(command)  # measured 1.17
        others = np.delete(rates, axis, axis=1)
        assert np.max(np.abs(others)) < 0.05 * abs(command)  # no cross-coupling
        assert env.mixer.saturations == 0

    def test_yaw_rate_step_settles_within_5_percent_in_under_0_24_s(self, make_env):
        """Measured: 0.164 s to within 5 % of 1 rad/s (overshoot 5 %); yaw has half the roll gain."""
        env = make_env("robot_rl/QuadrotorHover-v1", ctrl_dt=0.002)
        time, rates = rate_step_response(env, 2, 1.0)
        assert settling_time(time, rates[:, 2], 1.0) <= 0.24
        assert np.max(rates[:, 2]) <= 1.1
        assert np.max(np.abs(rates[:, :2])) < 0.05
        assert env.mixer.saturations == 0

    def test_rate_steps_at_1_khz_settle_as_fast(self, make_env):
        """Measured at 1 kHz physics: 0.125 s to within 5 % of 2 rad/s."""
        env = make_env("robot_rl/QuadrotorHover-v1", ctrl_dt=0.001, sim_dt=0.001)
        time, rates = rate_step_response(env, 0, 2.0)
        assert settling_time(time, rates[:, 0], 2.0) <= 0.18
