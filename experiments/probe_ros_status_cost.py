"""What does the policy node's ``/robot_rl/status`` cost its control tick?

The node builds and publishes one status per tick after the command is out (robot_rl_ros/status.py) and times
that part alone (``status_p50_ms``, ``status_p99_ms``, ``status_max_ms`` in ``/diagnostics``). This runs the sim
bridge (lockstep, autoreset), the policy node (PandaPush diffusion policy, safety chain and failure monitor on)
and, in the first configuration, the bag recorder writing the Foxglove file (so the status has a subscriber),
each in its own process on a private ROS_DOMAIN_ID, for ``--duration`` seconds per configuration, and prints the
node's numbers and the file's message counts. Then, in this process and without other nodes, the same status
built and published after each of 300 Controller steps (the caches as cold as in the node's tick), split into
building the messages, the JSON and the publish (no subscriber, so the publish always runs: the node itself skips
the status then), beside the step record the node already publishes each tick.

Usage (from the repository root)::

    .venv/bin/python experiments/probe_ros_status_cost.py [--duration 60] [--out /tmp/ros_status]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_ros import FIRST_SEED, PUSH, Driver, numbers, start, stop  # noqa: E402

KEYS = ("status_published", "status_p50_ms", "status_p99_ms", "status_max_ms", "steps", "latency_p50_ms",
        "latency_p99_ms", "late_ticks", "dropped_periods", "monitor", "safety")  # fmt: skip


def run(driver: Driver, name: str, duration: float, out: Path, recorder: bool) -> dict[str, object]:
    """One configuration: the node's diagnostics after ``duration`` s (and the Foxglove file's counts)."""
    logs = out / name
    logs.mkdir(parents=True, exist_ok=True)
    processes = [start("sim_bridge", {"env_id": "robot_rl/PandaPush-v0", "seed": FIRST_SEED, "autoreset": True},
                       logs / "bridge.log")]  # fmt: skip
    if recorder:
        processes.append(
            start("recorder", {"output": str(logs / "bag"), "foxglove": str(logs / "run.mcap")}, logs / "recorder.log")
        )
    processes.append(
        start(
            "policy_node",
            {
                "policy": PUSH,
                "autostart": True,
                "follow_episodes": True,
                "diagnostics_period": 1.0,
                "stats_window": 1_000_000,
                "monitor": True,
            },
            logs / "policy.log",
        )  # fmt: skip
    )
    driver.sil.diagnostics = {}
    try:
        driver.sil.wait_ready(timeout=120.0)
        driver.sil.spin_until(lambda: driver.sil.diagnostics.get("active") == "True", 60.0)
        started = time.monotonic()
        driver.sil.spin_until(lambda: time.monotonic() - started >= duration, duration + 1.0)
        values = numbers(driver.sil.diagnostics)
    finally:
        stop(*reversed(processes))
    result: dict[str, object] = {key: values.get(key) for key in KEYS}
    if recorder:
        from mcap.reader import make_reader

        with (logs / "run.mcap").open("rb") as stream:
            summary = make_reader(stream).get_summary()
        assert summary is not None
        result["mcap_counts"] = {
            channel.topic: summary.statistics.channel_message_counts.get(channel.id, 0)
            for channel in summary.channels.values()
        }
    return result


def breakdown(steps: int = 300) -> dict[str, dict[str, float]]:
    """Per part of the status [µs, p50 and p99] over ``steps`` Controller steps of PandaPush (chain and monitor on)."""
    import numpy as np
    import rclpy
    from std_msgs.msg import Float64MultiArray, String

    sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "robot_rl_ros"))
    from robot_rl_ros import conversions
    from robot_rl_ros.control import RuntimeConfig, build_runtime

    from robot_rl.data.mcap_messages import action_message, estop_state, safety_message, status_message
    from robot_rl.evaluation.guard import Guard

    runtime = build_runtime(RuntimeConfig(policy=PUSH, monitor=True))
    env, chain = runtime.env, runtime.chain
    guard = Guard(runtime.env_id, env, False)
    rclpy.init()
    node = rclpy.create_node("status_breakdown")
    status_pub = node.create_publisher(String, "/status_breakdown", 10)
    steps_pub = node.create_publisher(Float64MultiArray, "/status_breakdown_steps", 10)
    parts: dict[str, list[float]] = {"build": [], "json": [], "publish": [], "status": [], "step record": []}
    obs, _ = env.reset(seed=FIRST_SEED)
    runtime.controller.reset(FIRST_SEED)
    chain.reset()
    for t in range(steps):
        observation = guard.observation(obs)
        observation["stamp"] = np.array(t * runtime.ctrl_dt)
        output = runtime.controller.step(observation, t * runtime.ctrl_dt)
        obs, _, done, truncated, _ = env.step(output.action)
        guard.step_index += 1
        if done or truncated:
            obs, _ = env.reset()
        clock = time.perf_counter
        begin = clock()
        status = output.status
        action = action_message(0, t, output.policy_action.tolist(), output.action.tolist(), status, None)
        report = status.filter_reports[-1] if status.filter_reports else None
        violations = list(report.violations) if report is not None else []
        safety = safety_message(0, t, report, violations, estop_state(chain.estop), chain.chunk_report, 0.0)
        built = clock()
        data = status_message(t, action, safety, []).decode()
        dumped = clock()
        status_pub.publish(String(data=data))
        published = clock()
        fields = {"episode": 0, "seed": 0, "step": t, "observation": obs["observation"],
                  "achieved_goal": obs["achieved_goal"], "desired_goal": obs["desired_goal"],
                  "action": output.action, "intervention": 0.0}  # fmt: skip
        steps_pub.publish(conversions.step_record(fields))
        recorded = clock()
        for name, value in zip(parts, (built - begin, dumped - built, published - dumped, published - begin,
                                       recorded - published), strict=True):  # fmt: skip
            parts[name].append(value * 1e6)
    node.destroy_node()
    rclpy.try_shutdown()
    runtime.controller.close()
    return {k: {"p50_us": float(np.percentile(v, 50)), "p99_us": float(np.percentile(v, 99))} for k, v in parts.items()}


def main() -> None:
    """Both configurations, printed as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per configuration")
    parser.add_argument("--out", type=Path, default=Path("/tmp/ros_status"), help="logs, bags and MCAP files")
    args = parser.parse_args()
    from domain_coordinator import domain_id

    if args.out.exists():
        shutil.rmtree(args.out)
    with domain_id() as domain:
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        driver = Driver()
        try:
            results: dict[str, object] = {
                "recorder subscribed": run(driver, "recorder", args.duration, args.out, recorder=True),
                "no subscriber": run(driver, "alone", args.duration, args.out, recorder=False),
            }
        finally:
            driver.close()
        results["breakdown in this process"] = breakdown()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
