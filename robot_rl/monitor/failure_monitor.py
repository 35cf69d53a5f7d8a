"""FIPER-style failure prediction at run time: RND + action-chunk entropy, conformally calibrated.

:class:`FailureMonitor` plugs into :class:`robot_rl.runtime.Controller` as a monitor. It keeps its
own copy of the policy's observation history and, at every step where a new chunk takes effect
(``status.new_chunk``), scores that history twice:

- RND (:mod:`robot_rl.monitor.rnd`) on the normalized history: is the state like the training data?
- chunk entropy (:mod:`robot_rl.monitor.entropy`): ``samples`` chunks for the history in one batched
  ONNX call; do they disagree?
- goal progress (:mod:`robot_rl.monitor.progress`, goal tasks with a calibrated envelope): is the
  goal further away than in successful rollouts at the same chunk?
- learned risk (:mod:`robot_rl.monitor.learned`, when calibrated): a small classifier of failure
  reading the scores above, the chunk-to-chunk consistency of the policy's own chunks and the goal
  distance.

Each score is averaged over the last ``window`` chunks and compared with its conformal threshold
(:mod:`robot_rl.monitor.conformal`); with the ``both`` rule (FIPER) the alarm is raised while both
exceed. The decision holds until the next chunk. Every chunk's scores go to :attr:`trace`.
The calibration holds thresholds for several detectors (``fiper``: the ``both`` rule, jointly
calibrated, the default; ``fiper_marginal``; ``rnd``; ``entropy``; ``progress``; ``fiper_progress``:
FIPER's rule or the progress score, jointly calibrated; ``fiper_progress_split``: the same rule with
alpha split between its two parts; ``risk``: the learned risk alone); :meth:`FailureMonitor.load`
picks one, with its false-alarm promise (:attr:`FailureMonitor.promise`). The monitor's files:
:mod:`robot_rl.monitor.calibration_file`.

Run time needs numpy and onnxruntime only, never torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from robot_rl.monitor.calibration_file import (  # noqa: F401  (re-exported: the monitor's files)
    CALIBRATION_FILE,
    CALIBRATION_VERSION,
    MONITOR_DIR,
    RND_FILE,
    Calibration,
    MonitorNotCalibratedError,
    MonitorSettings,
    monitor_dir,
    read_calibration,
)
from robot_rl.monitor.conformal import (
    DETECTORS,
    RULES,
    SIGNALS,
    Rule,
    WindowedScore,
    exceeds,
)
from robot_rl.monitor.embedding import ObsEmbedding
from robot_rl.monitor.entropy import chunk_entropy, sample_chunks
from robot_rl.monitor.guarantee import Promise
from robot_rl.monitor.learned import RISK_FILE, RiskModel, consistency
from robot_rl.monitor.progress import ProgressEnvelope, goal_distance
from robot_rl.monitor.rnd import RND
from robot_rl.runtime.controller import ControlStatus


@dataclasses.dataclass(frozen=True)
class ChunkScore:
    """The monitor's view of one chunk."""

    step: int
    """Step at which the chunk took effect."""
    rnd: float
    entropy: float
    rnd_window: float
    """Windowed RND score (mean over the last ``window`` chunks)."""
    entropy_window: float
    alarm: bool
    """The monitor's rule fired at this chunk."""
    goal_distance: float | None = None
    """Goal tasks: distance between the achieved and the desired goal [m]."""
    progress: float | None = None
    """Goal progress score (None without an envelope or a goal)."""
    progress_window: float | None = None
    consistency: float = 0.0
    """RMS difference between this chunk and the previous one where both act [action units]."""
    risk: float | None = None
    """Learned failure risk (None without a risk model)."""
    risk_window: float | None = None


