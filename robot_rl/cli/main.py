"""`robot-rl`: the entry point, the only place that reads argv (the verbs' options: robot_rl.cli.commands)."""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys

# Offscreen rendering (videos) needs its GL backend chosen before mujoco is imported: without a
# display, use OSMesa (CPU); with one, MuJoCo's default (GLFW) works for the viewer and videos.
if not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robot_rl.cli.checks import check_numbers, check_outputs
from robot_rl.cli.commands import (
    OUTPUTS,
    Bench,
    Collect,
    Command,
    Convert,
    DataCheck,
    DataExportLeRobot,
    DataFromBag,
    DataImportLeRobot,
    DataInfo,
    DataMerge,
    DataRender,
    DataReplay,
    DataSplit,
    DataView,
    Envs,
    Export,
)
from robot_rl.cli.errors import UsageError, describe_os_error, one_line, parse
from robot_rl.evaluation.evaluate import EvalConfig
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.pipeline import Pipeline
from robot_rl.policies.config import TrainBC, TrainDiffusion
from robot_rl.rl.config import TrainResidual

if TYPE_CHECKING:
    from robot_rl.data.collect import CollectStatus
    from robot_rl.teleop.view import LiveView


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
        if report.get("monitor_false_alarms"):
            from robot_rl.monitor.metrics import format_false_alarms

            print(f"  {format_false_alarms(report['monitor_false_alarms'])}")
    if report.get("takeover", "none") != "none":
        quit_note = " (quit early)" if report["quit"] else ""
        print(f"takeover ({report['takeover']}): {report['intervention_steps']} human steps{quit_note}")
    if "record" in report:
        print(f"recorded: {report['record']}")
    if "log" in report:
        print(f"log: {report['log']}")
    if "video" in report:
        print(f"video: {report['video']}")
    if "plot" in report:
        print(f"training curves: {report['plot']}")
    if "execution" in report:
        print(f"ran on{_workers_note(report['execution'])[1:]}")


def _workers_note(execution: dict) -> str:
    """``, 2 worker processes (1 run again after a worker died: [3])``: how a parallel run went, in one line."""
    rerun = execution["rerun_episodes"]
    again = f" ({len(rerun)} run again after a worker died: {rerun})" if rerun else ""
    if execution["backend"] == "ray":
        nodes = len({w["node"] for w in execution["where"]})
        return f", {execution['workers']} Ray workers on {nodes} node{'s' * (nodes != 1)}{again}"
    return f", {execution['workers']} worker processes{again}"


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
        from robot_rl.export.card import record_robustness

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


def _data(command: object) -> int:
    import os

    if isinstance(command, DataRender | DataExportLeRobot):
        os.environ.setdefault("MUJOCO_GL", "osmesa")
    from robot_rl import data

    if isinstance(command, DataInfo):
        print(data.format_info(data.info(command.path)))
    elif isinstance(command, DataReplay):
        print(data.format_replay(data.replay(command.path)))
    elif isinstance(command, DataRender):
        print(data.render(command.path, command.out))
    elif isinstance(command, DataMerge):
        print(data.merge(command.a, command.b, command.out, drop_duplicates=command.drop_duplicates))
    elif isinstance(command, DataCheck):
        report = data.check(command.path)
        print(data.format_check(report))
        return 0 if report["ok"] else 2
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
    elif isinstance(command, DataExportLeRobot | DataImportLeRobot):
        from robot_rl.data import lerobot

        if isinstance(command, DataExportLeRobot):
            size = {"width": command.width, "height": command.height}
            summary = lerobot.export_lerobot(command.path, command.out, video=command.video, progress=True, **size)
            print(lerobot.format_export(summary))
        else:
            print(lerobot.format_import(lerobot.import_lerobot(command.root, command.out, env_id=command.env)))
    elif isinstance(command, DataView):
        from robot_rl.data.mcap_view import demos_to_mcap

        summary = demos_to_mcap(command.path, command.out)
        notes = "".join(f"; {note}" for note in summary["notes"])
        print(
            f"{summary['out']}: {len(summary['episodes'])} demos ({summary['steps']} steps) of {summary['env_id']}, "
            f"{sum(summary['messages'].values())} messages on {len(summary['messages'])} channels{notes}. Open it in "
            "Foxglove (layout: docs/foxglove/robot_rl_layout.json)."
        )
    return 0


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["bench"]:
        return _bench(args[1:])
    if args[:1] == ["sweep"]:
        return _sweep(args[1:])
    command = parse(Command, argv, description="robot_rl: sim-to-real robot learning.")
    check_numbers(command)
    check_outputs(command, OUTPUTS.get(type(command), {}))
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
                workers=command.workers,
                ray_address=command.ray_address,
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
            + (_workers_note(summary["execution"]) if "execution" in summary else "")
        )
    elif isinstance(
        command,
        DataInfo
        | DataReplay
        | DataRender
        | DataMerge
        | DataSplit
        | DataCheck
        | DataFromBag
        | DataExportLeRobot
        | DataImportLeRobot
        | DataView,
    ):
        return _data(command)
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
        import os

        from robot_rl.policies.train import train

        metrics = train(command)
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for the run it wrote
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
            print(f"run: {command.out}\nfinal: {shown}")
            print(f"evaluate: robot-rl eval --policy {command.out} --episodes 100")
    elif isinstance(command, Export):
        from robot_rl.rl.residual_export import export_training_run

        meta = export_training_run(command.run, command.out, command.inference_steps, overwrite=command.overwrite)
        steps = f", {meta.inference_steps} DDIM steps" if meta.inference_steps is not None else ""
        kind = meta.policy_type + (f" + {meta.residual['algo']} residual" if meta.residual else "")
        print(
            f"{command.out}: {kind} policy for {meta.env_id}{steps}; onnxruntime matches torch to "
            f"{meta.export_check['max_abs_diff']:.1g}\npolicy.onnx sha256 {meta.onnx_sha256}"
        )
        if command.eval_episodes:
            import os

            from robot_rl.evaluation.evaluate import evaluate
            from robot_rl.export.card import record_eval

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
    elif isinstance(command, Convert):
        from robot_rl.rl.agent_io import convert_zip

        written = convert_zip(command.run, trust_pickle=command.trust_pickle)
        print(f"{command.run}: wrote {', '.join(p.name for p in written)}; the zips are no longer read")
    elif isinstance(command, MonitorCalibrate | MonitorEval):
        from robot_rl.monitor.commands import run_command

        run_command(command, sys.argv[1:] if argv is None else argv)
    return 0


