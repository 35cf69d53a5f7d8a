"""``robot-rl monitor calibrate``: train the RND, roll the policy out, set the conformal thresholds.

1. RND is trained on every observation history of the policy's successful training demos (the card's
   ``training_data.path``, or ``--data``), embedded with the policy's own normalization.
2. The policy runs ``episodes`` closed-loop rollouts through the runtime Controller (the code path of
   ``robot-rl eval``) on seeds ``seed ... seed + episodes - 1`` (never a demo's seed) with the
   monitor scoring every chunk.
3. On goal tasks, the successful rollouts' per-chunk goal distances give the envelope of the progress
   score (:class:`robot_rl.monitor.progress.ProgressEnvelope`).
4. The successful rollouts set the thresholds of every detector at level ``alpha``
   (:func:`robot_rl.monitor.conformal.calibrate_detectors`).

Writes ``POLICY/monitor/rnd.npz`` and ``POLICY/monitor/calibration.json`` (each replaced atomically),
the latter with the settings, thresholds, seeds, every rollout's per-chunk scores (so that other
``alpha`` and ``window`` values can be evaluated without new rollouts), the RND training summary,
the data's hash and the library versions.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
from pathlib import Path
from typing import Any

from robot_rl.monitor.config import MonitorCalibrate
from robot_rl.monitor.failure_monitor import (
    CALIBRATION_FILE,
    RND_FILE,
    Calibration,
    FailureMonitor,
    MonitorSettings,
    monitor_dir,
)


def check_policy_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as an exported policy folder.

    Raises:
        FileNotFoundError: not a folder with a metadata.json (one line, saying what to pass).
    """
    from robot_rl.export.metadata import METADATA_FILE

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--policy {path}: no such folder (expected an exported policy, e.g. policies/NAME).")
    if not (path / METADATA_FILE).is_file():
        raise FileNotFoundError(
            f"--policy {path} is not an exported policy folder (no {METADATA_FILE}); export a run with "
            f"`robot-rl export --run RUN_DIR --out {path}`."
        )
    return path


def check_options(episodes: int, alpha: float | None, window: int | None, samples: int | None = None) -> None:
    """Refuse out-of-range options with a one-line ValueError."""
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1. Got {episodes}.")
    if alpha is not None and not 0.0 < alpha < 1.0:
        raise ValueError(f"--alpha must be in (0, 1). Got {alpha}.")
    if window is not None and window < 1:
        raise ValueError(f"--window must be >= 1 (chunks). Got {window}.")
    if samples is not None and samples < 2:
        raise ValueError(f"--samples must be >= 2 (the entropy needs a spread). Got {samples}.")


def resolve_env(env: str | None, trained_env: str) -> str:
    """The env id to run: ``env`` (checked) or the policy's; another env than the policy's is refused."""
    from robot_rl.envs.registry import check_env_id

    env_id = check_env_id(env or trained_env)
    if env_id != trained_env:
        raise ValueError(f"the policy was trained on {trained_env}; --env is {env_id}. Use its env.")
    return env_id


