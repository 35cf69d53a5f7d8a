"""The ROS 2 deployment over loopback with real rclpy (Fast DDS): SIL success, node latency, dropped periods.

Three measurements, each with the sim bridge and the policy node as two separate processes on a
ROS_DOMAIN_ID of their own (the bench process drives them through services and topics only):

* SIL success: ``--episodes`` PandaPush episodes (seeds from 1000000, the policy card's) of
  ``policies/panda_push_diffusion`` through the topics (bridge in lockstep: one env step per
  command, at the policy node's 25 Hz timer), with the node's defaults and with the timed runs'
  deployment setting (prefetch, real-time), against ``robot-rl eval`` on the same seeds with the
  same safety setting: the difference in points, and how many episodes end alike.
* latency in the node: per control tick, the wall time from reading the cached inputs to the
  command published (observation in, command out), p50/p99/max over every tick of the runs below;
  and the age of the newest state when its command went out (the wait for the timer: up to one
  period by design).
* dropped control periods: the policy node and the bridge (autoreset, lockstep) run for
  ``--duration`` seconds at 25 Hz (Franka) and 50 Hz (quadrotor); a tick more than 1.5 periods after
  the previous one counts the periods it skipped.

Usage::

    robot-rl bench ros [--episodes 100] [--duration 300] [--safety on] [--out bench/results]
    robot-rl bench ros --only timed --runs franka_prefetch_realtime quadrotor --duration 60 --out /tmp/ros
    robot-rl bench ros --only sil --sil prefetch_realtime --episodes 100 --out /tmp/ros_sil

Writes ``ros.md`` and ``ros.json`` to ``--out``. Needs the ``ros`` extra (rclpy).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from bench import harness

REPO = harness.REPO
PACKAGE = REPO / "ros2_ws" / "src" / "robot_rl_ros"

PUSH = "policies/panda_push_diffusion"
QUAD = "policies/quadrotor_waypoint_diffusion"
FIRST_SEED = 1_000_000


@dataclasses.dataclass(frozen=True, kw_only=True)
class RosOptions(harness.Options):
    """Options of ``robot-rl bench ros``."""

    episodes: int = 100
    """SIL episodes per configuration (0 skips the comparison)."""
    duration: float = 300.0
    """Seconds of each long timed run (the short ones: at most 120 s)."""
    safety: Literal["on", "off"] = "on"
    """The safety chain in SIL, eval and the timed runs."""
    only: Literal["sil", "timed"] | None = None
    """Run only the SIL comparison or only the timed runs."""
    runs: tuple[str, ...] = ()
    """Timed runs to do (default: all): franka, franka_realtime, franka_prefetch, franka_prefetch_realtime,
    franka_prefetch_monitor_on, quadrotor, quadrotor_realtime, quadrotor_prefetch, quadrotor_prefetch_realtime."""
    sil: tuple[str, ...] = ()
    """SIL configurations to run (default: all): defaults, prefetch_realtime."""
    logs: Path = REPO / "runs" / "bench_ros_logs"
    """Folder of the nodes' logs."""
    max_sil_gap_points: float | None = None
    """Report whether each SIL configuration's success is within this many points of `robot-rl eval`'s."""
    max_latency_p99_ms: float | None = None
    """Report whether each timed run's latency p99 in the node is at most this [ms] (and how many dropped none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.duration <= 0:
            raise ValueError(f"`duration` must be positive. Got {self.duration}.")
        for option, wanted, known in (
            ("--sil", self.sil, [label(n) for n in SIL_RUNS]),
            ("--runs", self.runs, [label(n) for n in timed_runs(300.0)]),
        ):
            unknown = sorted(set(wanted) - set(known))
            if unknown:
                raise ValueError(f"{option}: unknown {unknown[0]!r}; choose from {', '.join(known)}.")


def start(module: str, params: dict[str, Any], log: Path) -> subprocess.Popen:
    """A node of robot_rl_ros in its own process (``--ros-args -p k:=v``), output to ``log``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PACKAGE), str(REPO), os.environ.get("PYTHONPATH", "")]))
    args = []
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args += ["-p", f"{key}:={text}"]
    return subprocess.Popen(
        [sys.executable, "-c", f"from robot_rl_ros.{module} import main; main()", "--ros-args", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


class Driver:
    """An rclpy node in this process with the SIL driver and a diagnostics listener."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        if str(PACKAGE) not in sys.path:
            sys.path.insert(0, str(PACKAGE))
        from robot_rl_ros.sil import SilDriver

        rclpy.init()
        self.node = rclpy.create_node("bench_ros_driver")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.sil = SilDriver(self.node, self.executor)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown()


def numbers(values: dict[str, str]) -> dict[str, Any]:
    """Diagnostics values as numbers where they are numbers."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        try:
            out[key] = int(value)
        except ValueError:
            try:
                out[key] = float(value)
            except ValueError:
                out[key] = value
    return out


SIL_RUNS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "prefetch, realtime": {"prefetch": True, "realtime_priority": 50},
}
"""SIL configurations: name -> extra policy node parameters (the second is the timed runs' deployment setting; each
is compared with ``robot-rl eval`` under the same chunk timing: ``--prefetch-lead`` = the node's ``prefetch_lead``)."""
PREFETCH_LEAD = 0
"""The policy node's default ``prefetch_lead`` (0: each chunk started from the first state after the tick before)."""


def sil_episodes(driver: Driver, episodes: int, safety: bool, params: dict[str, Any], logs: Path,
                 name: str) -> dict[str, Any]:  # fmt: skip
    """``episodes`` PandaPush episodes through the topics with the policy node under ``params``."""
    from robot_rl.evaluation.evaluate import wilson_interval

    tag = label(name)
    # The eval replica (success compared with `robot-rl eval`): the bridge without the FR3's limits, the node's
    # forward path. The FR3 command path (trajectory, the node's default) is slower than eval's servo.
    bridge_params = {"env_id": "robot_rl/PandaPush-v0", "seed": FIRST_SEED, "fr3_limits": False}
    bridge = start("sim_bridge", bridge_params, logs / f"sil_{tag}_bridge.log")
    node_params = {"policy": PUSH, "safety": safety, "require_safety": safety, "monitor": False,
                   "diagnostics_period": 0.5, "stats_window": 100000, "command_interface": "forward",
                   "allow_forward": True, **params}  # fmt: skip
    policy = start("policy_node", node_params, logs / f"sil_{tag}_policy.log")
    per_episode = []
    start_time = time.perf_counter()
    try:
        driver.sil.diagnostics = {}
        driver.sil.wait_ready(timeout=120.0)
        if not driver.sil.configure():
            raise RuntimeError(f"the policy node did not configure; see {logs / f'sil_{tag}_policy.log'}")
        for k in range(episodes):
            info = driver.sil.run_episode(timeout=60.0)
            per_episode.append({"seed": info["seed"], "success": info["success"], "return": info["return"]})
            print(f"  SIL ({name}) episode {k + 1}/{episodes}: seed {info['seed']} success {info['success']}",
                  flush=True)  # fmt: skip
        driver.sil.spin_until(lambda: driver.sil.diagnostics.get("active") == "False", 3.0)
        diagnostics = numbers(driver.sil.diagnostics)
    finally:
        stop(policy, bridge)
    successes = sum(e["success"] for e in per_episode)
    return {
        "params": node_params,
        "success_rate": successes / episodes,
        "ci95": list(wilson_interval(successes, episodes)),
        "mean_return": sum(e["return"] for e in per_episode) / episodes,
        "wall_time_s": time.perf_counter() - start_time,
        "node": diagnostics,
        "per_episode": per_episode,
    }


def sil_success(driver: Driver, episodes: int, safety: bool, logs: Path, names: list[str]) -> dict[str, Any]:
    """The SIL configurations ``names`` against ``robot-rl eval`` with the same chunk timing, seeds and safety."""
    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    runs, evals = {}, {}
    for name in names:
        params = SIL_RUNS[name]
        run = runs[name] = sil_episodes(driver, episodes, safety, params, logs, name)
        lead = int(params.get("prefetch_lead", PREFETCH_LEAD)) if params.get("prefetch") else 0
        if lead not in evals:
            evals[lead] = evaluate(
                EvalConfig(policy=str(REPO / PUSH), episodes=episodes, seed=FIRST_SEED,
                           safety="on" if safety else "off", prefetch_lead=lead, progress=False)
            )  # fmt: skip
        report = evals[lead]
        run["eval"] = {
            "prefetch_lead": lead,
            "success_rate": report["success_rate"],
            "ci95": report["success_ci95"],
            "mean_return": report["mean_return"],
        }
        run["difference_points"] = 100.0 * (run["success_rate"] - report["success_rate"])
        run["same_outcome_episodes"] = sum(
            a["success"] == b["success"] for a, b in zip(run["per_episode"], report["per_episode"], strict=True)
        )
    return {"episodes": episodes, "safety": safety, "runs": runs}


def timed_run(driver: Driver, name: str, env_id: str, policy: str, duration: float, params: dict[str, Any],
              logs: Path) -> dict[str, Any]:  # fmt: skip
    bridge = start("sim_bridge", {"env_id": env_id, "seed": FIRST_SEED, "autoreset": True}, logs / f"{name}_bridge.log")
    node = start(
        "policy_node",
        {"policy": policy, "autostart": True, "follow_episodes": True, "diagnostics_period": 1.0,
         "stats_window": 1_000_000, **params},
        logs / f"{name}_policy.log",
    )  # fmt: skip
    from std_msgs.msg import String

    episodes: dict[int, bool] = {}

    def on_info(msg: String) -> None:
        info = json.loads(msg.data)
        if info.get("done") and info.get("seed") is not None:
            episodes[int(info["seed"])] = bool(info["success"])

    subscription = driver.node.create_subscription(String, "/sim/episode_info", on_info, 100)
    driver.sil.diagnostics = {}
    try:
        driver.sil.wait_ready(timeout=120.0)
        driver.sil.spin_until(lambda: driver.sil.diagnostics.get("active") == "True", 60.0)
        started = time.monotonic()
        driver.sil.spin_until(lambda: time.monotonic() - started >= duration, duration + 1.0)
        values = numbers(driver.sil.diagnostics)
    finally:
        stop(node, bridge)
        driver.node.destroy_subscription(subscription)
    values["duration_s"] = duration
    values["episodes_done"] = len(episodes)
    values["episode_success_rate"] = sum(episodes.values()) / len(episodes) if episodes else None
    values["params"] = params
    return values


QUAD_LEAD = {"prefetch_lead": 1}
"""hardware/crazyflie.yaml's ``prefetch_lead``: with 0 both 300 s runs at 50 Hz dropped one period (2026-11-22), with 1
none did; the waypoint policy's success does not depend on it (``robot-rl eval --prefetch-lead 1``)."""
REALTIME = {"realtime_priority": 50}
"""Policy node parameters of the real-time runs: the control thread under SCHED_FIFO 50 and the middleware's
threads at 49 (ros2_control's default priority; see ros2_ws/README.md). Garbage collection is managed in every run
(``manage_gc``, on by default)."""


def timed_runs(duration: float) -> dict[str, tuple[str, str, dict[str, Any], float]]:
    """The timed runs: name -> (env id, policy, node parameters, duration [s])."""
    short = min(duration, 120.0)
    franka, quad = ("robot_rl/PandaPush-v0", PUSH), (harness.env_id("QuadrotorWaypoint"), QUAD)
    return {
        "franka": (*franka, {"monitor": False}, duration),
        "franka, realtime": (*franka, {"monitor": False, **REALTIME}, short),
        "franka, prefetch": (*franka, {"monitor": False, "prefetch": True}, duration),
        "franka, prefetch, realtime": (*franka, {"monitor": False, "prefetch": True, **REALTIME}, duration),
        "franka, prefetch, monitor on": (*franka, {"monitor": True, "prefetch": True}, short),
        "quadrotor": (*quad, {"monitor": False}, duration),
        "quadrotor, realtime": (*quad, {"monitor": False, **REALTIME}, short),
        "quadrotor, prefetch": (*quad, {"monitor": False, "prefetch": True, **QUAD_LEAD}, short),
        "quadrotor, prefetch, realtime": (
            *quad,
            {"monitor": False, "prefetch": True, **QUAD_LEAD, **REALTIME},
            duration,
        ),
    }


def label(name: str) -> str:
    """A run's name as a file name and ``--runs`` entry (``franka, prefetch`` -> ``franka_prefetch``)."""
    return name.replace(", ", "_").replace(" ", "_")


def latency_section(results: dict[str, Any]) -> list[str]:
    """The markdown of the timed runs."""
    lines: list[str] = []
    lines += [
        "## Latency in the node and dropped control periods",
        "",
        "Latency: per control tick, cached inputs read -> observation built -> `Controller.step` (policy, safety "
        "chain, monitor) -> joint targets (FR3: differential IK) -> command published. State age: receipt of the "
        "newest state to its command, which includes the wait for the timer (up to one period by design). Dropped: "
        "control periods with no tick (a tick more than 1.5 periods after the previous one counts the periods it "
        "skipped). Episodes: started by the node (the bridge resets by itself, the node follows).",
        "",
        "| run | rate | duration | ticks | latency p50 [ms] | p99 [ms] | max [ms] | ticks with inference | "
        "p99 of the others [ms] | state age p50 [ms] | late ticks | dropped periods | safety fallbacks | episodes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    nan = float("nan")
    for name, run in results["runs"].items():
        rate = 25 if "franka" in name else 50
        lines.append(
            f"| {name} | {rate} Hz | {run['duration_s']:.0f} s | {run.get('steps', 0)} | "
            f"{run.get('latency_p50_ms', nan):.3f} | {run.get('latency_p99_ms', nan):.3f} | "
            f"{run.get('latency_max_ms', nan):.3f} | {run.get('inference_steps', '?')} | "
            f"{run.get('latency_p99_other_ms', nan):.3f} | {run.get('state_age_p50_ms', nan):.1f} | "
            f"{run.get('late_ticks', 0)} | {run.get('dropped_periods', 0)} | {run.get('safety_fallbacks', 0)} | "
            f"{run.get('episode', -1) + 1} |"
        )
    lines += [
        "",
        "Ticks with inference: steps whose `Controller.step` ran the policy inside the tick (a chunk computed there, "
        "or a prefetched one waited for); without `prefetch` the first step of every chunk (one in the policy's "
        "`n_action_steps`); with it, the ticks whose background chunk was not ready in time. "
        "`realtime` runs: the control thread under SCHED_FIFO 50, Fast DDS's threads at 49 (otherwise one of them, "
        "preempted by an ordinary process while holding a lock the control thread waits on, can delay the tick by "
        "a scheduler time slice or more). Every run freezes the objects alive at "
        "activation and runs due collections after the command is out (`manage_gc`). The machine: two logical CPUs "
        "of a virtual machine shared by the bridge, the node, the driver and other jobs (see the load average); a "
        "node that sleeps 40 ms between ticks wakes with cold caches, which makes the tick several times slower "
        "than the same code run back to back.",
    ]
    lines += ["", "Run settings (policy node parameters):", ""]
    for name, run in results["runs"].items():
        lines.append(f"- {name}: `{json.dumps(run['params'])}`")
    lines += [
        "",
        "Without `prefetch` a tick that starts a new action chunk runs the diffusion policy's inference inside the "
        "tick (one tick per chunk): those ticks set the p99. With `prefetch` the chunk is computed in a background "
        "thread, started by the first complete state after the tick before it is due (`prefetch_lead` 0, the "
        "default; N >= 1: by the tick N steps before, from that tick's observation). The "
        "failure monitor (when the policy folder is calibrated) scores each new chunk inside the tick with extra "
        "samples of the policy. Late ticks make the safety chain's watchdog send its fallback for that tick "
        "(`missed_period`), counted under safety fallbacks.",
        "",
    ]
    return lines


def markdown(results: dict[str, Any]) -> str:
    sil = results.get("sil")
    lines = [
        *harness.header("ROS 2 deployment: SIL success against eval, node latency, dropped control periods", results),
        f"- ROS 2 Jazzy from PyPI wheels ({results['rmw']}), loopback; the sim bridge and the policy node in two "
        "processes on a private ROS_DOMAIN_ID, driven through services and topics from a third.",
        f"- Wall time {results['wall_time_s']:.0f} s; 1-min load average {results['load_before']:.1f} before, "
        f"{results['load_after']:.1f} after (other jobs share the machine).",
        "",
    ]
    if sil:
        on = "on" if sil["safety"] else "off"
        lines += [
            "## SIL success against `robot-rl eval` (PandaPush, panda_push_diffusion)",
            "",
            f"{sil['episodes']} episodes on seeds {FIRST_SEED}..{FIRST_SEED + sil['episodes'] - 1}, safety chain "
            f"{on} in both, monitor off.",
            "",
            "| run | success | 95% CI | mean return | `robot-rl eval` with the same chunk timing | difference [points] "
            "| same outcome |",
            "|---|---:|---|---:|---|---:|---:|",
        ]
        for name, run in sil["runs"].items():
            ev = run["eval"]
            flag = f" --prefetch-lead {ev['prefetch_lead']}" if ev["prefetch_lead"] else ""
            lines.append(
                f"| sim bridge + policy node, {name} (ROS 2) | {run['success_rate']:.2f} | [{run['ci95'][0]:.2f}, "
                f"{run['ci95'][1]:.2f}] | {run['mean_return']:.2f} | `--safety {on}{flag}`: {ev['success_rate']:.2f} "
                f"[{ev['ci95'][0]:.2f}, {ev['ci95'][1]:.2f}], return {ev['mean_return']:.2f} | "
                f"{run['difference_points']:+.1f} | {run['same_outcome_episodes']}/{sil['episodes']} |"
            )
        lines += [
            "",
            "With the node's defaults the episodes differ from eval's only in the observation: the node computes the "
            "TCP by forward kinematics of the published joint angles, while the env reads it from MuJoCo's last "
            "forward pass (one 2 ms physics step older); the noise seeds and the control code are the same. With "
            "`prefetch` and `prefetch_lead` 0 (the default) each chunk is computed in a background thread from the "
            "first complete state after the tick before it is due (the bridge publishes it right after stepping), "
            "which in lockstep is the state the tick then reads: the chunks of no prefetch, so it is compared with "
            "plain eval; with `prefetch_lead` N the chunk comes from the tick N steps before, compared with eval's "
            "`--prefetch-lead N` (the same chunks computed in step).",
            "",
        ]
    if results["runs"]:
        lines += latency_section(results)
    lines += harness.threshold_lines(results)
    return "\n".join(lines) + "\n"


def _thresholds(results: dict[str, Any], options: RosOptions) -> dict[str, Any]:
    items = []
    for name, run in (results.get("sil") or {}).get("runs", {}).items():
        items.append(
            harness.threshold(
                f"SIL ({name}) success minus `robot-rl eval`'s, absolute",
                abs(run["difference_points"]),
                options.max_sil_gap_points,
                at_most=True,
                unit=" points",
            )
        )
    for name, run in results["runs"].items():
        item = harness.threshold(
            f"{name}: latency p99 in the node ({run.get('dropped_periods', 0)} dropped periods)",
            run.get("latency_p99_ms", float("inf")),
            options.max_latency_p99_ms,
            at_most=True,
            unit=" ms",
        )
        items.append(item)
    return harness.thresholds(*items)


def measure(options: RosOptions, run: harness.Run) -> dict[str, Any]:
    """SIL against eval, then the timed runs, each node in its own process on a private domain; the results."""
    from domain_coordinator import domain_id

    sil_names = [name for name in SIL_RUNS if not options.sil or label(name) in options.sil]
    runs = timed_runs(options.duration) if options.only != "sil" else {}
    selected = {name: r for name, r in runs.items() if not options.runs or label(name) in options.runs}
    options.logs.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    machine = run.machine()
    safety = options.safety == "on"
    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    with domain_id() as domain:
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        driver = Driver()
        from rclpy.utilities import get_rmw_implementation_identifier

        results: dict[str, Any] = {"rmw": get_rmw_implementation_identifier(), "runs": {}}
        try:
            if options.episodes and options.only != "timed":
                print(f"SIL: {options.episodes} episodes", flush=True)
                results["sil"] = sil_success(driver, options.episodes, safety, options.logs, sil_names)
            for name, (env_id, policy, params, duration) in selected.items():
                print(f"{name}: {duration:.0f} s", flush=True)
                params = {"safety": safety, "require_safety": safety, **params}
                results["runs"][name] = timed_run(driver, label(name), env_id, policy, duration, params, options.logs)
        finally:
            driver.close()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    results.update(
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=machine,
        wall_time_s=run.elapsed(),
        load_before=load_before,
        load_after=os.getloadavg()[0],
    )
    results.update(_thresholds(results, options))
    harness.print_thresholds(results)
    return results


BENCHMARK = harness.Benchmark(
    name="ros",
    options=RosOptions,
    measure=measure,
    markdown=markdown,
    stem="ros",
    packages=("rclpy", "onnxruntime", "mujoco", "numpy"),
)
