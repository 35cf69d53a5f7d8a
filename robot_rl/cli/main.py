"""`robot-rl`: list environments, evaluate policies (more verbs arrive with later issues)."""

from __future__ import annotations

import dataclasses
import os
import sys

# Offscreen rendering (videos) needs its GL backend chosen before mujoco is imported: without a
# display, use OSMesa (CPU); with one, MuJoCo's default (GLFW) works for the viewer and videos.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro

from robot_rl.evaluation.evaluate import EvalConfig
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.pipeline import Pipeline
from robot_rl.policies.config import TrainBC, TrainDiffusion
from robot_rl.rl.config import TrainResidual

if TYPE_CHECKING:
    from robot_rl.data.collect import CollectStatus
    from robot_rl.teleop.view import LiveView


@dataclasses.dataclass(frozen=True)
class Envs:
    """List the registered environments with a one-line description each."""


BENCHMARKS = {
    "envs": "bench_envs.py",
    "quadrotor": "bench_quadrotor.py",
    "policy": "bench_policy.py",
    "recording": "bench_recording.py",
    "runtime": "bench_runtime.py",
    "robustness": "bench_robustness.py",
    "adaptation": "bench_quadrotor_adaptation.py",
}


@dataclasses.dataclass(frozen=True)
class Bench:
    """Run a benchmark from bench/ (its markdown and JSON go to --out)."""

    which: tyro.conf.Positional[
        Literal["envs", "quadrotor", "policy", "recording", "runtime", "robustness", "adaptation"]
    ]
    """Which benchmark: envs, quadrotor, policy (diffusion latency and success against denoising steps),
    recording (demo recorder overhead), runtime (Controller latency and smoothness, shipped policies),
    robustness (the robustness suite on every shipped policy; --episodes per family, --card writes the cards)
    or adaptation (the shipped waypoint policy over a grid of masses, motor constants and steady winds)."""
    out: Path = Path("bench/results")
    """Folder for the markdown and JSON results."""
    run: Path | None = None
    """policy: the diffusion training run to measure."""
    episodes: int = 100
    """policy: held-out episodes per number of denoising steps; robustness: episodes per family; adaptation:
    episodes per cell."""
    card: bool = False
    """robustness: write each shipped policy's card."""


@dataclasses.dataclass(frozen=True)
class Collect:
    """Record demonstrations (crash-safe HDF5, robomimic layout) from the expert or a teleop device."""

    env: str
    """Environment id (``robot-rl envs`` lists them)."""
    out: Path
    """HDF5 file to write; appended to if it exists (same env required)."""
    source: Literal["expert", "keyboard", "gamepad", "spacemouse"] = "expert"
    """Who acts: the scripted expert or a teleoperation device."""
    episodes: int = 10
    """Episodes to keep."""
    seed: int | None = None
    """First episode's seed (default: after the largest seed already in the file)."""
    randomize: str = "nominal"
    """Domain randomization: nominal, train or a YAML file."""
    keep_failed: bool = False
    """Keep episodes that end without success."""
    view: bool = True
    """With a teleop source: show a live MuJoCo viewer when a display exists (else a status line)."""


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """Episodes, steps, success rate, per-key shapes and ranges of a demo file."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""


@dataclasses.dataclass(frozen=True)
class DataReplay:
    """Re-simulate demos from their saved states and actions; report the largest deviation."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""


@dataclasses.dataclass(frozen=True)
class DataRender:
    """Render demos from their saved states into an MP4."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""
    out: Path = Path("demos.mp4")
    """The video to write."""


@dataclasses.dataclass(frozen=True)
class DataMerge:
    """Merge two demo files of the same env into a new one."""

    a: tyro.conf.Positional[Path]
    """First file."""
    b: tyro.conf.Positional[Path]
    """Second file."""
    out: Path = Path("merged.hdf5")
    """The merged file."""


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """Write a train/validation split (robomimic mask/train, mask/valid) into a demo file."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""
    val_fraction: float = 0.1
    """Fraction of demos for validation."""
    seed: int = 0
    """Shuffle seed."""


@dataclasses.dataclass(frozen=True)
class DataFromBag:
    """Convert a rosbag2 recording of the ROS 2 nodes (their /robot_rl/steps records) into demonstrations."""

    bag: tyro.conf.Positional[Path]
    """The rosbag2 folder (MCAP or sqlite3), e.g. from `ros2 run robot_rl_ros bag_recorder`."""
    out: Path
    """Demonstration HDF5 file to write (appended to if it holds the same env)."""
    env: str | None = None
    """Environment id of the recorded policy (default: the one named in the bag's episode events)."""
    topic: str = "/robot_rl/steps"
    """Topic of the step records."""


