"""The policy node in process (private rclpy Context, real Fast DDS): episodes, e-stop, stale and malformed input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.conversions import diagnostic_values  # noqa: E402
from robot_rl_ros.fr3 import FR3_ARM_JOINTS  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from tests.ros.conftest import EVAL_SEED, PUSH_POLICY, QUAD_POLICY, spin_for, spin_until  # noqa: E402


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def make_policy(context, policy=PUSH_POLICY, **values):
    values = {"policy": policy, "require_safety": False, "monitor": False, "diagnostics_period": 0.1, **values}
    return PolicyNode(context=context, parameter_overrides=params(**values))


class Tap:
    """Collects the messages of a few topics on a listener node."""

    def __init__(self, context, executor):
        import rclpy

        self.node = rclpy.create_node("tap", context=context)
        executor.add_node(self.node)
        self.messages: dict[str, list] = {}

    def call(self, executor, service, timeout=2.0):
        client = self.node.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=timeout)
        future = client.call_async(Trigger.Request())
        assert spin_until(executor, future.done, timeout)
        return future.result()

    def listen(self, msg_type, topic):
        self.messages[topic] = []
        self.node.create_subscription(msg_type, topic, self.messages[topic].append, 100)
        return self.messages[topic]


def record_steps(policy):
    """Wrap the Controller's step: (now, stamp, observation, output) per call."""
    calls = []
    controller = policy.runtime.controller
    step = controller.step

    def wrapped(observation, now):
        output = step(observation, now)
        calls.append((now, float(observation["stamp"]), dict(observation), output))
        return output

    controller.step = wrapped
    return calls


def fallback_of(output):
    reports = output.status.filter_reports
    return getattr(reports[0], "fallback", None) if reports else None


class TestEpisode:
    def test_an_episode_through_topics_matches_eval_on_its_seed(self, ros_context, executor):
        from robot_rl.evaluation.evaluate import EvalConfig, evaluate

        # Eval's servo has no FR3 motion limits: the bridge without them, the node's forward path, as eval steps.
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED, fr3_limits=False))
        policy = make_policy(ros_context, seed=EVAL_SEED, safety=False, command_interface="forward", allow_forward=True)
        executor.add_node(bridge)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        infos = tap.listen(String, "/sim/episode_info")
        commands = tap.listen(Float64MultiArray, "/forward_position_controller/commands")
        steps = tap.listen(Float64MultiArray, "/robot_rl/steps")
        diagnostics = tap.listen(DiagnosticArray, "/diagnostics")
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert spin_until(executor, lambda: bridge.done, timeout=10.0)
        spin_for(executor, 0.15)
        info = json.loads(infos[-1].data)
        assert info["step"] == 50 and info["done"] and info["ignored_commands"] == 0
        assert len(commands) >= 50 and len(commands[0].data) == 7
        assert len(steps) >= 50
        values = diagnostic_values(diagnostics[-1])
        assert values["rejected_total"] == "0" and values["safety"] == "off" and values["monitor"] == "off"
        report = evaluate(EvalConfig(policy=PUSH_POLICY, episodes=1, seed=EVAL_SEED, progress=False))
        episode = report["per_episode"][0]
        # Same seed, same noise: the sim through ROS differs from eval only by forward kinematics on the
        # published joint angles (eval's TCP reading lags one 2 ms physics step).
        assert info["success"] == episode["success"]
        assert abs(info["return"] - episode["return"]) <= 5

    def test_quadrotor_flies_through_cmd_vel_legacy(self, ros_context, executor):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(env_id="robot_rl/QuadrotorWaypoint-v1",
                                                                           seed=EVAL_SEED))  # fmt: skip
        policy = make_policy(ros_context, policy=QUAD_POLICY, seed=EVAL_SEED, safety=False)
        executor.add_node(bridge)
        executor.add_node(policy)
        goal = bridge._obs["desired_goal"].copy()
        start = bridge.unwrapped.robot_state()["position"]
        policy.trigger_configure()
        policy.trigger_activate()
        spin_until(executor, lambda: bridge.steps >= 75, timeout=5.0)  # 1.5 s of flight
        position = bridge.unwrapped.robot_state()["position"]
        assert bridge.steps >= 75 and not bridge.done
        assert np.linalg.norm(position - goal) < 0.7 * np.linalg.norm(start - goal)
        assert policy.adapter.last_command is not None and 0.0 < policy.adapter.last_command.linear.z <= 60000.0

    def test_with_prefetch_no_tick_computes_an_episode_s_first_chunk(self, ros_context, executor):
        # The first complete state after an episode starts (activation, or the sim's start event) primes the
        # first chunk in the background; the first tick takes it up.
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, safety=False, prefetch=True, follow_episodes=True)
        executor.add_node(bridge)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        policy.trigger_configure()
        onnx = policy.runtime.controller.policy
        histories = []
        predict = onnx.predict

        def spy(history, rng=None):
            histories.append(np.array(history))
            return predict(history, rng)

        onnx.predict = spy
        policy.trigger_activate()
        calls = record_steps(policy)
        assert spin_until(executor, lambda: len(calls) >= 6, timeout=5.0)
        assert tap.call(executor, "/sim/reset_episode").success
        count = len(calls)
        assert spin_until(executor, lambda: len(calls) >= count + 6, timeout=5.0)
        firsts = [output.status for *_, output in calls if output.status.step == 0]
        assert len(firsts) == 2
        assert all(status.new_chunk and not status.computed_chunk for status in firsts)
        # prefetch_lead 0 (default): every chunk is started from the state that arrives between ticks.
        assert not any(output.status.computed_chunk for *_, output in calls)
        assert sum(output.status.new_chunk for *_, output in calls) >= 3
        assert policy.stats.inference_steps == sum(output.status.waited for *_, output in calls)
        # Each chunk was computed from the very observation its first step read (lockstep: no newer state came),
        # so the chunks are those of no prefetch.
        # (The first episode's: a chunk started for it when the sim reset is dropped, so the second's are offset.)
        first = [observation for _, _, observation, output in calls[:count] if output.status.new_chunk]
        assert len(first) >= 2 and len(histories) >= len(first)
        for k, (history, observation) in enumerate(zip(histories, first, strict=False)):
            np.testing.assert_array_equal(history[-1], onnx.layout.flatten(observation), err_msg=f"chunk {k}")


