"""Options of ``robot-rl monitor calibrate`` and ``robot-rl monitor eval`` (tyro dataclasses).

The commands check their options when they run (:func:`robot_rl.monitor.calibrate.calibrate`,
:func:`robot_rl.monitor.evaluate.evaluate_monitor`), so a bad value is a one-line error.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from robot_rl.monitor.conformal import DEFAULT_PROGRESS_SHARE

CALIBRATION_SEED = 2_000_000
"""Default first calibration seed: above the demos' (``robot-rl collect``) and the eval cards' (1000000...)."""
MONITOR_EVAL_SEED = 3_000_000
"""Default first seed of ``monitor eval``; condition i (of the env's list) uses ``seed + 100000 * i + k``."""
CONDITION_STRIDE = 100_000
"""Seed offset between the conditions of ``monitor eval``."""


@dataclasses.dataclass(frozen=True)
class MonitorCalibrate:
    """Calibrate a policy's failure monitor: train RND on its demos, roll it out, set conformal thresholds.

    Prints the budget (calibration successes for --alpha and --width), runs that many rollouts, and writes
    policies/NAME/monitor/{rnd.npz, calibration.json} with each detector's false-alarm promise.
    """

    policy: Path
    """Exported policy folder (``robot-rl export ... --out DIR``)."""
    env: str | None = None
    """Environment id (default: the policy's; another is refused)."""
    alpha: float = 0.1
    """False-alarm level in (0, 1): the largest acceptable probability that the monitor alarms during a successful
    episode (averaged over calibrations; see --confidence)."""
    episodes: int | None = None
    """Calibration rollouts. Default: as many as the budget needs (printed first): rollouts run until the
    calibration split holds enough successes for the promise at --alpha with an interval of --width."""
    width: float | None = None
    """Budget: width of the interval (--interval-level of its mass) in which this calibration's false-alarm rate
    lies (default: alpha; about (2 * 1.645)^2 * alpha (1 - alpha) / width^2 calibration successes)."""
    interval_level: float = 0.9
    """Mass of the stated interval of the false-alarm rate (calibration report and budget)."""
    confidence: float | None = None
    """None: the false-alarm rate is at most alpha on average over calibrations (split conformal). A value in (0, 1),
    e.g. 0.9: this calibration's rate is at most alpha with that probability (training-conditional), at higher
    thresholds (fewer detections)."""
    fit_share: float = 0.25
    """Share of the calibration rollouts (every 1/share-th, by seed order) whose successes fit the goal-progress
    envelope and the joint detectors' normalization; the other successes set the thresholds. Fitting and ranking on
    the same rollouts would void the promise."""
    max_episodes: int = 5000
    """Without --episodes: stop after this many rollouts even if the budget is not met."""
    workers: int | None = None
    """Processes running the calibration rollouts, each a single-threaded policy, env and monitor (the same traces
    as one process, in seed order). Default 1: this process; with --ray-address, the cluster's CPUs."""
    ray_address: str | None = None
    """Run the calibration rollouts on a Ray cluster (the ``ray`` extra; docs/scale.md): ``auto`` or HOST:PORT."""
    budget_only: bool = False
    """Print the budget (calibration successes and expected rollouts) and exit without running anything."""
    window: int = 3
    """Chunks in the windowed mean of each score. 3 (was 2): on PandaPush it raised FIPER's detection from 0.62 to
    0.73 for 0.03 more false alarms at alpha 0.1, on 900 fresh rollouts (bench/results/monitor_settings.md)."""
    samples: int = 3
    """K: chunks per history for the action-chunk entropy (one batched ONNX call draws them). 3 with the
    policy's own chunk keeps the monitor under 2 ms p99 per chunk; K = 2, 4 and 8 predict alike
    (bench/results/monitor.md, section 4)."""
    reuse_policy_chunk: bool = True
    """Count the chunk the controller just computed for the history as one of the K (the monitor's ONNX call
    then draws K - 1): a draw from the same distribution, so the same statistic for less latency
    (bench/results/monitor.md). ``--no-reuse-policy-chunk`` draws all K."""
    progress_share: float = DEFAULT_PROGRESS_SHARE
    """fiper_progress_split: goal progress's share of alpha, in (0, 1); FIPER's rule gets the rest."""
    seed: int = CALIBRATION_SEED
    """First calibration seed (episode k uses seed + k); must avoid the demos' seeds."""
    data: Path | None = None
    """Demonstrations to train RND on (default: the policy card's training_data.path)."""
    reuse_rnd: bool = False
    """Keep the folder's monitor/rnd.npz (trained on the policy's demos by an earlier calibration) instead of
    training a new RND: recalibrates the thresholds without the demos."""
    rnd_hidden: int = 128
    """Width of the RND networks' hidden layers."""
    rnd_features: int = 32
    """RND target features."""
    rnd_steps: int = 3000
    """Adam steps training the RND predictor."""
    rnd_clip: float | None = 3.0
    """Clip the normalized history to +-this many standard deviations before the RND (None: no clipping)."""
    progress: bool = True
    """Show a progress bar."""


@dataclasses.dataclass(frozen=True)
class MonitorEval:
    """Evaluate a calibrated failure monitor in nominal and shifted conditions (markdown + JSON report).

    Per condition: success rate, and for each detector (FIPER = RND and entropy together, RND alone,
    entropy alone, goal progress alone and FIPER or goal progress on goal tasks, and the plain monitors)
    the false-alarm rate on successful rollouts, the detection rate on failed ones and the median lead
    time (failure time: the end of the timed-out episode).
    """

    policy: Path
    """Exported policy folder with a calibrated monitor (``robot-rl monitor calibrate``)."""
    env: str | None = None
    """Environment id (default: the policy's)."""
    episodes: int = 50
    """Rollouts per condition."""
    conditions: tuple[str, ...] | None = None
    """Conditions to run (default: all of the env's: nominal, heavy, slippery, kick, far_goal, latency for the
    Franka object tasks; nominal, heavy, weak_motors, gusts, latency for the quadrotor)."""
    seed: int = MONITOR_EVAL_SEED
    """First seed; condition i uses seed + 100000 * i + k (disjoint from the calibration and demo seeds)."""
    out: Path = Path("out/monitor_eval")
    """Folder for report.md and report.json."""
    alpha: float | None = None
    """Recompute the thresholds at this level from the stored calibration scores (default: the calibration's)."""
    window: int | None = None
    """Recompute the thresholds for this window from the stored calibration scores (default: the calibration's)."""
    progress: bool = True
    """Show a progress bar."""