DataCommand = (
    Annotated[DataInfo, tyro.conf.subcommand("info")]
    | Annotated[DataReplay, tyro.conf.subcommand("replay")]
    | Annotated[DataRender, tyro.conf.subcommand("render")]
    | Annotated[DataMerge, tyro.conf.subcommand("merge")]
    | Annotated[DataSplit, tyro.conf.subcommand("split")]
    | Annotated[DataFromBag, tyro.conf.subcommand("from-bag")]
)


@dataclasses.dataclass(frozen=True)
class Export:
    """Export a training run to a policy folder: policy.onnx (the whole inference), metadata.json, README.md."""

    run: Path
    """Training run directory (`robot-rl train bc|diffusion|residual ... --out RUN_DIR`); a residual run exports its
    base and its residual into one graph."""
    out: Path
    """Policy folder to write, e.g. policies/NAME."""
    inference_steps: int | None = None
    """Diffusion: DDIM steps unrolled into the graph (default: the run's)."""
    overwrite: bool = False
    """Replace another policy already in --out."""
    eval_episodes: int = 0
    """Then evaluate the exported policy on this many held-out seeds (from 1000000) and put the report
    (eval.json) on its card; 0 skips it."""
    video_episodes: int = 0
    """With --eval-episodes: also record a video (rollout.mp4) of this many episodes."""

    def __post_init__(self) -> None:
        if self.eval_episodes < 0 or self.video_episodes < 0:
            raise ValueError("`eval_episodes` and `video_episodes` must be >= 0.")
        if self.inference_steps is not None and self.inference_steps < 1:
            raise ValueError(f"`inference_steps` must be >= 1. Got {self.inference_steps}.")


TrainCommand = (
    Annotated[TrainBC, tyro.conf.subcommand("bc")]
    | Annotated[TrainDiffusion, tyro.conf.subcommand("diffusion")]
    | Annotated[TrainResidual, tyro.conf.subcommand("residual")]
)

MonitorCommand = (
    Annotated[MonitorCalibrate, tyro.conf.subcommand("calibrate")]
    | Annotated[MonitorEval, tyro.conf.subcommand("eval")]
)


Command = (
    Annotated[Envs, tyro.conf.subcommand("envs")]
    | Annotated[
        EvalConfig,
        tyro.conf.subcommand(
            "eval", description="Evaluate a policy (expert, random, a run, an exported policy) on held-out seeds."
        ),
    ]
    | Annotated[Bench, tyro.conf.subcommand("bench")]
    | Annotated[Collect, tyro.conf.subcommand("collect")]
    | Annotated[
        DataCommand,
        tyro.conf.subcommand("data", description="Demo files: info | replay | render | merge | split | from-bag."),
    ]
    | Annotated[
        TrainCommand,
        tyro.conf.subcommand(
            "train", description="Train a base policy (bc | diffusion) or a residual on a frozen base."
        ),
    ]
    | Annotated[Pipeline, tyro.conf.subcommand("pipeline")]
    | Annotated[Export, tyro.conf.subcommand("export")]
    | Annotated[
        MonitorCommand,
        tyro.conf.subcommand("monitor", description="Failure monitor (RND + chunk entropy): calibrate | eval."),
    ]
)


def _envs() -> None:
    from robot_rl.envs.registry import ENV_SPECS

    width = max(len(k) for k in ENV_SPECS)
    for spec in ENV_SPECS.values():
        print(f"{spec.id:<{width}}  {spec.description}")


