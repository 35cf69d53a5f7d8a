"""The ROS recorder's Foxglove file: the nodes' step records, status, episode events and joint states as MCAP.

The policy and teleop nodes publish one step record per control step (:mod:`robot_rl.data.bag`): the
observation, the goals and the action sent. The policy node also publishes a status per tick
(:data:`robot_rl.data.mcap_messages.STATUS_TOPIC`): the ``/robot_rl/action``, ``/robot_rl/safety`` and
``/robot_rl/monitor`` messages of ``robot-rl eval --log``, built by the same functions.
:class:`StepRecordLog` turns what a recorder receives into the channels of
:class:`robot_rl.data.mcap_log.RolloutLog` (ROS-free: the recorder node feeds it):

- the scene of the env named by the episode's ``start`` event, the arm posed from ``/joint_states`` (a
  ``fr3_joint1`` state sets the model's ``joint1``), the manipulated object placed at the achieved goal (its
  position; the step records carry no orientation) and the goal sphere at the desired goal;
- ``/robot_rl/action``, ``/robot_rl/safety`` and ``/robot_rl/monitor`` from the policy node's status, as it
  sent them (stamped with its tick's time; ``episode`` renumbered to this file's episodes), with the events
  they imply (fallback, watchdog, e-stop, refused chunk, broken constraint, monitor alarm);
- ``/robot_rl/action`` from the step records where no status comes: the teleop node's steps (``human``), or a
  policy node with ``publish_status`` off (the command sent as ``policy`` too: a record carries no more);
- ``/robot_rl/goal``, ``/robot_rl/episode`` (the ``end`` event's success) and the events.

A policy node that publishes status says so in its ``start`` event (``"status": topic``); from then on its
records no longer write ``/robot_rl/action`` (the status does), so no step is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mujoco
import numpy as np

from robot_rl.data.mcap_log import INFO, RolloutLog
from robot_rl.data.mcap_messages import parse_status


class StepRecordLog:
    """A Foxglove MCAP file of step records (see the module docstring).

    Args:
        path: The MCAP file.
        warn: Where the one warning line of a failed file goes (default: stderr).
    """

    def __init__(self, path: str | Path, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self._warn = warn
        self.log: RolloutLog | None = None
        self.env_id: str | None = None
        self._env: Any = None
        self._data: Any = None
        self._qpos: dict[str, int] = {}
        self._object_qpos: int | None = None
        self._episode = -1
        self._seed: int | None = None
        self._steps = 0
        self._return = 0.0
        self._open = False
        self.status_source = False
        """A policy node publishes its status: its step records do not write ``/robot_rl/action``."""
        self.statuses = 0
        """Status messages received (written or not)."""
        self.refused: dict[str, int] = {}
        """Status messages not written, per reason (not a status of ours: the first line of why)."""

    def _ensure(self, env_id: str) -> None:
        """The log, with the scene of ``env_id`` (made on the first episode; a later env keeps the first scene)."""
        if self.log is not None:
            return
        from robot_rl.envs.registry import make

        self.env_id = env_id
        self._env = make(env_id)
        unwrapped = self._env.unwrapped
        model = unwrapped.model
        self._data = mujoco.MjData(model)
        self.log = RolloutLog(
            self.path,
            model,
            getattr(unwrapped, "distance_threshold", None),
            label=str(self.path),
            warn=self._warn,
            background=True,  # the recorder's callbacks stay short: encoding and writing in a thread
        )
        self._qpos = {
            model.joint(j).name: int(model.jnt_qposadr[j])
            for j in range(model.njnt)
            if model.jnt_type[j] in (mujoco.mjtJoint.mjJNT_HINGE, mujoco.mjtJoint.mjJNT_SLIDE)
        }
        body = unwrapped._object_body()
        if body is not None and model.body_jntnum[body] == 1:
            joint = int(model.body_jntadr[body])
            if model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE:
                self._object_qpos = int(model.jnt_qposadr[joint])
        self.log.info(0, {"source": "ros recorder", "env_id": env_id, "ctrl_dt": float(unwrapped.ctrl_dt)})

    def on_event(self, stamp_ns: int, event: Mapping[str, Any]) -> None:
        """An episode event (``/robot_rl/episode``: ``start`` with ``env_id``, ``seed``; ``end`` with ``success``)."""
        kind = event.get("event")
        if kind == "start" and event.get("status"):
            self.status_source = True
        if kind == "start" and isinstance(event.get("env_id"), str):
            self._ensure(event["env_id"])
            assert self.log is not None
            self._end(stamp_ns, None)
            seed = event.get("seed")
            self._episode += 1
            self._seed, self._steps, self._return, self._open = seed, 0, 0.0, True
            self._env.reset(seed=seed)
            self._data.qpos[:] = self._env.unwrapped.data.qpos
            mujoco.mj_kinematics(self._env.unwrapped.model, self._data)
            self.log.start_episode(stamp_ns, self._episode, seed, self._data, None)
        elif kind == "end" and self.log is not None:
            success = event.get("success")
            self._end(stamp_ns, None if success is None else bool(success))
        elif self.log is not None:
            self.log.event(stamp_ns, INFO, "episode", f"{event.get('source', '?')}: {event.get('event')}")

    def _end(self, stamp_ns: int, success: bool | None) -> None:
        if not self._open or self.log is None:
            return
        self._open = False
        summary = {"seed": self._seed, "success": bool(success), "return": self._return, "length": self._steps}
        if success is None:
            summary["success_known"] = False
        self.log.end_episode(stamp_ns, self._episode, summary)

    def on_joint_state(self, names: Sequence[str], positions: Sequence[float]) -> None:
        """A ``sensor_msgs/JointState``: the arm's joints by name (``fr3_joint1`` -> the model's ``joint1``)."""
        if self._data is None:
            return
        for name, position in zip(names, positions, strict=False):
            address = self._qpos.get(name)
            if address is None:
                address = next((a for n, a in self._qpos.items() if name.endswith("_" + n)), None)
            if address is not None:
                self._data.qpos[address] = position

    def on_step(self, stamp_ns: int, record: Mapping[str, np.ndarray]) -> None:
        """A step record (:func:`robot_rl.data.bag.parse_step_record`'s segments)."""
        log = self.log
        if log is None or not self._open or not log.enabled:
            return
        model = self._env.unwrapped.model
        achieved, desired = record["achieved_goal"], record["desired_goal"]
        if self._object_qpos is not None:
            self._data.qpos[self._object_qpos : self._object_qpos + 3] = achieved
        mujoco.mj_kinematics(model, self._data)
        step = self._steps
        action = record["action"]
        human = bool(record["intervention"][0]) if record["intervention"].size else None
        if human or not self.status_source:
            log.action(stamp_ns, self._episode, step, action, action, None, human)
        log.poses(stamp_ns, self._data)
        reward = float(self._env.unwrapped.compute_reward(achieved, desired, {}))
        self._return += reward
        log.goal(stamp_ns, self._episode, step, desired, achieved, reward, self._return)
        self._steps += 1

    def on_status(self, data: str | bytes) -> None:
        """A policy node's status (:func:`robot_rl.data.mcap_messages.status_message`), stamped with its tick.

        One that is not a status of ours is counted in :attr:`refused` (by the first line of why) and not written.
        """
        self.statuses += 1
        try:
            stamp_ns, messages = parse_status(data)
        except ValueError as err:
            reason = str(err)
            self.refused[reason] = self.refused.get(reason, 0) + 1
            return
        self.status_source = True
        log = self.log
        if log is None or not self._open or not log.enabled:
            return
        for topic, message in messages:
            message["episode"] = self._episode
            log.record(stamp_ns, topic, message)

    def close(self) -> str | None:
        """Finish the file; returns the path, ``off: <why>``, or None when no episode ever started."""
        if self.log is None:
            return None
        result = self.log.close()
        self._env.close()
        return result