@pytest.mark.usefixtures("safety_chain_available")
class TestSafety:
    def test_estop_mid_run_holds_until_reset(self, ros_context, executor):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, require_safety=True)
        executor.add_node(bridge)
        executor.add_node(policy)
        tap = Tap(ros_context, executor)
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)
        spin_until(executor, lambda: len(calls) >= 8, timeout=3.0)
        assert tap.call(executor, "/robot_rl_policy/estop").success
        n_before = len(calls)
        spin_until(executor, lambda: len(calls) >= n_before + 6, timeout=3.0)
        tcp_target = policy.adapter.kinematics.controller.commanded_tcp.copy()
        spin_until(executor, lambda: len(calls) >= n_before + 12, timeout=3.0)
        held = calls[n_before:]
        assert all(fallback_of(out) == "estop: operator (~/estop)" for *_, out in held)
        for *_, out in held:
            np.testing.assert_array_equal(out.action[:3], 0.0)  # hold: zero displacement
        # The arm comes to rest where it is: the commanded TCP stays put (the joints may still move in the
        # null space, towards the home posture) and the measured TCP stops.
        assert np.linalg.norm(policy.adapter.kinematics.controller.commanded_tcp - tcp_target) < 2e-3
        assert np.linalg.norm(bridge.unwrapped.robot_state()["tcp_vel"]) < 0.02
        level, _, values = policy.diagnostics()
        assert values["estop_latched"] is True and level == DiagnosticStatus.ERROR
        assert tap.call(executor, "/robot_rl_policy/reset").success
        n_reset = len(calls)
        spin_until(executor, lambda: len(calls) >= n_reset + 5, timeout=3.0)
        after = calls[n_reset:]
        assert after and all(fallback_of(out) is None for *_, out in after)
        assert any(np.any(out.action[:3] != 0.0) for *_, out in after)

    def test_a_silent_state_topic_gives_the_safe_command_within_one_period(self, ros_context, executor):
        from robot_rl_ros.control import load_safety

        chain, _ = load_safety("robot_rl/PandaPush-v0")
        deadline = chain.watchdog.deadline_s
        bridge_executor = SingleThreadedExecutor(context=ros_context)
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED, mode="realtime"))
        bridge_executor.add_node(bridge)
        policy = make_policy(ros_context, seed=EVAL_SEED, require_safety=True)
        executor.add_node(policy)
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)

        def spin_both(seconds):
            import time

            end = time.monotonic() + seconds
            while time.monotonic() < end:
                bridge_executor.spin_once(timeout_sec=0.001)
                executor.spin_once(timeout_sec=0.001)

        spin_both(0.6)
        assert calls and all(fallback_of(out) is None for *_, out in calls[-5:])
        n_live = len(calls)
        spin_for(executor, 0.5)  # the bridge is no longer spun: its topics fall silent
        bridge_executor.shutdown()
        bridge.close()
        bridge.destroy_node()
        silent = calls[n_live:]
        last_stamp = max(stamp for _, stamp, *_ in silent)
        first = next(i for i, (now, stamp, _, out) in enumerate(silent) if fallback_of(out) is not None)
        now, stamp, _, out = silent[first]
        assert fallback_of(out) == "stale_state"
        assert stamp == last_stamp
        period = policy.runtime.ctrl_dt
        # Fresh before the deadline, safe command at the first tick past it: within one control period.
        assert all(fallback_of(o) is None for n, s, _, o in silent[:first] if n - s <= deadline)
        assert deadline < now - stamp <= deadline + period + 0.02  # + timer jitter
        assert all(fallback_of(o) == "stale_state" for *_, o in silent[first:])
        np.testing.assert_array_equal(out.action[:3], 0.0)


