"""What a split-conformal calibration promises about false alarms, and how many successes it takes.

Setting: ``n`` successful calibration rollouts, each reduced to one score ``S_i`` (the rollout's
maximum of the running statistic: the monitor alarms at some chunk iff that maximum is above the
threshold), and the threshold ``S_(k)``, the ``k``-th smallest. A new successful rollout that is
exchangeable with the calibration ones (same policy, task, conditions and controller) then gets:

- **marginal promise** (``confidence=None``, split conformal): ``P(S_new > S_(k)) <= (n + 1 - k) / (n + 1)``.
  With ``k = ceil((n + 1)(1 - alpha))`` this is at most ``alpha``. The probability is over the
  calibration rollouts *and* the new one: averaged over calibrations, the false-alarm rate is at
  most ``alpha``.
- **the rate of this calibration**: the false-alarm rate given the calibration set, ``FA = P(S_new >
  S_(k) | S_1..S_n)``, is itself random: for continuous scores ``FA ~ Beta(n + 1 - k, k)`` (the
  ``k``-th of ``n`` uniform order statistics; Vovk 2012, Angelopoulos & Bates 2021 section 3.2), mean
  ``(n + 1 - k) / (n + 1)``. Ties only lower it. :func:`promise` states the mean and a central interval.
- **training-conditional promise** (``confidence=c``, e.g. 0.9): ``k`` chosen so that ``P(FA > alpha)
  <= 1 - c``: this calibration's rate is at most ``alpha`` with probability ``c``, at a higher
  threshold. ``P(FA > alpha) = P(Binom(n, alpha) <= n - k)``.

No finite threshold has the marginal promise with fewer than ``1 / alpha - 1`` scores
(:func:`min_calibration_size`); :func:`calibration_budget` gives the ``n`` whose interval is
narrower than a requested width.

numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

DEFAULT_INTERVAL_LEVEL = 0.9
"""Probability mass of the stated interval of the false-alarm rate."""
_TOL = 1e-12  # keeps e.g. 10 * 0.9 at 9, not 10 (floating-point products of exact integers)


def check_alpha(alpha: float, option: str = "alpha") -> None:
    """Refuse an ``alpha`` outside (0, 1) with one line."""
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(
            f"`{option}` (the false-alarm level on successful rollouts) must be in (0, 1), e.g. 0.05. Got {alpha}."
        )


def check_confidence(confidence: float | None) -> None:
    """Refuse a ``confidence`` outside (0, 1) (None: the marginal promise)."""
    if confidence is not None and not 0.0 < confidence < 1.0:
        raise ValueError(
            "`confidence` (probability that this calibration's false-alarm rate is at most alpha) must be in (0, 1), "
            f"e.g. 0.9, or None for the marginal promise. Got {confidence}."
        )


def binom_cdf(j: int, n: int, p: float) -> np.ndarray:
    """``P(Binom(n, p) <= i)`` for ``i = 0..j`` (exact, in log space). Shape: (j + 1,)."""
    j = min(int(j), n)
    if j < 0:
        return np.zeros(0)
    if p <= 0.0:
        return np.ones(j + 1)
    if p >= 1.0:
        return np.array([0.0] * j + [1.0 if j == n else 0.0])
    i = np.arange(1, j + 1, dtype=np.float64)
    log_choose = np.concatenate([[0.0], np.cumsum(np.log((n - i + 1) / i))])
    k = np.arange(j + 1, dtype=np.float64)
    log_pmf = log_choose + k * math.log(p) + (n - k) * math.log1p(-p)
    top = log_pmf.max()
    return np.minimum(np.cumsum(np.exp(log_pmf - top)) * math.exp(top), 1.0)


def conformal_rank(n: int, alpha: float, confidence: float | None = None) -> int:
    """The rank ``k`` of the threshold among ``n`` sorted scores (``n + 1``: no finite threshold).

    Args:
        n: Calibration scores.
        alpha: False-alarm level in (0, 1).
        confidence: None for the marginal promise (``k = ceil((n + 1)(1 - alpha))``); else the probability
            that the calibrated rate is at most ``alpha`` (the smallest ``k`` with ``P(FA > alpha) <= 1 - c``).
    """
    check_alpha(alpha)
    check_confidence(confidence)
    if n < 1:
        return n + 1
    if confidence is None:
        return min(math.ceil((n + 1) * (1.0 - alpha) - _TOL), n + 1)
    # FA ~ Beta(j, n + 1 - j) with j = n + 1 - k: P(FA > alpha) = P(Binom(n, alpha) <= j - 1). Largest such j.
    # cdf is increasing, so {i: cdf[i] <= 1 - c} is a prefix 0..m and j = m + 1 (0 when it is empty).
    ok = np.flatnonzero(binom_cdf(n - 1, n, alpha) <= 1.0 - confidence)
    j = min(int(ok[-1]) + 1, n) if ok.size else 0
    return n + 1 - j


def min_calibration_size(alpha: float, confidence: float | None = None) -> int:
    """The fewest calibration scores with a finite threshold at ``alpha``: ``ceil(1 / alpha - 1)`` (marginal)."""
    check_alpha(alpha)
    check_confidence(confidence)
    if confidence is None:
        n = max(1, math.ceil(1.0 / alpha - 1.0 - _TOL))
        while conformal_rank(n, alpha) > n:
            n += 1
        return n
    # Training-conditional: one score above the threshold is allowed once (1 - alpha)^n <= 1 - confidence.
    return max(1, math.ceil(math.log(1.0 - confidence) / math.log1p(-alpha) - _TOL))


def check_calibration_size(n: int, alpha: float, confidence: float | None = None, what: str = "") -> None:
    """Refuse a calibration set too small for ``alpha`` (one line, with the numbers)."""
    need = min_calibration_size(alpha, confidence)
    if n < need:
        rule = "n >= 1/alpha - 1" if confidence is None else f"(1 - alpha)^n <= 1 - confidence ({confidence:g})"
        raise ValueError(
            f"alpha={alpha:g} needs at least {need} successful calibration rollouts ({rule}); got {n}{what}. Run more "
            "calibration episodes or choose a larger alpha."
        )


def _beta_quantile(q: float, a: int, b: int) -> float:
    """Quantile ``q`` of Beta(a, b) for integers a, b >= 1: ``P(Beta <= x) = P(Binom(a + b - 1, x) >= a)``."""
    n = a + b - 1
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if 1.0 - binom_cdf(a - 1, n, mid)[-1] < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclasses.dataclass(frozen=True)
class Promise:
    """The false-alarm promise of a detector: one conformal threshold, an AND of two, or a union of two parts."""

    alpha: float
    """The level asked for."""
    n: int
    """Calibration scores the threshold is ranked among."""
    k: int
    """Rank of the threshold (``n + 1``: none finite, the detector never alarms; a union: its FIPER part's)."""
    confidence: float | None
    """None: marginal promise; else the probability that this calibration's rate is at most ``alpha``."""
    expected: float
    """Mean false-alarm rate over calibrations: ``(n + 1 - k) / (n + 1)`` (a union: the sum of its parts',
    an upper bound; an AND: at most this)."""
    interval: tuple[float, float]
    """Central interval of this calibration's false-alarm rate (``interval_level`` of the Beta mass; a union:
    its upper end bounds the rate with the same upper tail)."""
    interval_level: float = DEFAULT_INTERVAL_LEVEL
    """Mass of :attr:`interval`."""
    p_above_alpha: float = 0.0
    """Probability that this calibration's rate is above ``alpha`` (a union: an upper bound)."""
    kind: str = "conformal"
    """``conformal`` (one threshold), ``and`` (two thresholds at ``alpha``, both must exceed: at most
    ``alpha``, usually well below) or ``union`` (two parts whose levels sum to ``alpha``)."""

    def to_json(self) -> dict[str, Any]:
        """Plain form (with :meth:`describe` as ``text``)."""
        return dataclasses.asdict(self) | {"interval": list(self.interval), "text": self.describe()}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Promise:
        """Inverse of :meth:`to_json`."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k in names}
        return cls(**fields | {"interval": tuple(float(v) for v in value["interval"])})

    def describe(self) -> str:
        """One line: the promise, the mean and the interval."""
        lo, hi = self.interval
        if self.k > self.n:
            return f"never alarms: {self.n} calibration successes are too few for alpha={self.alpha:g}"
        head = f"false alarms on successes <= {self.alpha:g}" + (
            " on average over calibrations" if self.confidence is None else f" with probability {self.confidence:g}"
        )
        how = {
            "conformal": f"split conformal, n={self.n}",
            "and": f"both of two split-conformal thresholds, n={self.n}; usually well below",
            "union": f"union of two split-conformal parts, n={self.n}",
        }[self.kind]
        mean = "expected" if self.kind == "conformal" else "expected at most"
        return (
            f"{head} ({how}): {mean} {self.expected:.3f}, {self.interval_level:.0%} interval [{lo:.3f}, {hi:.3f}] "
            "for this calibration"
        )


def promise(
    n: int, alpha: float, confidence: float | None = None, interval_level: float = DEFAULT_INTERVAL_LEVEL
) -> Promise:
    """The promise of a threshold ranked among ``n`` scores at ``alpha`` (see the module docstring)."""
    if not 0.0 < interval_level < 1.0:
        raise ValueError(f"`interval_level` must be in (0, 1), e.g. 0.9. Got {interval_level}.")
    k = conformal_rank(n, alpha, confidence)
    if k > n:
        return Promise(alpha, n, k, confidence, 0.0, (0.0, 0.0), interval_level)
    a, b = n + 1 - k, k
    tail = 0.5 * (1.0 - interval_level)
    interval = (_beta_quantile(tail, a, b), _beta_quantile(1.0 - tail, a, b))
    above = float(binom_cdf(n - k, n, alpha)[-1])  # P(Beta(a, b) > alpha) = P(Binom(n, alpha) <= a - 1)
    return Promise(alpha, n, k, confidence, a / (n + 1), interval, interval_level, above)


def union_promise(
    parts: list[Promise], alpha: float, confidence: float | None, interval_level: float = DEFAULT_INTERVAL_LEVEL
) -> Promise:
    """The promise of a detector that alarms when any of ``parts`` does (their levels sum to ``alpha``).

    The union's rate is at most the sum of the parts' rates: expected at most the sum of their means, above the
    sum of their upper ends with at most the sum of their upper tails (pass parts whose intervals have half the
    tail), at least the largest lower end.
    """
    live = [p for p in parts if p.k <= p.n]  # a part without a finite threshold never alarms: it adds nothing
    if not live:
        first = parts[0]
        return Promise(alpha, first.n, first.n + 1, confidence, 0.0, (0.0, 0.0), interval_level, kind="union")
    interval = (max(p.interval[0] for p in live), min(1.0, sum(p.interval[1] for p in live)))
    return Promise(
        alpha, live[0].n, live[0].k, confidence, sum(p.expected for p in live), interval, interval_level,
        min(1.0, sum(p.p_above_alpha for p in live)), "union",
    )  # fmt: skip


def calibration_budget(
    alpha: float, width: float, interval_level: float = DEFAULT_INTERVAL_LEVEL, confidence: float | None = None
) -> int:
    """Calibration successes needed so that the interval of the false-alarm rate is at most ``width`` wide.

    The width shrinks about as ``1 / sqrt(n)`` (with small steps where ``k`` jumps): the smallest ``n`` found by
    bisection on ``[min_calibration_size, 10**6]``.

    Raises:
        ValueError: ``alpha`` or ``width`` outside (0, 1).
    """
    check_alpha(alpha)
    if not 0.0 < width < 1.0:
        raise ValueError(
            f"`width` (of the false-alarm rate's interval) must be in (0, 1), e.g. {alpha:g}. Got {width}."
        )

    def narrow(n: int) -> bool:
        lo, hi = promise(n, alpha, confidence, interval_level).interval
        return hi - lo <= width

    lo, hi = min_calibration_size(alpha, confidence), 1
    while not narrow(max(hi, lo)):
        hi = 2 * max(hi, lo)
        if hi > 10**6:
            raise ValueError(f"an interval of width {width:g} at alpha={alpha:g} needs over a million successes.")
    hi = max(hi, lo)
    while lo < hi:
        mid = (lo + hi) // 2
        if narrow(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo
