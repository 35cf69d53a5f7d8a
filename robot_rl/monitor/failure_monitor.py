"""FIPER-style failure prediction at run time: RND + action-chunk entropy, conformally calibrated.

:class:`FailureMonitor` plugs into :class:`robot_rl.runtime.Controller` as a monitor. It keeps its
own copy of the policy's observation history and, at every step where a new chunk takes effect
(``status.new_chunk``), scores that history twice:

- RND (:mod:`robot_rl.monitor.rnd`) on the normalized history: is the state like the training data?
- chunk entropy (:mod:`robot_rl.monitor.entropy`): ``samples`` chunks for the history in one batched
  ONNX call; do they disagree?
- goal progress (:mod:`robot_rl.monitor.progress`, goal tasks with a calibrated envelope): is the
  goal further away than in successful rollouts at the same chunk?

Each score is averaged over the last ``window`` chunks and compared with its conformal threshold
(:mod:`robot_rl.monitor.conformal`); with the ``both`` rule (FIPER) the alarm is raised while both
exceed. The decision holds until the next chunk. Every chunk's scores go to :attr:`trace`.
The calibration holds thresholds for several detectors (``fiper``: the ``both`` rule, jointly
calibrated, the default; ``fiper_marginal``; ``rnd``; ``entropy``; ``progress``; ``fiper_progress``:
FIPER's rule or the progress score, jointly calibrated; ``fiper_progress_split``: the same rule with
alpha split between its two parts); :meth:`FailureMonitor.load` picks one.

A policy folder's monitor files (written by ``robot-rl monitor calibrate``)::

    policies/NAME/monitor/
      rnd.npz            RND target and predictor weights
      calibration.json   alpha, window, samples, thresholds, seeds, scores, versions

Run time needs numpy and onnxruntime only, never torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.monitor.conformal import (
    DEFAULT_PROGRESS_SHARE,
    DETECTORS,
    RULES,
    SIGNALS,
    Rule,
    WindowedScore,
    check_progress_share,
    exceeds,
)
from robot_rl.monitor.embedding import ObsEmbedding
from robot_rl.monitor.entropy import DEFAULT_EPS, chunk_entropy, sample_chunks
from robot_rl.monitor.progress import ProgressEnvelope, goal_distance
from robot_rl.monitor.rnd import RND
from robot_rl.runtime.controller import ControlStatus

MONITOR_DIR = "monitor"
CALIBRATION_FILE = "calibration.json"
RND_FILE = "rnd.npz"
CALIBRATION_VERSION = 1


class MonitorNotCalibratedError(FileNotFoundError):
    """The policy folder has no (usable) monitor calibration: run the policy with the monitor off."""


@dataclasses.dataclass(frozen=True)
class MonitorSettings:
    """How the monitor scores chunks (fixed at calibration: the thresholds are only valid for them)."""

    window: int = 3
    """Chunks in the windowed mean of each score."""
    samples: int = 4
    """K: chunks sampled per history for the entropy (one batched ONNX call)."""
    entropy_dims: tuple[int, ...] | None = None
    """Action dims in the entropy (None: all)."""
    entropy_eps: float = DEFAULT_EPS
    """Variance floor of the entropy [action units^2]."""
    reuse_policy_chunk: bool = False
    """Count the chunk the controller just took up (computed from the same history under the controller's
    noise: another sample of the same distribution) as one of the K, and draw only K - 1: a batch of K - 1
    in the monitor's ONNX call. Under prefetch that chunk comes from the history ``lead`` steps earlier."""
    progress_share: float = DEFAULT_PROGRESS_SHARE
    """``fiper_progress_split``: goal progress's share of alpha (FIPER's rule gets the rest)."""

    def __post_init__(self) -> None:
        check_progress_share(self.progress_share)
        if self.window < 1:
            raise ValueError(f"`window` must be >= 1. Got {self.window}.")
        if self.samples < 2:
            raise ValueError(f"`samples` must be >= 2 (the entropy needs a spread). Got {self.samples}.")
        if not self.entropy_eps > 0.0:
            raise ValueError(f"`entropy_eps` must be > 0. Got {self.entropy_eps}.")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """calibration.json: thresholds and how they were obtained."""

    settings: MonitorSettings
    alpha: float
    thresholds: dict[str, dict[str, float]]
    """Detector (:data:`~robot_rl.monitor.conformal.DETECTORS`) -> signal (``rnd``, ``entropy``,
    ``progress``) -> threshold: the detector's rule fires when the windowed scores are above them."""
    policy_sha256: str
    """sha256 of the policy.onnx calibrated (the thresholds hold for that graph only)."""
    env_id: str
    seeds: list[int]
    """Seeds of every calibration rollout."""
    n_successful: int
    """Successful rollouts the thresholds come from."""
    progress: ProgressEnvelope | None = None
    """Goal tasks: the per-chunk goal-distance envelope of the successful rollouts (None: no progress score;
    calibrations written before it existed have none)."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Everything else written (episode scores, RND training summary, versions, data)."""
    calibrated_detectors: tuple[str, ...] = tuple(DETECTORS)
    """The detectors the file has thresholds for (one written by an older robot_rl lacks the newer ones; the
    missing ones read as ``inf`` in :attr:`thresholds` and :meth:`FailureMonitor.load` refuses them)."""

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (infinite thresholds as the string ``inf``)."""
        value = dataclasses.asdict(self)
        del value["calibrated_detectors"]
        dims = self.settings.entropy_dims
        value["settings"]["entropy_dims"] = None if dims is None else list(dims)
        value["progress"] = None if self.progress is None else self.progress.to_json()
        value["thresholds"] = {
            detector: {k: (v if math.isfinite(v) else "inf") for k, v in values.items()}
            for detector, values in self.thresholds.items()
        }
        extra = value.pop("extra")
        return {"format_version": CALIBRATION_VERSION, **value, **extra}

    @classmethod
    def from_json(cls, value: Mapping[str, Any], where: str = CALIBRATION_FILE) -> Calibration:
        """Inverse of :meth:`to_json`.

        Raises:
            MonitorNotCalibratedError: a newer format or a missing field.
        """
        value = dict(value)
        version = value.pop("format_version", None)
        if not isinstance(version, int) or version > CALIBRATION_VERSION:
            raise MonitorNotCalibratedError(f"{where}: format_version {version!r}; this robot_rl reads up to 1.")
        try:
            raw = dict(value.pop("settings"))
            dims = raw.get("entropy_dims")
            settings = MonitorSettings(
                window=int(raw["window"]),
                samples=int(raw["samples"]),
                entropy_dims=None if dims is None else tuple(int(d) for d in dims),
                entropy_eps=float(raw.get("entropy_eps", DEFAULT_EPS)),
                reuse_policy_chunk=bool(raw.get("reuse_policy_chunk", False)),
                progress_share=float(raw.get("progress_share", DEFAULT_PROGRESS_SHARE)),
            )
            raw_thresholds = value.pop("thresholds")
            # FIPER's two signals are required; the progress detectors (added later) default to never firing.
            thresholds = {d: {k: float(raw_thresholds.get(d, {}).get(k, "inf")) for k in SIGNALS} for d in DETECTORS}
            for d in ("fiper", "fiper_marginal", "rnd", "entropy"):
                for k in ("rnd", "entropy"):
                    float(raw_thresholds[d][k])  # KeyError when missing: malformed
            raw_progress = value.pop("progress", None)
            progress = None if raw_progress is None else ProgressEnvelope.from_json(raw_progress)
            fields = {f.name for f in dataclasses.fields(cls)} - {
                "settings", "thresholds", "extra", "progress", "calibrated_detectors"
            }  # fmt: skip
            known = {k: value.pop(k) for k in list(value) if k in fields}
            present = tuple(d for d in DETECTORS if d in raw_thresholds)
            return cls(
                settings=settings, thresholds=thresholds, progress=progress, extra=value, calibrated_detectors=present,
                **known,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as err:
            raise MonitorNotCalibratedError(
                f"{where}: malformed calibration ({err!r}); re-run `robot-rl monitor calibrate`."
            ) from None


def monitor_dir(policy_dir: str | os.PathLike[str]) -> Path:
    """Where a policy folder keeps its monitor files."""
    return Path(policy_dir) / MONITOR_DIR


def read_calibration(policy_dir: str | os.PathLike[str]) -> Calibration:
    """The calibration of a policy folder.

    Raises:
        MonitorNotCalibratedError: no monitor/calibration.json, or an unreadable one.
    """
    path = monitor_dir(policy_dir) / CALIBRATION_FILE
    if not path.is_file():
        raise MonitorNotCalibratedError(
            f"{policy_dir} has no failure-monitor calibration ({path} is missing); the monitor is off. Calibrate it "
            f"with `robot-rl monitor calibrate --policy {policy_dir}`."
        )
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # text that is not JSON, bytes that are not text
        raise MonitorNotCalibratedError(
            f"{path} is not valid JSON ({err}); re-run `robot-rl monitor calibrate`."
        ) from None
    return Calibration.from_json(value, str(path))


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
        self.trace: list[ChunkScore] = []
        """This episode's chunks, in order."""

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
        return cls(
            policy, rnd, embedding, calibration.settings, thresholds, DETECTORS[detector], seed, detector,
            progress=calibration.progress,
        )  # fmt: skip

    def reset(self, seed: int | None = None) -> None:
        """New episode: forget the history, the windows and the trace (and reseed the noise when given)."""
        self._history.clear()
        for window in self._windows.values():
            window.reset()
        self._alarm = False
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
            self._alarm = bool(exceeds(windowed, self.thresholds, self.rule))
            self.trace.append(
                ChunkScore(
                    status.step, rnd, entropy, windowed["rnd"], windowed["entropy"], self._alarm,
                    distance, progress, windowed.get("progress"),
                )
            )  # fmt: skip
        return self._alarm

    @property
    def first_alarm_step(self) -> int | None:
        """Step of this episode's first alarm, or None."""
        return next((c.step for c in self.trace if c.alarm), None)

    def trace_arrays(self) -> dict[str, np.ndarray]:
        """This episode's per-chunk ``step``, ``rnd``, ``entropy`` and (goal tasks) ``goal_distance``.

        Shapes: (chunks,).
        """
        out = {
            "step": np.array([c.step for c in self.trace], dtype=np.int64),
            "rnd": np.array([c.rnd for c in self.trace]),
            "entropy": np.array([c.entropy for c in self.trace]),
        }
        if self.trace and all(c.goal_distance is not None for c in self.trace):
            out["goal_distance"] = np.array([c.goal_distance for c in self.trace])
        return out
