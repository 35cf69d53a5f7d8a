"""State freshness by the message's own header stamp, and the card's control period checked at configure.

The node judges each streaming state (joint states, object pose and twist; a Crazyflie's odom or pose) by its
header stamp against its own clock: stale (older than the watchdog's deadline), from the future (beyond
``clock_skew_tolerance``) and zero stamps are refused, counted per kind, and never reach the Controller. A card
whose ``ctrl_dt`` is not the period its env was trained at, or not a plausible period for the robot, is refused
at configure.
"""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from robot_rl_ros import conversions as conv  # noqa: E402
from robot_rl_ros.control import (  # noqa: E402
    CLOCK_SKEW_TOLERANCE_S,
    RuntimeConfig,
    StampCheck,
    build_runtime,
    check_control_period,
)
from robot_rl_ros.fr3 import FR3_ARM_JOINTS, FR3_FINGER_JOINTS  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, QUAD_POLICY, spin_for, spin_until  # noqa: E402
from tests.ros.test_policy_node import Tap, fallback_of, make_policy, params, record_steps  # noqa: E402

POISON = 0.777
"""Arm joint angle [rad] of the injected states: it must never show up in an observation."""


def poisoned(stamp_s: float) -> JointState:
    """A well-formed FR3 joint state at the poison angles, stamped ``stamp_s`` [s]."""
    msg = JointState(
        name=[*FR3_ARM_JOINTS, *FR3_FINGER_JOINTS], position=[POISON] * 7 + [0.02, 0.02], velocity=[0.0] * 9
    )
    msg.header.stamp = conv.seconds_to_stamp(stamp_s)
    return msg


