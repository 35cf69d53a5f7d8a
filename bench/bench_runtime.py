"""The runtime Controller on the shipped policies: step latency, smoothness at chunk boundaries, success.

For each policy (``policies/panda_push_diffusion``, ``policies/quadrotor_waypoint_diffusion``) and each
execution mode (blend ``none``, ``ensemble``, ``crossfade`` with the ControllerConfig defaults, and ``none``
with a background prefetch), ``--episodes`` held-out episodes (seeds from 1000000, the seeds of the
policy cards) run closed loop in simulation, the controller's clock being the simulated time
``k * ctrl_dt``. In ONE process, onnxruntime on ``--threads`` intra-op threads (default one) and ONE inter-op thread:

* latency: wall time of each ``Controller.step`` call, split into steps that computed a chunk
  inside the call (inference included) and steps that did not (queue, blending, hooks: the cost of
  the control step itself); p50 and p99 after a warm-up episode. With prefetch the chunk is
  computed in a second thread, so no step computes one (except each episode's first);
* smoothness: the action jump ``max_i |a_t[i] - a_{t-1}[i]|`` (actions normalized to [-1, 1]) at the
  steps where a new chunk took effect ("boundary") and at the others ("within"), largest and mean
  over all episodes;
* success rate with its Wilson 95% interval, beside the smoothness, so blending's effect on the
  task shows.

The Controller runs alone (no safety chain, no monitor): what is measured is the control step itself.

Usage::

    robot-rl bench runtime [--episodes 100] [--out bench/results]

Writes ``runtime.md`` and ``runtime.json`` to ``--out``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from bench import harness
from robot_rl.envs.registry import make
from robot_rl.evaluation.evaluate import TRAINED_EVAL_SEED, wilson_interval
from robot_rl.runtime import Controller, ControllerConfig, OnnxPolicy

MODES: dict[str, dict[str, Any]] = {
    "none": {"blend": "none"},
    "ensemble": {"blend": "ensemble"},
    "crossfade": {"blend": "crossfade"},
    "none + prefetch": {"blend": "none", "prefetch": True, "prefetch_sync": True},
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeOptions(harness.Options):
    """Options of ``robot-rl bench runtime``."""

    episodes: int = 100
    """Held-out episodes per policy and mode."""
    seed: int = TRAINED_EVAL_SEED
    """First held-out seed (1000000...: the policy cards')."""
    policies: tuple[str, ...] = ("panda_push_diffusion", "quadrotor_waypoint_diffusion")
    """Shipped policies (folder names under policies/)."""
    paced_episodes: int = 3
    """Episodes per policy of the real-time run with the prefetch thread (the loop paced at ctrl_dt)."""

    positive = ("episodes", "policies", "paced_episodes")

    def __post_init__(self) -> None:
        super().__post_init__()
        from robot_rl.export.metadata import is_policy_dir

        missing = [p for p in self.policies if not is_policy_dir(harness.REPO / "policies" / p)]
        if missing:
            shipped = sorted(p.name for p in (harness.REPO / "policies").iterdir() if is_policy_dir(p))
            raise ValueError(f"--policies: no policy folder policies/{missing[0]}; shipped: {', '.join(shipped)}.")


def rollouts(policy: OnnxPolicy, mode: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """Closed-loop episodes with one controller; per-step timings, jumps and flags."""
    env = make(policy.metadata.env_id)
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    controller = Controller(policy, ControllerConfig(**mode, ctrl_dt=ctrl_dt))
    chunk_steps, plain_steps, inference, boundary, within = [], [], [], [], []
    successes, chunks, stale, waited, steps = 0, 0, 0, 0, 0
    for k, seed in enumerate([seeds[0] + 10_000_000, *seeds]):  # a warm-up episode on a seed out of the range
        warmup = k == 0
        observation, _ = env.reset(seed=seed)
        controller.reset(seed)
        previous, t, done, info = None, 0, False, {"is_success": 0.0}
        while not done:
            start = time.perf_counter()
            output = controller.step(observation, t * ctrl_dt)
            elapsed = time.perf_counter() - start
            status = output.status
            if not warmup:
                (chunk_steps if status.computed_chunk else plain_steps).append(elapsed)
                if status.new_chunk:
                    chunks += 1
                    inference.append(status.inference_s)
                if previous is not None:
                    jump = float(np.abs(output.action - previous).max())
                    (boundary if status.new_chunk else within).append(jump)
                stale += status.stale
                waited += status.waited
                steps += 1
            previous = output.action
            observation, _, terminated, truncated, info = env.step(output.action)
            done = terminated or truncated
            t += 1
        if not warmup:
            successes += bool(info["is_success"])
    controller.close()
    env.close()
    n = len(seeds)
    return {
        "config": {k: v for k, v in dataclasses.asdict(controller.config).items() if k != "ctrl_dt"},
        "success_rate": successes / n,
        "success_ci95": list(wilson_interval(successes, n)),
        "steps": steps,
        "chunks_per_episode": chunks / n,
        "stale_steps": stale,
        "waited_steps": waited,
        "latency_ms": {
            "without_chunk": harness.percentiles(plain_steps),
            "with_chunk": harness.percentiles(chunk_steps),
            "inference": harness.percentiles(inference),
        },
        "jump": {
            "boundary": {"max": max(boundary), "mean": float(np.mean(boundary)), "n": len(boundary)},
            "within": {"max": max(within), "mean": float(np.mean(within)), "n": len(within)},
        },
    }


def paced_prefetch(policy: OnnxPolicy, seeds: list[int]) -> dict[str, Any]:
    """Prefetch in its background thread, the loop paced at ``ctrl_dt`` of wall-clock time (as on hardware).

    Faster than real time the thread would lag by construction; paced, it has ``lead`` periods (plus the
    previous chunk's spare actions) to finish. ``now`` is the wall clock, so late steps are real.
    """
    env = make(policy.metadata.env_id)
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    controller = Controller(policy, ControllerConfig(prefetch=True, ctrl_dt=ctrl_dt))
    latencies, counts = [], {"steps": 0, "late": 0, "stale": 0, "waited": 0, "background_chunks": 0}
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        controller.reset(seed)
        done, tick = False, time.perf_counter()
        while not done:
            time.sleep(max(0.0, tick - time.perf_counter()))
            start = time.perf_counter()
            output = controller.step(observation, start)
            elapsed = time.perf_counter() - start
            status = output.status
            if status.step > 0:  # the first chunk of an episode is computed in the step
                latencies.append(elapsed)
                counts["steps"] += 1
                counts["late"] += status.late
                counts["stale"] += status.stale
                counts["waited"] += status.waited
                counts["background_chunks"] += status.new_chunk
            observation, _, terminated, truncated, _ = env.step(output.action)
            done = terminated or truncated
            tick += ctrl_dt
    controller.close()
    env.close()
    return {"episodes": len(seeds), "latency_ms": harness.percentiles(latencies), **counts}


def _ms(cell: dict[str, float] | None, key: str) -> str:
    return "-" if cell is None else f"{cell[key]:.3f}"


def markdown(r: dict[str, Any]) -> str:
    defaults = ControllerConfig()
    lines = [
        *harness.header("Runtime Controller: step latency, smoothness at chunk boundaries, success", r),
        f"- onnxruntime on {r['threads']} intra-op thread(s) and ONE inter-op thread",
        f"- Policies: the shipped diffusion policies (horizon {r['horizon']}, {r['n_action_steps']} actions per "
        f"chunk, {r['inference_steps']} DDIM steps in the graph), {r['episodes']} episodes each on seeds "
        f"{r['seeds'][0]}-{r['seeds'][1]} (the policy cards' seeds), closed loop in simulation with the clock "
        "`k * ctrl_dt`.",
        f"- Modes (ControllerConfig defaults): `ensemble` takes up a chunk every {defaults.replan_every} steps and "
        f"averages all chunks in play with weights exp(-{defaults.ensemble_decay} x age difference); `crossfade` "
        f"moves to a new chunk over {defaults.crossfade_steps} steps; `none + prefetch` computes the next chunk "
        f"{defaults.lead} steps before it is due, from the observation then, and enters it at index {defaults.lead}.",
        f"- Wall time {r['wall_time_s']:.0f} s; 1-min load average {r['load_avg_1min']['before']:.1f} before, "
        f"{r['load_avg_1min']['after']:.1f} after (other jobs on the machine lengthen the tails).",
        "",
        "## Latency of `Controller.step` [ms]",
        "",
        "Steps without a chunk: history, queue, blending, status (no hooks installed). Steps with a chunk: the "
        "same plus the inference inside the call. Inference: the chunk computation alone.",
        "",
        "| policy | mode | without chunk p50 | p99 | with chunk p50 | p99 | inference p50 | p99 | chunks / episode "
        "| stale / waited steps |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r["cases"]:
        lat = c["latency_ms"]
        lines.append(
            f"| {c['policy']} | {c['mode']} | {_ms(lat['without_chunk'], 'p50')} | {_ms(lat['without_chunk'], 'p99')} "
            f"| {_ms(lat['with_chunk'], 'p50')} | {_ms(lat['with_chunk'], 'p99')} | {_ms(lat['inference'], 'p50')} "
            f"| {_ms(lat['inference'], 'p99')} | {c['chunks_per_episode']:.1f} | {c['stale_steps']} / "
            f"{c['waited_steps']} |"
        )
    lines += [
        "",
        "`none + prefetch` here runs in sync mode (`prefetch_sync`: the early chunk is computed inside the step "
        "`lead` steps before it is due: the chunks the thread gives when it is on time, deterministically), "
        "because the simulation runs much faster than real time. The background thread itself, with the loop "
        "paced at `ctrl_dt` of wall-clock time and `now` from the wall clock (each episode's first step, which "
        "computes the first chunk, left out):",
        "",
        "| policy | episodes | steps | step p50 [ms] | step p99 [ms] | chunks from the thread | stale | waited "
        "| late |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in r["paced_prefetch"]:
        lines.append(
            f"| {p['policy']} | {p['episodes']} | {p['steps']} | {_ms(p['latency_ms'], 'p50')} "
            f"| {_ms(p['latency_ms'], 'p99')} | {p['background_chunks']} | {p['stale']} | {p['waited']} "
            f"| {p['late']} |"
        )
    lines += [
        "",
        "Stale: the chunk was not ready when due and the previous chunk continued; waited: the step had to "
        "wait for it; late: the step came more than 1.5 control periods after the previous one.",
        "",
        "## Smoothness and success",
        "",
        "Action jump: max over the action dims of |a_t - a_(t-1)| (normalized actions in [-1, 1]); boundary: "
        "steps where a new chunk took effect; within: the other steps (for `crossfade` they include the "
        "cross-fade steps after a boundary).",
        "",
        "| policy | mode | success | 95% CI | boundary max | boundary mean | within max | within mean |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for c in r["cases"]:
        j = c["jump"]
        low, high = c["success_ci95"]
        lines.append(
            f"| {c['policy']} | {c['mode']} | {c['success_rate']:.2f} | [{low:.2f}, {high:.2f}] "
            f"| {j['boundary']['max']:.3f} | {j['boundary']['mean']:.3f} | {j['within']['max']:.3f} "
            f"| {j['within']['mean']:.3f} |"
        )
    lines.append("")
    return "\n".join(lines)


def measure(options: RuntimeOptions, run: harness.Run) -> dict[str, Any]:
    """Every policy in every mode, then the paced prefetch runs; the results of ``runtime.json``."""
    load_before = os.getloadavg()
    machine = run.machine()
    seeds = harness.seeds(options.seed, options.episodes)
    cases, paced = [], []
    for name in options.policies:
        policy = OnnxPolicy(harness.REPO / "policies" / name, threads=options.threads)
        for label, mode in MODES.items():
            case_start = time.perf_counter()
            result = rollouts(policy, mode, seeds)
            elapsed = time.perf_counter() - case_start
            result.update(policy=name, env=policy.metadata.env_id, mode=label, wall_time_s=elapsed)
            result["card_success_rate"] = (policy.metadata.eval or {}).get("success_rate")
            result["ctrl_dt"] = policy.metadata.ctrl_dt
            cases.append(result)
            print(f"{name} {label}: success {result['success_rate']:.2f}, {result['wall_time_s']:.0f} s", flush=True)
        paced.append(
            {
                "policy": name,
                "ctrl_dt": policy.metadata.ctrl_dt,
                **paced_prefetch(policy, seeds[: options.paced_episodes]),
            }
        )
    meta = OnnxPolicy(harness.REPO / "policies" / options.policies[0]).metadata
    return {
        "machine": machine,
        "threads": options.threads,
        "episodes": options.episodes,
        "seeds": [seeds[0], seeds[-1]],
        "horizon": meta.horizon,
        "n_action_steps": meta.n_action_steps,
        "inference_steps": meta.inference_steps,
        "cases": cases,
        "paced_prefetch": paced,
        "wall_time_s": run.elapsed(),
        "load_avg_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }


BENCHMARK = harness.Benchmark(
    name="runtime",
    options=RuntimeOptions,
    measure=measure,
    markdown=markdown,
    stem="runtime",
    packages=("onnxruntime", "numpy", "mujoco"),
)
