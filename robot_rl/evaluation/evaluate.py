"""Roll a policy out on an env over consecutive seeds and build the eval report.

``--policy`` is opened once (:func:`robot_rl.deploy.open_policy`: an exported folder, a training run or a residual
run) or is a keyword (``expert``, ``random``); :mod:`robot_rl.evaluation.actors` turns it into what runs, an
exported policy inside the deployed stack. With ``takeover`` a teleop device can take over from the policy during
the rollout and with ``record`` every episode is recorded (:mod:`robot_rl.evaluation.hil`).

With ``workers`` > 1 or ``ray_address`` the episodes run on worker processes or a Ray cluster
(:class:`robot_rl.parallel.EpisodePool`), each worker with its own env and stack: episode k still runs seed
``seed + k`` through :func:`_episode`, and the report, merged in episode order, is the one-process report (plus an
``execution`` block saying where each episode ran).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robot_rl.deploy import OpenedPolicy
from robot_rl.envs.registry import make
from robot_rl.envs.rollout import EPISODE_EXTRAS
from robot_rl.evaluation.actors import make_actor
from robot_rl.evaluation.config import TRAINED_EVAL_SEED, EvalConfig, Resolved, policy_env_id, resolve
from robot_rl.evaluation.guard import Guard
from robot_rl.evaluation.hil import HumanInTheLoop
from robot_rl.evaluation.mcap_log import open_eval_log
from robot_rl.evaluation.report import base_alone_report, mean_final_distance, policy_run, wilson_interval
from robot_rl.parallel import EpisodePool, is_parallel

if TYPE_CHECKING:
    from robot_rl.envs.randomization import DomainRandomization
    from robot_rl.teleop.base import Teleoperator

__all__ = [
    "TRAINED_EVAL_SEED",
    "EvalConfig",
    "EvalRun",
    "evaluate",
    "evaluate_runs",
    "mean_final_distance",
    "policy_env_id",
    "wilson_interval",
]


def _base_alone(opened: OpenedPolicy, env: Any, seeds: list[int]) -> list[dict[str, Any]]:
    """The residual run's base, without its residual, on the same seeds: its episodes."""
    from robot_rl.envs.rollout import run_episodes

    assert opened.base is not None
    actor, reset = opened.base.actor(env)
    return run_episodes(env, actor, reset, seeds)


@dataclasses.dataclass
class _Session:
    """One process's rollout machinery: the env, the guard, the evaluated actor and the human parts."""

    env: Any
    guard: Guard
    policy: Any
    reset_policy: Any
    hil: HumanInTheLoop
    video: bool
    log: Any = None
    """``--log``: the :class:`~robot_rl.evaluation.mcap_log.EvalLog` (one process only), or None."""


def _open(config: EvalConfig, resolved: Resolved, randomize: Any, device: Teleoperator | None = None) -> _Session:
    """Make the env and build what runs on it (the caller closes ``session.env`` and ``session.hil``)."""
    want_video = config.video is not None
    if want_video:
        os.environ.setdefault("MUJOCO_GL", "osmesa")
    env = make(resolved.env_id, randomize=randomize, render_mode="rgb_array" if want_video else None)
    try:
        guard = Guard(resolved.env_id, env, safety=config.safety == "on")
        policy, reset_policy = make_actor(config, resolved.opened, resolved.env_id, env, guard)
        hil = HumanInTheLoop(config, env, resolved.env_id, device, resolved.seed)
    except BaseException:
        env.close()
        raise
    return _Session(env, guard, policy, reset_policy, hil, want_video)


