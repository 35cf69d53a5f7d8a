"""Calibration rollouts on workers stop where one process stops: the same rollouts, so the same calibration.

:func:`robot_rl.monitor.budget.collect` runs batches until the calibration split holds the budget's successes; on
workers a round runs several batches at once, and the batches past the one where one process would stop are dropped.
(The traces of the rollouts themselves are checked against one process in test_failure_monitor.py.)
"""

from __future__ import annotations

import dataclasses

import pytest

from robot_rl.monitor import budget


@dataclasses.dataclass
class Trace:
    seed: int
    success: bool


def outcome(seed: int) -> Trace:
    return Trace(seed, seed % 3 != 0)  # two successes in three


@pytest.mark.parametrize("workers", [2, 3, 5])
@pytest.mark.parametrize("episodes", [None, 11])
def test_workers_run_the_rollouts_one_process_runs(monkeypatch, workers, episodes):
    monkeypatch.setattr(budget, "BATCH", 4)
    args = (100, 0.25, 9, episodes, 40)
    serial = budget.collect(lambda seeds: [outcome(s) for s in seeds], *args, log=lambda _: None)
    rounds = []

    def parallel(lists):
        rounds.append(len(lists))
        return [[outcome(s) for s in seeds] for seeds in lists]

    on_workers = budget.collect(lambda seeds: [], *args, log=lambda _: None, parallel=parallel, workers=workers)
    assert on_workers == serial
    assert max(rounds) == workers or sum(rounds) * 4 >= len(serial)
