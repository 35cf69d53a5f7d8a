"""``robot-rl sweep``: one training command over several seeds and a small grid, on Ray or local processes.

- :mod:`robot_rl.sweep.config`: the options (:class:`Sweep`) and the trials they expand into;
- :mod:`robot_rl.sweep.runner`: running the trials (Ray tasks or local processes), resumable;
- :mod:`robot_rl.sweep.summary`: the summary table (markdown and JSON) and the curves' plot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from robot_rl.sweep.config import Sweep, Trial, trials


def run_sweep(
    options: Sweep,
    command: Sequence[str],
    refused: Callable[[Trial], str | None] = lambda trial: None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the trials that are not complete yet, then write the summary; returns it (``failed`` lists errors)."""
    from robot_rl.sweep.runner import run_trials
    from robot_rl.sweep.summary import write_summary

    records = run_trials(options, command, refused, echo)
    return write_summary(options, command, records)


__all__ = ["Sweep", "Trial", "run_sweep", "trials"]