class TestMalformedInput:
    def test_wrong_joint_names_or_counts_are_refused_counted_and_never_reach_the_policy(self, ros_context, executor):
        bridge = SimBridge(context=ros_context, parameter_overrides=params(seed=EVAL_SEED))
        policy = make_policy(ros_context, seed=EVAL_SEED, safety=False)
        executor.add_node(bridge)
        executor.add_node(policy)
        policy.trigger_configure()
        policy.trigger_activate()
        calls = record_steps(policy)
        tap = Tap(ros_context, executor)
        bad = tap.node.create_publisher(JointState, "/joint_states", 10)
        spin_until(executor, lambda: len(calls) >= 3, timeout=3.0)
        poison = 0.777
        panda = [f"panda_joint{i}" for i in range(1, 8)]
        arm = list(FR3_ARM_JOINTS)
        messages = [
            JointState(name=panda, position=[poison] * 7, velocity=[0.0] * 7),  # wrong names
            JointState(name=arm[:6], position=[poison] * 6, velocity=[0.0] * 6),  # a joint missing
            JointState(name=arm, position=[poison] * 7, velocity=[0.0] * 6),  # counts disagree
        ]
        for msg in messages:
            msg.header.stamp = policy.get_clock().now().to_msg()  # fresh: refused for its joints, not its stamp
            bad.publish(msg)
            spin_for(executor, 0.05)
        spin_for(executor, 0.2)
        level, _, values = policy.diagnostics()
        assert values["rejected_joint_states"] == 3 and values["rejected_total"] == 3
        assert level == DiagnosticStatus.WARN and "velocity" in values["last_rejection"]
        for _, _, observation, _ in calls:
            assert not np.any(observation["joint_pos"] == poison)
        assert bridge.steps >= 3

    def test_the_monitor_runs_when_calibrated_and_says_why_not_otherwise(self, ros_context, executor, tmp_path):
        from pathlib import Path

        for folder in (Path(PUSH_POLICY), tmp_path / "uncalibrated"):
            if folder != Path(PUSH_POLICY):
                shutil.copytree(PUSH_POLICY, folder, ignore=shutil.ignore_patterns("monitor"))
            policy = make_policy(ros_context, policy=str(folder), monitor=True)
            executor.add_node(policy)
            assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
            _, _, values = policy.diagnostics()
            calibrated = (folder / "monitor" / "calibration.json").is_file()
            assert values["monitor"] == ("on" if calibrated else "off")
            if not calibrated:
                assert "monitor: off" in values["notes"] and "calibrat" in values["notes"]
            policy.trigger_cleanup()
            executor.remove_node(policy)
            policy.destroy_node()

    def test_configure_fails_cleanly_on_a_missing_or_tampered_policy(self, ros_context, executor, tmp_path):
        policy = make_policy(ros_context, policy=str(tmp_path / "nope"))
        executor.add_node(policy)
        assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
        tampered = tmp_path / "push"
        shutil.copytree(PUSH_POLICY, tampered)
        data = bytearray((tampered / "policy.onnx").read_bytes())
        data[-1] ^= 0xFF
        (tampered / "policy.onnx").write_bytes(bytes(data))
        policy.set_parameters(params(policy=str(tampered)))
        assert policy.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert policy.runtime is None
