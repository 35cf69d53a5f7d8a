"""What ``robot-rl monitor calibrate|eval`` print: the CLI (robot_rl.cli.main) parses, this runs."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from robot_rl.monitor.config import MonitorCalibrate, MonitorEval


def run_command(command: MonitorCalibrate | MonitorEval, argv: Sequence[str] | None = None) -> None:
    """Run a parsed ``monitor`` subcommand and print its summary.

    Args:
        command: The parsed options.
        argv: The command line after ``robot-rl`` (shown in the eval report).

    Raises:
        FileNotFoundError, ValueError: one-line user errors (the CLI prints them and exits 2).
    """
    if isinstance(command, MonitorCalibrate):
        from robot_rl.monitor.calibrate import budget_for, calibrate, format_calibration
        from robot_rl.monitor.failure_monitor import CALIBRATION_FILE, monitor_dir

        if command.budget_only:
            print(budget_for(command).describe())
            return
        calibration = calibrate(command)
        print(format_calibration(calibration, monitor_dir(command.policy) / CALIBRATION_FILE))
        print(f"evaluate: robot-rl monitor eval --policy {command.policy}")
        return
    from robot_rl.monitor.evaluate import evaluate_monitor

    line = None if argv is None else "robot-rl " + " ".join(shlex.quote(a) for a in argv)
    report = evaluate_monitor(command, command=line)
    print((command.out / "report.md").read_text(), end="")
    print(f"report: {command.out / 'report.md'} and {command.out / 'report.json'} ({report['wall_time_s']:.0f} s)")
