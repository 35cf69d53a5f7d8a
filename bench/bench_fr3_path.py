"""FR3 trajectory path: a v1 Franka policy through the ROS 2 node and the FR3 model against `robot-rl eval`, same seeds.

A policy trained with the FR3's limits (a v1 Franka card: ``motion="fr3"``) runs through the policy node, which
streams the env's own setpoint generator as JointTrajectory messages (``robot_rl_ros.fr3_command.Fr3CommandPath``),
and the lockstep sim bridge, whose vendor-faithful FR3 model (``fr3_limits``, ``motion: fr3``) judges the 1 kHz
command libfranka would be handed and stops the arm with a reflex where a real FR3 would. The same seeds run through
``evaluate()`` (``robot-rl eval``) nominal and with one period of action latency (``action_latency_steps: [1, 1]``):
the node with the default commit (``trajectory_commit_ms`` 0: one control period) is that env with one period of
latency, a shorter commit (``trajectory_commit_ms`` 8) moves it back towards the nominal eval.

Per commit setting: successes, the gap in points to eval (eval minus node), the reflexes of the bridge's FR3 model
and the reflexes the node predicted (it then sends nothing until the next episode), both counted per episode; the
peak joint acceleration and jerk of the 1 kHz command and the largest share of libfranka's position-dependent
velocity limit, beside the FR3's limits (robot_rl/envs/franka/fr3_motion.py: ``kMaxJointAcceleration`` 10 rad/s^2,
``kMaxJointJerk`` 5000 rad/s^3 of libfranka rate_limiting.h); and the wall time of each part.

The node runs with real rclpy (Fast DDS over loopback) through the measuring functions of tests/ros:
``--clock sim`` (the default) on simulated time, one node tick per bridge step
(``tests.ros.test_fr3_observation_parity.measure``); ``--clock wall`` on the wall clock, the node's timer against a
lockstep bridge (``tests.ros.test_fr3_motion_path.measure``: also counts ticks that read the state before last).
Each episode is a fresh bridge and node seeded with its seed, the policy's noise too, as ``robot-rl eval --seed``.
The node's safety chain follows ``--safety`` (as eval's); the failure monitor is off in both (``--monitor off``).

Usage::

    robot-rl bench fr3path [--episodes 100] [--commit-ms 0 8] [--clock sim|wall] [--max-gap-points 5]

Writes ``fr3_path.md`` and ``fr3_path.json`` to ``--out`` (after each part, so an interrupted run keeps what is done).
Needs the ``ros`` extra (rclpy) and the test suite's dependencies (pytest).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any, Literal

from bench import harness
from robot_rl.envs.franka.fr3_motion import MAX_ACCELERATION, MAX_JERK
from robot_rl.limits import check_range, check_seed

LATENCY = {"action_latency_steps": (1, 1)}
"""The randomization of the second eval: every action applied one control period late (``--randomize`` with this
YAML: ``action_latency_steps: [1, 1]``)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Fr3PathOptions(harness.Options):
    """Options of ``robot-rl bench fr3path``."""

    policy: str = "policies/panda_push_v1_diffusion"
    """An exported policy folder whose env moves with the FR3's limits (a v1 Franka id, or ``motion: fr3`` in its
    card's ``env_kwargs``)."""
    episodes: int = 100
    """Episodes per setting; episode k uses seed ``seed + k`` in eval and through the node."""
    seed: int = 6_300_000
    """First seed (above the seeds the policy was trained or selected on)."""
    commit_ms: tuple[int, ...] = (0, 8)
    """The node's ``trajectory_commit_ms``, one node run each (0: ``trajectory_commit``, one control period)."""
    blend_ms: int = 200
    """The node's ``trajectory_blend_ms`` (the hold at the measured posture after a reset)."""
    clock: Literal["sim", "wall"] = "sim"
    """``sim``: the node on simulated time, one tick per bridge step; ``wall``: its timer on the wall clock."""
    safety: Literal["on", "off"] = "on"
    """The robot's safety chain (hardware/fr3.yaml) in eval (``--safety``) and in the node (``safety``)."""

    positive = ("episodes",)

    max_gap_points: float | None = None
    """Report whether every node setting's successes are at most this many points below the nominal eval's."""
    max_reflexes: int | None = None
    """Report whether every node setting has at most this many reflexes, bridge and predicted together."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seed("seed", self.seed)
        if not self.commit_ms:
            raise ValueError("`commit_ms` needs at least one value (0: one control period).")
        for value in self.commit_ms:
            check_range("commit_ms", value, 0, 1000)
        if len(set(self.commit_ms)) != len(self.commit_ms):
            raise ValueError(f"`commit_ms` lists a setting twice: {list(self.commit_ms)}.")
        check_range("blend_ms", self.blend_ms, 0, 10_000)
        if self.max_gap_points is not None:
            check_range("max_gap_points", self.max_gap_points, 0, 100)
        if self.max_reflexes is not None:
            check_range("max_reflexes", self.max_reflexes, 0, self.episodes)
        if self.report_only:
            return
        card_motion(self.policy)
        missing = [name for name in ("rclpy", "pytest") if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(
                f"`robot-rl bench fr3path` runs the node with real rclpy through tests/ros; {' and '.join(missing)} "
                "not installed (pip install -e '.[ros,dev]')."
            )


def card_motion(policy: str) -> tuple[str, dict[str, Any]]:
    """The env id and kwargs of ``policy``'s card; refuses a folder that is not an FR3-motion Franka card."""
    from robot_rl.envs.registry import ENV_SPECS

    card_path = Path(policy) / "metadata.json"
    if not card_path.is_file():
        raise ValueError(f"`policy` must be an exported policy folder with metadata.json; {card_path} does not exist.")
    card = json.loads(card_path.read_text())
    env_id = str(card.get("env_id"))
    spec = ENV_SPECS.get(env_id)
    kwargs = {**(spec.kwargs if spec is not None else {}), **card.get("env_kwargs", {})}
    if spec is None or kwargs.get("motion") != "fr3":
        raise ValueError(
            f"`policy` must move with the FR3's limits (a v1 Franka env or motion 'fr3' in its card); {policy!r} is "
            f"for {env_id} with motion {kwargs.get('motion', 'servo')!r}."
        )
    return env_id, kwargs


