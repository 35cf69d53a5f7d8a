"""The messages of the action, safety and monitor channels, built in one place for both writers of them.

``robot-rl eval --log`` (:class:`robot_rl.data.mcap_log.RolloutLog`) and the ROS policy node build the
``/robot_rl/action``, ``/robot_rl/safety`` and ``/robot_rl/monitor`` messages with these functions; the node
sends them, one control tick at a time, on :data:`STATUS_TOPIC` (std_msgs/String, JSON of
:func:`status_message`) and the ROS recorder writes them into its MCAP file as they came
(:func:`parse_status` checks them first), so both files hold the same fields under the same JSON Schemas
(:data:`robot_rl.data.mcap_file.JSON_SCHEMAS`) and one Foxglove layout reads both.

ROS-free and cheap: the node builds a status inside its control tick, after the command is out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson

from robot_rl.data.mcap_file import JSON_SCHEMAS

STATUS_TOPIC = "/robot_rl/status"
"""The policy node's per-tick status (std_msgs/String: JSON of :func:`status_message`)."""
STATUS_PARTS: dict[str, tuple[str, str]] = {
    "action": ("/robot_rl/action", "robot_rl.Action"),
    "safety": ("/robot_rl/safety", "robot_rl.Safety"),
    "monitor": ("/robot_rl/monitor", "robot_rl.Monitor"),
}
"""A status's parts -> (the MCAP topic it is written to, its schema)."""


def floats(values: Any) -> list[float]:
    """A plain list of floats (a copy: the caller may reuse its array)."""
    if isinstance(values, np.ndarray):
        return values.ravel().tolist()
    if isinstance(values, list):
        return values.copy()
    return [float(v) for v in values]


def controller_fields(status: Any) -> Mapping[str, Any] | None:
    """The ``controller`` field of ``/robot_rl/action`` from a :class:`~robot_rl.runtime.ControlStatus` or a mapping."""
    if status is None or isinstance(status, Mapping):
        return status
    inference = status.inference_s
    return {
        "chunk_index": status.chunk_index,
        "chunk_step": status.chunk_step,
        "new_chunk": status.new_chunk,
        "inference_ms": None if inference is None else inference * 1e3,
        "fallback": status.fallback,
        "alarms": list(status.alarms),
    }


def action_message(
    episode: int, step: int, policy: list[float], command: list[float], controller: Any, human: bool | None
) -> dict[str, Any]:
    """``/robot_rl/action``: the policy's action, the command sent, how far apart, the Controller's step."""
    change = None
    if policy and len(policy) == len(command):
        change = max(abs(a - b) for a, b in zip(command, policy, strict=True))
    return {
        "episode": episode,
        "step": step,
        "policy": policy,
        "command": command,
        "changed": bool(change),
        "max_change": change,
        "controller": controller_fields(controller),
        "human": human,
    }


def estop_state(estop: Any) -> tuple[bool, str | None]:
    """``(latched, reason)`` of a :class:`~robot_rl.safety.watchdog.EStop` now (None: no e-stop)."""
    latched = bool(estop is not None and estop.latched)
    return latched, estop.reason if latched else None


def safety_message(
    episode: int,
    step: int,
    report: Any,
    violations: list[str],
    estop: tuple[bool, str | None],
    chunk: Any,
    max_change: float | None,
) -> dict[str, Any]:
    """``/robot_rl/safety``: the chain's :class:`~robot_rl.safety.chain.ChainReport` on one command (None: no chain).

    ``estop``: :func:`estop_state`; ``chunk``: the chunk validator's verdict (``ok``, ``summary()``; None: none);
    ``max_change``: ``max |command - policy action|`` over the whole step.
    """
    filters = []
    watchdog = None
    if report is not None:
        for item in report.reports:
            detail = {k: float(v) for k, v in item.detail.items()}
            filters.append(
                {
                    "name": item.name,
                    "changed": bool(item.changed),
                    "active": list(item.active),
                    "fallback": item.fallback,
                    "max_change": detail.get("max_change", None if item.changed else 0.0),
                    "detail": detail,
                }
            )
        dog = report.watchdog
        if dog is not None:
            watchdog = {
                "ok": dog.ok, "reason": dog.reason, "age_s": dog.age_s, "period_s": dog.period_s,
                "missed": dog.missed, "stale": dog.stale, "clock_fault": dog.clock_fault,
            }  # fmt: skip
    return {
        "episode": episode,
        "step": step,
        "chain": report is not None,
        "changed": bool(report is not None and report.changed),
        "fallback": None if report is None else report.fallback,
        "active": [] if report is None else list(report.active),
        "max_change": max_change,
        "filters": filters,
        "watchdog": watchdog,
        "estop": {"latched": estop[0], "reason": estop[1]},
        "chunk": None if chunk is None else {"ok": bool(chunk.ok), "summary": chunk.summary()},
        "violations": violations,
    }


