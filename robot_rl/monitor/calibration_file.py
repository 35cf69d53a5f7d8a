"""A policy folder's monitor files: the settings, the calibration (calibration.json) and where they live.

    policies/NAME/monitor/
      rnd.npz            RND target and predictor weights
      risk.npz           the learned failure-risk model (when the fit split had enough failures)
      calibration.json   alpha, window, samples, thresholds and promises, seeds and split, scores, versions

numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robot_rl.monitor.conformal import DEFAULT_PROGRESS_SHARE, DETECTORS, SIGNALS, check_progress_share
from robot_rl.monitor.entropy import DEFAULT_EPS
from robot_rl.monitor.guarantee import DEFAULT_INTERVAL_LEVEL, Promise
from robot_rl.monitor.progress import ProgressEnvelope

MONITOR_DIR = "monitor"
CALIBRATION_FILE = "calibration.json"
RND_FILE = "rnd.npz"
CALIBRATION_VERSION = 2
"""2: thresholds set on a calibration split disjoint from the fit split, with each detector's promise. Format 1
fitted its transforms on the rollouts that also set its thresholds (no promise): refused, calibrate again."""


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
    """Successful calibration rollouts (both splits)."""
    progress: ProgressEnvelope | None = None
    """Goal tasks: the per-chunk goal-distance envelope of the fit split's successes (None: no progress score)."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Everything else written (episode scores, RND training summary, versions, data)."""
    calibrated_detectors: tuple[str, ...] = tuple(DETECTORS)
    """The detectors the file has thresholds for (one written by an older robot_rl lacks the newer ones; the
    missing ones read as ``inf`` in :attr:`thresholds` and :meth:`FailureMonitor.load` refuses them)."""
    confidence: float | None = None
    """None: marginal promise (on average over calibrations); else training-conditional (see
    :mod:`robot_rl.monitor.guarantee`)."""
    interval_level: float = DEFAULT_INTERVAL_LEVEL
    """Mass of the stated interval of each detector's false-alarm rate."""
    fit_seeds: list[int] = dataclasses.field(default_factory=list)
    """Seeds of the fit split (their successes fit the envelope and the normalization; the others rank)."""
    promises: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Detector -> its false-alarm promise (:meth:`robot_rl.monitor.guarantee.Promise.to_json`)."""

    @staticmethod
    def settings_json(settings: MonitorSettings) -> dict[str, Any]:
        """The settings as plain JSON (entropy dims as a list)."""
        value = dataclasses.asdict(settings)
        value["entropy_dims"] = None if settings.entropy_dims is None else list(settings.entropy_dims)
        return value

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (infinite thresholds as the string ``inf``)."""
        value = dataclasses.asdict(self)
        del value["calibrated_detectors"]
        value["settings"] = self.settings_json(self.settings)
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
            raise MonitorNotCalibratedError(
                f"{where}: format_version {version!r}; this robot_rl reads {CALIBRATION_VERSION}."
            )
        if version < CALIBRATION_VERSION:
            raise MonitorNotCalibratedError(
                f"{where}: format_version {version} set its thresholds on the same rollouts that fitted its "
                "transforms, so its false-alarm rate is not the alpha it names; re-run `robot-rl monitor calibrate`."
            )
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
            for promise in known.get("promises", {}).values():
                Promise.from_json(promise)  # malformed: KeyError / TypeError
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
