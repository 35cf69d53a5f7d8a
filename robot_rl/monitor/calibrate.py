"""``robot-rl monitor calibrate``: train the RND, roll the policy out, set the conformal thresholds.

1. RND is trained on every observation history of the policy's successful training demos (the card's
   ``training_data.path``, or ``--data``), embedded with the policy's own normalization.
2. The budget (:mod:`robot_rl.monitor.budget`): how many calibration successes the promise at
   ``alpha`` needs for the asked interval width; printed.
3. The policy runs closed-loop rollouts through the deployed stack (the code path of ``robot-rl eval``)
   on seeds ``seed, seed + 1, ...`` (never a demo's seed) with the monitor scoring every chunk: a fixed
   ``--episodes``, or by default until the calibration split holds the budget's successes.
4. The rollouts are split by index: the *fit* split's successes fit the goal-progress envelope
   (:class:`robot_rl.monitor.progress.ProgressEnvelope`, goal tasks) and the joint detectors'
   normalization; the *calibration* split's successes set every detector's threshold at ``alpha``
   (:func:`robot_rl.monitor.conformal.calibrate_detectors`). Nothing is fitted and ranked on the same
   rollouts, so each detector keeps the promise :func:`robot_rl.monitor.conformal.detector_promises` states.

Writes ``POLICY/monitor/rnd.npz`` and ``POLICY/monitor/calibration.json`` (each replaced atomically),
the latter with the settings, thresholds, promises, seeds and split, every rollout's per-chunk scores
(so that other ``alpha`` and ``window`` values can be evaluated without new rollouts), the RND
training summary, the data's hash and the library versions.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robot_rl.monitor.config import MonitorCalibrate
from robot_rl.monitor.failure_monitor import (
    CALIBRATION_FILE,
    RND_FILE,
    Calibration,
    FailureMonitor,
    MonitorSettings,
    monitor_dir,
)
from robot_rl.monitor.guarantee import DEFAULT_INTERVAL_LEVEL, Promise
from robot_rl.monitor.learned import RISK_FILE
from robot_rl.parallel import check_ray_address, check_workers, is_parallel

if TYPE_CHECKING:
    from robot_rl.monitor.budget import Budget
    from robot_rl.monitor.learned import RiskModel
    from robot_rl.monitor.progress import ProgressEnvelope
    from robot_rl.monitor.rnd import RND
    from robot_rl.monitor.rollouts import EpisodeTrace


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


def check_options(episodes: int | None, alpha: float | None, window: int | None, samples: int | None = None) -> None:
    """Refuse out-of-range options with a one-line ValueError."""
    from robot_rl.monitor.guarantee import check_alpha

    if episodes is not None and episodes < 1:
        raise ValueError(f"--episodes must be >= 1 (or left out: the budget decides). Got {episodes}.")
    if alpha is not None:
        check_alpha(alpha, "--alpha")
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


def budget_for(config: MonitorCalibrate) -> Budget:
    """The calibration budget of ``config`` (options checked; the card's success rate sets the rollouts)."""
    from robot_rl.export.metadata import read_metadata
    from robot_rl.monitor.budget import check_fit_share, plan
    from robot_rl.monitor.conformal import check_progress_share
    from robot_rl.monitor.guarantee import check_confidence

    policy_dir = check_policy_dir(config.policy)
    check_options(config.episodes, config.alpha, config.window, config.samples)
    check_confidence(config.confidence)
    check_fit_share(config.fit_share)
    check_progress_share(config.progress_share)
    if not 0.0 < config.interval_level < 1.0:
        raise ValueError(f"--interval-level must be in (0, 1), e.g. 0.9. Got {config.interval_level}.")
    if config.width is not None and not 0.0 < config.width < 1.0:
        raise ValueError(f"--width (of the false-alarm rate's interval) must be in (0, 1). Got {config.width}.")
    check_workers(config.workers, "--workers")
    check_ray_address(config.ray_address, "--ray-address")
    meta = read_metadata(policy_dir)
    rate = (meta.eval or {}).get("success_rate")
    return plan(
        config.alpha, config.width, config.interval_level, config.confidence, config.fit_share, config.progress_share,
        float(rate) if isinstance(rate, int | float) else None,
    )  # fmt: skip


def fit_thresholds(
    traces: Sequence[EpisodeTrace],
    fit_seeds: Sequence[int],
    alpha: float,
    window: int,
    progress_share: float,
    confidence: float | None = None,
    interval_level: float = DEFAULT_INTERVAL_LEVEL,
    envelope: ProgressEnvelope | None = None,
    risk: RiskModel | None = None,
    fit: bool = True,
    seed: int = 0,
) -> tuple[ProgressEnvelope | None, RiskModel | None, dict[str, dict[str, float]], dict[str, Promise]]:
    """Envelope, risk model, thresholds and promises from calibration rollouts split into fit and calibration parts.

    Args:
        traces: Every calibration rollout.
        fit_seeds: The seeds of the fit split (the others rank).
        alpha: False-alarm level.
        window: Chunks in the windowed mean.
        progress_share: ``fiper_progress_split``: goal progress's share of ``alpha``.
        confidence: None (marginal promise) or the training-conditional confidence.
        interval_level: Mass of the stated interval of each rate.
        envelope: A progress envelope already fitted on the fit split (with ``fit`` False: none, no progress).
        risk: A risk model already trained on the fit split (with ``fit`` False: none, no risk).
        fit: Fit the envelope (goal tasks) and train the risk model (imports torch) on the fit split, when not given.
        seed: Seeds the risk model's training.

    Raises:
        ValueError: too few calibration-split successes for ``alpha`` (with the numbers).
    """
    from robot_rl.monitor.conformal import calibrate_detectors, detector_promises
    from robot_rl.monitor.guarantee import check_calibration_size
    from robot_rl.monitor.learned import fit_risk, trace_features, trace_scores
    from robot_rl.monitor.progress import ProgressEnvelope

    fit_set = set(fit_seeds)
    in_fit = [t for t in traces if t.seed in fit_set]
    fitted = [t for t in in_fit if t.success]
    cal = [t for t in traces if t.success and t.seed not in fit_set]
    check_calibration_size(
        len(cal), alpha, confidence,
        f" in the calibration split ({len(fitted) + len(cal)} successes in {len(traces)} rollouts, {len(fitted)} of "
        "them in the fit split)",
    )  # fmt: skip
    goal = all(t.goal_distance for t in fitted + cal)
    if envelope is None and fit and len(fitted) >= 2 and goal:
        envelope = ProgressEnvelope.fit([t.goal_distance for t in fitted])
    if risk is None and fit and in_fit:
        n_ref = max(len(t.steps) for t in in_fit)
        features = [trace_features(t, goal, n_ref) for t in in_fit]
        if all(f is not None for f in features):
            risk = fit_risk(features, [not t.success for t in in_fit], seed=seed)
    thresholds = calibrate_detectors(
        [trace_scores(t, envelope, risk) for t in cal], alpha, window, progress_share,
        fit=[trace_scores(t, envelope, risk) for t in fitted], confidence=confidence,
    )  # fmt: skip
    promises = detector_promises(len(fitted), len(cal), alpha, progress_share, confidence, interval_level)
    return envelope, risk, thresholds, promises


def _rnd_for(config: MonitorCalibrate, meta: Any, policy: Any, embedding: Any, log: Any) -> tuple[RND, dict[str, Any]]:
    """The RND to score with: trained on the policy's demos, or the folder's own with ``--reuse-rnd``.

    Returns:
        The RND and the summary of the data it was trained on (carried over from the folder's calibration.json
        when reused).
    """
    from robot_rl.export.metadata import sha256_file
    from robot_rl.monitor.embedding import demo_histories, resolve_data_path
    from robot_rl.monitor.rnd import RND, train_rnd

    if config.reuse_rnd:
        path = monitor_dir(config.policy) / RND_FILE
        if not path.is_file():
            raise FileNotFoundError(f"--reuse-rnd: {path} does not exist; calibrate once with the demos (--data).")
        rnd = RND.load(path)
        if rnd.input_dim != embedding.dim:
            raise ValueError(
                f"--reuse-rnd: {path} expects {rnd.input_dim}-D embeddings; the policy's are {embedding.dim}."
            )
        try:  # what the earlier calibration recorded about the RND and its data (any format version)
            earlier = json.loads((monitor_dir(config.policy) / CALIBRATION_FILE).read_text())
        except (OSError, ValueError):
            earlier = {}
        rnd.info = dict(earlier.get("rnd") or {}) | {"reused": str(path)}
        log(f"reusing the RND of {path}")
        return rnd, dict(earlier.get("data") or {}) | {"reused_rnd": True}
    data_path = resolve_data_path(meta, config.data)
    data_sha = sha256_file(data_path)
    histories, lengths = demo_histories(data_path, policy.layout, policy.n_obs_steps)
    log(f"training RND on {len(histories)} histories of {len(lengths)} successful demos in {data_path}")
    rnd = train_rnd(
        embedding(histories), config.rnd_hidden, config.rnd_features, config.rnd_steps, seed=config.seed,
        clip=config.rnd_clip,
    )  # fmt: skip
    data = {
        "path": str(data_path),
        "sha256": data_sha,
        "matches_card": data_sha == meta.training_data.sha256,
        "demos": len(lengths),
        "histories": len(histories),
    }
    return rnd, data


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
    from robot_rl.export.metadata import dumps
    from robot_rl.monitor.budget import collect, in_fit_split
    from robot_rl.monitor.embedding import ObsEmbedding
    from robot_rl.monitor.entropy import active_action_dims
    from robot_rl.monitor.plain import plain_monitors
    from robot_rl.monitor.rollouts import run_monitored
    from robot_rl.runtime import OnnxPolicy

    budget = budget_for(config)
    policy_dir = Path(config.policy)
    if config.rnd_hidden < 1 or config.rnd_features < 1 or config.rnd_steps < 1:
        raise ValueError("--rnd-hidden, --rnd-features and --rnd-steps must be >= 1.")
    if config.rnd_clip is not None and not config.rnd_clip > 0.0:
        raise ValueError(f"--rnd-clip must be > 0 (or None). Got {config.rnd_clip}.")
    policy = OnnxPolicy(policy_dir, threads=1)
    meta = policy.metadata
    env_id = resolve_env(config.env, meta.env_id)
    most = config.episodes if config.episodes is not None else config.max_episodes
    overlap = sorted(set(meta.training_data.seeds) & set(range(config.seed, config.seed + most)))
    if overlap:
        raise ValueError(
            f"calibration seeds {config.seed}..{config.seed + most - 1} overlap the demos' seeds (e.g. {overlap[:3]}); "
            f"choose --seed outside them (the default, {MonitorCalibrate.seed}, is)."
        )
    embedding = ObsEmbedding.from_metadata(meta)
    rnd, data = _rnd_for(config, meta, policy, embedding, log)
    settings = MonitorSettings(
        config.window,
        config.samples,
        tuple(active_action_dims(meta)),
        reuse_policy_chunk=config.reuse_policy_chunk,
        progress_share=config.progress_share,
    )
    log(budget.describe())
    out = monitor_dir(policy_dir)
    out.mkdir(exist_ok=True)
    rnd_tmp = out / f".{RND_FILE}.tmp"
    rnd.save(rnd_tmp)
    env = make(env_id)
    monitor = FailureMonitor(policy, rnd, embedding, settings)
    pool = None
    try:
        if is_parallel(config.workers, config.ray_address):  # the rollouts on workers: the same traces, in order
            from robot_rl.monitor.rollout_pool import RolloutPool

            settings_json = Calibration.settings_json(settings)
            pool = RolloutPool(
                policy_dir, rnd_tmp, settings_json, env_id, config.workers, config.ray_address, most, config.progress
            )
        traces = collect(
            lambda seeds: run_monitored(env, monitor, seeds, plain_monitors(meta)),
            config.seed, config.fit_share, budget.successes, config.episodes, config.max_episodes,
            log if config.progress else (lambda *_: None), pool.run if pool is not None else None,
            pool.workers if pool is not None else 1,
        )  # fmt: skip
    except BaseException:  # interrupted or failed: no half-written files left behind
        rnd_tmp.unlink(missing_ok=True)
        raise
    finally:
        env.close()
        if pool is not None:
            pool.close()
    seeds = [t.seed for t in traces]
    fit_seeds = [t.seed for i, t in enumerate(traces) if in_fit_split(i, config.fit_share)]
    try:
        envelope, risk, thresholds, promises = fit_thresholds(
            traces, fit_seeds, config.alpha, config.window, config.progress_share, config.confidence,
            config.interval_level, seed=config.seed,
        )  # fmt: skip
    except ValueError as err:
        rnd_tmp.unlink(missing_ok=True)
        more = "" if config.episodes is None else " Run more --episodes (or leave it out: the budget decides)."
        raise ValueError(f"{err}{more}") from None
    n_cal = promises["fiper"].n
    if n_cal < budget.successes:
        log(f"note: {n_cal} calibration-split successes, fewer than the budget's {budget.successes}: this "
            f"calibration's false-alarm rate is spread wider than the asked width {budget.width:g}")  # fmt: skip
    successes = [t for t in traces if t.success]
    calibration = Calibration(
        settings=settings,
        alpha=config.alpha,
        thresholds=thresholds,
        policy_sha256=policy.onnx_sha256,
        env_id=env_id,
        seeds=seeds,
        n_successful=len(successes),
        progress=envelope,
        confidence=config.confidence,
        interval_level=config.interval_level,
        fit_seeds=fit_seeds,
        promises={name: value.to_json() for name, value in promises.items()},
        extra={
            "success_rate": len(successes) / len(traces),
            "budget": {"successes": budget.successes, "width": budget.width, "minimum": budget.minimum},
            "conditions": "nominal task, the deployed stack without the safety chain, blend none (robot-rl eval's "
            "defaults): the promise holds for rollouts exchangeable with these",
            "statistic": "per rollout: the largest windowed score (mean of the last `window` chunk scores); joint "
            "detectors: the largest rule statistic on scores standardized by the fit split",
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
                "risk": "the learned failure risk alone at alpha (trained on the fit split)",
            },
            "rnd": rnd.info,
            "risk": None if risk is None else risk.info,
            "data": data,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            "episodes": [t.to_json() for t in traces],
        },
    )
    os.replace(rnd_tmp, out / RND_FILE)
    if risk is not None:
        risk.save(out / f".{RISK_FILE}.tmp")
        os.replace(out / f".{RISK_FILE}.tmp", out / RISK_FILE)
    else:  # no model this time: an older one would not match these thresholds
        (out / RISK_FILE).unlink(missing_ok=True)
    tmp = out / f".{CALIBRATION_FILE}.tmp"
    tmp.write_text(dumps(calibration.to_json()))
    os.replace(tmp, out / CALIBRATION_FILE)
    return calibration


def format_calibration(calibration: Calibration, where: str | os.PathLike[str]) -> str:
    """A short summary for the terminal: the split, and per detector its thresholds and its promise."""
    fit = len(calibration.fit_seeds)
    lines = [
        f"{where}: {calibration.n_successful} of {len(calibration.seeds)} rollouts succeeded "
        f"(seeds {calibration.seeds[0]}..{calibration.seeds[-1]}; {fit} rollouts fit the transforms, the others "
        f"rank); alpha={calibration.alpha}, window={calibration.settings.window} chunks, "
        f"K={calibration.settings.samples} samples",
    ]
    for detector, values in calibration.thresholds.items():
        shown = ", ".join(f"{k} > {v:.4g}" for k, v in values.items() if v != float("inf")) or "never"
        lines.append(f"  {detector}: alarm when {shown}")
        if detector in calibration.promises:
            lines.append(f"    promise: {calibration.promises[detector]['text']}")
    return "\n".join(lines)
