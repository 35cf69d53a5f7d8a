"""The calibration budget and the rollouts that meet it: how many successes the promise needs, then run them.

The conformal promise (:mod:`robot_rl.monitor.guarantee`) is about the false-alarm rate averaged over
calibrations; the rate of one calibration is spread around it (a Beta distribution whose width
shrinks as ``1 / sqrt(n)``). :func:`plan` turns the level ``alpha`` and the width asked of that
spread into a number of calibration successes, and, with the policy's success rate on its card, the
rollouts to expect. :func:`collect` then runs rollouts, in batches and optionally on several worker
processes (:mod:`robot_rl.monitor.rollout_pool`), until the calibration split holds that many successes.

The rollouts are split by index, never by outcome or score: rollout ``i`` belongs to the *fit* split
iff ``floor((i + 1) share) > floor(i share)`` (a ``share`` of them, interleaved). Which rollouts are
run depends only on how many successes there are, so the calibration successes stay exchangeable
with the successes of deployment.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from robot_rl.monitor.guarantee import calibration_budget, check_alpha, min_calibration_size

BATCH = 50
"""Rollouts per batch (per worker task) while collecting."""


def in_fit_split(index: int, share: float) -> bool:
    """Whether rollout ``index`` (0-based, in seed order) belongs to the fit split."""
    return math.floor((index + 1) * share) > math.floor(index * share)


def check_fit_share(share: float) -> None:
    """Refuse a fit share outside (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(
            "`fit_share` (share of the calibration rollouts that fit the progress envelope and the joint "
            f"detectors' normalization) must be in (0, 1), e.g. 0.25. Got {share}."
        )


@dataclasses.dataclass(frozen=True)
class Budget:
    """How many calibration rollouts a promise needs."""

    alpha: float
    width: float
    """Asked width of the interval of this calibration's false-alarm rate."""
    interval_level: float
    confidence: float | None
    successes: int
    """Successes needed in the calibration split."""
    minimum: int
    """The fewest calibration-split successes with a finite threshold at every detector's level."""
    fit_share: float
    success_rate: float | None
    """The policy's success rate on its card (None: unknown)."""

    @property
    def rollouts(self) -> int | None:
        """Rollouts expected at :attr:`success_rate` (None when it is unknown)."""
        if not self.success_rate:
            return None
        return math.ceil(self.successes / (self.success_rate * (1.0 - self.fit_share)))

    def describe(self) -> str:
        """Two lines for the terminal."""
        mode = "on average" if self.confidence is None else f"with probability {self.confidence:g}"
        expect = (
            f"about {self.rollouts} rollouts at the card's success rate {self.success_rate:.2f}"
            if self.rollouts is not None
            else "the rollouts run until they are there"
        )
        return (
            f"budget: false alarms <= {self.alpha:g} {mode}, this calibration's rate within an interval of width "
            f"{self.width:g} ({self.interval_level:.0%}): {self.successes} calibration successes (at least "
            f"{self.minimum}),\n  plus the fit split ({self.fit_share:g} of the rollouts): {expect}"
        )


def plan(
    alpha: float,
    width: float | None,
    interval_level: float,
    confidence: float | None,
    fit_share: float,
    progress_share: float,
    success_rate: float | None,
) -> Budget:
    """The calibration budget (see the module docstring).

    Args:
        alpha: False-alarm level.
        width: Width of the interval of the calibrated rate (None: ``alpha``).
        interval_level: Mass of that interval.
        confidence: None (marginal promise) or the training-conditional confidence.
        fit_share: Share of the rollouts in the fit split.
        progress_share: ``fiper_progress_split``'s share of ``alpha`` for goal progress (its parts need
            ``min_calibration_size(share * alpha)`` successes each).
        success_rate: The policy's success rate (None: unknown).
    """
    check_alpha(alpha)
    check_fit_share(fit_share)
    width = alpha if width is None else width
    smallest = min(progress_share, 1.0 - progress_share) * alpha
    part = None if confidence is None else 1.0 - 0.5 * (1.0 - confidence)
    minimum = max(min_calibration_size(alpha, confidence), min_calibration_size(smallest, part))
    needed = max(calibration_budget(alpha, width, interval_level, confidence), minimum)
    return Budget(alpha, width, interval_level, confidence, needed, minimum, fit_share, success_rate)


def collect(
    run: Callable[[list[int]], list[Any]],
    first_seed: int,
    fit_share: float,
    successes: int | None,
    episodes: int | None,
    max_episodes: int,
    log: Callable[[str], None] = print,
    parallel: Callable[[list[list[int]]], list[list[Any]]] | None = None,
    workers: int = 1,
) -> list[Any]:
    """Run calibration rollouts: ``episodes`` of them, or until the calibration split has ``successes`` successes.

    Args:
        run: Runs the rollouts of a list of seeds in this process; returns traces with ``.success``.
        first_seed: Seed of rollout 0 (rollout ``i`` uses ``first_seed + i``).
        fit_share: Share of the rollouts in the fit split (:func:`in_fit_split`).
        successes: Successes wanted in the calibration split (with ``episodes`` None).
        episodes: A fixed number of rollouts (None: run until ``successes``).
        max_episodes: Stop there even if ``successes`` is not reached.
        log: One-line progress messages.
        parallel: Runs several seed lists at once (one per worker), in order; None: ``run`` one by one.
        workers: How many seed lists ``parallel`` takes at a time.

    Returns:
        The traces in seed order.
    """
    traces: list[Any] = []

    def calibration_successes() -> int:
        return sum(t.success for i, t in enumerate(traces) if not in_fit_split(i, fit_share))

    target = episodes if episodes is not None else max_episodes
    while len(traces) < target and (episodes is not None or calibration_successes() < (successes or 0)):
        start = first_seed + len(traces)
        lists = [
            list(range(start + j * BATCH, min(start + (j + 1) * BATCH, first_seed + target)))
            for j in range(workers if parallel is not None else 1)
        ]
        lists = [s for s in lists if s]
        for batch in parallel(lists) if parallel is not None else [run(lists[0])]:
            traces += batch
            if episodes is None and calibration_successes() >= (successes or 0):
                break  # where one process stops: the batches past it are dropped (the same calibration)
        log(f"  {len(traces)} rollouts, {sum(t.success for t in traces)} successes, {calibration_successes()} in the "
            "calibration split")  # fmt: skip
    return traces
