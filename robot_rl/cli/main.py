"""`robot-rl`: list environments, evaluate policies (more verbs arrive with later issues)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal

import tyro

from robot_rl.evaluation.evaluate import EvalConfig


@dataclasses.dataclass(frozen=True)
class Envs:
    """List the registered environments with a one-line description each."""


BENCHMARKS = {"envs": "bench_envs.py", "quadrotor": "bench_quadrotor.py"}


@dataclasses.dataclass(frozen=True)
class Bench:
    """Run a benchmark from bench/: `envs` (PandaPush against FetchPush-v4) or `quadrotor`."""

    which: tyro.conf.Positional[Literal["envs", "quadrotor"]]
    """Which benchmark: envs (bench/bench_envs.py) or quadrotor (bench/bench_quadrotor.py)."""
    out: Path = Path("bench/results")
    """Folder for the markdown and JSON results."""


Command = (
    Annotated[Envs, tyro.conf.subcommand("envs")]
    | Annotated[EvalConfig, tyro.conf.subcommand("eval")]
    | Annotated[Bench, tyro.conf.subcommand("bench")]
)


def _envs() -> None:
    from robot_rl.envs.registry import ENV_SPECS

    width = max(len(k) for k in ENV_SPECS)
    for spec in ENV_SPECS.values():
        print(f"{spec.id:<{width}}  {spec.description}")


def _print_report(report: dict) -> None:
    low, high = report["success_ci95"]
    print(
        f"\n{report['env']}  policy={report['policy']}  episodes={report['episodes']}  seed={report['seed']}  "
        f"randomize={report['randomize']}\n"
        f"| success rate | 95% CI | mean return | mean length | wall time |\n"
        f"|---|---|---|---|---|\n"
        f"| {report['success_rate']:.3f} | [{low:.3f}, {high:.3f}] | {report['mean_return']:.2f} | "
        f"{report['mean_episode_length']:.1f} | {report['wall_time_s']:.1f} s |"
    )
    if "video" in report:
        print(f"video: {report['video']}")


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    command = tyro.cli(Command, args=argv, prog="robot-rl", description="robot_rl: sim-to-real robot learning.")
    if isinstance(command, Envs):
        _envs()
    elif isinstance(command, EvalConfig):
        from robot_rl.evaluation.evaluate import evaluate

        report = evaluate(command)
        _print_report(report)
        if command.json is not None:
            print(f"report: {command.json}")
    elif isinstance(command, Bench):
        import importlib.util

        path = Path(__file__).resolve().parents[2] / "bench" / BENCHMARKS[command.which]
        if not path.is_file():
            raise ValueError(f"benchmark script {path} not found (it ships with the source checkout).")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.run(out_dir=command.out)
    return 0


def main() -> None:
    """Console entry point: user errors print one line and exit 2, never a traceback wall."""
    try:
        code = run()
    except (ValueError, FileNotFoundError) as err:
        print(f"robot-rl: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("robot-rl: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
