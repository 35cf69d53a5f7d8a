"""Split conformal thresholds, windowed scores and the alarm rules of the detectors.

Each failure score (RND, action-chunk entropy, goal progress) is computed once per action chunk. The
monitor aggregates it over a sliding window: the mean of the last ``window`` chunk scores (fewer at
the start of an episode). A signal *exceeds* when its windowed score is strictly above its threshold.

Calibration (split conformal prediction on successful rollouts). The monitor alarms at some chunk
of an episode iff the episode's *maximum* of the running statistic is above the threshold, so the
conformal score of a rollout is that maximum ``S_i = max_t w_t`` and one threshold bounds the
per-rollout false-alarm probability. The threshold is the ``k``-th smallest ``S_i`` of ``n``
calibration successes with ``k = ceil((n + 1)(1 - alpha))`` (or the training-conditional rank:
:mod:`robot_rl.monitor.guarantee`, which also states the Beta distribution of the resulting rate).
For a new successful rollout exchangeable with the calibration ones, ``P(S_new > threshold) <=
alpha``. This holds only if nothing that shapes ``S`` was fitted on the rollouts that rank it, so the
successes are split in two disjoint parts:

- the *fit* split fits every data-dependent transform: the goal-progress envelope
  (:mod:`robot_rl.monitor.progress`) and the standardization of the joint detectors;
- the *calibration* split only ranks the per-rollout maxima and sets the thresholds.

RND is trained on the demonstrations and the entropy has no fitted part, so ``rnd``, ``entropy`` and
``fiper_marginal`` are ranked among every calibration success (both splits).

Rules: ``both`` (FIPER: alarm when the RND *and* the entropy windowed scores exceed their
thresholds at the same chunk), ``rnd`` or ``entropy`` alone, ``either``, ``progress`` (the goal
progress score alone) and ``both_or_progress`` (FIPER's rule or the progress score). A signal
missing from the scores (``progress`` on a task without goals) never exceeds.

Detectors (a rule with its thresholds), each with the promise :func:`detector_promises` states:

- ``fiper``: the ``both`` rule, *jointly* calibrated so that the rule itself has level ``alpha``. Each
  signal's windowed scores are standardized by the mean and standard deviation of the windowed
  scores of every chunk of the *fit* split (``z_s = (w_s - m_s) / s_s``); a calibration rollout's
  score is ``max_t min_s z_s,t``; its conformal threshold ``lambda`` (on the calibration split) gives
  per-signal thresholds ``tau_s = m_s + lambda s_s``: both ``w_s > tau_s`` exactly when ``min_s z_s >
  lambda``. (A rank transform of the pooled scores, the earlier choice, saturates at 1 in the top
  tail with a fit split of a few dozen rollouts: at alpha 0.05 its threshold was often infinite.)
- ``fiper_marginal``: the ``both`` rule with each signal's own threshold at ``alpha`` (the published
  FIPER recipe): at most ``alpha`` (an AND is stricter than either part), usually well below.
- ``rnd``, ``entropy``, ``progress``: one signal alone at ``alpha``.
- ``fiper_progress``: the ``both_or_progress`` rule, jointly calibrated like ``fiper`` with the
  statistic ``max(min(z_rnd, z_entropy), z_progress)``. Goal tasks only (elsewhere its thresholds,
  like ``progress``'s, are ``inf``: it never fires).
- ``fiper_progress_split``: the same rule with the level split between its two parts (a union
  bound): FIPER's rule jointly at ``(1 - share) alpha`` and goal progress alone at ``share alpha``.
  The early FIPER signals keep most of the budget while the near-certain but late progress score
  needs only a little. Goal tasks only.
- ``risk``: the learned failure risk alone at ``alpha`` (:mod:`robot_rl.monitor.learned`; the model is
  trained on the fit split, so the risk is ranked among the calibration split only).

numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Literal, get_args

import numpy as np

from robot_rl.monitor.guarantee import (
    DEFAULT_INTERVAL_LEVEL,
    Promise,
    check_alpha,
    conformal_rank,
    min_calibration_size,  # noqa: F401  (re-exported: robot_rl.monitor.conformal.min_calibration_size)
    promise,
    union_promise,
)

Rule = Literal["both", "rnd", "entropy", "either", "progress", "both_or_progress", "risk"]
RULES: tuple[str, ...] = get_args(Rule)
SIGNALS: tuple[str, ...] = ("rnd", "entropy", "progress", "risk")
"""The failure scores, in the order the rules name them (``progress``: goal tasks only; ``risk``: the learned
failure risk of :mod:`robot_rl.monitor.learned`, when the fit split had enough failures)."""
DETECTORS: dict[str, str] = {
    "fiper": "both",
    "fiper_marginal": "both",
    "rnd": "rnd",
    "entropy": "entropy",
    "progress": "progress",
    "fiper_progress": "both_or_progress",
    "fiper_progress_split": "both_or_progress",
    "risk": "risk",
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
    "risk": ("risk",),
}
"""The signals each rule reads."""


def conformal_threshold(scores: Sequence[float] | np.ndarray, alpha: float, confidence: float | None = None) -> float:
    """Split conformal threshold: the ``k``-th smallest of ``n`` calibration scores.

    Args:
        scores: One score per calibration rollout (its largest windowed score). Shape: (n,).
        alpha: False-alarm level in (0, 1).
        confidence: None: ``k = ceil((n + 1)(1 - alpha))`` (the marginal promise); else the rank for which this
            calibration's rate is at most ``alpha`` with that probability
            (:func:`robot_rl.monitor.guarantee.conformal_rank`).

    Returns:
        The threshold (``inf`` when ``n`` is too small for ``alpha``).

    Raises:
        ValueError: no scores, a non-finite score, or ``alpha`` outside (0, 1).
    """
    check_alpha(alpha)
    values = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if values.size == 0:
        raise ValueError("conformal calibration needs at least one score.")
    if not np.all(np.isfinite(values)):
        raise ValueError("conformal calibration scores must be finite.")
    k = conformal_rank(values.size, alpha, confidence)
    return math.inf if k > values.size else float(values[k - 1])


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
    episodes: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    confidence: float | None = None,
) -> dict[str, float]:
    """Per-signal conformal thresholds from the per-chunk scores of successful rollouts.

    Args:
        episodes: One mapping per successful calibration rollout: signal name -> per-chunk scores (T_i,).
        alpha: False-alarm level per successful episode, per signal.
        window: Chunks in the windowed mean.
        confidence: See :func:`conformal_threshold`.

    Returns:
        Signal -> threshold (``inf`` for a signal the episodes have no scores for).
    """
    present = _signals_in(episodes)
    return {
        name: conformal_threshold([episode_statistic(e[name], window) for e in episodes], alpha, confidence)
        if name in present
        else math.inf
        for name in SIGNALS
    }


def _rule_statistic(rule: str, ranks: Mapping[str, np.ndarray]) -> np.ndarray:
    """The rule on standardized scores: AND is the minimum, OR the maximum."""
    if rule == "both":
        return np.minimum(ranks["rnd"], ranks["entropy"])
    if rule == "either":
        return np.maximum(ranks["rnd"], ranks["entropy"])
    if rule == "both_or_progress":
        return np.maximum(np.minimum(ranks["rnd"], ranks["entropy"]), ranks["progress"])
    return ranks[rule]


def joint_thresholds(
    fit: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    cal: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    rule: Rule = "both",
    confidence: float | None = None,
) -> dict[str, float]:
    """Thresholds for a rule such that the rule's false-alarm probability is at most ``alpha``.

    See the module docstring (detectors ``fiper`` and ``fiper_progress``).

    Args:
        fit: Successful rollouts that fit the standardization (signal -> per-chunk scores).
        cal: Other successful rollouts (disjoint from ``fit``) that rank the rule's statistic. Passing the
            same rollouts as ``fit`` fits and ranks in-sample: the promise is then only approximate.
        alpha: False-alarm level of the rule.
        window: Chunks in the windowed mean.
        rule: The alarm rule (default ``both``, FIPER's).
        confidence: See :func:`conformal_threshold`.

    Returns:
        Signal -> threshold (``inf`` for the signals the rule does not read).

    Raises:
        ValueError: an unknown rule, rollouts without chunks, or episodes without a signal the rule reads.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {list(RULES)}. Got {rule!r}.")
    names = RULE_SIGNALS[rule]
    missing = [name for name in names if name not in _signals_in(fit) or name not in _signals_in(cal)]
    if missing:
        raise ValueError(f"rule {rule!r} reads {list(names)}; the calibration episodes have no {missing} scores.")
    pooled = {name: np.concatenate([windowed_mean(e[name], window) for e in fit]) for name in names}
    if any(values.size == 0 for values in pooled.values()):
        raise ValueError("joint calibration needs fit rollouts with at least one chunk.")
    loc = {name: float(values.mean()) for name, values in pooled.items()}
    scale = {name: max(float(values.std()), 1e-12 * max(1.0, abs(loc[name]))) for name, values in pooled.items()}
    statistic = [
        float(np.max(_rule_statistic(rule, {n: (windowed_mean(e[n], window) - loc[n]) / scale[n] for n in names})))
        for e in cal
    ]
    lam = conformal_threshold(statistic, alpha, confidence)
    # min_s z_s > lambda  <=>  w_s > loc_s + lambda * scale_s for every s (and max: for some s).
    return dict.fromkeys(SIGNALS, math.inf) | {
        name: loc[name] + lam * scale[name] if math.isfinite(lam) else math.inf for name in names
    }


def check_progress_share(share: float) -> None:
    """Refuse a ``progress_share`` outside (0, 1)."""
    if not 0.0 < share < 1.0:
        raise ValueError(
            f"`progress_share` (goal progress's share of alpha in fiper_progress_split) must be in (0, 1). Got {share}."
        )


def split_confidence(confidence: float | None) -> float | None:
    """Each part's confidence in a union of two parts, so that the union holds with ``confidence``."""
    return None if confidence is None else 1.0 - 0.5 * (1.0 - confidence)


def split_thresholds(
    fit: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    cal: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    progress_share: float = DEFAULT_PROGRESS_SHARE,
    confidence: float | None = None,
) -> dict[str, float]:
    """``fiper_progress_split``'s thresholds: FIPER's rule at ``(1 - share) alpha``, goal progress at ``share alpha``.

    The arguments are those of :func:`joint_thresholds` (``progress_share``: goal progress's share of ``alpha``).

    Returns:
        Signal -> threshold (all ``inf`` when the episodes have no ``progress`` scores).
    """
    check_progress_share(progress_share)
    if "progress" not in _signals_in(cal) or "progress" not in _signals_in(fit):
        return dict.fromkeys(SIGNALS, math.inf)
    part = split_confidence(confidence)
    fiper = joint_thresholds(fit, cal, (1.0 - progress_share) * alpha, window, "both", part)
    progress = marginal_thresholds(cal, progress_share * alpha, window, part)["progress"]
    return fiper | {"progress": progress}


def calibrate_detectors(
    cal: Sequence[Mapping[str, Sequence[float] | np.ndarray]],
    alpha: float,
    window: int,
    progress_share: float = DEFAULT_PROGRESS_SHARE,
    *,
    fit: Sequence[Mapping[str, Sequence[float] | np.ndarray]] | None = None,
    confidence: float | None = None,
) -> dict[str, dict[str, float]]:
    """Thresholds of every detector (:data:`DETECTORS`): detector -> signal -> threshold.

    Args:
        cal: Per-chunk scores of the successful calibration rollouts (signal -> (T_i,)); ``progress`` only on
            goal tasks: without it the ``progress``, ``fiper_progress`` and ``fiper_progress_split`` detectors
            get ``inf`` thresholds (they never fire).
        alpha: False-alarm level.
        window: Chunks in the windowed mean.
        progress_share: ``fiper_progress_split``: goal progress's share of ``alpha``.
        fit: The successful rollouts that fitted the transforms (their progress scores from the same
            envelope as ``cal``'s), disjoint from ``cal``; the single-signal detectors without a fitted part
            (``rnd``, ``entropy``, ``fiper_marginal``) are ranked among ``fit + cal``. None: ``cal`` fits and
            ranks in-sample (the promise is then approximate; ``robot-rl monitor calibrate`` always splits).
        confidence: See :func:`conformal_threshold`.
    """
    check_progress_share(progress_share)
    every = list(cal) if fit is None else [*fit, *cal]
    fit = list(cal) if fit is None else list(fit)
    marginal = marginal_thresholds(every, alpha, window, confidence)  # no fitted part: ranked among both splits
    ranked = marginal_thresholds(cal, alpha, window, confidence)  # fitted on the fit split: the calibration split
    never = dict.fromkeys(SIGNALS, math.inf)
    with_progress = "progress" in _signals_in(cal) and "progress" in _signals_in(fit)
    joint_or = joint_thresholds(fit, cal, alpha, window, "both_or_progress", confidence) if with_progress else never
    return {
        "fiper": joint_thresholds(fit, cal, alpha, window, "both", confidence),
        "fiper_marginal": never | {"rnd": marginal["rnd"], "entropy": marginal["entropy"]},
        "rnd": never | {"rnd": marginal["rnd"]},
        "entropy": never | {"entropy": marginal["entropy"]},
        "progress": never | {"progress": ranked["progress"] if with_progress else math.inf},
        "fiper_progress": joint_or,
        "fiper_progress_split": split_thresholds(fit, cal, alpha, window, progress_share, confidence),
        "risk": never | {"risk": ranked["risk"]},
    }


def detector_promises(
    n_fit: int,
    n_cal: int,
    alpha: float,
    progress_share: float = DEFAULT_PROGRESS_SHARE,
    confidence: float | None = None,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
) -> dict[str, Promise]:
    """What each detector of :func:`calibrate_detectors` promises about false alarms on successes.

    Args:
        n_fit: Successful rollouts in the fit split.
        n_cal: Successful rollouts in the calibration split.
        alpha: The level asked for.
        progress_share: ``fiper_progress_split``: goal progress's share of ``alpha``.
        confidence: See :func:`conformal_threshold`.
        interval_level: Mass of the stated interval of each rate.
    """
    whole = promise(n_fit + n_cal, alpha, confidence, interval_level)
    split = promise(n_cal, alpha, confidence, interval_level)
    part = split_confidence(confidence)
    # Each part's upper end at half the tail, so that the sum bounds the union's rate with the central tail mass.
    wide = 1.0 - 0.5 * (1.0 - interval_level)
    parts = [promise(n_cal, share * alpha, part, wide) for share in (1.0 - progress_share, progress_share)]
    union = union_promise(parts, alpha, confidence, interval_level)
    return {
        "fiper": split,
        "fiper_marginal": dataclasses.replace(whole, kind="and"),
        "rnd": whole,
        "entropy": whole,
        "progress": split,
        "fiper_progress": split,
        "fiper_progress_split": union,
        "risk": split,
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
