"""Failure prediction at run time (FIPER-style): RND + action-chunk entropy with conformal thresholds.

On goal tasks a third calibrated signal, goal progress (:class:`ProgressEnvelope`), scores how far
behind the successful rollouts' pace the task is; a learned failure risk (:class:`RiskModel`) reads
them all with the chunk-to-chunk consistency of the policy's own chunks. Every detector states what
it promises about false alarms on successful episodes (:class:`Promise`, :mod:`robot_rl.monitor.guarantee`).

Run time (numpy and onnxruntime only): :class:`FailureMonitor` (a Controller monitor, loaded from a
calibrated policy folder) and the plain monitors. Calibration (:func:`calibrate`, which trains the
RND with torch) and evaluation (:func:`evaluate_monitor`) back ``robot-rl monitor calibrate|eval``.
"""

from robot_rl.monitor.calibrate import calibrate
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.monitor.conformal import (
    DETECTORS,
    RULES,
    calibrate_detectors,
    conformal_threshold,
    first_alarm,
    windowed_mean,
)
from robot_rl.monitor.entropy import chunk_entropy
from robot_rl.monitor.evaluate import evaluate_monitor
from robot_rl.monitor.failure_monitor import (
    Calibration,
    FailureMonitor,
    MonitorNotCalibratedError,
    MonitorSettings,
    read_calibration,
)
from robot_rl.monitor.guarantee import Promise, calibration_budget, promise
from robot_rl.monitor.learned import RiskModel, fit_risk
from robot_rl.monitor.plain import LimitHitRate, NonFiniteObservation, TrackingError, plain_monitors
from robot_rl.monitor.progress import ProgressEnvelope, goal_distance
from robot_rl.monitor.rnd import RND, train_rnd

__all__ = [
    "DETECTORS",
    "RND",
    "RULES",
    "Calibration",
    "FailureMonitor",
    "LimitHitRate",
    "MonitorCalibrate",
    "MonitorEval",
    "MonitorNotCalibratedError",
    "MonitorSettings",
    "NonFiniteObservation",
    "ProgressEnvelope",
    "Promise",
    "RiskModel",
    "TrackingError",
    "calibrate",
    "calibrate_detectors",
    "calibration_budget",
    "chunk_entropy",
    "conformal_threshold",
    "evaluate_monitor",
    "first_alarm",
    "fit_risk",
    "goal_distance",
    "plain_monitors",
    "promise",
    "read_calibration",
    "train_rnd",
    "windowed_mean",
]
