"""crazyswarm2's backends and the Crazyflie firmware as their sources define them (robot_rl_ros.crazyflie_vendor).

One group per finding of "deploy on the real vendor stacks": odometry frames and units per backend (4), the
controller that legacy rate mode needs (5), command signs per backend through a sim that decodes them as the
vehicle would (6), the state rate the watchdog needs, and the firmware's setpoint timeouts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros import conversions as conv  # noqa: E402
from robot_rl_ros import crazyflie_vendor as vendor  # noqa: E402
from robot_rl_ros.crazyflie import (  # noqa: E402
    LegacyConfig,
    QuadrotorMeasurement,
    _from_roll_pitch_yaw,
    ctbr_to_legacy,
    legacy_to_ctbr,
)
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402

from robot_rl.safety.config import HARDWARE_DIR  # noqa: E402
from tests.ros.conftest import EVAL_SEED, QUAD_POLICY, spin_for, spin_until  # noqa: E402

SHIPPED_YAML = HARDWARE_DIR / "crazyswarm2" / "crazyflies.yaml"
ENV_ID = "robot_rl/QuadrotorWaypoint-v1"
HOVER_UNITS = 0.027 * 9.81 / 0.596 * 65535.0
"""Motor units of hover thrust for the sim's 27 g vehicle at 0.596 N full scale."""


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def crazyflies_yaml(tmp_path, controller=1, roll=0, pitch=0, odom_hz=100, pose_hz=100):
    """A crazyflies.yaml like the shipped one with the given controller, flight modes and log rates."""
    text = SHIPPED_YAML.read_text()
    text = text.replace("controller: 1", f"controller: {controller}")
    text = text.replace("stabModeRoll: 0", f"stabModeRoll: {roll}")
    text = text.replace("stabModePitch: 0", f"stabModePitch: {pitch}")
    text = text.replace("frequency: 100               # Hz; crazyflie", f"frequency: {odom_hz}  # crazyflie")
    text = text.replace("frequency: 100               # Hz (state", f"frequency: {pose_hz}  # (state")
    path = tmp_path / "crazyflies.yaml"
    path.write_text(text)
    assert vendor.CrazyswarmConfig.from_yaml(path, "cf231").log_hz["odom"] == odom_hz
    return str(path)


def bridge_and_policy(ros_context, executor, bridge_values=None, **policy_values):
    bridge = SimBridge(context=ros_context, parameter_overrides=params(env_id=ENV_ID, seed=EVAL_SEED,
                                                                       **(bridge_values or {})))  # fmt: skip
    values = {"policy": QUAD_POLICY, "require_safety": False, "monitor": False, "safety": False,
              "seed": EVAL_SEED, **policy_values}  # fmt: skip
    policy = PolicyNode(context=ros_context, parameter_overrides=params(**values))
    executor.add_node(bridge)
    executor.add_node(policy)
    return bridge, policy


def tilted_state():
    """A vehicle rolled 10 deg, pitched 20 deg, yawed 60 deg (ZYX), moving and turning."""
    rotation = _from_roll_pitch_yaw(math.radians(10), math.radians(20), math.radians(60)).ravel()
    return QuadrotorMeasurement(np.array([0.3, -0.2, 1.0]), np.array([0.5, -0.4, 0.2]), rotation,
                                np.array([0.7, -1.1, 0.4]))  # fmt: skip


