"""Residual RL learning curves: sac / ppo / dsrl on one frozen base against SAC+HER from scratch, same budget.

Each method trains for the same number of env steps and is evaluated every ``--eval-every`` steps on
the same held-out seeds (deterministic policy; seeds from 900000, disjoint from the demos' and the
final report's). The residual runs are ``robot-rl train residual`` runs (their metrics.jsonl); the
peer is stable-baselines3 SAC with a HER replay buffer on the goal-conditioned env (sparse reward,
future strategy, 4 sampled goals), trained from scratch with the same evaluation callback cadence.

Runs go two at a time (each in its own process, one torch thread). Then the final evaluation (``--final-episodes``
seeds from 1000000) of each residual run's deployed model beside its base alone.

Usage::

    robot-rl bench residual --base runs/push_diffusion --demos runs/push_demos.hdf5 --steps 30000

Writes ``residual_<task>.{json,md,png}`` to ``--out``; the runs go to ``--runs`` (a finished run with the same
settings is reused).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import harness

METHODS = ("sac", "ppo", "dsrl", "her")
EVAL_SEED = 900_000
"""First seed of the evaluations during training (the residual runs' default too)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResidualOptions(harness.Options):
    """Options of ``robot-rl bench residual``."""

    base: Path = Path("runs/push_diffusion")
    """The frozen base: a bc|diffusion training run or an exported base policy folder."""
    demos: Path = Path("runs/push_demos.hdf5")
    """Demonstrations for sac's replay buffer (the base's demos)."""
    steps: int = 30_000
    """Env steps per method."""
    eval_every: int = 5_000
    """Evaluate every N env steps."""
    eval_episodes: int = 30
    """Held-out episodes per evaluation (seeds from 900000)."""
    final_episodes: int = 100
    """Final evaluation of each residual run beside its base alone (seeds from 1000000)."""
    ent_coef: str = "auto_0.01"
    """sac: entropy coefficient (``robot-rl train residual --ent-coef``)."""
    actor_warmup: int = 5_000
    """sac: env steps of actor warm-up (``robot-rl train residual --actor-warmup``)."""
    methods: tuple[str, ...] = METHODS
    """Methods to run: sac, ppo, dsrl (residuals on the base) and her (SAC+HER from scratch)."""
    runs: Path = Path("runs/bench_residual")
    """Folder of the runs (a finished run with the same settings is reused, any other is replaced)."""

    positive = ("steps", "eval_every", "eval_episodes", "final_episodes", "methods")

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"--methods: unknown method {unknown[0]!r}; valid: {', '.join(METHODS)}.")
        env_of(self.base)  # a clear error for a missing or wrong base before anything runs


def env_of(base: Path) -> str:
    """The env the base acts in (refuses anything that is not a base policy)."""
    from robot_rl.deploy import open_policy

    return open_policy(base, base_only=True, what="--base").env_id


def task_of(base: Path) -> str:
    """``pandapush`` for a PandaPush base (the results' file stem)."""
    return harness.short(env_of(base)).lower()


def residual_command(options: ResidualOptions, algo: str, out: Path) -> list[str]:
    cmd = [
        sys.executable, "-m", "robot_rl.cli.main", "train", "residual", "--base", str(options.base), "--algo", algo,
        "--steps", str(options.steps), "--out", str(out), "--eval-every", str(options.eval_every),
        "--eval-episodes", str(options.eval_episodes), "--threads", "1", "--no-progress",
    ]  # fmt: skip
    if algo == "sac":
        cmd += ["--demos", str(options.demos), "--ent-coef", options.ent_coef]
        cmd += ["--actor-warmup", str(options.actor_warmup)]
    return cmd


def her_command(options: ResidualOptions, env_id: str, out: Path) -> list[str]:
    """The SAC+HER peer in its own process (this module's :func:`her_peer`)."""
    code = (
        f"import sys; sys.path.insert(0, {str(harness.REPO)!r}); from pathlib import Path; "
        "from bench.bench_residual import her_peer; "
        f"her_peer({env_id!r}, {options.steps}, {options.eval_every}, {options.eval_episodes}, Path({str(out)!r}))"
    )
    return [sys.executable, "-c", code]