def finite_thresholds(thresholds: Mapping[str, float]) -> dict[str, float | None]:
    """A monitor's thresholds as the log writes them (an infinite one, a score that never alarms: None)."""
    return {k: float(v) if math.isfinite(v) else None for k, v in thresholds.items()}


def monitor_message(
    episode: int, score: Any, limits: dict[str, float | None], detector: str | None, rule: str | None
) -> dict[str, Any]:
    """``/robot_rl/monitor`` for one scored chunk (a :class:`~robot_rl.monitor.failure_monitor.ChunkScore`).

    ``limits``: :func:`finite_thresholds` of the monitor's thresholds.
    """
    windowed = {
        "rnd": score.rnd_window,
        "entropy": score.entropy_window,
        "progress": score.progress_window,
        "risk": score.risk_window,
    }
    over = {k: v is not None and windowed.get(k) is not None and windowed[k] > v for k, v in limits.items()}
    return {
        "episode": episode,
        "step": int(score.step),
        "detector": detector,
        "rule": rule,
        "alarm": bool(score.alarm),
        "scores": {"rnd": score.rnd, "entropy": score.entropy, "progress": score.progress, "risk": score.risk},
        "windowed": windowed,
        "thresholds": limits,
        "over": over,
        "goal_distance": score.goal_distance,
        "consistency": score.consistency,
    }


def status_message(
    stamp_ns: int, action: dict[str, Any], safety: dict[str, Any], monitor: Sequence[dict[str, Any]] = ()
) -> bytes:
    """One control tick of the policy node as JSON: its time [ns, node clock] and the three channels' messages.

    ``monitor``: the chunks the failure monitor scored at this tick (empty between chunks, or without one).
    Non-finite numbers become null, as in the log (orjson).
    """
    return orjson.dumps(
        {"stamp_ns": stamp_ns, "action": action, "safety": safety, "monitor": list(monitor)},
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def parse_status(data: str | bytes) -> tuple[int, list[tuple[str, dict[str, Any]]]]:
    """A status (:func:`status_message`) -> its time [ns] and ``(MCAP topic, message)`` pairs to write.

    Raises:
        ValueError: not a status of ours (one line: what was expected, what arrived).
    """
    try:
        status = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise ValueError(f"a status must be JSON ({err})") from None
    expected = {"stamp_ns", "action", "safety", "monitor"}
    if not isinstance(status, dict) or set(status) != expected:
        got = sorted(status) if isinstance(status, dict) else type(status).__name__
        raise ValueError(f"a status is an object with keys {sorted(expected)}. Got {got}.")
    stamp = status["stamp_ns"]
    if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 0:
        raise ValueError(f"a status's `stamp_ns` must be an integer >= 0 [ns]. Got {stamp!r}.")
    monitor = status["monitor"]
    if not isinstance(monitor, list):
        raise ValueError(f"a status's `monitor` must be a list of scored chunks. Got {type(monitor).__name__}.")
    out = []
    parts = [("action", status["action"]), ("safety", status["safety"])] + [("monitor", m) for m in monitor]
    for part, message in parts:
        topic, schema = STATUS_PARTS[part]
        fields = set(JSON_SCHEMAS[schema]["properties"])
        if not isinstance(message, dict) or set(message) != fields:
            got = sorted(message) if isinstance(message, dict) else type(message).__name__
            raise ValueError(f"a status's `{part}` must have the fields of {schema} {sorted(fields)}. Got {got}.")
        for key in ("episode", "step"):
            if not isinstance(message[key], int) or isinstance(message[key], bool):
                raise ValueError(f"a status's `{part}.{key}` must be an integer. Got {message[key]!r}.")
        out.append((topic, message))
    return stamp, out
