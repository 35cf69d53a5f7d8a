"""``robot-rl monitor eval``: the calibrated monitor in nominal and shifted conditions, as a report.

For each condition (:func:`robot_rl.monitor.shift.conditions_for` the env) the policy runs ``episodes`` rollouts
through the runtime Controller with the monitor and the plain monitors attached, on seeds disjoint
from the calibration's and the demos'. Each detector's alarms are replayed from the per-chunk scores
(:mod:`robot_rl.monitor.metrics` defines the rates and the lead time). Writes ``report.json`` (with
every episode's per-chunk scores and first alarm per detector) and ``report.md`` to ``out``.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from typing import Any

from robot_rl.monitor.calibrate import check_options, check_policy_dir, fit_thresholds, resolve_env, versions
from robot_rl.monitor.config import CONDITION_STRIDE, MonitorEval
from robot_rl.monitor.rollouts import EpisodeTrace
from robot_rl.monitor.shift import conditions_for

DETECTOR_LABELS = {
    "fiper": "FIPER (RND and entropy, joint calibration)",
    "fiper_marginal": "FIPER, marginal thresholds",
    "rnd": "RND alone",
    "entropy": "entropy alone",
    "progress": "goal progress alone",
    "fiper_progress": "FIPER or goal progress (joint)",
    "fiper_progress_split": "FIPER or goal progress (split alpha)",
    "risk": "learned risk",
    "nonfinite_obs": "NaN/inf observation",
    "limit_hit": "limit-hit rate",
    "tracking": "tracking error",
}
LEARNED = ("fiper", "fiper_marginal", "rnd", "entropy", "progress", "fiper_progress", "fiper_progress_split", "risk")


def evaluate_monitor(config: MonitorEval, log: Any = print, command: str | None = None) -> dict[str, Any]:
    """Run the monitor evaluation and write its report.

    Args:
        config: Policy, conditions, episodes, seeds and output folder.
        log: Called with one-line progress messages.
        command: The command line that ran it (shown in the report).

    Returns:
        The report (also written to ``config.out / "report.json"``).

    Raises:
        FileNotFoundError: not a policy folder.
        MonitorNotCalibratedError: the policy has no calibration (a FileNotFoundError).
        ValueError: unknown conditions, bad options, or seeds overlapping the calibration's or the demos'.
    """
    from robot_rl.export.metadata import dumps
    from robot_rl.monitor.failure_monitor import FailureMonitor, read_calibration
    from robot_rl.monitor.metrics import detector_metrics, first_alarm_steps
    from robot_rl.monitor.plain import plain_monitors
    from robot_rl.monitor.rollouts import run_monitored
    from robot_rl.runtime import OnnxPolicy

    policy_dir = check_policy_dir(config.policy)
    check_options(config.episodes, config.alpha, config.window)
    policy = OnnxPolicy(policy_dir, threads=1)
    monitor = FailureMonitor.load(policy_dir, policy)
    calibration = read_calibration(policy_dir)
    meta = policy.metadata
    env_id = resolve_env(config.env, meta.env_id)
    available = conditions_for(env_id)
    names = tuple(available) if config.conditions is None else tuple(config.conditions)
    unknown = [c for c in names if c not in available]
    if unknown or not names:
        raise ValueError(f"--conditions: unknown {unknown or 'none given'}; {env_id} has {', '.join(available)}.")
    alpha = config.alpha if config.alpha is not None else calibration.alpha
    window = config.window if config.window is not None else calibration.settings.window
    complete = set(LEARNED) <= set(calibration.calibrated_detectors) and set(LEARNED) <= set(calibration.promises)
    if (alpha, window) == (calibration.alpha, calibration.settings.window) and complete:
        thresholds, promises = calibration.thresholds, calibration.promises
    else:  # another alpha or window, or a calibration older than some detector: from the stored rollouts
        stored = [EpisodeTrace.from_json(e) for e in calibration.extra.get("episodes", [])]
        if not stored:
            raise ValueError("the calibration stores no rollout scores; re-run `robot-rl monitor calibrate`.")
        # The envelope and the risk model were fitted on the fit split alone: reused as they are, with its split.
        _, _, thresholds, fitted = fit_thresholds(
            stored, calibration.fit_seeds, alpha, window, calibration.settings.progress_share,
            calibration.confidence, calibration.interval_level, calibration.progress, monitor.risk, fit=False,
        )  # fmt: skip
        promises = {name: value.to_json() for name, value in fitted.items()}

    index = {name: list(available).index(name) for name in names}
    seeds = {
        name: list(range(config.seed + CONDITION_STRIDE * i, config.seed + CONDITION_STRIDE * i + config.episodes))
        for name, i in index.items()
    }
    used = set(calibration.seeds) | set(meta.training_data.seeds)
    clash = sorted(used & {s for values in seeds.values() for s in values})
    if clash:
        raise ValueError(
            f"evaluation seeds overlap the calibration's or the demos' (e.g. {clash[:3]}); choose another --seed "
            f"(the default, {MonitorEval.seed}, avoids them)."
        )

    start = time.perf_counter()
    per_condition: dict[str, Any] = {}
    everything: list[tuple[str, EpisodeTrace, dict[str, int | None]]] = []
    for name in names:
        env = available[name].make(env_id)
        try:
            label = f"monitor eval {name}" if config.progress else None
            traces = run_monitored(env, monitor, seeds[name], plain_monitors(meta), progress=label)
        finally:
            env.close()
        alarms = [first_alarm_steps(t, thresholds, window, calibration.progress, monitor.risk) for t in traces]
        per_condition[name] = detector_metrics(traces, alarms)
        per_condition[name]["description"] = available[name].description
        everything += [(name, t, a) for t, a in zip(traces, alarms, strict=True)]
        rates = per_condition[name]["detectors"]["fiper"]
        log(
            f"{name}: success {per_condition[name]['success_rate']:.2f}, FIPER false alarms "
            f"{_fmt(rates['false_alarm_rate'])}, detection {_fmt(rates['detection_rate'])}"
        )
    pooled = {}
    shifted = [e for e in everything if e[0] != "nominal"]
    for label, group in (("shifted", shifted), ("all", everything)):
        if group and (label == "all" or len(names) > 1):
            pooled[label] = detector_metrics([e[1] for e in group], [e[2] for e in group])
    report = {
        "command": command,
        "policy": str(policy_dir),
        "env": env_id,
        "episodes_per_condition": config.episodes,
        "seed": config.seed,
        "alpha": alpha,
        "window": window,
        "samples": calibration.settings.samples,
        "calibration": {
            "alpha": calibration.alpha,
            "window": calibration.settings.window,
            "n_successful": calibration.n_successful,
            "fit_rollouts": len(calibration.fit_seeds),
            "episodes": len(calibration.seeds),
            "seeds": [calibration.seeds[0], calibration.seeds[-1]],
        },
        "thresholds": thresholds,
        "promises": promises,
        "confidence": calibration.confidence,
        "progress": calibration.progress is not None,
        "risk": monitor.risk is not None,
        "lead_time_definition": "failure time = end of the failed episode (length * ctrl_dt: the time limit for a "
        "timeout, the termination step for a crash); lead time = failure time - time of the first alarm; median over "
        "detected failures",
        "conditions": per_condition,
        "pooled": pooled,
        "wall_time_s": time.perf_counter() - start,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "per_episode": [{"condition": c, **t.to_json(), "first_alarm_step": a} for c, t, a in everything],
    }
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(dumps(_finite(report)))
    (out / "report.md").write_text(format_report(report))
    return report


def _finite(value: Any) -> Any:
    """``inf`` thresholds as the string ``inf`` (JSON has no infinity)."""
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cell(metrics: dict[str, Any]) -> str:
    lead = metrics["median_lead_time_s"]
    return (
        f"{_fmt(metrics['false_alarm_rate'])} / {_fmt(metrics['detection_rate'])} / "
        f"{'-' if lead is None else f'{lead:.2f} s'}"
    )


def _promise_table(report: dict[str, Any], learned: tuple[str, ...]) -> list[str]:
    """Promised against measured false alarms on the nominal successes (the conditions the promise is about)."""
    nominal = report["conditions"].get("nominal")
    if nominal is None or not report.get("promises"):
        return []
    lines = [
        "",
        f"Promised and measured false alarms on the nominal successes ({nominal['successes']}); the promise holds for "
        "rollouts exchangeable with the calibration's (nominal conditions), not under the shifted ones:",
        "",
        "| detector | promise | expected [interval] | measured [Wilson 95%] |",
        "|---|---|---|---|",
    ]
    for name in learned:
        promise, measured = report["promises"].get(name), nominal["detectors"][name]
        if promise is None or measured["false_alarm_rate"] is None:
            continue
        confidence = promise["confidence"]
        bound = f"<= {promise['alpha']:g}" + ("" if confidence is None else f" (p {confidence:g})")
        low, high = promise["interval"]
        ci = measured["false_alarm_ci95"]
        lines.append(
            f"| {DETECTOR_LABELS[name]} | {bound} ({promise['kind']}, n={promise['n']}) | {promise['expected']:.3f} "
            f"[{low:.3f}, {high:.3f}] | {measured['false_alarm_rate']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] |"
        )
    return lines


def format_report(report: dict[str, Any]) -> str:
    """The report as markdown: one table for the learned detectors, one for the plain monitors."""
    rows = [(name, m) for name, m in report["conditions"].items()] + [
        (f"**{name}** (pooled)", m) for name, m in report["pooled"].items()
    ]
    calibration = report["calibration"]
    lines = [
        f"# Failure monitor: {report['policy']} on {report['env']}",
        "",
        f"- Command: `{report['command']}`" if report.get("command") else "- Command: (API call)",
        f"- Calibration: {calibration['n_successful']} successful of {calibration['episodes']} rollouts (seeds "
        f"{calibration['seeds'][0]}..{calibration['seeds'][1]}; {calibration['fit_rollouts']} of them fit the "
        f"transforms, the others' successes rank); thresholds at alpha = {report['alpha']}, window = "
        f"{report['window']} chunks, K = {report['samples']} sampled chunks.",
        f"- Evaluation: {report['episodes_per_condition']} rollouts per condition, condition i on seeds "
        f"{report['seed']} + {CONDITION_STRIDE} i + k; wall time {report['wall_time_s']:.0f} s.",
        f"- Lead time: {report['lead_time_definition']}.",
        "",
        "Each cell: false-alarm rate on successful rollouts / detection rate on failed rollouts / median lead time.",
        "",
    ]
    learned = LEARNED if report.get("progress") else tuple(d for d in LEARNED if "progress" not in d)
    learned = learned if report.get("risk") else tuple(d for d in learned if d != "risk")
    if report.get("progress"):
        lines += [
            "Goal progress: the goal distance at each chunk against the successful calibration rollouts' mean and "
            "std at the same chunk (robot_rl/monitor/progress.py); it reads the task's achieved and desired goal.",
            "",
        ]
    header = "| condition | success | succ. / failed | " + " | ".join(DETECTOR_LABELS[d] for d in learned) + " |"
    lines += [header, "|---|---:|---:|" + "---|" * len(learned)]
    for name, m in rows:
        cells = " | ".join(_cell(m["detectors"][d]) for d in learned)
        failed = m["episodes"] - m["successes"]
        lines.append(f"| {name} | {_fmt(m['success_rate'])} | {m['successes']} / {failed} | {cells} |")
    lines += _promise_table(report, learned)
    plain = [d for d in next(iter(report["conditions"].values()))["detectors"] if d not in LEARNED]
    if plain:
        lines += ["", "Plain monitors (fixed rules, no calibration), same cells:", ""]
        lines += ["| condition | " + " | ".join(DETECTOR_LABELS.get(d, d) for d in plain) + " |"]
        lines += ["|---|" + "---|" * len(plain)]
        for name, m in rows:
            lines.append(f"| {name} | " + " | ".join(_cell(m["detectors"][d]) for d in plain) + " |")
    lines += ["", "Conditions:", ""]
    lines += [f"- `{name}`: {m['description']}" for name, m in report["conditions"].items()]
    return "\n".join(lines) + "\n"