def her_peer(env_id: str, steps: int, eval_every: int, eval_episodes: int, out: Path) -> None:
    """SB3 SAC + HER from scratch; writes out/metrics.jsonl like a residual run."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import SAC, HerReplayBuffer
    from stable_baselines3.common.callbacks import BaseCallback

    import robot_rl  # noqa: F401  (registers the envs)
    from robot_rl.rl.train import evaluate_agent

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    eval_env = gym.make(env_id)
    seeds = harness.seeds(EVAL_SEED, eval_episodes)
    model = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future"},
        learning_starts=1000,
        batch_size=256,
        gamma=0.95,
        policy_kwargs={"net_arch": [256, 256, 256]},
        seed=0,
        device="cpu",
    )
    started = time.perf_counter()
    metrics = out / "metrics.jsonl"
    metrics.write_text("")

    def record(n: int) -> None:
        result = evaluate_agent(model, eval_env, seeds)
        line = {"env_steps": n, "wall_time_s": round(time.perf_counter() - started, 2), **result}
        line.pop("per_episode")
        with metrics.open("a") as f:
            f.write(json.dumps(line) + "\n")

    class Every(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                record(self.num_timesteps)
            return True

    record(0)
    model.learn(total_timesteps=steps, callback=Every())


def check_reused(options: ResidualOptions, algo: str, run: Path) -> None:
    """Refuse a finished run in ``--runs`` that was not trained with this command's settings."""
    run_options = json.loads((run / "config.json").read_text())["options"]
    expected: dict[str, Any] = {
        "algo": algo,
        "base": str(options.base),
        "steps": options.steps,
        "eval_every": options.eval_every,
        "eval_episodes": options.eval_episodes,
    }
    if algo == "sac":
        expected |= {"demos": str(options.demos), "ent_coef": options.ent_coef, "actor_warmup": options.actor_warmup}
    differ = {k: (run_options.get(k), v) for k, v in expected.items() if run_options.get(k) != v}
    if differ:
        raise ValueError(f"{run} holds a finished {algo} run with other settings (run, this command): {differ}; "
                         "remove it.")  # fmt: skip


def read_curve(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def measure(options: ResidualOptions, run: harness.Run) -> dict[str, Any]:
    """Train (or reuse) every method two at a time, then the final evaluations; the results."""
    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    env_id = env_of(options.base)
    machine = run.machine()
    options.runs.mkdir(parents=True, exist_ok=True)
    jobs = []
    reused: dict[str, float] = {}
    for method in options.methods:
        out = options.runs / method
        curve = read_curve(out)
        if curve and curve[-1]["env_steps"] >= options.steps:
            if method != "her":
                check_reused(options, method, out)
            reused[method] = curve[-1]["wall_time_s"]
            print(f"reuse {method}: {out} (finished earlier, {reused[method] / 60:.1f} min)", flush=True)
            continue
        if out.exists():
            shutil.rmtree(out)
        cmd = her_command(options, env_id, out) if method == "her" else residual_command(options, method, out)
        jobs.append((method, cmd))
    running: list[tuple[str, subprocess.Popen, float]] = []
    wall: dict[str, float] = dict(reused)
    while jobs or running:
        while jobs and len(running) < 2:
            method, cmd = jobs.pop(0)
            log = (options.runs / f"{method}.log").open("w")
            print(f"start {method}: {' '.join(cmd)}", flush=True)
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)  # relative paths: as given
            running.append((method, proc, time.time()))
        time.sleep(1)
        for item in list(running):
            method, proc, t0 = item
            if proc.poll() is not None:
                running.remove(item)
                wall[method] = time.time() - t0
                print(f"done {method}: rc {proc.returncode}, {wall[method]:.0f} s", flush=True)
                if proc.returncode:
                    for _, other, _ in running:
                        other.terminate()
                    raise RuntimeError(f"{method} failed; see {options.runs / (method + '.log')}")

    curves = {m: read_curve(options.runs / m) for m in options.methods}
    finals = {}
    for method in options.methods:
        if method == "her":
            continue
        report = evaluate(
            EvalConfig(policy=str(options.runs / method), episodes=options.final_episodes, progress=False)
        )
        finals[method] = {
            "success_rate": report["success_rate"],
            "success_ci95": report["success_ci95"],
            "base_alone": report["base_alone"]["success_rate"],
            "base_alone_ci95": report["base_alone"]["success_ci95"],
        }
    return {
        "env": env_id,
        "base": str(options.base),
        "steps": options.steps,
        "eval_every": options.eval_every,
        "eval_episodes": options.eval_episodes,
        "final_episodes": options.final_episodes,
        "sac_options": {
            "ent_coef": options.ent_coef,
            "actor_warmup": options.actor_warmup,
            "demos": str(options.demos),
        },
        "curves": curves,
        "final": finals,
        "wall_s": wall,
        "reused": sorted(reused),
        "machine": machine,
    }