def _print_report(report: dict) -> None:
    header = (
        f"\n{report['env']}  policy={report['policy']}  episodes={report['episodes']}  seed={report['seed']}  "
        f"randomize={report['randomize']}"
    )
    if report["success_rate"] is None:
        print(f"{header}\nno episode finished (quit during the first one).")
    else:
        low, high = report["success_ci95"]
        print(
            f"{header}\n"
            f"| success rate | 95% CI | mean return | mean length | wall time |\n"
            f"|---|---|---|---|---|\n"
            f"| {report['success_rate']:.3f} | [{low:.3f}, {high:.3f}] | {report['mean_return']:.2f} | "
            f"{report['mean_episode_length']:.1f} | {report['wall_time_s']:.1f} s |"
        )
    if report.get("mean_final_distance") is not None:
        print(f"final distance to the goal: mean {report['mean_final_distance']:.3f} m")
    if "base_alone" in report:
        base = report["base_alone"]
        low, high = base["success_ci95"]
        line = (
            f"base alone ({base['policy']}), same seeds: success {base['success_rate']:.3f} [{low:.3f}, {high:.3f}], "
            f"mean return {base['mean_return']:.2f}"
        )
        if base.get("mean_final_distance") is not None:
            line += f", final distance {base['mean_final_distance']:.3f} m"
        print(line)
    if "safety_violations" in report:
        by = report.get("safety_violations_by_constraint") or {}
        detail = f" ({', '.join(f'{k}: {v}' for k, v in sorted(by.items()))})" if by else ""
        line = f"safety {report.get('safety', 'off')}: {report['safety_violations']} violation steps{detail}"
        if report.get("safety_interventions") is not None:
            line += f", {report['safety_interventions']} filtered steps, {report['safety_fallbacks']} fallbacks"
        print(line)
    if report.get("monitor", "off") != "off":
        alarms = report.get("monitor_alarms")
        print(f"monitor {report['monitor']}" + (f": alarms in {alarms} episodes" if alarms is not None else ""))
    if report.get("takeover", "none") != "none":
        quit_note = " (quit early)" if report["quit"] else ""
        print(f"takeover ({report['takeover']}): {report['intervention_steps']} human steps{quit_note}")
    if "record" in report:
        print(f"recorded: {report['record']}")
    if "video" in report:
        print(f"video: {report['video']}")
    if "plot" in report:
        print(f"training curves: {report['plot']}")


def _suite(command: EvalConfig) -> None:
    """``robot-rl eval --suite NAME``: every family of the suite, the table, the report, the plot and the card."""
    from robot_rl.evaluation.evaluate import policy_env_id
    from robot_rl.evaluation.robustness import format_table, load_suite, plot_suite, run_suite, write_report

    env_id = policy_env_id(dataclasses.replace(command, plot=None))
    suite = load_suite(command.suite, env_id).select(command.families)
    report = run_suite(command, suite, expert=command.suite_expert)
    print(
        f"\n{report['env']}  policy={report['policy']}  suite={report['suite']} ({suite.path.name})  "
        f"episodes={report['episodes']} per family  seed={report['seed']}  safety={report['safety']}"
    )
    print(format_table(report))
    if command.json is not None:
        write_report(report, command.json)  # run() prints its path
    if command.plot is not None:
        print(f"plot: {plot_suite(report, command.plot)}")
    if command.card:
        from robot_rl.export.metadata import record_robustness

        record_robustness(command.policy, report)
        print(f"card: {command.policy}/metadata.json (robustness), README.md, robustness.json")


def _collect_view(command: Collect) -> tuple[LiveView, Callable[[CollectStatus], None]]:
    """A live view for ``collect`` with a teleop source, and the ``on_step`` callback that draws it.

    The device's source factory is wrapped so that the view is attached to the env collect makes.
    """
    from robot_rl.data.collect import SOURCES, register_source
    from robot_rl.teleop.view import LiveView

    live = LiveView(command.source, viewer=command.view)
    open_source = SOURCES[command.source]

    def open_and_view(env: Any, env_id: str) -> Any:
        source = open_source(env, env_id)  # connects the device first: a missing one fails here
        live.attach(env)
        return source

    register_source(command.source, open_and_view)

    def on_step(status: CollectStatus) -> None:
        mode = "REC" if status.recording else "idle (move or press start)"
        live.show(status.episode, status.step, mode, status.info, status.saved, status.discarded)

    return live, on_step


