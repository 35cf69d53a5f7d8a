"""Split conformal thresholds, windowed scores and FIPER's alarm rule.

Each failure score (RND, action-chunk entropy) is computed once per action chunk. The monitor
aggregates it over a sliding window: the mean of the last ``window`` chunk scores (fewer at the
start of an episode). A signal *exceeds* when its windowed score is strictly above its threshold.

Calibration (split conformal prediction, per signal): for each of ``n`` successful calibration
rollouts take the episode's largest windowed score ``S_i = max_t w_t``. The threshold is the
``k``-th smallest ``S_i`` with ``k = ceil((n + 1) (1 - alpha))``, i.e. the empirical
``ceil((n + 1)(1 - alpha)) / n`` quantile. If a new successful rollout is exchangeable with the
calibration ones, ``P(S_new > threshold) <= alpha``: the signal raises a false alarm at any time
during a successful episode with probability at most ``alpha``. When ``k > n`` (fewer than
``1 / alpha - 1`` successful rollouts) no finite threshold has the guarantee: ``inf``.

Rules: ``both`` (FIPER: alarm when the RND *and* the entropy windowed scores exceed their
thresholds at the same chunk), ``rnd`` or ``entropy`` alone, ``either``, ``progress`` (the goal
progress score of :mod:`robot_rl.monitor.progress` alone) and ``both_or_progress`` (FIPER's rule or
the progress score). A signal missing from the scores (``progress`` on a task without goals) never
exceeds.

Detectors (a rule with its thresholds), all calibrated on the same rollouts at the same ``alpha``:

- ``fiper``: the ``both`` rule with *jointly* calibrated thresholds, so that the rule itself (not each
  signal) has false-alarm probability ``alpha``. Each signal's windowed scores are rank-transformed
  by the pooled windowed scores of every chunk of the successful calibration rollouts
  (``F_s(x)`` = share of them ``<= x``); a rollout's score is ``max_t min_s F_s(w_s,t)``; its
  conformal threshold ``lambda`` gives per-signal thresholds ``tau_s`` = the pooled score of rank
  ``lambda * N + 1`` (``w > tau_s`` for both signals  <=>  ``min_s F_s(w_s) > lambda``). The rank
  transform is fitted on the calibration rollouts themselves, so the guarantee is approximate (the
  measured false-alarm rates are in the report).
- ``fiper_marginal``: the ``both`` rule with each signal's own threshold at ``alpha`` (the published
  FIPER recipe). Requiring both signals makes it stricter than either: false alarms well below
  ``alpha``, at a cost in detection.
- ``rnd``, ``entropy``, ``progress``: one signal alone, its threshold at ``alpha``.
- ``fiper_progress``: the ``both_or_progress`` rule, jointly calibrated like ``fiper`` with the rule's
  rank statistic ``max(min(F_rnd, F_entropy), F_progress)``: one ``lambda`` for the three signals.
  Goal tasks only (elsewhere its thresholds, like ``progress``'s, are ``inf``: it never fires).
- ``fiper_progress_split``: the same ``both_or_progress`` rule with the false-alarm budget split
  between its two parts (a union bound): FIPER's rule jointly calibrated at ``(1 - share) * alpha``
  and goal progress alone at ``share * alpha`` (``share``: ``progress_share``, default
  :data:`DEFAULT_PROGRESS_SHARE`). Either part raises a false alarm on a successful rollout with
  probability at most its level, so the pair at most ``alpha`` (approximately for the FIPER part,
  exactly for the marginal one). Unlike the joint ``lambda``, the split lets the early FIPER signals
  keep most of the budget while the progress score, near-certain but late, needs only a little:
  on PandaPush that moved the median lead time from 0.72 s (joint) to 1.04 s at alpha 0.1 for the
  same detection (bench/results/monitor_progress.md). Goal tasks only.

numpy only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np

Rule = Literal["both", "rnd", "entropy", "either", "progress", "both_or_progress"]
RULES: tuple[str, ...] = get_args(Rule)
SIGNALS: tuple[str, ...] = ("rnd", "entropy", "progress")
"""The failure scores, in the order the rules name them (``progress``: goal tasks only)."""
DETECTORS: dict[str, str] = {
    "fiper": "both",
    "fiper_marginal": "both",
    "rnd": "rnd",
    "entropy": "entropy",
    "progress": "progress",
    "fiper_progress": "both_or_progress",
    "fiper_progress_split": "both_or_progress",
}
"""Detector name -> its alarm rule."""
DEFAULT_PROGRESS_SHARE = 0.3
"""``fiper_progress_split``: the share of alpha given to goal progress (FIPER's rule gets the rest). Chosen
on PandaPush's three development seed blocks (0.1 to 0.5 tried) and confirmed on two fresh ones
(bench/results/monitor_progress.md)."""
RULE_SIGNALS: dict[str, tuple[str, ...]] = {
    "both": ("rnd", "entropy"),
    "rnd": ("rnd",),
    "entropy": ("entropy",),
    "either": ("rnd", "entropy"),
    "progress": ("progress",),
    "both_or_progress": ("rnd", "entropy", "progress"),
}
"""The signals each rule reads."""


def conformal_threshold(scores: Sequence[float] | np.ndarray, alpha: float) -> float:
    """Split conformal threshold: the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores.

    Args:
        scores: One score per calibration rollout (e.g. its largest windowed score). Shape: (n,).
        alpha: Miscoverage level in (0, 1): the false-alarm probability to guarantee.

    Returns:
        The threshold (``inf`` when ``n`` is too small for ``alpha``).

    Raises:
        ValueError: no scores, a non-finite score, or ``alpha`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"`alpha` must be in (0, 1). Got {alpha}.")
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("conformal calibration needs at least one score.")
    if not np.all(np.isfinite(values)):
        raise ValueError("conformal calibration scores must be finite.")
    n = values.size
    k = math.ceil((n + 1) * (1.0 - alpha) - 1e-12)  # the tolerance keeps e.g. 10 * 0.9 at 9, not 10
    return math.inf if k > n else float(values[k - 1])


def min_calibration_size(alpha: float) -> int:
    """The fewest calibration scores that give a finite threshold at ``alpha``: ``ceil(1 / alpha - 1)``."""
    n = 1
    while math.ceil((n + 1) * (1.0 - alpha) - 1e-12) > n:
        n += 1
    return n


def windowed_mean(scores: Sequence[float] | np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start). Shape: (T,) -> (T,)."""
    if window < 1:
        raise ValueError(f"`window` must be >= 1. Got {window}.")
    values = np.asarray(scores, dtype=np.float64).ravel()
    # Slice by slice (T is a few dozen chunks): the same sums, in the same order, as WindowedScore.
    out = [sum(values[max(0, t + 1 - window) : t + 1].tolist()) / min(t + 1, window) for t in range(values.size)]
    return np.asarray(out, dtype=np.float64)


def episode_statistic(scores: Sequence[float] | np.ndarray, window: int) -> float:
    """The calibration score of one rollout: its largest windowed score (``-inf`` for no chunks)."""
    windowed = windowed_mean(scores, window)
    return float(windowed.max()) if windowed.size else -math.inf


def exceeds(windowed: Mapping[str, np.ndarray | float], thresholds: Mapping[str, float], rule: Rule) -> np.ndarray:
    """Whether the alarm is raised, per chunk, from the windowed scores of each signal.

    A non-finite (NaN) windowed score counts as exceeding: a broken input is never silent.

    Args:
        windowed: Windowed scores per signal (``rnd``, ``entropy``, ``progress``), scalars or arrays of
            shape (T,). A signal left out never exceeds.
        thresholds: Threshold per signal (a signal left out: ``inf``).
        rule: One of :data:`RULES`.

    Returns:
        Bool array (shape (T,), or () for scalars).
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}. Got {rule!r}.")
    over = {}
    for name in SIGNALS:
        if name in windowed:
            value = np.asarray(windowed[name], dtype=np.float64)
            over[name] = ~np.isfinite(value) | (value > thresholds.get(name, math.inf))
    shape = next(iter(over.values())).shape if over else ()
    for name in SIGNALS:
        over.setdefault(name, np.zeros(shape, dtype=bool))
    if rule == "both":
        return over["rnd"] & over["entropy"]
    if rule == "either":
        return over["rnd"] | over["entropy"]
    if rule == "both_or_progress":
        return (over["rnd"] & over["entropy"]) | over["progress"]
    return over[rule]


def first_alarm(
    scores: Mapping[str, Sequence[float] | np.ndarray], thresholds: Mapping[str, float], window: int, rule: Rule
) -> int | None:
    """Index of the first chunk at which ``rule`` raises the alarm, or None.

    Args:
        scores: Per-chunk scores of one episode per signal. Shapes: (T,).
        thresholds: Threshold per signal (for the same ``window``).
        window: Chunks in the windowed mean.
        rule: Alarm rule.
    """
    windowed = {name: windowed_mean(scores[name], window) for name in SIGNALS if name in scores}
    hits = np.flatnonzero(exceeds(windowed, thresholds, rule))
    return int(hits[0]) if hits.size else None


def _signals_in(episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]]) -> tuple[str, ...]:
    """The signals every episode has scores for."""
    return tuple(name for name in SIGNALS if episodes and all(name in e for e in episodes))


def marginal_thresholds(
    episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]], alpha: float, window: int
) -> dict[str, float]:
    """Per-signal conformal thresholds from the per-chunk scores of successful rollouts.

    Args:
        episodes: One mapping per successful rollout: signal name -> per-chunk scores (T_i,).
        alpha: Miscoverage level (false-alarm probability per successful episode, per signal).
        window: Chunks in the windowed mean.

    Returns:
        Signal -> threshold (``inf`` for a signal the episodes have no scores for).
    """
    present = _signals_in(episodes)
    return {
        name: conformal_threshold([episode_statistic(e[name], window) for e in episodes], alpha)
        if name in present
        else math.inf
        for name in SIGNALS
    }


def _rule_statistic(rule: str, ranks: Mapping[str, np.ndarray]) -> np.ndarray:
    """The rule on rank-transformed scores: AND is the minimum, OR the maximum."""
    if rule == "both":
        return np.minimum(ranks["rnd"], ranks["entropy"])
    if rule == "either":
        return np.maximum(ranks["rnd"], ranks["entropy"])
    if rule == "both_or_progress":
        return np.maximum(np.minimum(ranks["rnd"], ranks["entropy"]), ranks["progress"])
    return ranks[rule]


def joint_thresholds(
    episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]], alpha: float, window: int, rule: Rule = "both"
) -> dict[str, float]:
    """Thresholds for a rule such that the rule's false-alarm probability is about ``alpha``.

    See the module docstring (detectors ``fiper`` and ``fiper_progress``). The first three arguments
    are those of :func:`marginal_thresholds`; ``rule`` is the alarm rule (default ``both``, FIPER's).

    Returns:
        Signal -> threshold (``inf`` for the signals the rule does not read).

    Raises:
        ValueError: an unknown rule, rollouts without chunks, or episodes without a signal the rule reads.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}. Got {rule!r}.")
    names = RULE_SIGNALS[rule]
    missing = [name for name in names if name not in _signals_in(episodes)]
    if missing:
        raise ValueError(f"rule {rule!r} reads {list(names)}; the calibration episodes have no {missing} scores.")
    windowed = {name: [windowed_mean(e[name], window) for e in episodes] for name in names}
    pooled = {name: np.sort(np.concatenate(values)) for name, values in windowed.items()}
    if any(values.size == 0 for values in pooled.values()):
        raise ValueError("joint calibration needs rollouts with at least one chunk.")

    def rank(name: str, x: np.ndarray) -> np.ndarray:
        return np.searchsorted(pooled[name], x, side="right") / pooled[name].size

    statistic = [
        float(np.max(_rule_statistic(rule, {name: rank(name, windowed[name][i]) for name in names})))
        for i in range(len(episodes))
    ]
    lam = conformal_threshold(statistic, alpha)
    thresholds = dict.fromkeys(SIGNALS, math.inf)
    for name, values in pooled.items():
        m = round(lam * values.size) if math.isfinite(lam) else values.size
        thresholds[name] = float(values[m]) if m < values.size else math.inf
    return thresholds


def check_progress_share(share: float) -> None:
    """Refuse a ``progress_share`` outside (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(
            f"`progress_share` (goal progress's share of alpha in fiper_progress_split) must be in (0, 1). Got {share}."
        )


def split_thresholds(
    episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    progress_share: float = DEFAULT_PROGRESS_SHARE,
) -> dict[str, float]:
    """``fiper_progress_split``'s thresholds: FIPER's rule at ``(1 - share) alpha``, goal progress at ``share alpha``.

    The first three arguments are those of :func:`marginal_thresholds`.

    Returns:
        Signal -> threshold (all ``inf`` when the episodes have no ``progress`` scores).
    """
    check_progress_share(progress_share)
    if "progress" not in _signals_in(episodes):
        return dict.fromkeys(SIGNALS, math.inf)
    fiper = joint_thresholds(episodes, (1.0 - progress_share) * alpha, window, "both")
    progress = marginal_thresholds(episodes, progress_share * alpha, window)["progress"]
    return fiper | {"progress": progress}


def calibrate_detectors(
    episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    progress_share: float = DEFAULT_PROGRESS_SHARE,
) -> dict[str, dict[str, float]]:
    """Thresholds of every detector (:data:`DETECTORS`): detector -> signal -> threshold.

    Args:
        episodes: Per-chunk scores of the successful calibration rollouts (signal -> (T_i,));
            ``progress`` only on goal tasks: without it, the ``progress``, ``fiper_progress`` and
            ``fiper_progress_split`` detectors get ``inf`` thresholds (they never fire).
        alpha: Miscoverage level.
        window: Chunks in the windowed mean.
        progress_share: ``fiper_progress_split``: goal progress's share of ``alpha``.
    """
    check_progress_share(progress_share)
    marginal = marginal_thresholds(episodes, alpha, window)
    never = dict.fromkeys(SIGNALS, math.inf)
    with_progress = "progress" in _signals_in(episodes)
    return {
        "fiper": joint_thresholds(episodes, alpha, window, "both"),
        "fiper_marginal": never | {"rnd": marginal["rnd"], "entropy": marginal["entropy"]},
        "rnd": never | {"rnd": marginal["rnd"]},
        "entropy": never | {"entropy": marginal["entropy"]},
        "progress": never | {"progress": marginal["progress"]},
        "fiper_progress": joint_thresholds(episodes, alpha, window, "both_or_progress") if with_progress else never,
        "fiper_progress_split": split_thresholds(episodes, alpha, window, progress_share),
    }


class WindowedScore:
    """Streaming trailing mean of the last ``window`` chunk scores (the run-time side of :func:`windowed_mean`)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"`window` must be >= 1. Got {window}.")
        self._values: deque[float] = deque(maxlen=window)

    def reset(self) -> None:
        """Forget the scores (new episode)."""
        self._values.clear()

    def push(self, value: float) -> float:
        """Add one chunk's score; returns the windowed mean including it."""
        self._values.append(float(value))
        return sum(self._values) / len(self._values)

    @property
    def value(self) -> float:
        """The current windowed mean (NaN before the first score)."""
        return sum(self._values) / len(self._values) if self._values else math.nan