class FailureMonitor:
    """Failure predictor for the runtime Controller (implements its Monitor protocol).

    Args:
        policy: The policy the controller runs (an :class:`~robot_rl.runtime.OnnxPolicy`; ``predict_batch``
            samples the entropy's chunks, ``layout`` flattens the observations).
        rnd: The trained RND pair.
        embedding: The normalization of the observation history.
        settings: Window, samples and entropy dims.
        thresholds: Per signal; None (or missing signals) never alarm: scoring only (calibration).
        rule: ``both`` (FIPER), ``rnd``, ``entropy`` or ``either``.
        seed: Seed of the entropy's sampling noise (reseeded by ``reset(seed)``).
        name: The name alarms are reported under (``status.alarms``).
        progress: The goal-distance envelope of the progress score (None: no progress score; the goal
            distance is still traced on goal tasks).
        risk: The learned failure-risk model (None: no risk score).
    """

    def __init__(
        self,
        policy: Any,
        rnd: RND,
        embedding: ObsEmbedding,
        settings: MonitorSettings | None = None,
        thresholds: Mapping[str, float] | None = None,
        rule: Rule = "both",
        seed: int = 0,
        name: str = "fiper",
        progress: ProgressEnvelope | None = None,
        risk: RiskModel | None = None,
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"`rule` must be one of {list(RULES)}. Got {rule!r}.")
        if rnd.input_dim != embedding.dim:
            raise ValueError(f"the RND expects {rnd.input_dim}-D embeddings; the policy's history has {embedding.dim}.")
        self.policy, self.rnd, self.embedding = policy, rnd, embedding
        self.settings = settings = settings or MonitorSettings()
        self.thresholds = {signal: math.inf for signal in SIGNALS} | dict(thresholds or {})
        self.rule: Rule = rule
        self.name = name
        self.progress = progress
        self.dims = None if settings.entropy_dims is None else list(settings.entropy_dims)
        self.rng = np.random.default_rng(seed)
        self._history: deque[np.ndarray] = deque(maxlen=policy.n_obs_steps)
        self._windows = {signal: WindowedScore(settings.window) for signal in SIGNALS}
        self._alarm = False
        self._previous: tuple[int, np.ndarray] | None = None  # (first step, actions) of the last chunk scored
        self.risk = risk
        self.trace: list[ChunkScore] = []
        """This episode's chunks, in order."""
        self.promise: Promise | None = None
        """What the calibrated detector promises about false alarms on successes (set by :meth:`load`)."""

    @classmethod
    def load(
        cls,
        policy_dir: str | os.PathLike[str],
        policy: Any = None,
        detector: str = "fiper",
        seed: int = 0,
        threads: int = 1,
    ) -> FailureMonitor:
        """The calibrated monitor of a policy folder.

        Args:
            policy_dir: The exported policy folder (``policies/NAME``).
            policy: The policy the controller runs (default: a new OnnxPolicy on ``threads`` threads).
            detector: ``fiper`` (both signals, jointly calibrated), ``fiper_marginal``, ``rnd``, ``entropy``,
                ``progress``, ``fiper_progress`` (FIPER or goal progress, jointly calibrated) or
                ``fiper_progress_split`` (the same with alpha split between the two).
            seed: Seed of the entropy's sampling noise.
            threads: onnxruntime threads of a policy made here.

        Raises:
            MonitorNotCalibratedError: no calibration in the folder, no RND weights, or a calibration made
                for another policy.onnx (catch it to run with the monitor off).
        """
        if detector not in DETECTORS:
            raise ValueError(f"`detector` must be one of {list(DETECTORS)}. Got {detector!r}.")
        calibration = read_calibration(policy_dir)
        if policy is None:
            from robot_rl.runtime.onnx_policy import OnnxPolicy

            policy = OnnxPolicy(policy_dir, threads=threads)
        sha = getattr(policy, "onnx_sha256", None)
        if sha is not None and sha != calibration.policy_sha256:
            raise MonitorNotCalibratedError(
                f"{monitor_dir(policy_dir) / CALIBRATION_FILE} was calibrated for policy.onnx "
                f"{calibration.policy_sha256[:12]}..., not this one ({sha[:12]}...); the monitor is off. Re-run "
                f"`robot-rl monitor calibrate --policy {policy_dir}`."
            )
        try:
            rnd = RND.load(monitor_dir(policy_dir) / RND_FILE)
        except (FileNotFoundError, ValueError) as err:
            raise MonitorNotCalibratedError(f"{err} The monitor is off; re-run `robot-rl monitor calibrate`.") from None
        embedding = ObsEmbedding.from_metadata(policy.metadata)
        thresholds = calibration.thresholds[detector]
        risk = None
        if (monitor_dir(policy_dir) / RISK_FILE).is_file():
            try:
                risk = RiskModel.load(monitor_dir(policy_dir) / RISK_FILE)
            except ValueError as err:
                raise MonitorNotCalibratedError(
                    f"{err} The monitor is off; re-run `robot-rl monitor calibrate`."
                ) from None
        if detector == "risk" and risk is None:
            raise MonitorNotCalibratedError(
                f"{monitor_dir(policy_dir)} has no learned risk model (the fit split had too few failures, or the "
                "calibration is older than it); detector 'risk' is off. Re-run `robot-rl monitor calibrate`."
            )
        if detector in ("progress", "fiper_progress", "fiper_progress_split") and calibration.progress is None:
            raise MonitorNotCalibratedError(
                f"{monitor_dir(policy_dir) / CALIBRATION_FILE} has no goal-progress envelope (not a goal task, or "
                f"calibrated before robot_rl had one); detector {detector!r} is off. Re-run "
                "`robot-rl monitor calibrate`."
            )
        if detector not in calibration.calibrated_detectors:
            raise MonitorNotCalibratedError(
                f"{monitor_dir(policy_dir) / CALIBRATION_FILE} has no thresholds for detector {detector!r} (calibrated "
                f"before robot_rl had it; it has {', '.join(calibration.calibrated_detectors)}); the monitor is off. "
                "Re-run `robot-rl monitor calibrate`."
            )
        promise = Promise.from_json(calibration.promises[detector]) if detector in calibration.promises else None
        if promise is not None and promise.k > promise.n:
            raise MonitorNotCalibratedError(
                f"{monitor_dir(policy_dir) / CALIBRATION_FILE}: detector {detector!r} has no finite threshold "
                f"({promise.describe()}); the monitor is off. Calibrate with more episodes."
            )
        monitor = cls(
            policy, rnd, embedding, calibration.settings, thresholds, DETECTORS[detector], seed, detector,
            progress=calibration.progress, risk=risk,
        )  # fmt: skip
        monitor.promise = promise
        return monitor

    def reset(self, seed: int | None = None) -> None:
        """New episode: forget the history, the windows and the trace (and reseed the noise when given)."""
        self._history.clear()
        for window in self._windows.values():
            window.reset()
        self._alarm = False
        self._previous = None
        self.trace = []
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    def scores(self, history: np.ndarray, chunk: np.ndarray | None = None) -> tuple[float, float]:
        """Raw (RND, entropy) scores of one history.

        Args:
            history: Raw flattened history. Shape: (n_obs_steps, obs_dim).
            chunk: The policy's own chunk for this history, shape (horizon, A); with
                ``settings.reuse_policy_chunk`` it is one of the K samples and only K - 1 are drawn.
        """
        rnd = float(self.rnd.score(self.embedding(history))[0])
        k = self.settings.samples
        if self.settings.reuse_policy_chunk and chunk is not None:
            drawn = sample_chunks(self.policy, history, k - 1, self.rng)
            chunks = np.concatenate([np.asarray(chunk, dtype=np.float64)[None], drawn])
        else:
            chunks = sample_chunks(self.policy, history, k, self.rng)
        return rnd, chunk_entropy(chunks, self.dims, self.settings.entropy_eps)

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: ControlStatus) -> bool:
        """Update the history; at a new chunk, score it and decide. Returns the current decision."""
        if status.step == 0:
            self.reset()
        flat = self.policy.layout.flatten(observation, getattr(status, "features", None))
        if not self._history:
            self._history.extend([flat] * self.policy.n_obs_steps)
        else:
            self._history.append(flat)
        if status.new_chunk:
            rnd, entropy = self.scores(np.stack(self._history), chunk)
            windowed = {"rnd": self._windows["rnd"].push(rnd), "entropy": self._windows["entropy"].push(entropy)}
            distance = goal_distance(observation)
            progress = None
            if distance is not None and self.progress is not None:
                progress = self.progress.score(len(self.trace), distance)
                windowed["progress"] = self._windows["progress"].push(progress)
            origin = status.step - getattr(status, "chunk_step", 0)
            previous = self._previous
            step = consistency(
                previous[1] if previous else None, origin - previous[0] if previous else 0, chunk, self.dims
            )
            self._previous = (origin, np.array(chunk, dtype=np.float64))
            risk = self._risk(rnd, entropy, step, distance)
            if risk is not None:
                windowed["risk"] = self._windows["risk"].push(risk)
            self._alarm = bool(exceeds(windowed, self.thresholds, self.rule))
            self.trace.append(
                ChunkScore(
                    status.step, rnd, entropy, windowed["rnd"], windowed["entropy"], self._alarm,
                    distance, progress, windowed.get("progress"), step, risk, windowed.get("risk"),
                )
            )  # fmt: skip
        return self._alarm

    def _risk(self, rnd: float, entropy: float, step: float, distance: float | None) -> float | None:
        """The learned risk of the chunk being scored (None without a model, or a goal model without a goal)."""
        if self.risk is None or (self.risk.goal and distance is None):
            return None
        goal = None
        if self.risk.goal:
            first = distance if not self.trace else self.trace[0].goal_distance
            last = distance if not self.trace else self.trace[-1].goal_distance
            goal = [first, distance - last]
        row = [rnd, entropy, step, *([distance, *goal] if goal else []), len(self.trace) / max(self.risk.n_ref, 1)]
        return self.risk.score_at(len(self.trace), np.array(row))

    @property
    def first_alarm_step(self) -> int | None:
        """Step of this episode's first alarm, or None."""
        return next((c.step for c in self.trace if c.alarm), None)

    def trace_arrays(self) -> dict[str, np.ndarray]:
        """This episode's per-chunk ``step``, ``rnd``, ``entropy``, ``consistency`` and (goal tasks) ``goal_distance``.

        Shapes: (chunks,).
        """
        out = {
            "step": np.array([c.step for c in self.trace], dtype=np.int64),
            "rnd": np.array([c.rnd for c in self.trace]),
            "entropy": np.array([c.entropy for c in self.trace]),
            "consistency": np.array([c.consistency for c in self.trace]),
        }
        if self.trace and all(c.goal_distance is not None for c in self.trace):
            out["goal_distance"] = np.array([c.goal_distance for c in self.trace])
        return out