def commit_label(commit_ms: int, period_ms: int) -> str:
    """``one period (40 ms)`` for 0, else ``8 ms``."""
    return f"one period ({period_ms} ms)" if commit_ms == 0 else f"{commit_ms} ms"


# ------------------------------------------------------------------------------------------------ measure
def _eval(options: Fr3PathOptions, latency: bool) -> dict[str, Any]:
    from robot_rl.envs.randomization import DomainRandomization
    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    config = EvalConfig(
        policy=options.policy,
        episodes=options.episodes,
        seed=options.seed,
        safety=options.safety,
        monitor="off",
        progress=False,
    )
    start = time.perf_counter()
    if latency:
        report = evaluate(config, randomization=DomainRandomization(**LATENCY), label="action_latency_steps [1, 1]")
    else:
        report = evaluate(config)
    episodes = report["per_episode"]
    return {
        "randomize": report["randomize"],
        "successes": sum(e["success"] for e in episodes),
        "episodes": len(episodes),
        "safety_interventions": report["safety_interventions"],
        "safety_fallbacks": report["safety_fallbacks"],
        "wall_s": time.perf_counter() - start,
        "per_episode": [{"seed": e["seed"], "success": e["success"], "length": e["length"]} for e in episodes],
    }


def _node(options: Fr3PathOptions, commit_ms: int) -> dict[str, Any]:
    """One node run of ``options.episodes`` episodes with ``trajectory_commit_ms`` ``commit_ms``."""
    values = {
        "trajectory_blend_ms": options.blend_ms,
        "trajectory_commit_ms": commit_ms,
        "safety": options.safety == "on",
        "require_safety": options.safety == "on",
    }
    policy = str(Path(options.policy).resolve())
    start = time.perf_counter()
    if options.clock == "sim":
        from tests.ros.test_fr3_observation_parity import measure as measure_sim_time

        result = measure_sim_time(policy, options.seed, options.episodes, **values)
    else:
        from tests.ros.test_fr3_motion_path import measure as measure_wall_clock

        result = measure_wall_clock(policy, options.seed, options.episodes, **values)
    rows = result.pop("per_episode")
    for key in ("safety_interventions", "safety_fallbacks"):  # the node's safety chain, summed as eval sums them
        counts = [r[key] for r in rows if r.get(key) is not None]
        result[key] = sum(counts) if counts and options.safety == "on" else None
    keep = ("seed", "success", "steps", "reflex", "crash", "predicted_reflex", "longest_tick_gap_ms")
    result.update(
        commit_ms=commit_ms,
        wall_s=time.perf_counter() - start,
        per_episode=[{k: r[k] for k in keep if k in r} for r in rows],
        reflex_kinds=sorted({str(r.get("crash") or r["reflex"]) for r in rows if r.get("reflex")}),
        predicted_reflex_kinds=sorted({str(r["predicted_reflex"]) for r in rows if r.get("predicted_reflex")}),
    )
    return result


