"""Message conversions: refusals of malformed input, round trips, the Crazyflie command conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from builtin_interfaces.msg import Time  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from robot_rl_ros import conversions as conv  # noqa: E402
from robot_rl_ros.crazyflie import LegacyConfig, ctbr_to_legacy, legacy_to_ctbr, quat_to_rotation  # noqa: E402
from robot_rl_ros.fr3 import FR3_ARM_JOINTS, FR3_FINGER_JOINTS, Fr3Measurement  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from robot_rl.data.bag import STEP_FIELDS, parse_step_record  # noqa: E402

STAMP = Time(sec=1, nanosec=0)


def joint_state(names, positions=None, velocities=None):
    msg = JointState()
    msg.name = list(names)
    msg.position = positions if positions is not None else [0.1 * i for i in range(len(names))]
    msg.velocity = velocities if velocities is not None else [0.0] * len(names)
    return msg


class TestJointStates:
    def test_joints_are_read_by_name_in_any_order(self):
        names = [*reversed(FR3_ARM_JOINTS), *FR3_FINGER_JOINTS]
        positions = [float(i) for i in range(9)]
        meas = conv.joint_state_to_fr3(joint_state(names, positions))
        # fr3_joint1 is 7th in the message (index 6), fr3_joint7 first.
        np.testing.assert_array_equal(meas.joint_pos, [6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0])
        np.testing.assert_array_equal(meas.finger_pos, [7.0, 8.0])

    def test_fingers_default_to_the_last_known(self):
        last = (np.array([0.01, 0.02]), np.zeros(2))
        meas = conv.joint_state_to_fr3(joint_state(FR3_ARM_JOINTS), last)
        np.testing.assert_array_equal(meas.finger_pos, [0.01, 0.02])

    @pytest.mark.parametrize(
        ("msg", "match"),
        [
            (joint_state([f"panda_joint{i}" for i in range(1, 8)]), "lacks the arm joints"),
            (joint_state(FR3_ARM_JOINTS[:6]), "lacks the arm joints"),
            (joint_state(FR3_ARM_JOINTS, positions=[0.0] * 6), "one position and one velocity per name"),
            (joint_state([*FR3_ARM_JOINTS, "fr3_joint1"]), "unique"),
            (joint_state([*FR3_ARM_JOINTS, FR3_FINGER_JOINTS[0]]), "both finger joints"),
            (joint_state(FR3_ARM_JOINTS, positions=[0.0] * 6 + [math.nan]), "finite"),
        ],
    )
    def test_malformed_joint_states_are_refused(self, msg, match):
        with pytest.raises(conv.MessageError, match=match):
            conv.joint_state_to_fr3(msg)

    def test_round_trip_through_the_sim_bridge_message(self):
        meas = Fr3Measurement(np.arange(7.0), -np.arange(7.0), np.array([0.01, 0.02]), np.array([0.1, 0.2]))
        back = conv.joint_state_to_fr3(conv.fr3_joint_state(meas, STAMP))
        for field in ("joint_pos", "joint_vel", "finger_pos", "finger_vel"):
            np.testing.assert_array_equal(getattr(back, field), getattr(meas, field))


class TestArmCommands:
    def test_forward_command_round_trip(self):
        q = np.linspace(-1.0, 1.0, 7)
        np.testing.assert_array_equal(conv.joint_command_to_array(conv.joint_command(q)), q)

    def test_trajectory_round_trip_and_timing(self):
        q = np.linspace(-1.0, 1.0, 7)
        msg = conv.joint_trajectory(q, 0.04, STAMP)
        assert msg.joint_names == list(FR3_ARM_JOINTS)
        assert (msg.points[0].time_from_start.sec, msg.points[0].time_from_start.nanosec) == (0, 40_000_000)
        np.testing.assert_array_equal(conv.trajectory_to_joint_targets(msg), q)

    def test_wrong_command_sizes_are_refused(self):
        with pytest.raises(conv.MessageError, match="7 positions"):
            conv.joint_command_to_array(conv.joint_command(np.zeros(6)))


class TestPoses:
    def test_non_unit_quaternion_is_refused(self):
        msg = conv.pose_stamped(np.zeros(3), np.array([0.0, 0.0, 0.0, 0.0]), "world", STAMP)
        with pytest.raises(conv.MessageError, match="unit quaternion"):
            conv.pose_to_arrays(msg)

    def test_odometry_body_twist_is_rotated_to_the_world(self):
        # Yawed 90 degrees: body x is world y.
        quat = np.array([math.cos(math.pi / 4), 0.0, 0.0, math.sin(math.pi / 4)])
        msg = Odometry()
        msg.pose.pose = conv.pose_stamped(np.array([1.0, 2.0, 3.0]), quat, "world", STAMP).pose
        msg.twist.twist.linear.x = 1.0
        msg.twist.twist.angular.z = 0.5
        meas = conv.odometry_to_quadrotor(msg, "body")
        np.testing.assert_allclose(meas.velocity, [0.0, 1.0, 0.0], atol=1e-12)
        np.testing.assert_allclose(meas.body_rates, [0.0, 0.0, 0.5])
        np.testing.assert_allclose(meas.rotation, quat_to_rotation(*quat), atol=1e-15)


class TestCrazyflieLegacy:
    def test_rate_mode_follows_crazyswarm2_cpp_conventions(self):
        # Hover-ish thrust, roll rate +1 rad/s... as action fractions of the env's maximum rates. The defaults
        # are the cpp backend's (crazyflie_vendor.Backend.node_signs): the firmware wants the packet's pitch
        # and yaw rate negated; crazyswarm2 negates linear.x into the pitch and crazyflie_cpp sends it as is.
        action = np.array([0.0, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 3.0])
        lx, ly, lz, az = ctbr_to_legacy(action, np.eye(3).ravel(), 0.596, LegacyConfig())
        assert ly == pytest.approx(math.degrees(1.0))  # linear.y = roll
        assert lx == pytest.approx(math.degrees(1.0))  # linear.x = pitch (packet pitch = -linear.x)
        assert az == pytest.approx(-math.degrees(1.0))  # angular.z = -yaw rate (the firmware inverts it)
        assert lz == pytest.approx(0.5 * 65535.0)  # half of full thrust

    def test_thrust_is_clipped_at_60000(self):
        _, _, lz, _ = ctbr_to_legacy(np.array([1.0, 0, 0, 0]), np.eye(3).ravel(), 0.596, LegacyConfig())
        assert lz == 60000.0

    @pytest.mark.parametrize("mode", ["rate", "angle"])
    def test_sim_bridge_reads_back_the_action(self, mode):
        rng = np.random.default_rng(0)
        config = LegacyConfig(mode=mode)
        rotation = quat_to_rotation(*(lambda q: q / np.linalg.norm(q))(np.array([1.0, 0.05, -0.03, 0.2])))
        for _ in range(20):
            action = rng.uniform([-0.8, -0.5, -0.5, -0.5], [0.8, 0.5, 0.5, 0.5])
            back = legacy_to_ctbr(ctbr_to_legacy(action, rotation, 0.596, config), rotation, 0.596, config)
            # Rate mode is exact; angle mode recovers roll and pitch rates up to the attitude parameterization.
            tol = 1e-9 if mode == "rate" else 0.05
            np.testing.assert_allclose(back, action, atol=tol)


def test_step_record_is_self_describing():
    fields = {
        "episode": 3,
        "seed": 7,
        "step": 11,
        "observation": np.arange(25.0),
        "achieved_goal": np.ones(3),
        "desired_goal": np.zeros(3),
        "action": np.array([0.1, -0.2, 0.3, -1.0]),
        "intervention": 1.0,
    }
    msg = conv.step_record(fields)
    assert [d.label for d in msg.layout.dim] == list(STEP_FIELDS)
    parsed = parse_step_record([d.label for d in msg.layout.dim], [d.size for d in msg.layout.dim], np.array(msg.data))
    for key, value in fields.items():
        np.testing.assert_array_equal(parsed[key], np.atleast_1d(value))
