"""The policy node's per-tick status on ``/robot_rl/status``: what ``robot-rl eval --log`` logs, from the robot.

Each control tick that sends a command, the node publishes one std_msgs/String (JSON,
:func:`robot_rl.data.mcap_messages.status_message`) holding the messages of three channels of eval's MCAP
log, built by the same functions (:mod:`robot_rl.data.mcap_messages`) with the same field names:

- ``action`` (``robot_rl.Action``): the policy's action before the safety chain, the command sent, how far
  apart, the Controller's step (chunk index and step, new chunk, inference time, fallback, alarms);
- ``safety`` (``robot_rl.Safety``): the chain's report on the command (each filter's active constraints,
  change and detail, the fallback and why), the watchdog's verdict, the e-stop latch, the chunk validator's
  verdict on the chunk in play and the constraints the measured state breaks (the chain's constraint check;
  without a chain: none checked, ``violations`` empty);
- ``monitor`` (``robot_rl.Monitor``, a list): the chunks the failure monitor scored at this tick, with their
  windowed scores, the thresholds and the alarm (empty between chunks and without a monitor).

``stamp_ns`` is the node's clock at the tick. The bag recorder writes the three into its Foxglove file
(:mod:`robot_rl_ros.recorder`). The node publishes it after the command is out, in the control thread; its
cost is kept per tick (:attr:`StatusPublisher.cost_s`, ``status_*_ms`` in ``/diagnostics``). While nothing
subscribes to the topic nothing is built (a check of under 1 µs; the monitor's scores of those ticks are
skipped, not sent later).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import numpy as np
from std_msgs.msg import String

from robot_rl.data.mcap_messages import (
    action_message,
    estop_state,
    finite_thresholds,
    monitor_message,
    safety_message,
    status_message,
)


class StatusPublisher:
    """Builds and publishes the policy node's status (see the module docstring).

    Args:
        publisher: The node's ``String`` publisher on :data:`robot_rl.data.mcap_messages.STATUS_TOPIC`.
        runtime: The node's :class:`robot_rl_ros.control.Runtime` (its chain and failure monitor).
        window: Cost samples kept for the percentiles.
    """

    def __init__(self, publisher: Any, runtime: Any, window: int = 2000) -> None:
        self.publisher = publisher
        self.chain = runtime.chain
        self.monitor = runtime.monitor
        monitor = self.monitor
        self.limits = finite_thresholds(monitor.thresholds) if monitor is not None else {}
        self.detector = getattr(monitor, "name", None)
        self.rule = getattr(monitor, "rule", None)
        self.cost_s: deque[float] = deque(maxlen=window)
        """Time each status took to build and publish [s]."""
        self.published = 0
        self.unheard = 0
        """Ticks whose status was not built: no subscriber."""
        self._scored = 0

    def reset(self) -> None:
        """A new episode (the monitor's trace starts again)."""
        self._scored = 0

    def publish(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        output: Any,
        command: np.ndarray,
        estop_reason: str = "",
        fallback: str | None = None,
    ) -> None:
        """Publish the status of one tick.

        Args:
            stamp_ns: The node's clock at the tick [ns].
            episode: The node's episode counter.
            step: Steps since the episode started.
            output: The tick's :class:`~robot_rl.runtime.ControlOutput`.
            command: The command sent (the node's own hold action when it holds the robot without a chain).
            estop_reason: Without a chain: the node's latched e-stop ('' none).
            fallback: Without a chain: why the node sent its hold action (None: it did not).
        """
        monitor = self.monitor
        if self.publisher.get_subscription_count() == 0:
            self.unheard += 1
            if monitor is not None:
                self._scored = len(monitor.trace)
            return
        begin = time.perf_counter()
        status = output.status
        action = action_message(episode, step, output.policy_action.tolist(), command.tolist(), status, None)
        chain = self.chain
        if chain is not None:
            report = status.filter_reports[-1] if status.filter_reports else None
            violations = list(report.violations) if report is not None else []
            safety = safety_message(
                episode, step, report, violations, estop_state(chain.estop), chain.chunk_report, action["max_change"]
            )
        else:
            latched = bool(estop_reason)
            safety = safety_message(
                episode, step, None, [], (latched, estop_reason or None), None, action["max_change"]
            )
            if fallback:
                safety["fallback"], safety["changed"] = fallback, True
        scored = []
        if monitor is not None:
            trace = monitor.trace
            if self._scored > len(trace):
                self._scored = 0  # the monitor was reset without a new episode here
            while self._scored < len(trace):
                score = trace[self._scored]
                self._scored += 1
                scored.append(monitor_message(episode, score, self.limits, self.detector, self.rule))
        self.publisher.publish(String(data=status_message(stamp_ns, action, safety, scored).decode()))
        self.published += 1
        self.cost_s.append(time.perf_counter() - begin)

    def summary(self) -> dict[str, float | int]:
        """The numbers the diagnostics publish (ms)."""
        cost = np.asarray(self.cost_s) * 1e3
        empty = cost.size == 0
        return {
            "status_published": self.published,
            "status_unheard": self.unheard,
            "status_p50_ms": float("nan") if empty else float(np.percentile(cost, 50)),
            "status_p99_ms": float("nan") if empty else float(np.percentile(cost, 99)),
            "status_max_ms": float("nan") if empty else float(cost.max()),
        }
