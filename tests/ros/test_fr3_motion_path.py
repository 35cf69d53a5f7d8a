"""An FR3-motion card through the trajectory path: the node streams the env's own setpoints, the FR3 never reflexes.

A policy trained with ``motion="fr3"`` (its card's ``env_kwargs``) is commanded through
:class:`robot_rl_ros.fr3_command.Fr3CommandPath` with the env's setpoint generator
(:class:`robot_rl.envs.franka.fr3_motion.Fr3Motion`) instead of the shaper, and the sim bridge (``motion: fr3``,
``fr3_limits`` on) moves the arm along the 1 kHz command libfranka would be handed.

Run as a script, it measures episodes through the node (the numbers in docs/ros.md)::

    .venv/bin/python -m tests.ros.test_fr3_motion_path --policy /tmp/fr3_push_policy --seed 6200000 --episodes 20
    .venv/bin/python -m tests.ros.test_fr3_motion_path --expert --seed 6200000 --episodes 20

``--clock sim`` runs the node on simulated time instead (one tick per bridge step, no wall-clock jitter).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from robot_rl_ros.adapters import Fr3Adapter  # noqa: E402
from robot_rl_ros.fr3 import FR3_ARM_JOINTS  # noqa: E402
from robot_rl_ros.fr3_command import Fr3CommandPath, message_points  # noqa: E402
from robot_rl_ros.fr3_vendor import MAX_ACCELERATION, MAX_JERK, CommandedSetpoints  # noqa: E402
from robot_rl_ros.policy_node import PolicyNode  # noqa: E402
from robot_rl_ros.sim_bridge import SimBridge  # noqa: E402
from std_msgs.msg import String  # noqa: E402

import robot_rl  # noqa: E402
from robot_rl.envs.franka.experts import make_expert  # noqa: E402
from robot_rl.envs.franka.fr3_motion import Fr3Motion  # noqa: E402
from tests.ros.conftest import PUSH_POLICY, spin_for, spin_until  # noqa: E402

ENV_ID = "robot_rl/PandaPush-v0"
SEED = 6_200_000
"""First seed of the FR3-motion measurements (no shipped card was selected on it)."""


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


def fr3_card(tmp: Path, source: str = PUSH_POLICY) -> Path:
    """A copy of a policy folder whose card says it was trained with ``motion="fr3"``."""
    folder = tmp / "fr3_card"
    shutil.copytree(source, folder)
    card = json.loads((folder / "metadata.json").read_text())
    card["env_kwargs"] = {**card.get("env_kwargs", {}), "motion": "fr3"}
    (folder / "metadata.json").write_text(json.dumps(card))
    return folder


def expert_period_setpoints(seed: int, steps: int = 50):
    """The env's IK targets and each period's 1 kHz setpoints (q, dq, ddq) of a scripted-expert rollout."""
    env = robot_rl.make(ENV_ID, motion="fr3")
    u = env.unwrapped
    expert = make_expert(ENV_ID, "fr3")
    obs, _ = env.reset(seed=seed)
    start = u.data.qpos[:7].copy()
    targets, setpoints = [], []
    for _ in range(steps):
        obs, *_ = env.step(expert(obs))
        targets.append(u.controller._q_cmd.copy())  # what the IK handed the generator this period
        setpoints.append(u.motion.sample(u.motion.ticks))
    return u, start, targets, setpoints


def plan_from(motion: Fr3Motion, point, planned: np.ndarray, target: np.ndarray):
    """``motion``'s period towards ``target`` from the state of ``point`` with ``planned`` its last target."""
    motion.q, motion.dq, motion.ddq = point.positions, point.velocities, point.accelerations
    motion.target = planned
    return motion.plan(target)