def plot(result: dict, out_dir: Path) -> None:
    """``residual_<task>.png``: the learning curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, curve in result["curves"].items():
        if curve:
            label = "SAC+HER from scratch" if method == "her" else f"residual {method}"
            ax.plot([c["env_steps"] for c in curve], [c["success_rate"] for c in curve], marker="o", label=label)
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"success ({result['eval_episodes']} held-out seeds)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{result['env']}: residual RL on {result['base']} vs SAC+HER")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"residual_{harness.short(result['env']).lower()}.png", dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    task = harness.short(result["env"]).lower()
    steps = sorted({c["env_steps"] for curve in result["curves"].values() for c in curve})
    methods = [m for m in result["curves"] if result["curves"][m]]
    lines = [
        *harness.header(f"Residual RL learning curves: {result['env']}", result),
        f"- Base `{result['base']}`; {result['steps']} env steps per method; SAC options {result['sac_options']}.",
        "",
        f"Success on {result['eval_episodes']} held-out seeds ({EVAL_SEED}..) against env steps (deterministic "
        "policies). Step 0 is the freshly initialized agent: for sac and ppo the base plus a near-zero correction "
        "(about 0.002 of the action range, enough to flip some episodes of this sensitive task), for dsrl the base "
        "sampled from all-zero noise (deterministic), for her an untrained policy.",
        "",
        "| env steps | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for s in steps:
        cells = []
        for m in methods:
            hit = [c for c in result["curves"][m] if c["env_steps"] == s]
            cells.append(f"{hit[0]['success_rate']:.2f}" if hit else "")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += ["", f"Final, {result['final_episodes']} seeds from 1000000 (the deployed agent: the final one):", ""]
    lines += ["| method | base + residual | base alone (same seeds) |", "|---|---|---|"]
    for m, f in result["final"].items():
        lo, hi = f["success_ci95"]
        blo, bhi = f["base_alone_ci95"]
        lines.append(
            f"| {m} | {f['success_rate']:.2f} [{lo:.2f}, {hi:.2f}] | {f['base_alone']:.2f} [{blo:.2f}, {bhi:.2f}] |"
        )
    wall = ", ".join(f"{m} {v / 60:.1f} min" for m, v in result["wall_s"].items())
    lines += ["", f"Wall time (two runs at a time, each on one torch thread; other jobs at times): {wall}."]
    if result.get("reused"):
        lines += [
            "",
            "Reused (finished earlier in `--runs` with the same settings, checked against its config.json; its wall "
            f"time is its own training's): {', '.join(result['reused'])}.",
        ]
    lines += ["", f"![curves](residual_{task}.png)", ""]
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="residual",
    options=ResidualOptions,
    measure=measure,
    markdown=markdown,
    stem=lambda options: f"residual_{task_of(options.base)}",
    packages=("torch", "stable-baselines3", "numpy", "mujoco"),
    figures=plot,
)
