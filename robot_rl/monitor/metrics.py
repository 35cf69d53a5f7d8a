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
from robot_rl.monitor.progress import ProgressEnvelope
from robot_rl.monitor.rollouts import EpisodeTrace


def first_alarm_steps(
    trace: EpisodeTrace,
    thresholds: Mapping[str, Mapping[str, float]],
    window: int,
    envelope: ProgressEnvelope | None = None,
) -> dict[str, int | None]:
    """Step of the first alarm of every detector in one episode (None: no alarm).

    Args:
        trace: The episode.
        thresholds: Detector -> signal -> threshold (detectors from :data:`DETECTORS`).
        window: Chunks in the windowed mean.
        envelope: The calibration's goal-distance envelope (None: no progress score; the progress
            detectors never fire).

    Returns:
        Detector (learned ones, then the plain monitors) -> first alarm step.
    """
    out: dict[str, int | None] = {}
    scores = trace.scores(envelope)
    for detector, values in thresholds.items():
        chunk = first_alarm(scores, values, window, DETECTORS[detector])
        out[detector] = None if chunk is None else int(trace.steps[chunk])
    out.update(trace.plain)
    return out


def detector_metrics(traces: Sequence[EpisodeTrace], alarms: Sequence[Mapping[str, int | None]]) -> dict[str, Any]:
    """False-alarm rate, detection rate and median lead time of each detector over some episodes.

    Args:
        traces: The episodes.
        alarms: Per episode, detector -> first alarm step (from :func:`first_alarm_steps`).

    Returns:
        ``episodes``, ``successes``, ``success_rate`` and, per detector, ``false_alarm_rate``
        (None without successes), ``detection_rate`` (None without failures), ``median_lead_time_s``
        (None without detections), ``false_alarms``, ``detections``.
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
            "detection_rate": len(detected) / len(failures) if failures else None,
            "median_lead_time_s": float(np.median(leads)) if leads else None,
            "false_alarms": false_alarms,
            "detections": len(detected),
        }
    return out
