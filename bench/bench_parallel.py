"""Parallel evaluation: throughput with N worker processes against one, and a two-node Ray cluster on this machine.

``robot-rl eval`` of one policy on the same seeds, end to end (the ``evaluate()`` call: opening the policy, making
the envs, spawning and setting up the workers, every episode, merging the report), in one process and with
``--workers N``, alternating which goes first in each repetition; throughput is episodes per wall second, the ratio
its median over the repetitions. Every parallel report is checked against the one-process report: equal, field for
field, but for the timing (``wall_time_s``) and ``execution`` (where each episode ran).

Then (unless ``--no-ray``) a Ray cluster of two nodes on this machine, each a separate ``ray start --block``
process with one CPU (a head and a worker node joined with ``ray start --address``): the same evaluation with
``--ray-address`` must spread its episodes over both nodes (the node of every episode is recorded) and give the
one-process report.

Usage::

    robot-rl bench parallel [--policy policies/panda_push_diffusion] [--episodes 300] [--workers 2] [--repeats 2]
                            [--ray-episodes 40] [--no-ray] [--min-speedup 1.8]

Writes ``parallel.json`` and ``parallel.md`` to ``--out``. The machine's load matters (other jobs take the cores the
workers need): the 1-minute load average is recorded before and after each part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from bench import harness
from robot_rl.evaluation.evaluate import EvalConfig, evaluate

RUN_FIELDS = ("wall_time_s", "execution")
"""Report fields that say how a run went rather than what it measured: left out when reports are compared."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParallelOptions(harness.Options):
    """Options of ``robot-rl bench parallel``."""

    policy: str = "policies/panda_push_diffusion"
    """What to evaluate (``robot-rl eval --policy``): an exported policy folder, a run, or ``expert``."""
    env: str | None = None
    """Environment id (default: the policy's)."""
    episodes: int = 300
    """Episodes per evaluation in the throughput part (enough that spawning the workers is a small share)."""
    workers: int = 2
    """Worker processes of the parallel evaluation."""
    repeats: int = 2
    """Repetitions of the pair (one process, then N workers; the order flips every repetition)."""
    safety: Literal["on", "off"] = "on"
    """``robot-rl eval --safety``: the deployed stack with its safety chain (on), as the robot runs it."""
    ray: bool = True
    """Also run the two-node Ray cluster part (needs the ``ray`` extra)."""
    ray_episodes: int = 40
    """Episodes of the Ray part."""

    positive = ("episodes", "workers", "repeats", "ray_episodes")

    min_speedup: float | None = None
    """Report whether the median throughput ratio (N workers / one process) is at least this (e.g. 1.8)."""


def _load() -> float:
    return os.getloadavg()[0]