def new_period(msg, commit_ms: int = 40, steps: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points of ``msg`` in (commit, commit + period] after its stamp: the motion towards its target."""
    points, times = message_points(msg, FR3_ARM_JOINTS)
    ms = np.rint(np.array(times) * 1e3).astype(int)
    rows = [k for k, t in enumerate(ms) if commit_ms < t <= commit_ms + steps]
    assert [ms[k] for k in rows] == list(range(commit_ms + 1, commit_ms + steps + 1))
    return tuple(np.array([getattr(points[k], f) for k in rows]) for f in ("positions", "velocities", "accelerations"))


def assert_generator_periods(records, reference: Fr3Motion) -> int:
    """Check a message stream against the env's generator; returns how many messages planned a target.

    Each message must repeat the previous message's points it keeps (the commit); when the previous message ended
    before this one's commit (a late tick past the braking tail), carry its target's motion on up to the commit;
    then hold whole periods of ``reference.plan(target)`` from the state before each.

    Args:
        records: Per message, ``(planned, held, target, msg)``: the generator's last target and the node's
            previous target before the message, the message's target, the message.
        reference: A generator with the env's parameters (its state is overwritten).
    """
    previous: dict[int, bytes] = {}
    base = None
    checked = 0
    for k, (planned, held, target, msg) in enumerate(records):
        points, times = message_points(msg, FR3_ARM_JOINTS)
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        base = stamp if base is None else base
        stamp_ms = round((stamp - base) / 1e6)  # stamps are whole milliseconds after the path's reset
        at = stamp_ms + np.rint(np.array(times) * 1e3).astype(int)
        spacing = np.diff(at)
        ms_end = int(np.flatnonzero(spacing > 1)[0]) + 1 if np.any(spacing > 1) else len(at)  # the tail after
        # The committed part repeats the previous message's points; what follows is new.
        new = next((i for i in range(len(at)) if previous.get(int(at[i])) != points[i].positions.tobytes()), len(at))
        last = max(previous, default=-1)  # the previous message's last point [ms]
        previous = {int(t): p.positions.tobytes() for t, p in zip(at, points, strict=True)}
        if k == 0 or new >= ms_end:
            continue  # the first message's blend point, or a blend message that plans nothing
        commit = int(np.flatnonzero(at <= stamp_ms + 40)[-1]) + 1 if last < stamp_ms + 40 else new
        i = new
        while i < commit:  # the previous target's motion carried on to the commit
            n = min(40, commit - i)
            q, _, _ = plan_from(reference, points[i - 1], planned, held)
            np.testing.assert_array_equal(np.array([p.positions for p in points[i : i + n]]), q[:n])
            planned, i = reference.target, i + n
        assert commit < ms_end and (ms_end - commit) % 40 == 0, (k, commit, ms_end)
        for i in range(commit, ms_end, 40):  # whole periods towards the new target
            q, dq, _ = plan_from(reference, points[i - 1], planned, target)
            np.testing.assert_array_equal(np.array([p.positions for p in points[i : i + 40]]), q, err_msg=str(k))
            np.testing.assert_array_equal(np.array([p.velocities for p in points[i : i + 40]]), dq)
            planned = reference.target
        checked += 1
    return checked


class TestPath:
    def test_each_message_adds_one_period_of_exactly_the_envs_setpoints(self):
        env, start, targets, setpoints = expert_period_setpoints(SEED)
        path = Fr3CommandPath(FR3_ARM_JOINTS, 0.04, motion=copy.deepcopy(env.motion), blend_ms=0)
        path.reset(start, now=100.0)
        for k, (target, (q, dq, ddq)) in enumerate(zip(targets, setpoints, strict=True)):
            streamed = new_period(path.message(target, 100.0 + 0.04 * k))
            # Bit for bit: the same generator from the same state, one period (the commit) later.
            np.testing.assert_array_equal(streamed[0], q, err_msg=f"period {k}")
            np.testing.assert_array_equal(streamed[1], dq, err_msg=f"period {k}")
            np.testing.assert_array_equal(streamed[2], ddq, err_msg=f"period {k}")
        assert np.all(path.peak["acceleration"] <= 0.8 * MAX_ACCELERATION + 1e-6)

    def test_late_ticks_and_the_blend_keep_whole_generator_periods_after_the_committed_plan(self):
        env, start, targets, _ = expert_period_setpoints(SEED + 1)
        path = Fr3CommandPath(FR3_ARM_JOINTS, 0.04, motion=copy.deepcopy(env.motion))
        path.reset(start, now=5.0)
        rng = np.random.default_rng(0)
        records = []
        for k, target in enumerate(targets):
            before = (path.motion.target.copy(), path._target.copy())
            # Ticks up to 6 ms late: the committed plan runs on (into the braking tail) until the new motion.
            records.append((*before, target, path.message(target, 5.0 + 0.04 * k + rng.uniform(0.0, 0.006))))
        assert assert_generator_periods(records, copy.deepcopy(env.motion)) >= 40
        assert np.all(path.peak["acceleration"] <= 0.8 * MAX_ACCELERATION + 1e-6)
        assert np.all(path.peak["jerk"] <= 0.8 * MAX_JERK + 1e-2)

    def test_a_servo_card_keeps_the_shaper_and_an_fr3_card_gets_a_copy_of_the_envs_generator(self, ros_context):
        node = rclpy.create_node("motion_kinds", context=ros_context)
        try:
            servo = Fr3Adapter(node, robot_rl.make(ENV_ID), node.create_publisher, time.monotonic)
            assert servo.command_path.motion is None
            env = robot_rl.make(ENV_ID, motion="fr3")
            fr3 = Fr3Adapter(node, env, node.create_publisher, time.monotonic)
            motion = fr3.command_path.motion
            assert isinstance(motion, Fr3Motion) and motion is not env.unwrapped.motion
            assert (motion.period, motion.margin, motion.acceleration, motion.jerk) == (
                env.unwrapped.motion.period,
                env.unwrapped.motion.margin,
                env.unwrapped.motion.acceleration,
                env.unwrapped.motion.jerk,
            )
        finally:
            node.destroy_node()

    def test_the_bridge_refuses_fr3_motion_without_the_fr3_model(self, ros_context):
        with pytest.raises(ValueError, match="`motion` 'fr3' needs `fr3_limits: true`"):
            SimBridge(context=ros_context, parameter_overrides=params(motion="fr3", fr3_limits=False))


# ------------------------------------------------------------------------------------------- episodes over ROS
class ExpertNode(Node):
    """The scripted expert behind the FR3 adapter: observation from the topics, joint targets through the path."""

    def __init__(self, context, env_id: str = ENV_ID, **values) -> None:
        super().__init__("fr3_expert", context=context, parameter_overrides=params(**values))
        env = robot_rl.make(env_id, motion="fr3")
        self.adapter = Fr3Adapter(self, env, self.create_publisher, self.now)
        self.expert = make_expert(env_id, "fr3")
        self.create_timer(env.unwrapped.ctrl_dt, self.tick)

    def now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def tick(self) -> None:
        observation = self.adapter.observation()
        if observation is not None:
            self.adapter.publish(self.expert(observation))


def episode(
    context, seed: int, policy: str | None = None, timeout: float = 30.0, expert_env: str = ENV_ID, **node_values
):
    """One lockstep episode through the node and the bridge (``fr3_limits`` on; ``motion`` as the card says).

    Returns:
        ``(bridge, node, info)``: the last ``/sim/episode_info`` as a dict.
    """
    executor = SingleThreadedExecutor(context=context)
    env_id, motion = expert_env, "fr3"
    if policy is not None:
        card = json.loads((Path(policy) / "metadata.json").read_text())
        env_id, motion = card["env_id"], card.get("env_kwargs", {}).get("motion", "servo")
    bridge = SimBridge(context=context, parameter_overrides=params(seed=seed, env_id=env_id, motion=motion))
    if policy is None:
        node = ExpertNode(context, expert_env, **node_values)
    else:
        # The policy's noise seeded with the episode's seed, as `robot-rl eval --seed` seeds it.
        values = {"policy": policy, "require_safety": False, "monitor": False, "safety": False, "seed": seed}
        values.update(node_values)
        node = PolicyNode(context=context, parameter_overrides=params(**values))
    executor.add_node(bridge)
    executor.add_node(node)
    listener = rclpy.create_node("episode_info", context=context)
    infos: list = []
    listener.create_subscription(String, "/sim/episode_info", infos.append, 100)
    executor.add_node(listener)
    if policy is not None:
        node.trigger_configure()
        node.trigger_activate()
    spin_until(executor, lambda: bridge.done and bool(infos), timeout=timeout)
    spin_for(executor, 0.05)
    info = json.loads(infos[-1].data)
    for n in (bridge, node, listener):
        executor.remove_node(n)
    executor.shutdown()
    return bridge, node, info


def close(*nodes) -> None:
    for n in nodes:
        getattr(n, "close", lambda: None)()
        n.destroy_node()


class TestEpisodes:
    def test_an_fr3_card_streams_the_envs_generator_and_the_fr3_never_reflexes(self, ros_context, tmp_path):
        card = fr3_card(tmp_path)
        recorded = []
        bridge, node, info = None, None, None
        original = Fr3CommandPath.message

        def message(path, target, now):
            before = (path.motion.target.copy(), path._target.copy())
            msg = original(path, target, now)
            recorded.append((*before, np.array(target), msg))
            return msg

        Fr3CommandPath.message = message
        try:
            bridge, node, info = episode(ros_context, SEED, policy=str(card))
        finally:
            Fr3CommandPath.message = original
        try:
            assert info["done"] and info["crash"] is None and info["step"] == 50, info
            assert isinstance(bridge.unwrapped.motion, CommandedSetpoints)
            assert isinstance(node.adapter.command_path.motion, Fr3Motion)
            peak = bridge._arm.check.peak
            assert np.all(peak["acceleration"] <= 0.8 * MAX_ACCELERATION + 1e-6), peak
            assert np.all(peak["jerk"] <= 0.8 * MAX_JERK + 1e-2), peak
            # Every message's motion is the env generator's, from the state the timeline reached before it.
            checked = assert_generator_periods(recorded, copy.deepcopy(node.adapter.command_path.motion))
            assert checked >= 20  # of 50: after a reset (and a node paused past its tail) the blend plans nothing
        finally:
            close(bridge, node)

    def test_the_scripted_expert_runs_an_episode_through_the_path_without_a_reflex(self, ros_context):
        bridge, node, info = episode(ros_context, SEED)
        try:
            assert info["done"] and info["crash"] is None and info["step"] == 50, info
            check = bridge._arm.check
            assert np.all(check.peak["acceleration"] <= 0.8 * MAX_ACCELERATION + 1e-6)
            assert np.all(check.velocity_use <= 0.82), check.velocity_use
            assert node.adapter.fault == ""
        finally:
            close(bridge, node)


def measure(policy: str | None, seed: int, episodes: int, expert_env: str = ENV_ID, **node_values) -> dict:
    """``episodes`` lockstep PandaPush episodes from ``seed`` through the node: successes, reflexes, peaks."""
    rclpy_context = rclpy.context.Context()
    rclpy.init(context=rclpy_context)
    rows = []
    ticks: list[float] = []
    stamps: list[float] = []
    original, observe = Fr3CommandPath.message, Fr3Adapter.observation

    def message(path, target, now):  # the node's tick times, to see its pauses
        ticks.append(now)
        return original(path, target, now)

    def observation(adapter):  # the joint state each tick reads, to see ticks that read the state before last
        out = observe(adapter)
        if out is not None:
            stamps.append(adapter.inputs["joint_states"].stamp)
        return out

    Fr3CommandPath.message, Fr3Adapter.observation = message, observation
    try:
        for s in range(seed, seed + episodes):
            ticks.clear()
            stamps.clear()
            bridge, node, info = episode(rclpy_context, s, policy=policy, expert_env=expert_env, **node_values)
            crash = info.get("crash") or ""
            rows.append(
                {
                    "seed": s,
                    "success": bool(info["success"]),
                    "steps": info["step"],
                    "reflex": crash.startswith("reflex"),
                    "crash": crash or None,
                    "predicted_reflex": node.adapter.fault or None,
                    "peak_acceleration": float(bridge._arm.check.peak["acceleration"].max()),
                    "peak_jerk": float(bridge._arm.check.peak["jerk"].max()),
                    "velocity_use": float(bridge._arm.check.velocity_use.max()),
                    # A lockstep bridge does not advance while the node pauses, but the node's plan does: a tick
                    # more than a period late starts from a braking tail the bridge's controller never ran.
                    "longest_tick_gap_ms": round(1e3 * float(np.max(np.diff(ticks))), 1) if len(ticks) > 1 else None,
                    # Lockstep on the wall clock: a tick that runs before the state of the previous command arrived
                    # reads the same state twice (the policy sees one period of extra latency there).
                    "repeated_states": int(np.sum(np.diff(stamps) == 0.0)) if len(stamps) > 1 else 0,
                    # The policy node's safety chain (None for the expert, which has none).
                    "safety_interventions": getattr(getattr(node, "stats", None), "interventions", None),
                    "safety_fallbacks": getattr(getattr(node, "stats", None), "fallbacks", None),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            close(bridge, node)
    finally:
        Fr3CommandPath.message, Fr3Adapter.observation = original, observe
        rclpy.try_shutdown(context=rclpy_context)
    return {
        "policy": policy or f"expert ({expert_env}, motion='fr3')",
        "episodes": episodes,
        "seed": seed,
        "successes": sum(r["success"] for r in rows),
        "reflexes": sum(r["reflex"] for r in rows),
        "predicted_reflexes": sum(r["predicted_reflex"] is not None for r in rows),
        "peak_acceleration": max(r["peak_acceleration"] for r in rows),
        "peak_jerk": max(r["peak_jerk"] for r in rows),
        "velocity_use": max(r["velocity_use"] for r in rows),
        "reflexes_after_a_tick_gap_over_60_ms": sum(r["reflex"] and (r["longest_tick_gap_ms"] or 0) > 60 for r in rows),
        "repeated_states": sum(r["repeated_states"] for r in rows),
        "per_episode": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", help="an exported policy folder (motion 'fr3' in its card: the env's generator)")
    parser.add_argument("--expert", action="store_true", help="the scripted expert (motion='fr3') instead")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--blend-ms", type=int, default=200, help="the node's trajectory_blend_ms")
    parser.add_argument(
        "--commit-ms", type=int, default=0, help="the node's trajectory_commit_ms (0: trajectory_commit, one period)"
    )
    parser.add_argument("--env-id", default=ENV_ID, help="the expert's env (motion 'fr3'); a policy uses its card's")
    parser.add_argument(
        "--clock",
        choices=("wall", "sim"),
        default="wall",
        help="wall: the node's timer on the wall clock (real rclpy timing); sim: simulated time, one tick per step "
        "(tests/ros/test_fr3_observation_parity.py)",
    )
    args = parser.parse_args()
    if bool(args.policy) == args.expert:
        parser.error("give exactly one of --policy DIR or --expert")
    if args.clock == "sim":
        from tests.ros.test_fr3_observation_parity import measure as measure_sim_time

        values = {"trajectory_blend_ms": args.blend_ms, "trajectory_commit_ms": args.commit_ms}
        print(json.dumps(measure_sim_time(args.policy, args.seed, args.episodes, args.env_id, **values)))
        return
    values = {"trajectory_blend_ms": args.blend_ms, "trajectory_commit_ms": args.commit_ms}
    result = measure(args.policy, args.seed, args.episodes, args.env_id, **values)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