# ------------------------------------------------------------------------------- finding 4: odom per backend
class TestOdometryPerBackend:
    def test_cflib_odom_reads_back_world_velocity_level_attitude_and_rad_s(self):
        meas = tilted_state()
        backend = vendor.backend("cflib")
        frame, child, quat, linear, angular = vendor.backend_odometry(backend, "cf231", "world", meas)
        assert (frame, child) == ("world", "cf231")
        read = vendor.OdomReader(backend, "cf231")(1.0, frame, meas.position, quat, linear, angular)
        np.testing.assert_allclose(read.velocity, meas.velocity, atol=1e-9)
        np.testing.assert_allclose(read.rotation, meas.rotation, atol=1e-9)
        np.testing.assert_allclose(read.body_rates, meas.body_rates, atol=1e-9)
        # The old reading (body twist, rad/s, quaternion as is) gets the pitch, the velocity and the rates wrong.
        msg = conv.raw_odometry(meas.position, quat, linear, angular, frame, child, conv.seconds_to_stamp(1.0))
        old = conv.odometry_to_quadrotor(msg, "body")
        assert np.abs(old.body_rates - meas.body_rates).max() > 10.0  # deg/s read as rad/s
        assert np.abs(old.rotation - meas.rotation).max() > 0.3  # the negated legacy pitch

    def test_cpp_odom_world_velocity_and_rates_from_attitude_differences(self):
        backend = vendor.backend("cpp")
        reader = vendor.OdomReader(backend, "cf231")
        rates = np.array([0.4, -0.3, 0.2])
        start = tilted_state()
        for k in range(3):  # constant body rates for 10 ms steps
            t = 0.01 * k
            from robot_rl_ros.crazyflie import _skew_exp

            r = start.rotation.reshape(3, 3) @ _skew_exp(rates * t)
            meas = QuadrotorMeasurement(start.position, start.velocity, r.ravel(), rates)
            frame, child, quat, linear, angular = vendor.backend_odometry(backend, "cf231", "world", meas)
            assert (frame, child) == ("cf231", "") and not angular.any()
            read = reader(t, frame, meas.position, quat, linear, angular)
            np.testing.assert_allclose(read.velocity, start.velocity, atol=1e-9)  # world velocity as it is
        np.testing.assert_allclose(read.body_rates, rates, atol=1e-6)

    @pytest.mark.parametrize(("node", "robot"), [("cflib", "cpp"), ("cpp", "cflib")])
    def test_node_configured_for_the_other_backend_is_refused_at_activation(self, ros_context, executor, node,
                                                                             robot):  # fmt: skip
        bridge, policy = bridge_and_policy(ros_context, executor, {"backend": robot}, backend=node)
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        spin_until(executor, lambda: policy.adapter.inputs["state"].rejected >= 3, timeout=3.0)
        problem = policy.adapter.preflight()
        assert "header.frame_id" in problem and "`backend`" in problem
        assert policy.trigger_activate() == TransitionCallbackReturn.FAILURE
        assert bridge.steps == 0 and policy.adapter.inputs["state"].value is None

    @pytest.mark.parametrize("name", vendor.BACKENDS)
    def test_pose_reads_back_the_attitude_and_refuses_another_frame(self, name):
        meas = tilted_state()
        checks = vendor.CrazyflieVendorChecks(lambda key, default: {"backend": name}.get(key, default), "cf231",
                                              "/cf231/pose", 0.02)  # fmt: skip
        quat = vendor.backend_pose_quat(checks.backend, meas)
        np.testing.assert_allclose(checks.pose_rotation("world", quat), meas.rotation, atol=1e-9)
        with pytest.raises(ValueError, match="`frame`"):
            checks.pose_rotation("cf231", quat)

    def test_deg_s_rates_are_refused_when_rad_s_configured(self):
        reader = vendor.OdomReader(vendor.backend("cflib"), "cf231", rate_units="rad/s")
        backend = vendor.backend("cflib")
        meas = tilted_state()
        meas.body_rates = np.array([0.3, -0.2, 0.25])  # 25 deg/s: plausible as rad/s by magnitude alone
        frame, _, quat, linear, angular = vendor.backend_odometry(backend, "cf231", "world", meas)
        reader(0.0, frame, meas.position, quat, linear, angular)
        from robot_rl_ros.crazyflie import _skew_exp

        turned = QuadrotorMeasurement(meas.position, meas.velocity,
                                      (meas.rotation.reshape(3, 3) @ _skew_exp(meas.body_rates * 0.01)).ravel(),
                                      meas.body_rates)  # fmt: skip
        frame, _, quat, linear, angular = vendor.backend_odometry(backend, "cf231", "world", turned)
        with pytest.raises(ValueError, match="looks like deg/s.*`odom_rate_units`"):
            reader(0.01, frame, meas.position, quat, linear, angular)
        with pytest.raises(ValueError, match="looks like deg/s"):  # beyond the gyro's +-2000 deg/s
            vendor.OdomReader(backend, "cf231", rate_units="rad/s")(0.0, frame, meas.position, quat, linear,
                                                                  np.array([0.0, 0.0, 40.0]))  # fmt: skip


# --------------------------------------------------------------------------- the state rate the loop needs
def test_crazyswarm2_default_state_rate_is_refused_at_activation(ros_context, executor, tmp_path):
    # 10 Hz: crazyswarm2's default rate for pose; the 50 Hz loop with its 0.05 s watchdog needs >= 50 Hz.
    path = crazyflies_yaml(tmp_path, odom_hz=10)
    bridge, policy = bridge_and_policy(ros_context, executor, {"crazyflies_yaml": path})
    assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
    spin_for(executor, 0.8)
    assert "default_topics.odom.frequency" in policy.adapter.preflight()
    assert policy.trigger_activate() == TransitionCallbackReturn.FAILURE