def same_report(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two eval reports are equal but for the fields that say how the run went (:data:`RUN_FIELDS`)."""

    def strip(report: dict[str, Any]) -> str:
        return json.dumps({k: v for k, v in report.items() if k not in RUN_FIELDS})

    return strip(a) == strip(b)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def local_ray_cluster(nodes: int = 2, cpus: int = 1, timeout_s: float = 180.0) -> Iterator[str]:
    """A Ray cluster of ``nodes`` nodes on this machine; yields the head's address (``127.0.0.1:PORT``).

    Each node is its own ``ray start --block`` process with ``cpus`` CPUs (the head, then ``nodes - 1`` workers
    joined with ``ray start --address``), in a temporary folder of its own, without the dashboard or token
    authentication (a throwaway cluster on this machine). On exit each node gets SIGTERM, which ``--block`` turns
    into a clean stop of that node's processes only (never ``ray stop``, which stops every cluster here).

    Raises:
        RuntimeError: the nodes did not come up within ``timeout_s`` (their output is in the message).
    """
    import ray

    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    folder = tempfile.mkdtemp(prefix="rrl_ray_", dir="/tmp")  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--block", "--num-cpus", str(cpus), "--temp-dir", folder, "--object-store-memory", str(100 << 20)]
    logs = [Path(folder) / f"node{i}.log" for i in range(nodes)]
    head = [ray_bin, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    address = f"127.0.0.1:{port}"

    def start(i: int, command: list[str]) -> None:
        with logs[i].open("w") as out:
            procs.append(subprocess.Popen([*command, *common], stdout=out, stderr=subprocess.STDOUT, env=env))

    def output() -> str:
        return " | ".join(log.read_text()[-400:].replace("\n", " ") for log in logs if log.is_file())

    try:
        start(0, head)
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1.0):
                break
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"the Ray head did not start: {output()}")
            time.sleep(0.3)
        for i in range(1, nodes):
            start(i, [ray_bin, "start", "--address", address])
        ray.init(address=address, logging_level="ERROR")
        try:
            while sum(n["Alive"] for n in ray.nodes()) < nodes:
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise RuntimeError(f"the Ray nodes did not all join: {output()}")
                time.sleep(0.5)
        finally:
            ray.shutdown()
        yield address
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _cpu() -> float:
    """CPU seconds of this process and of its children that have ended (the workers, once the pool is shut down)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _timed(config: EvalConfig) -> tuple[dict[str, Any], float, float]:
    """The report, the wall seconds and the CPU seconds (this process and its workers) of one evaluation."""
    start, cpu = time.perf_counter(), _cpu()
    report = evaluate(config)
    return report, time.perf_counter() - start, _cpu() - cpu


def measure(options: ParallelOptions, run: harness.Run) -> dict[str, Any]:
    """The throughput pairs, then the Ray cluster part; the results."""
    if options.ray and importlib.util.find_spec("ray") is None:
        raise SystemExit("the Ray part needs the ray extra: pip install -e '.[ray]' (or pass --no-ray).")
    base = EvalConfig(policy=options.policy, env=options.env, episodes=options.episodes, safety=options.safety)
    started = time.perf_counter()
    pairs = []
    for repeat in range(options.repeats):
        pair: dict[str, Any] = {"load_before": _load()}
        order = ("one", "parallel") if repeat % 2 == 0 else ("parallel", "one")
        for who in order:
            config = base if who == "one" else dataclasses.replace(base, workers=options.workers)
            print(f"repeat {repeat + 1}/{options.repeats}: {who}", flush=True)
            report, seconds, cpu = _timed(config)
            pair[who] = {
                "wall_s": seconds,
                "cpu_s": cpu,
                "cores_used": cpu / seconds,
                "episodes_per_s": options.episodes / seconds,
                "report": report,
            }
        pair["load_after"] = _load()
        pair["speedup"] = pair["parallel"]["episodes_per_s"] / pair["one"]["episodes_per_s"]
        pair["equal"] = same_report(pair["one"]["report"], pair["parallel"]["report"])
        pair["success_rate"] = pair["one"]["report"]["success_rate"]
        for who in ("one", "parallel"):
            pair[who]["report"] = {k: pair[who]["report"].get(k) for k in ("execution", "wall_time_s")}
        pairs.append(pair)
        print(f"  {pair['speedup']:.2f}x, reports equal: {pair['equal']}", flush=True)
    speedup = statistics.median(p["speedup"] for p in pairs)
    results: dict[str, Any] = {
        "policy": options.policy,
        "env": options.env,
        "safety": options.safety,
        "episodes": options.episodes,
        "workers": options.workers,
        "cpus": os.cpu_count(),
        "pairs": pairs,
        "median_speedup": speedup,
        "all_equal": all(p["equal"] for p in pairs),
        **harness.thresholds(
            harness.threshold(
                f"throughput with {options.workers} workers / one process",
                speedup,
                options.min_speedup,
                at_most=False,
                unit="x",
            )
        ),  # fmt: skip
    }
    if options.ray:
        results["ray"] = _ray_part(options, base)
    results["wall_s"] = time.perf_counter() - started
    return results


def _ray_part(options: ParallelOptions, base: EvalConfig) -> dict[str, Any]:
    """The same evaluation on a two-node cluster on this machine, against one process."""
    config = dataclasses.replace(base, episodes=options.ray_episodes)
    one, one_s, _ = _timed(config)
    load_before = _load()
    t0 = time.perf_counter()
    with local_ray_cluster(nodes=2, cpus=1) as address:
        cluster_s = time.perf_counter() - t0
        print(f"two-node Ray cluster at {address} ({cluster_s:.0f} s to start)", flush=True)
        report, ray_s, _ = _timed(dataclasses.replace(config, ray_address=address))
    execution = report["execution"]
    nodes = [w["node"] for w in execution["where"]]
    return {
        "episodes": options.ray_episodes,
        "cluster_start_s": cluster_s,
        "one_process_s": one_s,
        "ray_s": ray_s,
        "load_before": load_before,
        "load_after": _load(),
        "workers": execution["workers"],
        "nodes": sorted(set(nodes)),
        "episodes_per_node": {n: nodes.count(n) for n in sorted(set(nodes))},
        "where": execution["where"],
        "rerun_episodes": execution["rerun_episodes"],
        "equal": same_report(one, report),
        "success_rate": one["success_rate"],
    }


def markdown(results: dict[str, Any]) -> str:
    """The report: the throughput pairs, then the Ray part."""
    n = results["workers"]
    lines = [
        *harness.header(f"Parallel evaluation: {n} worker processes against one, and a two-node Ray cluster", results),
        f"- Workload: `robot-rl eval --policy {results['policy']} --episodes {results['episodes']} --safety "
        f"{results['safety']}` (the deployed stack on onnxruntime, one thread per process), end to end: opening the "
        "policy, making the envs, spawning the workers, every episode, merging the report.",
        f"- {results['cpus']} logical CPUs, shared with other jobs: the 1-minute load average before and after each "
        "pair is in the table. CPU s: this process and its workers together; cores used: CPU s over wall s. Linux "
        "shares the cores between sessions first (`sched_autogroup`), so while other sessions keep the cores busy the "
        "workers together get about one session's share, not a core each.",
        "",
        f"## Throughput, one process against `--workers {n}` (same seeds)",
        "",
        f"| repeat | load before / after | one process [ep/s] | {n} workers [ep/s] | speedup "
        f"| CPU s, one / {n} workers | cores used, one / workers | reports equal |",
        "|---:|---|---:|---:|---:|---|---|---|",
    ]
    for i, pair in enumerate(results["pairs"], 1):
        one, par = pair["one"], pair["parallel"]
        lines.append(
            f"| {i} | {pair['load_before']:.1f} / {pair['load_after']:.1f} | {one['episodes_per_s']:.2f} "
            f"({one['wall_s']:.0f} s) | {par['episodes_per_s']:.2f} ({par['wall_s']:.0f} s) | {pair['speedup']:.2f}x | "
            f"{one['cpu_s']:.0f} / {par['cpu_s']:.0f} | {one['cores_used']:.2f} / {par['cores_used']:.2f} | "
            f"{'yes' if pair['equal'] else 'NO'} |"
        )
    lines += [
        "",
        f"Median speedup {results['median_speedup']:.2f}x; every parallel report equal to the one-process report "
        f"(all fields but `wall_time_s` and `execution`): {'yes' if results['all_equal'] else 'NO'}.",
        "",
        *harness.threshold_lines(results),
    ]
    ray = results.get("ray")
    if ray is not None:
        per_node = ", ".join(f"`{node[:12]}` {count}" for node, count in ray["episodes_per_node"].items())
        lines += [
            "## Two-node Ray cluster on this machine",
            "",
            "A head (`ray start --head --num-cpus 1`) and a worker node (`ray start --address HEAD --num-cpus 1`), "
            f"each its own process tree; `--ray-address HEAD`, {ray['workers']} Ray workers (one actor per CPU, "
            "spread over the nodes).",
            "",
            "| episodes | nodes used | episodes per node | report equal to one process | cluster start | "
            "one process | Ray | load before / after |",
            "|---:|---:|---|---|---:|---:|---:|---|",
            f"| {ray['episodes']} | {len(ray['nodes'])} | {per_node} | {'yes' if ray['equal'] else 'NO'} | "
            f"{ray['cluster_start_s']:.0f} s | {ray['one_process_s']:.0f} s | {ray['ray_s']:.0f} s | "
            f"{ray['load_before']:.1f} / {ray['load_after']:.1f} |",
            "",
            "Node of every episode (episode: node id prefix): "
            + ", ".join(f"{w['episode']}: `{w['node'][:8]}`" for w in ray["where"])
            + ".",
            "",
        ]
    lines.append(f"Wall time {results['wall_s'] / 60:.1f} min.")
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="parallel",
    options=ParallelOptions,
    measure=measure,
    markdown=markdown,
    stem="parallel",
    packages=("numpy", "mujoco", "onnxruntime", "ray"),
)
