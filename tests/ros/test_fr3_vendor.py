"""The FR3 as franka_ros2 drives it: steps a forward controller sends trip libfranka's limits, the shaped trajectory
path does not, a reflex silences /joint_states and the node falls back, joint states at franka_bringup's 30 Hz.

Vendor sources behind each claim: robot_rl_ros/fr3_vendor.py and fr3_command.py (module docstrings).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.fr3 import FR3_ARM_JOINTS  # noqa: E402
from robot_rl_ros.fr3_command import Fr3CommandPath, PredictedReflex, trajectory_message  # noqa: E402
from robot_rl_ros.fr3_vendor import (  # noqa: E402
    FR3_POSITION_LOWER,
    FR3_POSITION_UPPER,
    MAX_ACCELERATION,
    MAX_JERK,
    JointPoint,
    ReflexCheck,
)
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from tests.ros.conftest import EVAL_SEED, spin_for, spin_until  # noqa: E402
from tests.ros.test_policy_node import Tap, fallback_of, make_policy, params, record_steps  # noqa: E402

HOME = np.array([0.0, -0.1848, 0.0, -2.4967, 0.0, 2.3119, 0.785])


class TestReflexCheck:
    def test_limits_by_hand(self):
        check = ReflexCheck(FR3_POSITION_LOWER, FR3_POSITION_UPPER)
        check.reset(HOME)
        # 1 mrad per ms from rest: 1 rad/s, reached in one update: 1000 rad/s^2.
        reflex = check.check(HOME + np.outer([1e-3], np.eye(7)[1]))
        assert reflex is not None and reflex.kind == "joint_motion_generator_acceleration_discontinuity"
        assert reflex.joint == 1 and reflex.value == pytest.approx(1000.0)
        check.reset(HOME)
        # Constant jerk 4000 rad/s^3 for 2 ms (accelerations 4, 8 rad/s^2): within the limits.
        jerk = 4000.0
        dq = np.cumsum(np.cumsum([jerk * 1e-3, jerk * 1e-3]) * 1e-3)
        q = HOME + np.outer(np.cumsum(dq) * 1e-3, np.eye(7)[0])
        assert check.check(q) is None
        assert check.peak["jerk"][0] == pytest.approx(jerk) and check.peak["acceleration"][0] == pytest.approx(8.0)
        # A 10 mrad step is 10 rad/s: beyond fr3_joint4's 2.62 rad/s.
        check.reset(HOME)
        assert (
            check.check((HOME + 0.01 * np.eye(7)[3])[None]).kind == "joint_motion_generator_velocity_limits_violation"
        )


class TestCommandPath:
    def test_a_jerky_target_stream_is_shaped_within_the_limits_and_a_violation_is_never_sent(self):
        path = Fr3CommandPath(FR3_ARM_JOINTS, 0.04)
        path.reset(HOME, now=100.0)
        rng = np.random.default_rng(0)
        now = 100.0
        for k in range(25):  # +-0.3 rad every period on every joint (15 rad/s asked), ticks 0-15 ms late
            now += 0.04
            path.message(HOME + (0.3 if k % 2 else -0.3), now + rng.uniform(0.0, 0.015))
        assert np.all(path.peak["acceleration"] <= 0.8 * MAX_ACCELERATION + 1e-6)
        assert np.all(path.peak["jerk"] <= 0.8 * MAX_JERK + 1e-3)
        path.reset(HOME, now=0.0)
        path.shaper.margin = 3.0  # a shaper that overreaches: the prediction refuses the message
        with pytest.raises(PredictedReflex, match="joint_motion_generator"):
            for k in range(10):  # past the 0.2 s blend from the reset posture
                path.message(HOME + 0.5, 0.04 * k)

    def test_messages_are_stamped_1_ms_points_with_derivatives_that_keep_the_previous_plan_for_a_period(self):
        path = Fr3CommandPath(FR3_ARM_JOINTS, 0.04)
        path.reset(HOME, now=7.0)
        first = path.message(HOME + 0.1, 7.0)
        second = path.message(HOME - 0.1, 7.043)  # 3 ms late
        assert (first.header.stamp.sec, first.header.stamp.nanosec) == (7, 0)
        assert (second.header.stamp.sec, second.header.stamp.nanosec) == (7, 43_000_000)
        # After a reset the first point is 0.2 s ahead (the controller blends from what it holds), then 1 ms points.
        assert first.points[0].time_from_start.nanosec == 200_000_000
        assert first.points[1].time_from_start.nanosec == 201_000_000
        assert first.points[40].time_from_start.nanosec == 240_000_000
        assert len(first.points[40].velocities) == 7 and len(first.points[40].accelerations) == 7
        # Then a braking tail at 4 ms points that ends at rest (the controller's default end check holds).
        assert first.points[41].time_from_start.nanosec == 244_000_000
        assert first.points[-1].velocities.tolist() == [0.0] * 7
        # The second message (3 ms late) keeps the first's plan: the blend's end point (157 ms after its stamp),
        # and ends at rest too.
        assert second.points[0].time_from_start.nanosec == 157_000_000
        np.testing.assert_array_equal(second.points[0].positions, first.points[0].positions)
        np.testing.assert_array_equal(second.points[-1].velocities, np.zeros(7))


def _episode(ros_context, executor, **node_values):
    bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
    policy = make_policy(ros_context, seed=EVAL_SEED, safety=False, **node_values)
    executor.add_node(bridge)
    executor.add_node(policy)
    tap = Tap(ros_context, executor)
    infos = tap.listen(String, "/sim/episode_info")
    policy.trigger_configure()
    policy.trigger_activate()
    spin_until(executor, lambda: bridge.done, timeout=10.0)
    spin_for(executor, 0.1)
    return bridge, policy, json.loads(infos[-1].data)


class TestFinding1CommandPath:
    def test_forward_steps_trip_the_fr3_reflex(self, ros_context, executor):
        bridge, _, info = _episode(ros_context, executor, command_interface="forward", allow_forward=True)
        assert info["done"] and info["crash"].startswith("reflex: joint_motion_generator"), info
        assert info["step"] <= 2  # the first target that moves

    def test_the_shaped_trajectory_path_runs_a_whole_episode_within_the_limits(self, ros_context, executor):
        bridge, policy, info = _episode(ros_context, executor)
        assert info["done"] and info["crash"] is None and info["step"] == 50 and info["ignored_commands"] == 0, info
        peak = bridge._arm.check.peak
        assert np.all(peak["acceleration"] <= MAX_ACCELERATION) and np.all(peak["jerk"] <= MAX_JERK)
        assert policy.adapter.command_topic == "/robot_rl_arm_controller/joint_trajectory"

    def test_forward_is_refused_without_allow_forward_naming_the_parameter(self, ros_context):
        import rclpy
        from robot_rl_ros.adapters import Fr3Adapter

        import robot_rl

        node = rclpy.create_node("fence", context=ros_context, parameter_overrides=params(command_interface="forward"))
        env = robot_rl.make("robot_rl/PandaPush-v0")
        try:
            with pytest.raises(ValueError, match="`command_interface` is 'forward'.*`allow_forward: true`"):
                Fr3Adapter(node, env, node.create_publisher, time.monotonic)
        finally:
            env.close()
            node.destroy_node()


@pytest.mark.usefixtures("safety_chain_available")
class TestReflexSeenByTheNode:
    def test_a_jerky_trajectory_trips_the_reflex_silences_joint_states_and_the_node_falls_back(
        self, ros_context, executor
    ):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, require_safety=True)
        executor.add_node(bridge)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        infos = tap.listen(String, "/sim/episode_info")
        states = tap.listen(JointState, "/joint_states")
        jerky = tap.node.create_publisher(JointTrajectory, "/robot_rl_arm_controller/joint_trajectory", 10)
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)
        assert spin_until(executor, lambda: bridge.steps >= 5, timeout=5.0)
        # Positions only, 0.2 rad away in 40 ms: a linear segment, a velocity step the FR3 refuses.
        q = bridge.unwrapped.robot_state()["joint_pos"] + 0.2
        jerky.publish(trajectory_message([JointPoint(q)], [0.04], FR3_ARM_JOINTS))
        assert spin_until(executor, lambda: bridge.done, timeout=2.0)
        spin_for(executor, 0.05)
        crash = next(json.loads(m.data)["crash"] for m in reversed(infos) if json.loads(m.data)["crash"])
        assert crash.startswith("reflex: joint_motion_generator"), crash
        n_states, n_calls = len(states), len(calls)
        spin_for(executor, 0.4)
        assert len(states) == n_states  # franka_hardware's read() fails: no more joint states
        after = calls[n_calls:]
        assert after and fallback_of(after[-1][-1]) == "stale_state"


@pytest.mark.usefixtures("safety_chain_available")
class TestFinding3JointStateRate:
    @pytest.mark.parametrize(("rate", "stale"), [(30.0, False), (8.0, True)])
    def test_joint_states_at_franka_bringup_s_rate_keep_the_watchdog_fresh(self, ros_context, executor, rate, stale):
        bridge_executor = SingleThreadedExecutor(context=ros_context)
        bridge = SimBridge(
            context=ros_context,
            parameter_overrides=[*params(seed=EVAL_SEED, mode="realtime"), Parameter("joint_state_rate", value=rate)],
        )
        bridge_executor.add_node(bridge)
        policy = make_policy(ros_context, seed=EVAL_SEED, require_safety=True)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        states = tap.listen(JointState, "/joint_states")
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            bridge_executor.spin_once(timeout_sec=0.001)
            executor.spin_once(timeout_sec=0.001)
        bridge_executor.shutdown()
        stamps = [s.header.stamp.sec + 1e-9 * s.header.stamp.nanosec for s in states]
        measured = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        assert measured == pytest.approx(rate, rel=0.25)
        fallbacks = [fallback_of(out) for *_, out in calls[5:]]
        assert ("stale_state" in fallbacks) == stale, fallbacks


class TestFinding2Gripper:
    def test_a_gripper_task_is_refused_without_a_gripper_relay(self, ros_context):
        import rclpy
        from robot_rl_ros.adapters import Fr3Adapter
        from robot_rl_ros.control import hardware_ros_parameters

        import robot_rl

        real = hardware_ros_parameters("fr3")
        assert real["gripper_topic"] == ""  # the real FR3's file: no topic pretends to close the hand
        node = rclpy.create_node("grip", context=ros_context, parameter_overrides=params(gripper_topic=""))
        env = robot_rl.make("robot_rl/PandaPickAndPlace-v0")
        push = robot_rl.make("robot_rl/PandaPush-v0")
        try:
            with pytest.raises(ValueError, match="`gripper_topic` is empty.*~/gripper_action"):
                Fr3Adapter(node, env, node.create_publisher, time.monotonic)
            assert Fr3Adapter(node, push, node.create_publisher, time.monotonic)._gripper is None  # gripper blocked
        finally:
            env.close()
            push.close()
            node.destroy_node()