def versions() -> dict[str, str]:
    """Versions of the libraries the monitor depends on."""
    out = {}
    for name in ("robot_rl", "numpy", "onnxruntime", "torch", "mujoco", "gymnasium"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def calibrate(config: MonitorCalibrate, log: Any = print) -> Calibration:
    """Calibrate the failure monitor of ``config.policy`` and write its files.

    Args:
        config: What to calibrate and how.
        log: Called with one-line progress messages (``print`` by default).

    Returns:
        The calibration written to ``POLICY/monitor/calibration.json``.

    Raises:
        FileNotFoundError: not a policy folder, or its training data is missing (TrainingDataMissing).
        ValueError: bad options, seeds overlapping the demos', or too few successful rollouts for ``alpha``.
    """
    from robot_rl.envs.registry import make
    from robot_rl.export.metadata import dumps, sha256_file
    from robot_rl.monitor.conformal import calibrate_detectors, min_calibration_size
    from robot_rl.monitor.embedding import ObsEmbedding, demo_histories, resolve_data_path
    from robot_rl.monitor.entropy import active_action_dims
    from robot_rl.monitor.plain import plain_monitors
    from robot_rl.monitor.progress import ProgressEnvelope
    from robot_rl.monitor.rnd import train_rnd
    from robot_rl.monitor.rollouts import run_monitored
    from robot_rl.runtime import OnnxPolicy

    policy_dir = check_policy_dir(config.policy)
    check_options(config.episodes, config.alpha, config.window, config.samples)
    if config.rnd_hidden < 1 or config.rnd_features < 1 or config.rnd_steps < 1:
        raise ValueError("--rnd-hidden, --rnd-features and --rnd-steps must be >= 1.")
    if config.rnd_clip is not None and not config.rnd_clip > 0.0:
        raise ValueError(f"--rnd-clip must be > 0 (or None). Got {config.rnd_clip}.")
    policy = OnnxPolicy(policy_dir, threads=1)
    meta = policy.metadata
    env_id = resolve_env(config.env, meta.env_id)
    seeds = list(range(config.seed, config.seed + config.episodes))
    overlap = sorted(set(meta.training_data.seeds) & set(seeds))
    if overlap:
        raise ValueError(
            f"calibration seeds {seeds[0]}..{seeds[-1]} overlap the demos' seeds (e.g. {overlap[:3]}); choose --seed "
            f"outside them (the default, {MonitorCalibrate.seed}, is)."
        )
    data_path = resolve_data_path(meta, config.data)
    data_sha = sha256_file(data_path)

    embedding = ObsEmbedding.from_metadata(meta)
    histories, lengths = demo_histories(data_path, policy.layout, policy.n_obs_steps)
    log(f"training RND on {len(histories)} histories of {len(lengths)} successful demos in {data_path}")
    rnd = train_rnd(
        embedding(histories),
        config.rnd_hidden,
        config.rnd_features,
        config.rnd_steps,
        seed=config.seed,
        clip=config.rnd_clip,
    )
    settings = MonitorSettings(
        config.window,
        config.samples,
        tuple(active_action_dims(meta)),
        reuse_policy_chunk=config.reuse_policy_chunk,
        progress_share=config.progress_share,
    )
    monitor = FailureMonitor(policy, rnd, embedding, settings)
    env = make(env_id)
    try:
        label = f"calibrate {Path(policy_dir).name}" if config.progress else None
        traces = run_monitored(env, monitor, seeds, plain_monitors(meta), progress=label)
    finally:
        env.close()
    successes = [t for t in traces if t.success]
    needed = min_calibration_size(config.alpha)
    if len(successes) < needed:
        raise ValueError(
            f"only {len(successes)} of {len(traces)} calibration rollouts succeeded; alpha={config.alpha} needs at "
            f"least {needed} successful ones. Run more --episodes (or a larger --alpha)."
        )
    envelope = None
    if all(t.goal_distance for t in successes):
        envelope = ProgressEnvelope.fit([t.goal_distance for t in successes])
    thresholds = calibrate_detectors(
        [t.scores(envelope) for t in successes], config.alpha, config.window, config.progress_share
    )
    calibration = Calibration(
        settings=settings,
        alpha=config.alpha,
        thresholds=thresholds,
        policy_sha256=policy.onnx_sha256,
        env_id=env_id,
        seeds=seeds,
        n_successful=len(successes),
        progress=envelope,
        extra={
            "success_rate": len(successes) / len(traces),
            "statistic": "per rollout: the largest windowed score (mean of the last `window` chunk scores)",
            "detectors": {
                "fiper": "RND and entropy both above thresholds calibrated jointly at alpha",
                "fiper_marginal": "RND and entropy both above their own thresholds at alpha",
                "rnd": "RND alone at alpha",
                "entropy": "entropy alone at alpha",
                "progress": "goal progress alone at alpha (goal tasks)",
                "fiper_progress": "FIPER's rule or goal progress, calibrated jointly at alpha (goal tasks)",
                "fiper_progress_split": (
                    f"FIPER's rule at {1 - config.progress_share:g} alpha or goal progress at "
                    f"{config.progress_share:g} alpha (goal tasks)"
                ),
            },
            "rnd": rnd.info,
            "data": {
                "path": str(data_path),
                "sha256": data_sha,
                "matches_card": data_sha == meta.training_data.sha256,
                "demos": len(lengths),
                "histories": len(histories),
            },
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            "episodes": [t.to_json() for t in traces],
        },
    )
    out = monitor_dir(policy_dir)
    out.mkdir(exist_ok=True)
    tmp = out / f".{RND_FILE}.tmp"
    rnd.save(tmp)
    os.replace(tmp, out / RND_FILE)
    tmp = out / f".{CALIBRATION_FILE}.tmp"
    tmp.write_text(dumps(calibration.to_json()))
    os.replace(tmp, out / CALIBRATION_FILE)
    return calibration


def format_calibration(calibration: Calibration, where: str | os.PathLike[str]) -> str:
    """A short summary for the terminal."""
    lines = [
        f"{where}: {calibration.n_successful} of {len(calibration.seeds)} rollouts succeeded "
        f"(seeds {calibration.seeds[0]}..{calibration.seeds[-1]}); alpha={calibration.alpha}, "
        f"window={calibration.settings.window} chunks, K={calibration.settings.samples} samples",
    ]
    for detector, values in calibration.thresholds.items():
        shown = ", ".join(f"{k} > {v:.4g}" for k, v in values.items() if v != float("inf"))
        lines.append(f"  {detector}: alarm when {shown}")
    return "\n".join(lines)
