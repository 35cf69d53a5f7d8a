"""``robot-rl pipeline --env ID --out DIR``: the main job, end to end, on embedded defaults.

Stages (each skipped when its output in DIR is already complete, so an interrupted pipeline
resumes where it stopped):

Every learning stage runs under ``--randomize`` (default ``train``: object mass and friction, servo gains
and damping, sensing noise and latency drawn per episode), so the deployed stack is trained for more than
the nominal simulation.

1. ``demos.hdf5``: scripted-expert demonstrations (seeds from 0) under the randomization;
2. ``base/``: a diffusion policy trained on them;
3. ``residual/``: residual RL (SAC, demo-seeded replay) on the frozen base;
4. ``policy_base/``: the base alone exported to ONNX; ``policy/``: the deployed stack, base and
   residual in one ONNX graph (the base alone when the residual stage is skipped), with its failure
   monitor calibrated (``policy/monitor/``: RND on the demos, conformal thresholds from 50
   successful-or-not rollouts on their own seeds);
5. ``report.md`` / ``report.json``: the expert, the exported base and the exported stack on the same
   held-out seeds (from 1000000), all through the runtime Controller as on hardware, the stack with
   the safety chain and the monitor on (filtered steps, constraint violations, alarms); the robustness
   suite on the stack beside the expert (``robustness.png``, also on the policy's card); training
   curves (``base.png``, ``residual.png``), the video, stage timings.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.limits import check_counts
from robot_rl.rl.config import MAX_STEPS


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Expert demos -> diffusion base -> residual RL -> ONNX export -> evaluation -> report."""

    env: str = "robot_rl/PandaPush-v1"
    """Environment id (Franka tasks and QuadrotorWaypoint have scripted experts)."""
    out: Path = Path("out/pipeline")
    """Folder for every artifact and the report."""
    demos: int = 200
    """Expert demonstrations. 200 with 20k base steps scored above 100 with 10k on PandaPush-v1 nominal and under
    every family of the robustness suite (docs/robustness.md, "More data for the v1 base")."""
    base_steps: int = 20_000
    """Diffusion training steps."""
    residual_steps: int = 100_000
    """Residual RL env steps (0 skips the stage). SAC on PandaPush dips below the base while its critic learns
    (10k-50k steps) and passes it from about 60k (bench/results/residual_pandapush.md); the deployed residual is
    the final agent (see TrainResidual.keep_best), so a budget inside the dip deploys a residual worse than the
    base: the report shows both on the same seeds."""
    residual_algo: str = "sac"
    """sac, ppo or dsrl."""
    episodes: int = 100
    """Held-out evaluation episodes per policy."""
    video_episodes: int = 3
    """Episodes in the rollout video (0: no video)."""
    threads: int = 2
    """torch CPU threads for training."""
    monitor_episodes: int = 50
    """Calibration rollouts of the failure monitor (0: no monitor)."""
    randomize: str = "train"
    """Domain randomization of every learning stage (a preset or a YAML file): the expert's demos are collected
    under it (they show its corrections to noise and latency), the base's checkpoint is chosen on evaluations under
    it and the residual learns under it. ``train`` (moderate: object mass and friction, servo gains and damping,
    1 mm noise, 0-1 period latency) scored at or above ``wide`` (the suite's envelope with a margin) nominal and
    under most families of the robustness suite on PandaPush (docs/robustness.md); ``nominal`` trains for the
    nominal simulation only."""
    suite_episodes: int = 50
    """Episodes per family of the robustness suite on the deployed stack and the expert, safety chain on
    (``robot-rl eval --suite robustness``), written on the policy's card and into the report (0: skip)."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "demos", "base_steps", "episodes", "threads")
        check_counts(self, 0, "video_episodes", "monitor_episodes")
        if not 0 <= self.residual_steps <= MAX_STEPS:  # checked here, not after the demos and the base
            raise ValueError(
                f"`residual_steps` must be in [0, {MAX_STEPS}] (0 skips the stage). Got {self.residual_steps}."
            )
        if self.residual_algo not in ("sac", "ppo", "dsrl"):
            raise ValueError(f"`residual_algo` must be sac, ppo or dsrl. Got {self.residual_algo!r}.")
        check_counts(self, 0, "suite_episodes")


def run_pipeline(config: Pipeline) -> dict[str, Any]:
    """Run the stages not yet complete in ``config.out`` and write the report; returns report.json."""
    from robot_rl.data import collect
    from robot_rl.data.dataset import DemoDataset
    from robot_rl.envs.registry import check_env_id
    from robot_rl.policies.config import TrainDiffusion
    from robot_rl.policies.plots import plot_training
    from robot_rl.policies.train import train

    env_id = check_env_id(config.env)
    out = config.out
    _check_randomize(config, env_id)
    out.mkdir(parents=True, exist_ok=True)
    settings = out / "pipeline.json"
    if settings.is_file():
        before = json.loads(settings.read_text())
        if before.get("env") != env_id or before.get("randomize") != config.randomize:
            raise ValueError(
                f"{out} holds a pipeline for env {before.get('env')!r} with randomize {before.get('randomize')!r}; "
                f"this one asks for {env_id!r} with {config.randomize!r}. Choose another --out."
            )
    settings.write_text(json.dumps({"env": env_id, "randomize": config.randomize}) + "\n")
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    timings: dict[str, float] = {}

    def stage(name: str) -> float:
        print(f"\n== {name} ==", flush=True)
        return time.perf_counter()

    demos = out / "demos.hdf5"
    have = 0
    if demos.exists():
        with DemoDataset(demos) as ds:
            have = len(ds)
    if have < config.demos:
        start = stage(f"1/5 expert demos ({config.demos})")
        collect(env_id, "expert", config.demos - have, demos, env_kwargs={"randomize": config.randomize})
        timings["demos"] = time.perf_counter() - start

    base = out / "base"
    if not (base / "policy.safetensors").exists() or _steps_done(base) < config.base_steps:
        start = stage(f"2/5 diffusion base ({config.base_steps} steps)")
        resume = (base / "config.json").exists()
        train(
            TrainDiffusion(
                data=demos,
                out=base,
                steps=config.base_steps,
                eval_every=max(1, config.base_steps // 10),
                eval_episodes=20,
                eval_randomize=config.randomize,
                threads=config.threads,
                resume=resume,
            )
        )
        timings["base"] = time.perf_counter() - start

    residual = out / "residual"
    from robot_rl.rl.train import finished

    if config.residual_steps and not finished(residual):
        from robot_rl.rl.config import TrainResidual
        from robot_rl.rl.train import train_residual

        start = stage(f"3/5 residual RL ({config.residual_algo}, {config.residual_steps} env steps)")
        train_residual(
            TrainResidual(
                base=base,
                out=residual,
                algo=config.residual_algo,  # type: ignore[arg-type]
                steps=config.residual_steps,
                eval_every=max(1, config.residual_steps // 5),
                eval_episodes=20,
                demos=demos if config.residual_algo == "sac" else None,
                randomize=config.randomize,
                threads=config.threads,
                resume=(residual / "config.json").exists(),  # an interrupted run continues from its checkpoint
            )
        )
        timings["residual"] = time.perf_counter() - start

    from robot_rl.export.card import record_eval
    from robot_rl.rl.residual_export import export_training_run

    start = stage("4/5 export; calibrate the failure monitor")
    base_policy, policy = out / "policy_base", out / "policy"
    export_training_run(base, base_policy, overwrite=True)
    has_residual = bool(config.residual_steps) and finished(residual)
    export_training_run(residual if has_residual else base, policy, overwrite=True)
    monitor = _calibrate_monitor(policy, env_id, demos, config.monitor_episodes)
    timings["export_calibrate"] = time.perf_counter() - start

    start = stage("5/5 evaluate expert, base and the deployed stack on the same seeds; report")
    exported = evaluate(EvalConfig(policy=str(base_policy), episodes=config.episodes, safety="on"))
    record_eval(base_policy, exported)
    deployed = evaluate(
        EvalConfig(
            policy=str(policy),
            episodes=config.episodes,
            safety="on",
            monitor="on" if monitor else "off",
            video=policy / "rollout.mp4" if config.video_episodes else None,
            video_episodes=max(1, config.video_episodes),
        )
    )
    record_eval(policy, deployed)
    expert = evaluate(
        EvalConfig(env=env_id, policy="expert", episodes=config.episodes, seed=exported["seed"], safety="on")
    )
    combined = deployed if has_residual else None
    robustness = None
    if config.suite_episodes:
        from robot_rl.evaluation.robustness import load_suite, plot_suite, run_suite
        from robot_rl.export.card import record_robustness

        suite_start = time.perf_counter()
        suite_config = EvalConfig(policy=str(policy), episodes=config.suite_episodes, safety="on", suite="robustness")
        robustness = run_suite(suite_config, load_suite("robustness", env_id))
        record_robustness(policy, robustness)
        plot_suite(robustness, out / "robustness.png")
        timings["robustness"] = time.perf_counter() - suite_start
        start += timings["robustness"]
    if config.residual_steps:
        plot_training(residual, out / "residual.png", title=f"{env_id} residual ({config.residual_algo})")
    plot_training(base, out / "base.png", title=f"{env_id} diffusion base")
    timings["evaluate_report"] = time.perf_counter() - start
    report = _report(config, env_id, expert, exported, combined, timings, robustness)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    print(f"\nreport: {out / 'report.md'}")
    return report


def _check_randomize(config: Pipeline, env_id: str) -> None:
    """Refuse a randomization the env cannot apply before any stage runs (the env's own message)."""
    from robot_rl.envs.registry import make

    make(env_id, randomize=config.randomize).close()


def _calibrate_monitor(policy: Path, env_id: str, demos: Path, episodes: int) -> bool:
    """Calibrate the deployed policy's failure monitor (False, and said, when it cannot be)."""
    if not episodes:
        return False
    from robot_rl.monitor import MonitorCalibrate, calibrate

    try:
        calibrate(MonitorCalibrate(policy=policy, env=env_id, episodes=episodes, data=demos))
    except (ValueError, FileNotFoundError) as error:
        print(f"monitor not calibrated ({error}); the deployed policy is evaluated without it.")
        return False
    return True


def _steps_done(run: Path) -> int:
    path = run / "checkpoints" / "latest" / "trainer.json"
    return int(json.loads(path.read_text())["step"]) if path.is_file() else 0


def _row(name: str, report: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": name,
        "success_rate": report["success_rate"],
        "success_ci95": report["success_ci95"],
        "mean_return": report["mean_return"],
        "safety_interventions": report.get("safety_interventions"),
        "safety_violations": report.get("safety_violations"),
        "monitor_alarms": report.get("monitor_alarms"),
    }


def _report(
    config: Pipeline,
    env_id: str,
    expert: dict[str, Any],
    exported: dict[str, Any],
    combined: dict[str, Any] | None,
    timings: dict[str, float],
    robustness: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rows = [_row("scripted expert", expert), _row("diffusion base (ONNX)", exported)]
    if combined is not None:
        rows.append(_row(f"base + residual {config.residual_algo} (ONNX, one graph)", combined))
    return {
        "env": env_id,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()},
        "seeds": [exported["seed"], exported["seed"] + config.episodes - 1],
        "results": rows,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "video": "policy/rollout.mp4" if config.video_episodes else None,
        "robustness": robustness,
    }


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# robot_rl pipeline: {report['env']}",
        "",
        f"Held-out seeds {report['seeds'][0]}..{report['seeds'][1]} (demos use seeds from 0).",
        "",
        "Every policy runs with the safety chain on (hardware/*.yaml); the deployed stack also with its failure",
        "monitor. Filtered: steps the chain changed the command; violations: steps the simulated state broke a",
        "configured constraint; alarms: episodes in which the monitor raised the alarm.",
        "",
        "| policy | success | 95% CI | mean return | filtered | violations | alarms |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        low, high = row["success_ci95"]
        alarms = "-" if row.get("monitor_alarms") is None else row["monitor_alarms"]
        lines.append(
            f"| {row['policy']} | {row['success_rate']:.2f} | [{low:.2f}, {high:.2f}] | {row['mean_return']:.1f} | "
            f"{row.get('safety_interventions', '-')} | {row.get('safety_violations', '-')} | {alarms} |"
        )
    if report.get("robustness"):
        from robot_rl.evaluation.robustness import format_table

        rob = report["robustness"]
        lines += [
            "",
            f"Robustness suite of the deployed stack (safety chain on, {rob['episodes']} episodes per family on seeds "
            f"from {rob['seed']}, the expert on the same seeds; `policy/robustness.json`):",
            "",
            format_table(rob),
            "",
            "![robustness](robustness.png)",
        ]
    lines += ["", "Stage wall times (this run; skipped stages are absent):", ""]
    lines += [f"- {k}: {v:.0f} s" for k, v in report["timings_s"].items()]
    lines += ["", "![base training](base.png)", ""]
    if any("residual" in r["policy"] for r in report["results"]):
        lines += ["![residual training](residual.png)", ""]
    if report["video"]:
        lines += [f"Rollout video of the deployed policy: [{report['video']}]({report['video']}).", ""]
    return "\n".join(lines)
