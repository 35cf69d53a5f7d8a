"""Rollouts as MCAP files that Foxglove opens as they are: a 3-D scene, actions, safety, monitor, episodes.

:class:`RolloutLog` writes one MCAP file (zstd chunks) whose every channel carries its schema
(:mod:`robot_rl.data.mcap_file`):

==========================  ===========================  ==========================================================
topic                       schema (encoding)            one message
==========================  ===========================  ==========================================================
``/scene``                  foxglove.SceneUpdate (pb)    per episode: the bodies as primitives, the goal sphere
``/tf``                     foxglove.FrameTransforms     per step: ``world -> body`` of every moving body
``/robot_rl/action``        robot_rl.Action (json)       per step: the policy's action, the command sent, the change
``/robot_rl/goal``          robot_rl.Goal (json)         per step: desired and achieved goal, distance, reward
``/robot_rl/safety``        robot_rl.Safety (json)       per step: each filter's report, watchdog, e-stop, violations
``/robot_rl/monitor``       robot_rl.Monitor (json)      per scored chunk: scores, windowed scores, thresholds, alarm
``/robot_rl/episode``       robot_rl.Episode (json)      per episode: seed, success, return, length, first alarm
``/robot_rl/events``        foxglove.Log (pb)            on change: episode start/end, fallback, watchdog, e-stop,
                                                         refused chunk, constraint broken, monitor alarm
``/robot_rl/info``          robot_rl.Info (json)         once: what ran (env, policy, safety, monitor, control period)
==========================  ===========================  ==========================================================

The action, safety and monitor messages are built by :mod:`robot_rl.data.mcap_messages`, which the ROS policy node
uses for its per-tick status; :meth:`RolloutLog.record` writes such a message as it came (the ROS recorder).
Non-finite numbers are written as ``null`` (JSON has no NaN). With ``background=True`` the messages are
encoded and written by a thread: the caller's step only copies what it logs (the poses, the numbers) and
queues it; the thread runs while the caller is inside MuJoCo or onnxruntime, which release the GIL.
A log never stops the run it records: a file that cannot be written turns the log off with one warning.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import numpy as np

from robot_rl.data.mcap_file import ERROR, INFO, WARNING, McapFile, dumps, protobuf_class
from robot_rl.data.mcap_messages import (
    STATUS_PARTS,
    action_message,
    estop_state,
    finite_thresholds,
    floats,
    monitor_message,
    safety_message,
)
from robot_rl.data.mcap_scene import MujocoScene, set_stamp

__all__ = ["ERROR", "INFO", "WARNING", "RolloutLog"]

_BACKLOG = 20_000
"""Queued messages at most with ``background``; past it the caller waits for the thread (a slow disk)."""


class RolloutLog:
    """The channels of one run (see the module docstring); every method takes the message's time [ns].

    Args:
        path: The MCAP file.
        model: The MuJoCo model for the 3-D scene (None: no ``/scene`` and ``/tf``).
        goal_radius: Radius of the goal sphere [m] (the env's success distance).
        label: How a warning names the file (``--log FILE``).
        warn: Where the one warning line goes (default: stderr).
        background: Encode and write in a thread; False: in the calling thread.
        batched: Keep the messages until :meth:`flush` (or :meth:`close`) and encode them then, in one go: the
            encoding code stays in the CPU's caches instead of being reloaded between two simulation steps
            (the eval loop flushes at the end of each episode; about half the cost per message).
    """

    def __init__(
        self,
        path: str | Path,
        model: Any = None,
        goal_radius: float | None = None,
        label: str | None = None,
        warn: Callable[[str], None] | None = None,
        background: bool = False,
        batched: bool = False,
    ) -> None:
        self.file = McapFile(path, label, warn)
        self.scene = MujocoScene(model, goal_radius) if model is not None and self.file.enabled else None
        self._log_class: Any = None
        self._goal: list[float] | None = None
        self._reset_edges()
        self._queue: SimpleQueue[Any] | None = None
        self._thread: threading.Thread | None = None
        self._pending: list[tuple[Callable[..., None], tuple[Any, ...]]] | None = [] if batched else None
        if background and self.file.enabled:
            self._queue = SimpleQueue()
            self._thread = threading.Thread(target=self._drain, name="robot_rl-mcap", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        """Still writing."""
        return self.file.enabled

    # ------------------------------------------------------------------ the calling thread
    def _do(self, work: Callable[..., None], *args: Any) -> None:
        if self._pending is not None:
            self._pending.append((work, args))
            if len(self._pending) >= _BACKLOG:
                self.flush()
            return
        if self._queue is None:
            work(*args)
            return
        if self._queue.qsize() > _BACKLOG:
            self._wait()
        self._queue.put((work, args))

    def flush(self) -> None:
        """Encode and write the messages kept with ``batched`` (the calling thread, or queued to the writer).

        The poses are encoded all in one call (:meth:`MujocoScene.encode_transforms_many`), then every message
        is written in the order it was logged.
        """
        pending, self._pending = self._pending, None
        if not pending:
            self._pending = pending
            return
        try:
            poses = [args for work, args in pending if work == self._write_poses]
            encoded = iter(self._encode_many_poses(poses) if poses else [])
            for work, args in pending:
                if work == self._write_poses:
                    self._do(self.file.write, "/tf", args[0], next(encoded))
                else:
                    self._do(work, *args)
        finally:
            self._pending = []

    def _wait(self) -> None:
        """Block until the thread has written everything queued so far."""
        if self._queue is None:
            return
        done = threading.Event()
        self._queue.put((done.set, ()))
        done.wait()

    def info(self, stamp_ns: int, info: Mapping[str, Any]) -> None:
        """``/robot_rl/info``: what ran."""
        self._do(self._write_json, "/robot_rl/info", stamp_ns, dict(info))

    def event(self, stamp_ns: int, level: int, name: str, message: str) -> None:
        """``/robot_rl/events``: one ``foxglove.Log`` line (``level``: :data:`INFO`, :data:`WARNING`, :data:`ERROR`)."""
        self._do(self._event, stamp_ns, level, name, message)

    def start_episode(
        self, stamp_ns: int, episode: int, seed: int | None, data: Any = None, goal: np.ndarray | None = None
    ) -> None:
        """A new episode: the scene (bodies and goal; ``data`` after the reset) and the first poses, an event."""
        goal_list = None if goal is None else [float(v) for v in goal]
        poses = None
        if self.scene is not None and data is not None and self.file.enabled:
            if self.scene.scene_ready is False:
                self.scene.place_static(data)  # the static bodies, once, from the data in hand
            poses = self.scene.poses(data)
        self._do(self._start_episode, stamp_ns, episode, seed, goal_list, poses)

    def poses(self, stamp_ns: int, data: Any) -> None:
        """``/tf``: the bodies' poses in ``data`` (after the step)."""
        if self.scene is not None and self.file.enabled:
            self._do(self._write_poses, stamp_ns, self.scene.poses(data))

    def goal(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        desired: Sequence[float],
        achieved: Sequence[float],
        reward: float | None = None,
        total: float | None = None,
    ) -> None:
        """``/robot_rl/goal``; the goal sphere moves with the desired goal when it changes (a moving reference)."""
        self._do(self._write_goal, stamp_ns, episode, step, floats(desired), floats(achieved), reward, total)

    def action(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        policy: Sequence[float],
        command: Sequence[float],
        controller: Any = None,
        human: bool | None = None,
    ) -> None:
        """``/robot_rl/action``: the policy's action and the command sent.

        ``controller``: the step's :class:`~robot_rl.runtime.ControlStatus` (not changed afterwards: the Controller
        makes a new one per step) or a mapping of what to show; None when no Controller ran the policy.
        """
        self._do(self._write_action, stamp_ns, episode, step, floats(policy), floats(command), controller, human)

    def safety(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        report: Any = None,
        violations: Sequence[str] = (),
        estop: Any = None,
        chunk: Any = None,
        max_change: float | None = None,
    ) -> None:
        """``/robot_rl/safety`` and its events.

        Args:
            stamp_ns: Time [ns].
            episode: Episode index.
            step: Step in the episode.
            report: The chain's :class:`~robot_rl.safety.chain.ChainReport` of this command (None: no chain).
            violations: Constraints the state breaks.
            estop: The chain's :class:`~robot_rl.safety.watchdog.EStop` (None: none); read now.
            chunk: The chunk validator's verdict on the chunk in play (``ok``, ``summary()``; None: none).
            max_change: ``max |command - policy action|`` over the whole step, when known.
        """
        stop = estop_state(estop)
        self._do(self._write_safety, stamp_ns, episode, step, report, list(violations), stop, chunk, max_change)

    def monitor(
        self,
        stamp_ns: int,
        episode: int,
        score: Any,
        thresholds: Mapping[str, float],
        detector: str | None = None,
        rule: str | None = None,
    ) -> None:
        """``/robot_rl/monitor`` for one scored chunk (a :class:`~robot_rl.monitor.failure_monitor.ChunkScore`)."""
        self._do(self._write_monitor, stamp_ns, episode, score, finite_thresholds(thresholds), detector, rule)

    def record(self, stamp_ns: int, topic: str, message: dict[str, Any]) -> None:
        """A message built elsewhere in its channel's form, written with the events it implies.

        ``topic``: ``/robot_rl/action``, ``/robot_rl/safety`` or ``/robot_rl/monitor``; ``message``: built by
        :mod:`robot_rl.data.mcap_messages` (the ROS policy node's status, checked by ``parse_status``).

        Raises:
            ValueError: another topic.
        """
        writers = {
            "/robot_rl/action": lambda stamp, m: self._write_json("/robot_rl/action", stamp, m),
            "/robot_rl/safety": self._write_safety_message,
            "/robot_rl/monitor": self._write_monitor_message,
        }
        if topic not in writers:
            raise ValueError(f"`topic` must be one of {[t for t, _ in STATUS_PARTS.values()]}. Got {topic!r}.")
        self._do(writers[topic], stamp_ns, message)

    def end_episode(self, stamp_ns: int, episode: int, summary: Mapping[str, Any]) -> None:
        """``/robot_rl/episode`` (the report's per-episode entry) and its event."""
        self._do(self._end_episode, stamp_ns, episode, dict(summary))

    def close(self) -> str:
        """Write what is queued, finish the file; returns the report's ``log`` entry (the path, or ``off: <why>``)."""
        self.flush()
        self._pending = None
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = self._queue = None
        self.file.close()
        return f"off: {self.file.error}" if self.file.error else str(self.file.path)

    # ------------------------------------------------------------------ the writing thread
    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, args = item
            try:
                work(*args)
            except Exception as err:  # noqa: BLE001 - a log never stops the run: off, with the reason
                self.file.fail(f"logging failed ({type(err).__name__}: {err})")

    def _write_json(self, topic: str, stamp_ns: int, message: Mapping[str, Any]) -> None:
        self.file.write(topic, stamp_ns, dumps(message))

    def _event(self, stamp_ns: int, level: int, name: str, message: str) -> None:
        if not self.file.enabled:
            return
        if self._log_class is None:
            self._log_class = protobuf_class("foxglove.Log")
        log = self._log_class(level=level, name=name, message=message)
        set_stamp(log.timestamp, stamp_ns)
        self.file.write("/robot_rl/events", stamp_ns, log.SerializeToString())

    def _reset_edges(self) -> None:
        self._fallback: str | None = None
        self._watchdog: str | None = None
        self._estop = False
        self._chunk_ok = True
        self._violations: frozenset[str] = frozenset()
        self._alarm = False

    def _start_episode(
        self, stamp_ns: int, episode: int, seed: int | None, goal: list[float] | None, poses: Any
    ) -> None:
        self._reset_edges()
        self._goal = goal
        if self.scene is not None and poses is not None:
            where = None if goal is None else np.array(goal)
            self.file.write("/scene", stamp_ns, self.scene.scene_update(stamp_ns, where))
            self.file.write("/tf", stamp_ns, self.scene.encode_transforms(*poses, stamp_ns))
        self._event(stamp_ns, INFO, "episode", f"episode {episode} starts (seed {seed})")

    def _write_poses(self, stamp_ns: int, poses: tuple[np.ndarray, np.ndarray]) -> None:
        assert self.scene is not None
        self.file.write("/tf", stamp_ns, self.scene.encode_transforms(*poses, stamp_ns))

    def _encode_many_poses(self, items: list[tuple[int, tuple[np.ndarray, np.ndarray]]]) -> list[bytes]:
        assert self.scene is not None
        stamps = [stamp for stamp, _ in items]
        xpos = np.stack([pose[0] for _, pose in items])
        xquat = np.stack([pose[1] for _, pose in items])
        return self.scene.encode_transforms_many(xpos, xquat, stamps)

    def _write_goal(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        desired: list[float],
        achieved: list[float],
        reward: float | None,
        total: float | None,
    ) -> None:
        if self.scene is not None and desired != self._goal:
            self._goal = desired
            self.file.write("/scene", stamp_ns, self.scene.goal_update(np.array(desired), stamp_ns))
        message = {
            "episode": episode,
            "step": step,
            "desired": desired,
            "achieved": achieved,
            "distance": math.dist(desired, achieved) if len(desired) == len(achieved) else None,
            "reward": reward,
            "return": total,
        }
        self.file.write("/robot_rl/goal", stamp_ns, dumps(message))

    def _write_action(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        policy: list[float],
        command: list[float],
        controller: Any,
        human: bool | None,
    ) -> None:
        message = action_message(episode, step, policy, command, controller, human)
        self.file.write("/robot_rl/action", stamp_ns, dumps(message))

    def _write_safety(
        self,
        stamp_ns: int,
        episode: int,
        step: int,
        report: Any,
        violations: list[str],
        estop: tuple[bool, str | None],
        chunk: Any,
        max_change: float | None,
    ) -> None:
        message = safety_message(episode, step, report, violations, estop, chunk, max_change)
        self._write_safety_message(stamp_ns, message)

    def _write_safety_message(self, stamp_ns: int, message: dict[str, Any]) -> None:
        self.file.write("/robot_rl/safety", stamp_ns, dumps(message))
        self._safety_events(stamp_ns, message["step"], message)

    def _safety_events(self, stamp_ns: int, step: int, message: dict[str, Any]) -> None:
        """Events on changes only: fallback, watchdog verdict, e-stop, refused chunk, broken constraints."""
        at = f"step {step}"
        fallback = message["fallback"]
        if fallback != self._fallback and fallback is not None:
            self._event(stamp_ns, WARNING, "safety", f"{at}: fallback command sent ({fallback})")
        self._fallback = fallback
        dog = message["watchdog"]
        reason = None if dog is None or dog["ok"] else dog["reason"]
        if reason != self._watchdog and reason is not None:
            self._event(stamp_ns, WARNING, "watchdog", f"{at}: {reason} (age {dog['age_s']}, missed {dog['missed']})")
        self._watchdog = reason
        latched = message["estop"]["latched"]
        if latched and not self._estop:
            self._event(stamp_ns, ERROR, "estop", f"{at}: e-stop latched ({message['estop']['reason']})")
        elif self._estop and not latched:
            self._event(stamp_ns, INFO, "estop", f"{at}: e-stop released")
        self._estop = latched
        chunk = message["chunk"]
        ok = chunk is None or chunk["ok"]
        if not ok and self._chunk_ok:
            self._event(stamp_ns, WARNING, "chunk", f"{at}: chunk refused ({chunk['summary']})")
        self._chunk_ok = ok
        broken = frozenset(message["violations"])
        new = sorted(broken - self._violations)
        if new:
            self._event(stamp_ns, WARNING, "constraint", f"{at}: state breaks {', '.join(new)}")
        self._violations = broken

    def _write_monitor(
        self,
        stamp_ns: int,
        episode: int,
        score: Any,
        thresholds: dict[str, float | None],
        detector: str | None,
        rule: str | None,
    ) -> None:
        self._write_monitor_message(stamp_ns, monitor_message(episode, score, thresholds, detector, rule))

    def _write_monitor_message(self, stamp_ns: int, message: dict[str, Any]) -> None:
        self.file.write("/robot_rl/monitor", stamp_ns, dumps(message))
        alarm = bool(message["alarm"])
        if alarm and not self._alarm:
            windowed, limits, over = message["windowed"], message["thresholds"], message["over"]
            above = ", ".join(f"{k} {windowed[k]:.3g} > {limits[k]:.3g}" for k in limits if over[k])
            detector = message["detector"]
            self._event(
                stamp_ns, WARNING, "monitor", f"step {message['step']}: {detector or 'monitor'} alarm ({above})"
            )
        self._alarm = alarm

    def _end_episode(self, stamp_ns: int, episode: int, summary: dict[str, Any]) -> None:
        self.file.write("/robot_rl/episode", stamp_ns, dumps({"episode": episode, **summary}))
        success = bool(summary.get("success"))
        total = summary.get("return")
        shown = f", return {total:.2f}" if isinstance(total, int | float) else ""
        self._event(
            stamp_ns,
            INFO if success else WARNING,
            "episode",
            f"episode {episode} (seed {summary.get('seed')}) {'success' if success else 'failure'} after "
            f"{summary.get('length')} steps{shown}",
        )