def feed(executor, bridge, seconds, extra=None):
    """Spin ``seconds``; every 20 ms the bridge (not spun: its sim stays put) publishes a fresh state; ``extra()``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if bridge is not None:
            bridge.publish_state()
        if extra is not None:
            extra()
        spin_for(executor, 0.02)


def assert_never_reached(calls):
    assert calls
    for _, _, observation, _ in calls:
        assert not np.any(np.isclose(observation["joint_pos"], POISON))


class TestStampCheck:
    def test_refuses_stale_future_and_zero_stamps_and_counts_them(self):
        check = StampCheck(max_age_s=0.1, skew_s=0.01)
        now = 1_000.0
        assert check.refuse(now - 0.05, now) == ""  # 50 ms old: fresh
        assert check.refuse(now + 0.009, now) == ""  # 9 ms ahead: within the skew allowance
        assert check.refuse(now - 1.84, now).startswith("stale state: stamped 1.840 s before receipt")
        assert check.refuse(now - 10.0, now).startswith("stale state")
        assert check.refuse(now + 0.011, now).startswith("future state: stamped 0.011 s after receipt")
        assert check.refuse(now + 10.0, now).startswith("future state")
        assert check.refuse(0.0, now).startswith("zero state")
        assert check.counts == {"stale": 2, "future": 2, "zero": 1}

    @pytest.mark.parametrize(("max_age", "skew"), [(0.0, 0.01), (-0.1, 0.01), (math.nan, 0.01), (0.1, -0.001)])
    def test_refuses_nonsense_settings(self, max_age, skew):
        with pytest.raises(ValueError, match="must be finite"):
            StampCheck(max_age, skew)

    def test_default_skew_allowance_is_a_few_ms(self):
        assert 0.001 <= CLOCK_SKEW_TOLERANCE_S <= 0.02


class TestStampsThroughTopics:
    @pytest.mark.usefixtures("safety_chain_available")
    def test_a_state_replayed_late_is_refused_and_the_watchdog_falls_back(self, ros_context, executor):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, require_safety=True)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        late = tap.node.create_publisher(JointState, "/joint_states", 10)
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        deadline = policy.runtime.chain.watchdog.deadline_s
        assert policy.adapter.stamp_check.max_age_s == deadline  # max_state_age 0: the watchdog's deadline
        policy.trigger_activate()
        calls = record_steps(policy)
        feed(executor, bridge, 0.4)
        assert len(calls) >= 3 and not any(fallback_of(out) == "stale_state" for *_, out in calls)
        n_live, sent = len(calls), 0
        accepted = policy.adapter.inputs["joint_states"].accepted

        def replay():  # the robot's stream stops; a recording of it arrives 1.84 s late instead
            nonlocal sent
            late.publish(poisoned(policy.now() - 1.84))
            sent += 1

        feed(executor, None, 0.5, replay)
        replayed = calls[n_live:]
        assert_never_reached(calls)
        check = policy.adapter.stamp_check
        spin_until(executor, lambda: check.counts["stale"] >= sent, timeout=1.0)  # (sensor QoS: best effort)
        assert policy.adapter.inputs["joint_states"].accepted == accepted  # every one that arrived was refused
        # As if no state had arrived: the last fresh state ages past the deadline, and the fallback follows.
        assert any(fallback_of(out) == "stale_state" for *_, out in replayed)
        assert all(fallback_of(out) == "stale_state" for now, stamp, _, out in replayed if now - stamp > deadline)
        level, _, values = policy.diagnostics()
        assert sent >= values["refused_stale_stamp"] == values["rejected_joint_states"] >= sent // 2 > 0
        assert values["refused_future_stamp"] == 0 and values["refused_zero_stamp"] == 0
        why = policy.adapter.inputs["joint_states"].last_error
        assert why.startswith("joint_states: stale state") and "max_state_age 0.1 s" in why
        assert level == DiagnosticStatus.WARN

    def test_future_zero_and_old_stamps_never_reach_the_controller_and_are_counted(self, ros_context, executor):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, safety=False)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        bad = tap.node.create_publisher(JointState, "/joint_states", 10)
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)
        feed(executor, bridge, 0.3)
        for offset in (-10.0, +10.0, None):  # 10 s old, 10 s ahead, unset
            bad.publish(poisoned(0.0 if offset is None else policy.now() + offset))
            feed(executor, None, 0.09)  # the ticks in between would read it, were it taken
            feed(executor, bridge, 0.06)
        assert_never_reached(calls)
        check = policy.adapter.stamp_check
        assert spin_until(executor, lambda: sum(check.counts.values()) >= 3, timeout=1.0)
        level, _, values = policy.diagnostics()
        refused = (values["refused_stale_stamp"], values["refused_future_stamp"], values["refused_zero_stamp"])
        assert refused == (1, 1, 1)
        assert values["rejected_joint_states"] == 3 and values["rejected_total"] == 3
        assert values["clock_skew_tolerance_ms"] == pytest.approx(1e3 * CLOCK_SKEW_TOLERANCE_S)
        assert level == DiagnosticStatus.WARN
        # A stamp ahead of the node's clock by less than the skew allowance (a synchronized robot PC) is taken.
        accepted = policy.adapter.inputs["joint_states"].accepted
        bridge._publish_franka(conv.seconds_to_stamp(policy.now() + 0.5 * CLOCK_SKEW_TOLERANCE_S))
        assert spin_until(executor, lambda: policy.adapter.inputs["joint_states"].accepted > accepted, timeout=1.0)
        assert sum(check.counts.values()) == 3

    def test_the_crazyflie_state_goes_through_the_same_check(self, ros_context, executor):
        policy = make_policy(ros_context, policy=QUAD_POLICY, safety=False)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        odom = tap.node.create_publisher(Odometry, "/cf231/odom", 10)
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        policy.trigger_activate()
        state = policy.adapter.inputs[policy.adapter.streaming[0]]
        assert policy.adapter.stamp_check.max_age_s == pytest.approx(0.05)  # no chain: 2.5 periods of 20 ms

        def send(stamp_s):
            msg = Odometry()
            msg.header.stamp, msg.header.frame_id, msg.child_frame_id = conv.seconds_to_stamp(stamp_s), "world", "cf231"
            msg.pose.pose.position.z, msg.pose.pose.orientation.w = 1.0, 1.0
            odom.publish(msg)
            spin_for(executor, 0.05)

        spin_for(executor, 0.2)  # discovery
        for stamp_s in (0.0, policy.now() + 10.0, policy.now() - 10.0):
            send(stamp_s)
        check = policy.adapter.stamp_check
        assert spin_until(executor, lambda: sum(check.counts.values()) >= 3, timeout=1.0)
        assert check.counts == {"stale": 1, "future": 1, "zero": 1}
        assert state.rejected == 3 and state.accepted == 0 and state.value is None


BAD_PERIODS = [0.004, 0, -1, "four", math.nan]
"""``ctrl_dt`` values written into a copy of the Push card (trained at 0.04 s)."""


def card_with_period(tmp_path, value):
    folder = tmp_path / "push"
    shutil.copytree(PUSH_POLICY, folder)
    card = json.loads((folder / "metadata.json").read_text())
    card["ctrl_dt"] = value
    (folder / "metadata.json").write_text(json.dumps(card))
    return folder


class TestControlPeriod:
    @pytest.mark.parametrize("value", BAD_PERIODS)
    def test_a_card_with_an_implausible_or_edited_period_is_refused_at_configure(
        self, ros_context, executor, tmp_path, value
    ):
        folder = card_with_period(tmp_path, value)
        with pytest.raises(ValueError) as err:
            build_runtime(RuntimeConfig(policy=str(folder), safety=False, monitor=False))
        message = str(err.value)
        assert "\n" not in message
        assert "`ctrl_dt` must be 0.04 s" in message and "robot_rl/PandaPush-v0" in message  # expected
        assert f"Got {value!r}" in message  # what arrived
        assert "[0.001, 1] equal to the env's ctrl_dt" in message  # what is valid
        policy = make_policy(ros_context, policy=str(folder))
        executor.add_node(policy)
        assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert policy.runtime is None and policy._timer is None

    def test_the_shipped_period_configures(self, ros_context, executor):
        policy = make_policy(ros_context)
        executor.add_node(policy)
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy.runtime.ctrl_dt == 0.04

    @pytest.mark.parametrize(
        ("robot", "value", "trained", "why"),
        [
            ("fr3", 0.0005, 0.0005, "outside"),  # faster than controller_manager's 1 kHz
            ("fr3", 2.0, 2.0, "outside"),
            ("crazyflie", 0.6, 0.6, "outside"),  # past the firmware's 500 ms setpoint timeout
            ("crazyflie", 0.01, 0.02, "100 Hz instead of 50 Hz"),  # plausible, not what it was trained at
            ("crazyflie", True, 0.02, "(bool)"),
            ("crazyflie", None, 0.02, "(NoneType)"),
        ],
    )
    def test_ranges_per_robot(self, robot, value, trained, why):
        with pytest.raises(ValueError, match="must be") as err:
            check_control_period(robot, value, trained, "robot_rl/QuadrotorHover-v1")
        assert why in str(err.value)
        assert check_control_period(robot, 0.02, 0.02, "robot_rl/QuadrotorHover-v1") == 0.02