def _differing(eval_rows: list[dict[str, Any]], node_rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Seeds eval solved and the node did not, and the other way round."""
    solved = {r["seed"]: r["success"] for r in eval_rows}
    return {
        "eval_only": [r["seed"] for r in node_rows if solved.get(r["seed"]) and not r["success"]],
        "node_only": [r["seed"] for r in node_rows if r["success"] and solved.get(r["seed"]) is False],
    }


def _thresholds(results: dict[str, Any], options: Fr3PathOptions) -> dict[str, Any]:
    items = []
    for node in results["node"]:
        label = commit_label(node["commit_ms"], results["period_ms"])
        items.append(
            harness.threshold(
                f"node, commit {label}: successes below the nominal eval's",
                node["gap_points"],
                options.max_gap_points,
                at_most=True,
                unit=" points",
            )
        )
        items.append(
            harness.threshold(
                f"node, commit {label}: reflexes (FR3 model and predicted)",
                node["reflexes"] + node["predicted_reflexes"],
                options.max_reflexes,
                at_most=True,
            )
        )
    return harness.thresholds(*items)


def measure(options: Fr3PathOptions, run: harness.Run) -> dict[str, Any]:
    """Eval nominal and with one period of latency, then the node per commit setting; the results."""
    import robot_rl

    env_id, env_kwargs = card_motion(options.policy)
    env = robot_rl.make(env_id, **{k: v for k, v in env_kwargs.items() if k == "motion"})
    period_ms = round(env.unwrapped.ctrl_dt * 1e3)
    env.close()
    results: dict[str, Any] = {
        "policy": options.policy,
        "env_id": env_id,
        "motion": env_kwargs.get("motion"),
        "episodes": options.episodes,
        "seed": options.seed,
        "clock": options.clock,
        "safety": options.safety,
        "blend_ms": options.blend_ms,
        "period_ms": period_ms,
        "limits": {"acceleration": MAX_ACCELERATION, "jerk": MAX_JERK},
        "machine": run.machine(),
        "load_before": os.getloadavg()[0],
        "eval": {},
        "node": [],
    }
    for name, latency in (("nominal", False), ("latency_1", True)):
        print(f"eval {name}: {options.episodes} episodes", flush=True)
        results["eval"][name] = _eval(options, latency)
        print(f"  {results['eval'][name]['successes']} / {options.episodes}", flush=True)
        run.write(results)
    base = results["eval"]["nominal"]
    from domain_coordinator import domain_id

    saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
    with domain_id() as domain:  # a ROS domain no other process on this machine holds, discovery on this host
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        try:
            for commit_ms in options.commit_ms:
                label = commit_label(commit_ms, period_ms)
                print(f"node ({options.clock} clock), commit {label}: {options.episodes} episodes", flush=True)
                node = _node(options, commit_ms)
                node["gap_points"] = 100.0 * (base["successes"] - node["successes"]) / options.episodes
                node["gap_points_to_latency_1"] = (
                    100.0 * (results["eval"]["latency_1"]["successes"] - node["successes"]) / options.episodes
                )
                node["differing_seeds"] = _differing(base["per_episode"], node["per_episode"])
                results["node"].append(node)
                run.write(results)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    results.update(wall_time_s=run.elapsed(), load_after=os.getloadavg()[0])
    results.update(_thresholds(results, options))
    harness.print_thresholds(results)
    return results


# ----------------------------------------------------------------------------------------------- markdown
def _value(value: float | None, fmt: str) -> str:
    return "-" if value is None else f"{value:{fmt}}"


def _safety(report: dict[str, Any]) -> str:
    """``12 / 0``: safety interventions and fallbacks (``-`` with the chain off)."""
    interventions, fallbacks = report.get("safety_interventions"), report.get("safety_fallbacks")
    return "-" if interventions is None else f"{interventions} / {_value(fallbacks, 'd')}"


def _seeds(seeds: list[int], shown: int = 20) -> str:
    """``3: 6300004, 6300017, 6300051`` (the first ``shown``)."""
    more = ", ..." if len(seeds) > shown else ""
    return f"{len(seeds)}" + (f": {', '.join(map(str, seeds[:shown]))}{more}" if seeds else "")


def markdown(results: dict[str, Any]) -> str:
    """The report: eval and every node setting on the same seeds, the command's peaks beside the FR3's limits."""
    n, period = results["episodes"], results["period_ms"]
    limits = results["limits"]
    clock = (
        "simulated time (one node tick per bridge step)" if results["clock"] == "sim" else "the wall clock (lockstep)"
    )
    lines = [
        *harness.header("FR3 trajectory path: the node and the FR3 model against `robot-rl eval`", results),
        f"- Policy: `{results['policy']}` ({results['env_id']}, motion {results['motion']!r}); seeds "
        f"{results['seed']}-{results['seed'] + n - 1}; safety chain {results['safety']} in eval and in the node, "
        "failure monitor off.",
        f"- Node: real rclpy over loopback, policy node and sim bridge (`fr3_limits`, `motion: fr3`) on {clock}; "
        f"`trajectory_blend_ms` {results['blend_ms']}; one fresh bridge and node per episode.",
        f"- Load average {results['load_before']:.2f} at the start"
        + (f", {results['load_after']:.2f} at the end" if "load_after" in results else " (run not finished)")
        + (f"; wall time {results['wall_time_s']:.0f} s." if "wall_time_s" in results else "."),
        "",
        "| setting | successes | rate [95% CI] | gap to eval [points] | reflexes | predicted reflexes "
        "| safety interventions / fallbacks [steps] | wall [s] |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    names = {
        "nominal": "`robot-rl eval`",
        "latency_1": "`robot-rl eval`, `action_latency_steps: [1, 1]`",
    }
    for key, report in results["eval"].items():
        gap = 100.0 * (results["eval"]["nominal"]["successes"] - report["successes"]) / n
        lines.append(
            f"| {names[key]} | {report['successes']} / {report['episodes']} | "
            f"{harness.success_text(report['successes'], report['episodes'])} | {gap:.0f} | - | - | "
            f"{_safety(report)} | {report['wall_s']:.0f} |"
        )
    for node in results["node"]:
        lines.append(
            f"| node, commit {commit_label(node['commit_ms'], period)} | {node['successes']} / {node['episodes']} | "
            f"{harness.success_text(node['successes'], node['episodes'])} | {node['gap_points']:.0f} | "
            f"{node['reflexes']} | {node['predicted_reflexes']} | {_safety(node)} | {node['wall_s']:.0f} |"
        )
    if results["node"]:
        lines += [
            "",
            "Gap: eval's successes minus the setting's, in points of the episodes. Reflexes: episodes the bridge's FR3 "
            "model stopped with a libfranka reflex; predicted: episodes the node stopped sending after predicting one.",
            "",
            "The 1 kHz command the FR3 model judged (largest over the episodes and joints; libfranka's FR3 limits, "
            "robot_rl/envs/franka/fr3_motion.py):",
            "",
            "| node setting | peak acceleration [rad/s^2] | peak jerk [rad/s^3] | velocity, share of the limit |",
            "|---|---:|---:|---:|",
        ]
        for node in results["node"]:
            acc, jerk = node.get("peak_acceleration"), node.get("peak_jerk")
            lines.append(
                f"| commit {commit_label(node['commit_ms'], period)} | {_value(acc, '.2f')} "
                f"({_value(acc / limits['acceleration'] if acc is not None else None, '.2f')} of "
                f"{limits['acceleration']:g}) | {_value(jerk, '.0f')} "
                f"({_value(jerk / limits['jerk'] if jerk is not None else None, '.2f')} of {limits['jerk']:g}) | "
                f"{_value(node.get('velocity_use'), '.2f')} |"
            )
        lines += ["", "Seeds on which eval and the node differ (eval solved / the node solved):", ""]
        for node in results["node"]:
            differ = node["differing_seeds"]
            lines.append(
                f"- commit {commit_label(node['commit_ms'], period)}: eval only {_seeds(differ['eval_only'])}; "
                f"node only {_seeds(differ['node_only'])}"
            )
        kinds = sorted({k for node in results["node"] for k in node["reflex_kinds"] + node["predicted_reflex_kinds"]})
        if kinds:
            lines += ["", "Reflexes seen:", "", *[f"- {k}" for k in kinds]]
        if results["clock"] == "wall":
            lines += [
                "",
                "Wall clock: ticks that read the state before last (`repeated_states`): "
                + ", ".join(
                    f"commit {commit_label(node['commit_ms'], period)} {node.get('repeated_states', '-')}"
                    for node in results["node"]
                )
                + ".",
            ]
    lines += ["", *harness.threshold_lines(results)]
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="fr3path",
    options=Fr3PathOptions,
    measure=measure,
    markdown=markdown,
    stem="fr3_path",
    packages=("rclpy", "onnxruntime", "mujoco", "numpy"),
)