# ----------------------------------------------------------------------- finding 5: controller and modes
class TestFirmwareModes:
    def test_node_refuses_mellinger_with_legacy_rate_mode(self, ros_context, executor, tmp_path):
        path = crazyflies_yaml(tmp_path, controller=2)  # crazyswarm2's default controller
        assert "stabilizer.controller: 1" in vendor.CrazyswarmConfig.from_yaml(path, "cf231").legacy_problem("rate")
        _, policy = bridge_and_policy(ros_context, executor, crazyflies_yaml=path)
        assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
        _, ok = bridge_and_policy(ros_context, executor, crazyflies_yaml=str(SHIPPED_YAML))
        assert ok.trigger_configure() == TransitionCallbackReturn.SUCCESS

    def test_mellinger_holds_a_tilt_instead_of_flying_rates(self):
        # A constant roll rate of 0.5 rad/s for 1 s, flown kinematically through the firmware stand-in.
        from robot_rl_ros.crazyflie import _skew_exp

        backend = vendor.backend("cpp")
        action = np.array([0.0, 0.5 / 6.0, 0.0, 0.0])
        pitch_sign, yaw_sign = backend.node_signs
        twist = ctbr_to_legacy(action, np.eye(3).ravel(), 0.596, LegacyConfig(pitch_sign=pitch_sign, yaw_sign=yaw_sign))
        roll = {}
        for controller in (1, 2):
            config = vendor.CrazyswarmConfig(controller=controller, stab_mode_roll=0, stab_mode_pitch=0)
            firmware = vendor.LegacyFirmware(backend, config, 0.596, 0.596, thrust_locked=False)
            firmware.receive(twist)
            r = np.eye(3)
            for _ in range(500):  # 1 s at 2 ms
                flown = firmware.action(r.ravel())
                r = r @ _skew_exp(flown[1:] * np.array(vendor.MAX_RATES) * 0.002)
            roll[controller] = math.degrees(math.atan2(r[2, 1], r[2, 2]))
        assert roll[1] == pytest.approx(math.degrees(0.5), abs=0.5)  # PID: 0.5 rad/s for 1 s
        # Mellinger: the tilt settles near kw_xy/kR_xy x 0.5 rad/s = 0.14 rad (controller_mellinger.c).
        assert roll[2] == pytest.approx(math.degrees(vendor.MELLINGER_TAU * 0.5), abs=1.0)
        # The old stand-in flies the rates whatever the firmware is set to.
        back = legacy_to_ctbr(twist, np.eye(3).ravel(), 0.596, LegacyConfig())
        np.testing.assert_allclose(back, action, atol=1e-6)


