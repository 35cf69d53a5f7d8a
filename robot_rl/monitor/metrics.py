"""How well a detector predicts failures: false alarms, detections and lead times from episode traces.

Definitions (per detector, over a set of monitored episodes):

- false-alarm rate: share of the *successful* episodes in which it raised the alarm at any step;
- detection rate: share of the *failed* episodes in which it raised the alarm at any step;
- lead time of a detected failure: failure time minus the time of the first alarm [s]. The failure
  time is the end of the failed episode (``length * ctrl_dt``): the Franka tasks never terminate
  early, so a failure is an episode that times out unsuccessful and fails at the time limit; a
  quadrotor episode that crashes fails at the crash. The first alarm's time is the step at which its
  chunk took effect times ``ctrl_dt``. Reported: the median over the detected failures.

Learned detectors are replayed from the per-chunk scores (:func:`robot_rl.monitor.conformal.first_alarm`);
plain monitors from the first alarm step each trace recorded. numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robot_rl.monitor.conformal import DETECTORS, first_alarm
from robot_rl.monitor.learned import RiskModel, trace_scores
from robot_rl.monitor.progress import ProgressEnvelope
from robot_rl.monitor.rollouts import EpisodeTrace


def first_alarm_steps(
    trace: EpisodeTrace,
    thresholds: Mapping[str, Mapping[str, float]],
    window: int,
    envelope: ProgressEnvelope | None = None,
    risk: RiskModel | None = None,
) -> dict[str, int | None]:
    """Step of the first alarm of every detector in one episode (None: no alarm).

    Args:
        trace: The episode.
        thresholds: Detector -> signal -> threshold (detectors from :data:`DETECTORS`).
        window: Chunks in the windowed mean.
        envelope: The calibration's goal-distance envelope (None: no progress score; the progress
            detectors never fire).
        risk: The learned risk model (None: the ``risk`` detector never fires).

    Returns:
        Detector (learned ones, then the plain monitors) -> first alarm step.
    """
    out: dict[str, int | None] = {}
    scores = trace_scores(trace, envelope, risk)
    for detector, values in thresholds.items():
        chunk = first_alarm(scores, values, window, DETECTORS[detector])
        out[detector] = None if chunk is None else int(trace.steps[chunk])
    out.update(trace.plain)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a binomial proportion (95% for ``z`` 1.96); None without trials."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def detector_metrics(traces: Sequence[EpisodeTrace], alarms: Sequence[Mapping[str, int | None]]) -> dict[str, Any]:
    """False-alarm rate, detection rate and median lead time of each detector over some episodes.

    Args:
        traces: The episodes.
        alarms: Per episode, detector -> first alarm step (from :func:`first_alarm_steps`).

    Returns:
        ``episodes``, ``successes``, ``success_rate`` and, per detector, ``false_alarm_rate``
        (None without successes) with its Wilson 95% interval ``false_alarm_ci95``, ``detection_rate``
        (None without failures), ``detected_1s_ahead`` (share of the failures with an alarm at least 1 s before
        they fail), ``median_lead_time_s`` (None without detections), ``false_alarms``, ``detections``.
    """
    successes = [i for i, t in enumerate(traces) if t.success]
    failures = [i for i, t in enumerate(traces) if not t.success]
    names = list(alarms[0]) if alarms else []
    out: dict[str, Any] = {
        "episodes": len(traces),
        "successes": len(successes),
        "success_rate": len(successes) / len(traces) if traces else None,
        "detectors": {},
    }
    for name in names:
        false_alarms = sum(alarms[i][name] is not None for i in successes)
        detected = [i for i in failures if alarms[i][name] is not None]
        leads = [traces[i].duration_s - alarms[i][name] * traces[i].ctrl_dt for i in detected]
        out["detectors"][name] = {
            "false_alarm_rate": false_alarms / len(successes) if successes else None,
            "false_alarm_ci95": wilson_interval(false_alarms, len(successes)),
            "detection_rate": len(detected) / len(failures) if failures else None,
            "detected_1s_ahead": sum(lead >= 1.0 - 1e-9 for lead in leads) / len(failures) if failures else None,
            "median_lead_time_s": float(np.median(leads)) if leads else None,
            "false_alarms": false_alarms,
            "detections": len(detected),
        }
    return out


def monitor_false_alarms(monitor: Any, per_episode: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The failure monitor's promise beside what an evaluation measured (None without a monitor).

    Args:
        monitor: The :class:`~robot_rl.monitor.FailureMonitor` that watched, or None.
        per_episode: The eval report's episodes (``success``, ``first_alarm_step``).

    Returns:
        ``detector``; the promise (``promised_alpha``, ``confidence``, ``expected``, ``interval``, ``promise``: one
        line; None for a monitor without one); the measured ``false_alarm_rate`` on successes with its Wilson 95%
        interval, ``detection_rate`` on failures, and the counts.
    """
    if monitor is None:
        return None
    successes = [e for e in per_episode if e["success"]]
    failures = [e for e in per_episode if not e["success"]]
    false_alarms = sum(e["first_alarm_step"] is not None for e in successes)
    detections = sum(e["first_alarm_step"] is not None for e in failures)
    promise = getattr(monitor, "promise", None)
    return {
        "detector": getattr(monitor, "name", type(monitor).__name__),
        "promised_alpha": None if promise is None else promise.alpha,
        "confidence": None if promise is None else promise.confidence,
        "expected": None if promise is None else promise.expected,
        "interval": None if promise is None else list(promise.interval),
        "promise": None if promise is None else promise.describe(),
        "false_alarm_rate": false_alarms / len(successes) if successes else None,
        "false_alarm_ci95": wilson_interval(false_alarms, len(successes)),
        "false_alarms": false_alarms,
        "successes": len(successes),
        "detection_rate": detections / len(failures) if failures else None,
        "detections": detections,
        "failures": len(failures),
    }


def format_false_alarms(summary: Mapping[str, Any]) -> str:
    """One line: measured false alarms on successes beside the promise, and the detection of failures."""
    rate, ci = summary["false_alarm_rate"], summary["false_alarm_ci95"]
    measured = "no successes" if rate is None else f"{rate:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] of {summary['successes']}"
    promised = "no promise" if summary["promised_alpha"] is None else (
        f"promised <= {summary['promised_alpha']:g}"
        + ("" if summary["confidence"] is None else f" with probability {summary['confidence']:g}")
        + f", expected {summary['expected']:.3f} [{summary['interval'][0]:.3f}, {summary['interval'][1]:.3f}]"
    )  # fmt: skip
    detection = summary["detection_rate"]
    detected = "no failures" if detection is None else f"{detection:.3f} of {summary['failures']}"
    return f"false alarms on successes {measured} ({promised}); failures detected {detected}"