def _data(command: object) -> None:
    import os

    if isinstance(command, DataRender):
        os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_rl import data

    if isinstance(command, DataInfo):
        print(data.format_info(data.info(command.path)))
    elif isinstance(command, DataReplay):
        print(data.format_replay(data.replay(command.path)))
    elif isinstance(command, DataRender):
        print(data.render(command.path, command.out))
    elif isinstance(command, DataMerge):
        print(data.merge(command.a, command.b, command.out))
    elif isinstance(command, DataSplit):
        train, valid = data.split(command.path, command.val_fraction, command.seed)
        print(f"{len(train)} train and {len(valid)} validation demos written to mask/train and mask/valid")
    elif isinstance(command, DataFromBag):
        from robot_rl.data.bag import bag_to_demos

        summary = bag_to_demos(command.bag, command.out, env_id=command.env, steps_topic=command.topic)
        print(
            f"{summary['out']}: {len(summary['demos'])} demos ({summary['steps']} steps, {summary['interventions']} "
            f"human) of {summary['env_id']} from {command.bag}"
            + (f"; {summary['skipped']} single-record episodes skipped" if summary["skipped"] else "")
        )


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    command = tyro.cli(Command, args=argv, prog="robot-rl", description="robot_rl: sim-to-real robot learning.")
    if isinstance(command, Envs):
        _envs()
    elif isinstance(command, EvalConfig):
        from robot_rl.evaluation.evaluate import evaluate

        if command.suite is not None:
            _suite(command)
        else:
            report = evaluate(command)
            _print_report(report)
        if command.json is not None:
            print(f"report: {command.json}")
    elif isinstance(command, Collect):
        from robot_rl.data import collect
        from robot_rl.teleop.source import register_devices

        register_devices()
        live, on_step = _collect_view(command) if command.source != "expert" else (None, None)
        try:
            summary = collect(
                command.env,
                command.source,
                command.episodes,
                command.out,
                seed=command.seed,
                progress=live is None,  # the expert's progress bar; a device has the live view
                env_kwargs={"randomize": command.randomize},
                keep_failed=command.keep_failed,
                on_step=on_step,
            )
        finally:
            if live is not None:
                live.close()
        rate = summary["attempt_success_rate"]
        print(
            f"{summary['out']}: kept {summary['kept']} demos ({summary['steps']} steps) of {summary['attempts']} "
            f"attempts from {summary['source']} on {summary['env_id']}"
            + (f", source success {rate:.0%}" if rate is not None else "")
            + f", {summary['wall_time_s']:.1f} s"
            + (" (quit)" if summary["quit"] else "")
        )
    elif isinstance(command, DataInfo | DataReplay | DataRender | DataMerge | DataSplit | DataFromBag):
        _data(command)
    elif isinstance(command, Pipeline):
        from robot_rl.pipeline import run_pipeline

        run_pipeline(command)
    elif isinstance(command, TrainResidual):
        from robot_rl.rl.train import train_residual

        metrics = train_residual(command)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"run: {command.out}\nlast evaluation: {shown}")
        print(f"evaluate (base alone reported beside it): robot-rl eval --policy {command.out} --episodes 100")
    elif isinstance(command, TrainBC | TrainDiffusion):
        from robot_rl.policies.train import train

        metrics = train(command)
        shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        print(f"run: {command.out}\nfinal: {shown}")
        print(f"evaluate: robot-rl eval --policy {command.out} --episodes 100")
    elif isinstance(command, Export):
        from robot_rl.export import export_run

        meta = export_run(command.run, command.out, command.inference_steps, overwrite=command.overwrite)
        steps = f", {meta.inference_steps} DDIM steps" if meta.inference_steps is not None else ""
        kind = meta.policy_type + (f" + {meta.residual['algo']} residual" if meta.residual else "")
        print(
            f"{command.out}: {kind} policy for {meta.env_id}{steps}; onnxruntime matches torch to "
            f"{meta.export_check['max_abs_diff']:.1g}\npolicy.onnx sha256 {meta.onnx_sha256}"
        )
        if command.eval_episodes:
            import os

            from robot_rl.evaluation.evaluate import evaluate
            from robot_rl.export.metadata import record_eval

            video = None
            if command.video_episodes:
                os.environ.setdefault("MUJOCO_GL", "osmesa")
                video = command.out / "rollout.mp4"
            report = evaluate(
                EvalConfig(
                    policy=str(command.out),
                    episodes=command.eval_episodes,
                    video=video,
                    video_episodes=max(1, command.video_episodes),
                )
            )
            record_eval(command.out, report)
            _print_report(report)
            print(f"report: {command.out / 'eval.json'}")
        else:
            print(f"evaluate: robot-rl eval --policy {command.out} --episodes 100")
    elif isinstance(command, MonitorCalibrate | MonitorEval):
        from robot_rl.monitor.commands import run_command

        run_command(command, sys.argv[1:] if argv is None else argv)
    elif isinstance(command, Bench):
        import importlib.util

        path = Path(__file__).resolve().parents[2] / "bench" / BENCHMARKS[command.which]
        if not path.is_file():
            raise ValueError(f"benchmark script {path} not found (it ships with the source checkout).")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if command.which == "policy":
            if command.run is None:
                raise ValueError("`bench policy` needs --run RUN_DIR (a diffusion training run).")
            module.run(command.run, [1, 2, 3, 5, 10], command.episodes, 300, command.out)
        elif command.which == "runtime":
            module.run(command.episodes, command.out)
        elif command.which == "robustness":
            module.run(command.episodes, card=command.card, out_dir=command.out)
        elif command.which == "adaptation":
            module.run(command.episodes, command.out)
        else:
            module.run(out_dir=command.out)
    return 0


def main() -> None:
    """Console entry point: user errors print one line and exit 2, never a traceback wall."""
    try:
        code = run()
    except BrokenPipeError:  # output piped into `head` and the like
        code = 0
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"robot-rl: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("robot-rl: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
