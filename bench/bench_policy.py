"""Diffusion policy: chunk latency and success against the number of DDIM denoising steps, one torch thread.

For one trained diffusion run, in ONE process with ``--threads`` torch threads (default one):

* latency: one action chunk (batch 1, observation history in, chunk out, normalization included)
  in torch eager mode, for each number of denoising steps; p50 and p99 over ``--reps`` calls
  after a warm-up, the step counts interleaved so drift hits them all alike;
* quality: success rate (Wilson 95% interval) and mean return over ``--episodes`` held-out seeds
  (never the demos' seeds) for each number of steps, the same seeds and the same initial noise
  for every step count.

Usage::

    robot-rl bench policy --run runs/push_diffusion [--denoising-steps 1 2 3 5 10] [--episodes 100]

Writes ``policy_<run name>.md`` and ``.json`` to ``--out`` (default bench/results).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import harness
from robot_rl.evaluation.evaluate import TRAINED_EVAL_SEED, wilson_interval
from robot_rl.policies import ChunkedActor, load_policy, read_config


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyOptions(harness.Options):
    """Options of ``robot-rl bench policy``."""

    run: Path
    """The diffusion training run to measure (``robot-rl train diffusion --out RUN_DIR``)."""
    denoising_steps: tuple[int, ...] = (1, 2, 3, 5, 10)
    """DDIM step counts to compare."""
    episodes: int = 100
    """Held-out episodes per step count (seeds from --seed, the same for every count)."""
    seed: int = TRAINED_EVAL_SEED
    """First held-out seed (1000000...: the policy cards'; never a demo's)."""
    reps: int = 300
    """Latency samples per step count."""
    name: str | None = None
    """Results file stem after ``policy_`` (default: the run's folder name)."""
    compare: tuple[int, int] = (3, 10)
    """Two step counts whose success gap (second minus first, in points) the report states."""
    max_gap_points: float | None = None
    """Report whether that gap is at most this many points."""

    positive = ("episodes", "reps", "denoising_steps")

    def __post_init__(self) -> None:
        super().__post_init__()
        kind = read_config(self.run).get("policy_type")  # a clear error for a missing or broken run, at once
        if kind != "diffusion":
            raise ValueError(
                f"`bench policy` measures denoising steps: --run must be a diffusion run; {self.run} is {kind}."
            )


def latency(policy: Any, steps_list: tuple[int, ...], reps: int) -> dict[int, dict[str, float]]:
    rng = np.random.default_rng(0)
    history = np.zeros((policy.n_obs_steps, policy.obs_dim))
    times: dict[int, list[float]] = {s: [] for s in steps_list}
    for steps in steps_list:  # warm-up
        policy.inference_steps = steps
        for _ in range(10):
            policy.predict(history, rng)
    for _ in range(reps):
        for steps in steps_list:
            policy.inference_steps = steps
            start = time.perf_counter()
            policy.predict(history, rng)
            times[steps].append(time.perf_counter() - start)
    return {s: harness.percentiles(t, suffix="_ms", count=False) for s, t in times.items()}


def quality(policy: Any, config: dict, steps: int, seeds: list[int]) -> dict[str, Any]:
    from robot_rl.envs.registry import make
    from robot_rl.envs.rollout import run_episodes

    policy.inference_steps = steps
    env = make(config["env_id"], **config.get("env_kwargs", {}))
    actor = ChunkedActor(policy)
    start = time.perf_counter()
    episodes = run_episodes(env, actor, lambda seed: actor.reset(seed), seeds)
    env.close()
    successes = sum(e["success"] for e in episodes)
    return {
        "steps": steps,
        "success_rate": successes / len(episodes),
        "success_ci95": list(wilson_interval(successes, len(episodes))),
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "episodes": len(episodes),
        "chunks_per_episode": actor.chunks / len(episodes),
        "wall_time_s": time.perf_counter() - start,
    }


def measure(options: PolicyOptions, run: harness.Run) -> dict[str, Any]:
    """Latency, then success, per step count; the results of ``policy_<name>.json``."""
    config = read_config(options.run)
    policy = load_policy(options.run)
    seeds = harness.seeds(options.seed, options.episodes)
    overlap = set(seeds) & set(config["data"]["seeds"])
    if overlap:
        raise ValueError(f"evaluation seeds overlap the demo seeds {sorted(overlap)[:3]}; choose another --seed.")
    machine = run.machine()
    lat = latency(policy, options.denoising_steps, options.reps)
    qual = [quality(policy, config, s, seeds) for s in options.denoising_steps]
    result: dict[str, Any] = {
        "machine": machine,
        "run": str(options.run),
        "episodes": options.episodes,
        "seed": options.seed,
        "env": config["env_id"],
        "policy": config["policy"],
        "train": {k: config["train"][k] for k in ("steps", "batch_size", "lr")},
        "demos": len(config["data"]["train_demos"]) + len(config["data"]["valid_demos"]),
        "latency": {str(k): v for k, v in lat.items()},
        "quality": qual,
        "wall_time_s": run.elapsed(),
    }
    by_steps = {q["steps"]: q for q in qual}
    few, many = options.compare
    if few in by_steps and many in by_steps:
        gap = (by_steps[many]["success_rate"] - by_steps[few]["success_rate"]) * 100
        result["success_gap_points"] = {"fewer": few, "more": many, "points": gap}
        result.update(
            harness.thresholds(
                harness.threshold(
                    f"success with {many} steps minus with {few} steps",
                    gap,
                    options.max_gap_points,
                    at_most=True,
                    unit=" points",
                )
            )
        )
    print(markdown(harness.as_json({**result, "command": run.command})))
    return result


def markdown(r: dict[str, Any]) -> str:
    p = r["policy"]
    lines = [
        *harness.header(f"Diffusion policy: latency and success against denoising steps ({r['env']})", r),
        f"- Run `{r['run']}`: {p['denoiser']} denoiser, observation history {p['n_obs_steps']}, horizon "
        f"{p['horizon']}, {p['n_action_steps']} actions executed per chunk, predicts the {p['prediction']}; trained "
        f"{r['train']['steps']} steps on {r['demos']} demos",
        f"- Success over {r['quality'][0]['episodes']} held-out seeds ({r.get('seed', TRAINED_EVAL_SEED)}...), the "
        "same seeds and initial "
        f"noise for every step count; latency in torch eager mode (other jobs on the cores lengthen its tails). Wall "
        f"time {r['wall_time_s']:.0f} s.",
        "",
        "| DDIM steps | chunk latency p50 [ms] | p99 [ms] | success | 95% CI | mean return |",
        "|---:|---:|---:|---:|---|---:|",
    ]
    for q in r["quality"]:
        lat = r["latency"][str(q["steps"])]
        low, high = q["success_ci95"]
        lines.append(
            f"| {q['steps']} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | {q['success_rate']:.2f} | "
            f"[{low:.2f}, {high:.2f}] | {q['mean_return']:.1f} |"
        )
    gap = r.get("success_gap_points")
    if gap:
        lines += [
            "",
            f"Success with {gap['more']} steps minus with {gap['fewer']} steps: {gap['points']:+.0f} points.",
        ]
    lines += ["", *harness.threshold_lines(r)]
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="policy",
    options=PolicyOptions,
    measure=measure,
    markdown=markdown,
    stem=lambda options: f"policy_{options.name or Path(options.run).name}",
    packages=("torch", "numpy", "mujoco"),
)