def _sweep(args: list[str]) -> int:
    """``robot-rl sweep [OPTIONS] -- train ...``: a training command over seeds and a grid (robot_rl.sweep).

    Each grid point's command line is parsed here first, as `robot-rl train` would: a trial it refuses is
    reported as failed with that line and never started. Exit 1 when any trial failed.
    """
    from robot_rl.sweep import Sweep, Trial, run_sweep
    from robot_rl.sweep.config import check_command
    from robot_rl.sweep.summary import format_markdown

    split = args.index("--") if "--" in args else len(args)
    options = parse(Sweep, args[:split], description=one_line(Sweep.__doc__ or ""), prefix=("sweep",))
    command = args[split + 1 :]
    check_numbers(options)
    check_outputs(options, OUTPUTS[Sweep])
    check_command(command, options.grid)
    verdicts: dict[tuple[tuple[str, str], ...], str | None] = {}

    def refused(trial: Trial) -> str | None:
        if trial.point not in verdicts:
            try:
                check_numbers(parse(Command, list(trial.argv), description=""))
                verdicts[trial.point] = None
            except (UsageError, ValueError) as err:
                verdicts[trial.point] = one_line(str(err))
        return verdicts[trial.point]

    if options.dry_run:
        from robot_rl.sweep import trials

        problems = 0
        for trial in trials(options, command):
            reason = refused(trial)
            problems += reason is not None
            print(f"{trial.name}: robot-rl {shlex.join(trial.argv)}" + (f"\n  refused: {reason}" if reason else ""))
        return 1 if problems else 0
    summary = run_sweep(options, command, refused)
    print("\n" + format_markdown(summary), end="")
    print(
        f"summary: {options.out / 'summary.md'}, {options.out / 'summary.json'}"
        + (f", {summary['curves']}" if summary["curves"] else "")
    )
    for failed in summary["failed"]:
        print(f"robot-rl: trial {failed['trial']} failed: {failed['error']}", file=sys.stderr)
    return 1 if summary["failed"] else 0


def _bench(args: list[str]) -> int:
    """``robot-rl bench NAME [options]``: one benchmark of the bench/ suite (the only place robot_rl imports it)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "bench" / "harness.py").is_file():
        raise ValueError(f"`robot-rl bench` runs the suite of the source checkout; {root / 'bench'} was not found.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from bench import harness

    if args[:1] in (["--list"], ["list"]):
        print(harness.format_list())
        return 0
    if args[:1] in (["-h"], ["--help"]):
        print(
            "usage: robot-rl bench NAME [options]   (robot-rl bench NAME --help: its options)\n\n"
            f"{Bench.__doc__}\n\n{harness.format_list()}"
        )
        return 0
    if not args or args[0].startswith("-"):
        got = f"; got {args[0]}" if args else ""
        raise UsageError(
            f"`robot-rl bench` needs a benchmark name first: one of {', '.join(harness.REGISTRY)}{got} "
            "(`robot-rl bench --list` says what each measures)"
        )
    name, rest = args[0], args[1:]
    benchmark = harness.load(name)
    summary = harness.summaries()[name]
    options = parse(benchmark.options, rest, description=summary, prefix=("bench", name))
    check_numbers(options)
    check_outputs(options, {"out": "folder"})
    harness.run(benchmark, options, command=shlex.join(["robot-rl", "bench", *args]))
    return 0


def main() -> None:
    """Console entry point: user errors print one line and exit 2, never a traceback wall."""
    try:
        code = run()
    except BrokenPipeError:  # output piped into `head` and the like
        code = 0
    except (UsageError, ValueError, RuntimeError) as err:
        print(f"robot-rl: error: {one_line(str(err))}", file=sys.stderr)
        code = 2
    except OSError as err:  # permission denied, a missing folder, a full disk, a folder where a file goes
        print(f"robot-rl: error: {describe_os_error(err)}", file=sys.stderr)
        code = 2
    except SystemExit as stop:  # a benchmark script refusing its input with a message
        if isinstance(stop.code, str):
            print(f"robot-rl: error: {one_line(stop.code)}", file=sys.stderr)
            code = 2
        else:
            raise
    except KeyboardInterrupt:
        print("robot-rl: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