def _episode(
    session: _Session, config: EvalConfig, k: int, seed: int, frames: list[np.ndarray]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Episode ``k`` on ``seed``: its record and its tally (fallbacks, violations by constraint); None on quit."""
    env, guard, policy, hil = session.env, session.guard, session.policy, session.hil
    sent = getattr(policy, "sent", None)
    obs, reset_info = env.reset(seed=seed)
    guard.start_episode()
    session.reset_policy(seed)
    hil.start_episode(seed, reset_info)
    log = session.log
    if log is not None:
        log.start_episode(k, seed, obs)
    filming = session.video and k < config.video_episodes
    if filming:
        frames.append(env.render())
    total, length, human, info = 0.0, 0, 0, {"is_success": 0.0}
    fallbacks, by_constraint = guard.fallbacks, guard.by_constraint
    guard.by_constraint = collections.Counter()  # this episode's, in the order first broken
    try:
        done = False
        while not done:
            raw = proposed = policy(obs)
            if not guard.in_controller:
                proposed = guard.filter(proposed)
            action, intervened = hil.act(obs, proposed)
            if sent is not None:
                sent(action)  # a policy with observation features learns what was actually sent
            if hil.quit:
                break
            state = hil.state()
            next_obs, reward, terminated, truncated, info = env.step(action)
            guard.after_step()
            if log is not None:
                log.step(raw, action, next_obs, float(reward), bool(intervened) if hil.takeover else None)
            total += float(reward)
            length += 1
            human += intervened
            done = terminated or truncated
            hil.record(obs, action, float(reward), done, next_obs, state, intervened)
            hil.show(k, length, intervened, info)
            obs = next_obs
            if filming:
                frames.append(env.render())
    finally:
        episode_by_constraint = guard.by_constraint
        by_constraint.update(episode_by_constraint)
        guard.by_constraint = by_constraint
    if hil.quit:
        return None  # the episode in progress is neither reported nor recorded
    hil.end_episode(bool(info["is_success"]))
    episode = {
        "seed": seed,
        "success": bool(info["is_success"]),
        "return": total,
        "length": length,
        "first_alarm_step": guard.first_alarm_step,
        "intervention_steps": human,
        "safety_interventions": guard.episode_interventions if guard.chain is not None else None,
        "safety_violations": guard.episode_violations,
    }
    for key in EPISODE_EXTRAS:
        if key in info:
            episode[key] = info[key]
    tally = {"fallbacks": guard.fallbacks - fallbacks, "by_constraint": dict(episode_by_constraint)}
    if log is not None:
        log.end_episode(episode)
    return episode, tally


def _report(
    config: EvalConfig,
    resolved: Resolved,
    per_episode: list[dict[str, Any]],
    totals: dict[str, Any],
    elapsed: float,
    quit: bool,
    randomization: DomainRandomization | None,
    label: str | None,
) -> dict[str, Any]:
    """The eval report (ARCHITECTURE.md) of the episodes run; ``totals``: the guard's counts and state."""
    successes = sum(e["success"] for e in per_episode)
    n = len(per_episode)  # fewer than asked when the operator quit
    chain = totals["chain"]
    return {
        "env": resolved.env_id,
        "policy": config.policy,
        "episodes": n,
        "seed": resolved.seed,
        "randomize": config.randomize if randomization is None else (label or "custom"),
        "success_rate": successes / n if n else None,
        "success_ci95": list(wilson_interval(successes, n)),
        "mean_return": float(np.mean([e["return"] for e in per_episode])) if n else None,
        "mean_episode_length": float(np.mean([e["length"] for e in per_episode])) if n else None,
        "mean_final_distance": mean_final_distance(per_episode),
        "safety": config.safety,
        "safety_interventions": totals["interventions"] if chain else None,
        "safety_fallbacks": totals["fallbacks"] if chain else None,
        "safety_violations": totals["violation_steps"],
        "safety_violations_by_constraint": dict(totals["by_constraint"]),
        "monitor": totals["monitor_state"],
        "monitor_alarms": (
            sum(e["first_alarm_step"] is not None for e in per_episode) if totals["monitor"] is not None else None
        ),
        "monitor_false_alarms": _monitor_false_alarms(totals["monitor"], per_episode),
        "wall_time_s": elapsed,
        "takeover": config.takeover,
        "intervention_steps": sum(e["intervention_steps"] for e in per_episode),
        "quit": quit,
        "per_episode": per_episode,
    }


def _finish(
    config: EvalConfig,
    resolved: Resolved,
    report: dict[str, Any],
    randomize: Any,
    frames: list[np.ndarray],
    fps: int,
    base_episodes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Add the base alone, the policy's provenance, the plot and the video to ``report``; write ``--json``."""
    if config.record is not None:
        report["record"] = str(config.record)
    opened = resolved.opened
    if opened is not None and opened.kind == "residual":
        if base_episodes is None:
            base_env = make(resolved.env_id, randomize=randomize)
            try:
                base_episodes = _base_alone(opened, base_env, [e["seed"] for e in report["per_episode"]])
            finally:
                base_env.close()
        report["base_alone"] = base_alone_report(opened, base_episodes)
    if opened is not None:
        report["policy_run"] = policy_run(opened, config)
    if opened is not None and opened.kind != "exported" and config.plot is not None:
        from robot_rl.policies.plots import plot_training

        env_id = resolved.env_id
        report["plot"] = str(plot_training(config.policy, config.plot, title=f"{env_id} {opened.policy_type}"))
    if config.video is not None and frames:
        import imageio.v2 as imageio

        config.video.parent.mkdir(parents=True, exist_ok=True)
        imageio.mimwrite(config.video, frames, fps=fps, macro_block_size=8)
        report["video"] = str(config.video)
    if config.json is not None:
        import json

        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


def _monitor_false_alarms(monitor: Any, per_episode: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The failure monitor's promised false-alarm level beside the measured rate (robot_rl.monitor.metrics)."""
    from robot_rl.monitor.metrics import monitor_false_alarms

    return monitor_false_alarms(monitor, per_episode)


def _progress_label(config: EvalConfig, resolved: Resolved, where: str = "") -> str:
    policy_label = config.policy
    if resolved.opened is not None:
        onnx = "onnx " if resolved.opened.kind == "exported" else ""
        policy_label = f"{onnx}{resolved.opened.policy_type} {Path(config.policy).name}"
    return f"eval {resolved.env_id.split('/')[-1]} ({policy_label}){where}"


def evaluate(
    config: EvalConfig,
    device: Teleoperator | None = None,
    randomization: DomainRandomization | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Run ``config.episodes`` episodes and return the eval report (see ARCHITECTURE.md).

    Args:
        config: What to evaluate (``workers`` > 1 or ``ray_address``: on workers, :func:`evaluate_runs`).
        device: A connected takeover device (default with ``config.takeover``: that device, made,
            connected and closed here). Needs ``config.takeover`` other than ``none``.
        randomization: Use this randomization instead of ``config.randomize`` (the robustness suite).
        label: What the report's ``randomize`` says with ``randomization`` (the family's name).

    Raises:
        DeviceNotFoundError: the takeover device is not connected (a RuntimeError).
    """
    if device is not None and config.takeover == "none":
        raise ValueError("a takeover `device` needs `takeover` set to keyboard, gamepad or spacemouse. Got 'none'.")
    if is_parallel(config.workers, config.ray_address):
        if device is not None:
            raise ValueError("a takeover `device` runs in this process: use `workers` 1 and no `ray_address`.")
        return evaluate_runs([EvalRun(config, randomization, label)])[0]
    resolved = resolve(config)
    randomize = config.randomize if randomization is None else randomization
    session = _open(config, resolved, randomize, device)
    env, guard, hil = session.env, session.guard, session.hil
    session.log = open_eval_log(config, env, resolved.env_id, guard)  # None without --log; a bad file: a warning
    log_entry = None
    frames: list[np.ndarray] = []
    per_episode = []
    start = time.perf_counter()
    iterator: Any = range(config.episodes)
    if config.progress and hil.takeover is None:
        from tqdm import tqdm

        where = f" under {label}" if randomization is not None and label else ""
        iterator = tqdm(iterator, desc=_progress_label(config, resolved, where), unit="ep")
    try:
        for k in iterator:
            result = _episode(session, config, k, resolved.seed + k, frames)
            if result is None:
                break
            per_episode.append(result[0])
    finally:
        hil.close()
        if session.log is not None:
            log_entry = session.log.close()
    elapsed = time.perf_counter() - start
    fps = round(1.0 / env.unwrapped.ctrl_dt)
    env.close()
    totals = {
        "chain": guard.chain is not None,
        "interventions": guard.interventions,
        "fallbacks": guard.fallbacks,
        "violation_steps": guard.violation_steps,
        "by_constraint": guard.by_constraint,
        "monitor_state": guard.monitor_state,
        "monitor": guard.monitor,
    }
    report = _report(config, resolved, per_episode, totals, elapsed, hil.quit, randomization, label)
    if log_entry is not None:
        report["log"] = log_entry
    return _finish(config, resolved, report, randomize, frames, fps)


# ------------------------------------------------------------------------------------------- on workers
@dataclasses.dataclass(frozen=True)
class EvalRun:
    """One evaluation of :func:`evaluate_runs`: its config and, for the robustness suite, a randomization."""

    config: EvalConfig
    randomization: DomainRandomization | None = None
    label: str | None = None
    """What the report's ``randomize`` says with ``randomization``."""


class _WorkerRuns:
    """A worker's context: the runs, and the sessions it opened for the latest of them (built on first use)."""

    def __init__(self, runs: Sequence[EvalRun]) -> None:
        self.runs = list(runs)
        self.offsets = list(itertools.accumulate([run.config.episodes for run in self.runs], initial=0))
        self.open: collections.OrderedDict[int, tuple[_Session, Resolved, Any]] = collections.OrderedDict()

    def session(self, r: int) -> tuple[_Session, Resolved, Any]:
        if r not in self.open:
            while len(self.open) >= 2:  # the episodes come in order: older runs are done
                old, _, base = self.open.popitem(last=False)[1]
                old.env.close()
                if base is not None:
                    base[0].close()
            run = self.runs[r]
            resolved = resolve(run.config)
            randomize = run.config.randomize if run.randomization is None else run.randomization
            session = _open(run.config, resolved, randomize)
            base = None
            if resolved.opened is not None and resolved.opened.kind == "residual":
                assert resolved.opened.base is not None
                base_env = make(resolved.env_id, randomize=randomize)
                base = (base_env, *resolved.opened.base.actor(base_env))
            self.open[r] = (session, resolved, base)
        return self.open[r]


def _worker_setup(runs: Sequence[EvalRun]) -> _WorkerRuns:
    return _WorkerRuns(runs)


def _worker_episode(context: _WorkerRuns, index: int) -> dict[str, Any]:
    """Episode ``index`` of all the runs together (run r's episode k is ``offsets[r] + k``)."""
    from robot_rl.envs.rollout import run_episodes

    r = bisect.bisect_right(context.offsets, index) - 1
    k = index - context.offsets[r]
    session, resolved, base = context.session(r)
    frames: list[np.ndarray] = []
    result = _episode(session, context.runs[r].config, k, resolved.seed + k, frames)
    assert result is not None  # no takeover on workers: nobody quits
    guard = session.guard
    return {
        "episode": result[0],
        "tally": result[1],
        "frames": frames,
        "base": None if base is None else run_episodes(base[0], base[1], base[2], [resolved.seed + k])[0],
        "totals": {
            "chain": guard.chain is not None,
            "monitor_state": guard.monitor_state,
            "monitor": guard.monitor is not None,
        },
        "fps": round(1.0 / session.env.unwrapped.ctrl_dt),
    }


def evaluate_runs(runs: Sequence[EvalRun], progress: str | None = None) -> list[dict[str, Any]]:
    """Evaluate ``runs`` together on the workers of the first run's config; their reports, in order.

    Every episode of every run is one task of one :class:`robot_rl.parallel.EpisodePool` (the robustness suite's
    families and the expert beside the policy share the workers, with no barrier between them), and each report is
    the one :func:`evaluate` gives in one process, plus ``execution``.

    Args:
        runs: The evaluations; the first one's ``workers`` and ``ray_address`` apply to all.
        progress: The progress bar's label (default: the first run's, as one process shows it); one bar in all.
    """
    first = runs[0].config
    resolved = [resolve(run.config) for run in runs]
    worker_runs = [
        dataclasses.replace(
            run, config=dataclasses.replace(run.config, progress=False, json=None, plot=None, workers=None)
        )
        for run in runs
    ]
    total = sum(run.config.episodes for run in runs)
    bar: Any = None
    options: dict[str, Any] = {}
    if first.progress:
        from tqdm import tqdm

        options["log"] = tqdm.write
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with EpisodePool(
        _worker_setup, (worker_runs,), _worker_episode, first.workers, first.ray_address, most=total, **options
    ) as pool:
        if first.progress:
            where = f" under {runs[0].label}" if runs[0].label else ""
            bar = tqdm(total=total, desc=progress or _progress_label(first, resolved[0], where), unit="ep")
        try:
            for _, value in pool.ordered(range(total), done=(lambda _: bar.update(1)) if bar is not None else None):
                results.append(value)
        finally:
            if bar is not None:
                bar.close()
    execution = pool.execution
    elapsed = time.perf_counter() - start
    reports = []
    offset = 0
    for run, res in zip(runs, resolved, strict=True):
        mine = results[offset : offset + run.config.episodes]
        per_episode = [m["episode"] for m in mine]
        by_constraint: collections.Counter[str] = collections.Counter()
        for m in mine:
            by_constraint.update(m["tally"]["by_constraint"])
        totals = dict(mine[0]["totals"])
        assert not totals["monitor"]  # the failure monitor stays in one process (EvalConfig refuses it on workers)
        totals["monitor"] = None
        totals.update(
            interventions=sum(e["safety_interventions"] or 0 for e in per_episode),
            fallbacks=sum(m["tally"]["fallbacks"] for m in mine),
            violation_steps=sum(e["safety_violations"] for e in per_episode),
            by_constraint=by_constraint,
        )
        report = _report(run.config, res, per_episode, totals, elapsed, False, run.randomization, run.label)
        where = {k - offset: v for k, v in execution.where.items() if offset <= k < offset + run.config.episodes}
        report["execution"] = {
            "backend": execution.backend,
            "workers": execution.workers,
            "rerun_episodes": [k - offset for k in execution.rerun if offset <= k < offset + run.config.episodes],
            "where": [{"episode": k, **where[k]} for k in sorted(where)],
        }
        randomize = run.config.randomize if run.randomization is None else run.randomization
        frames = [frame for m in mine for frame in m["frames"]]
        base = [m["base"] for m in mine] if mine[0]["base"] is not None else None
        reports.append(_finish(run.config, res, report, randomize, frames, mine[0]["fps"], base))
        offset += run.config.episodes
    return reports
