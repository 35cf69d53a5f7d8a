"""Diffusion policy speed/quality curve: sampling latency and success against the number of DDIM steps.

For one trained diffusion run, in ONE process with ONE torch thread:

* latency: one action chunk (batch 1, observation history in, chunk out, normalization included)
  in torch eager mode, for each number of denoising steps; p50 and p99 over ``--reps`` calls
  after a warm-up, the step counts interleaved so drift hits them all alike;
* quality: success rate (Wilson 95% interval) and mean return over ``--episodes`` held-out seeds
  (never the demos' seeds) for each number of steps, the same seeds and the same initial noise
  for every step count.

Targets (issue 5): with 3 denoising steps, success within 5 points of 10 steps; sampling in a few
milliseconds on the CPU.

Usage::

    python bench/bench_policy.py --run runs/push_diffusion [--steps 1,2,3,5,10] [--episodes 100]

Writes ``policy_<run name>.md`` and ``.json`` to ``--out`` (default bench/results).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_rl.evaluation.evaluate import wilson_interval  # noqa: E402
from robot_rl.policies import ChunkedActor, load_policy, read_config  # noqa: E402
from robot_rl.provenance import machine_info  # noqa: E402

EVAL_SEED = 1_000_000


def latency(policy: Any, steps_list: list[int], reps: int) -> dict[int, dict[str, float]]:
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
    return {
        s: {"p50_ms": float(np.percentile(t, 50) * 1e3), "p99_ms": float(np.percentile(t, 99) * 1e3)}
        for s, t in times.items()
    }


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


def run(
    run_dir: Path, steps_list: list[int], episodes: int, reps: int, out_dir: Path, name: str | None = None
) -> dict[str, Any]:
    torch.set_num_threads(1)
    config = read_config(run_dir)
    if config["policy_type"] != "diffusion":
        raise SystemExit(f"{run_dir} is a {config['policy_type']} run; this benchmark needs a diffusion run.")
    policy = load_policy(run_dir)
    seeds = list(range(EVAL_SEED, EVAL_SEED + episodes))
    overlap = set(seeds) & set(config["data"]["seeds"])
    if overlap:
        raise SystemExit(f"evaluation seeds overlap the demo seeds {sorted(overlap)[:3]}")
    started = time.perf_counter()
    lat = latency(policy, steps_list, reps)
    qual = [quality(policy, config, s, seeds) for s in steps_list]
    result = {
        "machine": machine_info(("torch", "numpy", "mujoco")),
        "run": str(run_dir),
        "episodes": episodes,
        "env": config["env_id"],
        "policy": config["policy"],
        "train": {k: config["train"][k] for k in ("steps", "batch_size", "lr")},
        "demos": len(config["data"]["train_demos"]) + len(config["data"]["valid_demos"]),
        "latency": {str(k): v for k, v in lat.items()},
        "quality": qual,
        "wall_time_s": time.perf_counter() - started,
    }
    by_steps = {q["steps"]: q for q in qual}
    verdicts = []
    if 3 in by_steps and 10 in by_steps:
        gap = (by_steps[10]["success_rate"] - by_steps[3]["success_rate"]) * 100
        verdicts.append(
            ("success with 3 steps within 5 points of 10 steps", f"{gap:+.0f} points (10 minus 3)", gap <= 5.0)
        )
    result["targets"] = [{"what": w, "measured": m, "pass": p} for w, m, p in verdicts]
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"policy_{name or run_dir.name}"
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    p = r["policy"]
    lines = [
        f"# Diffusion policy: latency and success against denoising steps ({r['env']})",
        "",
        f"Generated by `bench/bench_policy.py --run {r['run']} --episodes {r.get('episodes', 100)}` on {m['date']}.",
        "",
        f"- Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), one torch thread; torch "
        f"{m['versions'].get('torch')}, mujoco {m['versions'].get('mujoco')}; git {m['git']}; scheduler "
        f"{m.get('scheduler', '?')}, 1-min load average {m.get('load_average_1min', float('nan')):.1f} at the start "
        "(other jobs on the cores lengthen the latency tails)",
        f"- Policy: {p['denoiser']} denoiser, observation history {p['n_obs_steps']}, horizon {p['horizon']}, "
        f"{p['n_action_steps']} actions executed per chunk, predicts the {p['prediction']}; trained "
        f"{r['train']['steps']} steps on {r['demos']} demos",
        f"- Success over {r['quality'][0]['episodes']} held-out seeds ({EVAL_SEED}...), the same seeds and initial "
        f"noise for every step count. Wall time {r['wall_time_s']:.0f} s.",
        "",
        "## Targets",
        "",
    ]
    for t in r["targets"]:
        lines.append(f"- **{'PASS' if t['pass'] else 'FAIL'}** {t['what']}: {t['measured']}")
    lines += [
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
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="diffusion training run directory")
    parser.add_argument("--steps", default="1,2,3,5,10", help="comma-separated DDIM step counts")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--reps", type=int, default=300, help="latency samples per step count")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--name", default=None, help="results file stem after policy_ (default: the run's name)")
    args = parser.parse_args()
    run(args.run, [int(s) for s in args.steps.split(",")], args.episodes, args.reps, args.out, args.name)


if __name__ == "__main__":
    main()