# ----------------------------------------------------------------------- finding 6: signs per backend
class TestCommandSigns:
    @pytest.mark.parametrize("name", vendor.BACKENDS)
    def test_each_backend_flies_its_own_signs_and_flips_the_other_ones_pitch(self, name):
        backend = vendor.backend(name)
        config = vendor.CrazyswarmConfig(controller=1, stab_mode_roll=0, stab_mode_pitch=0)
        action = np.array([0.1, 0.2, 0.3, 0.4])
        level = np.eye(3).ravel()
        pitch_sign, yaw_sign = backend.node_signs
        for signs, expected in (((pitch_sign, yaw_sign), action), ((-pitch_sign, yaw_sign), action * [1, 1, -1, 1])):
            firmware = vendor.LegacyFirmware(backend, config, 0.596, 0.596, thrust_locked=False)
            firmware.receive(ctbr_to_legacy(action, level, 0.596, LegacyConfig(pitch_sign=signs[0], yaw_sign=signs[1])))
            np.testing.assert_allclose(firmware.action(level), expected, atol=1e-4)

    @pytest.mark.parametrize("name", vendor.BACKENDS)
    def test_angle_mode_reads_back_the_rates_the_node_meant(self, name):
        backend = vendor.backend(name)
        config = vendor.CrazyswarmConfig(controller=1, stab_mode_roll=1, stab_mode_pitch=1)
        pitch_sign, yaw_sign = backend.node_signs
        node = LegacyConfig(mode="angle", pitch_sign=pitch_sign, yaw_sign=yaw_sign)
        # Near level, as test_conversions.py's angle-mode round trip (the attitude parameterization couples more
        # with the tilt: legacy_mode angle is an approximation of CTBR).
        quat = np.array([1.0, 0.05, -0.03, 0.2])
        rotation = vendor.quat_to_rotation(*(quat / np.linalg.norm(quat)))
        rng = np.random.default_rng(0)
        for _ in range(10):
            action = rng.uniform([-0.8, -0.3, -0.3, -0.5], [0.8, 0.3, 0.3, 0.5])
            firmware = vendor.LegacyFirmware(backend, config, 0.596, 0.596, attitude_time_constant=0.05,
                                             thrust_locked=False)  # fmt: skip
            firmware.receive(ctbr_to_legacy(action, rotation, 0.596, node))
            np.testing.assert_allclose(firmware.action(rotation), action, atol=0.05)

    def test_thrust_stays_locked_until_a_zero_thrust_packet(self):
        config = vendor.CrazyswarmConfig(controller=1, stab_mode_roll=0, stab_mode_pitch=0)
        firmware = vendor.LegacyFirmware(vendor.backend("cpp"), config, 0.596, 0.596)
        firmware.receive((0.0, 0.0, HOVER_UNITS, 0.0))
        assert firmware.action(np.eye(3).ravel())[0] == -1.0  # locked: no thrust (crtp_commander_rpyt.c)
        firmware.receive((0.0, 0.0, 0.0, 0.0))
        firmware.receive((0.0, 0.0, HOVER_UNITS, 0.0))
        assert firmware.action(np.eye(3).ravel())[0] > -0.2

    def test_wrong_pitch_sign_for_the_backend_fails_in_the_vendor_loop(self, ros_context, executor):
        # cflib's pitch sign on the cpp backend: every pitch rate the policy commands is flown backwards.
        bridge, policy = bridge_and_policy(ros_context, executor, {"backend": "cpp"}, backend="cpp", pitch_sign=-1.0)
        goal = bridge._obs["desired_goal"].copy()
        start = bridge.unwrapped.robot_state()["position"].copy()
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        spin_until(executor, lambda: bridge.done or bridge.steps >= 75, timeout=6.0)
        position = bridge.unwrapped.robot_state()["position"]
        # The same policy with the right sign gets within 0.7 of the start distance in 75 steps
        # (test_policy_node.py::test_quadrotor_flies_through_cmd_vel_legacy).
        assert bridge.steps >= 5  # it flew (18 steps, then a crash, when measured)
        assert bridge.done or np.linalg.norm(position - goal) > 0.7 * np.linalg.norm(start - goal)
        (warning,) = policy.adapter.vendor.sign_warnings(-1.0, -1.0)  # also logged at configure
        assert "`pitch_sign` -1 differs from crazyswarm2's cpp backend (1)" in warning


# --------------------------------------------------------------------------------- setpoint timeouts
def test_setpoints_stopping_level_the_vehicle_then_stop_the_motors(ros_context):
    bridge = SimBridge(context=ros_context, parameter_overrides=params(env_id=ENV_ID, seed=EVAL_SEED, mode="realtime"))
    try:

        def tilt():
            r = bridge.unwrapped.robot_state()["rotation"].reshape(3, 3)
            return math.degrees(math.acos(min(1.0, r[2, 2])))

        def legacy(roll_rate_deg, thrust):
            msg = Twist()
            msg.linear.y, msg.linear.z = float(roll_rate_deg), float(thrust)
            bridge._on_legacy(msg)

        legacy(0.0, 0.0)  # unlock (the policy node's adapter sends it on activation with the cpp backend)
        legacy(30.0, HOVER_UNITS * 1.05)  # roll at 30 deg/s, then silence
        tilts = []
        for _ in range(int(2.6 / bridge.ctrl_dt)):
            if bridge.done:
                break
            bridge._realtime_tick()
            tilts.append(tilt())
        steps_per_s = round(1.0 / bridge.ctrl_dt)
        assert tilts[int(0.48 * steps_per_s)] > 10.0  # the last setpoint flown for 0.5 s (supervisor.c)
        assert tilts[int(1.0 * steps_per_s)] < 3.0  # then levelled out
        # After 2 s without setpoints the motors stop: the vehicle falls to the floor.
        velocity_z = bridge.unwrapped.robot_state()["velocity"][2]
        assert bridge.done or velocity_z < -2.0
    finally:
        bridge.close()
        bridge.destroy_node()
