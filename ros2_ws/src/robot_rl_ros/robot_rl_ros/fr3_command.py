"""The FR3 command path a real FR3 accepts: shaped joint motion streamed to a JointTrajectoryController.

Why not a forward_command_controller: it writes the newest ``~/commands`` message unchanged at every
1 kHz update (ros2_controllers ``forward_command_controller/src/forward_controllers_base.cpp``), and
franka_hardware passes each value to libfranka with the joint position rate limiter and low-pass
filter off (franka_ros2 ``franka_hardware/include/franka_hardware/robot.hpp``, ``src/robot.cpp``
``writeOnceJointPositions``): a 25 Hz target is a 1 ms step, which the FR3 answers with a
``joint_motion_generator_*`` reflex. :mod:`robot_rl_ros.fr3_vendor` models that chain.

:class:`Fr3CommandPath` turns each period's joint target into a ``trajectory_msgs/JointTrajectory``
for ``/<controller>/joint_trajectory``: a motion shaped within libfranka's FR3 limits
(:class:`~robot_rl_ros.fr3_vendor.MotionShaper`), one point per millisecond with positions,
velocities and accelerations, stamped with the node's clock (joint_trajectory_controller
``src/trajectory.cpp``: the points' times are ``header.stamp + time_from_start``; a point already in
the past is passed through, so a message that arrives late continues the same motion). Before a
message leaves, the same controller model and limit check the sim bridge uses predict the 1 kHz
command of the coming period; a predicted reflex refuses the message (:class:`PredictedReflex`).
Every message ends at rest (a braking tail the next message replaces): a node that stops sending leaves the arm
stopping within the limits, where a held last point at speed would be a step. The controller must run with
``interpolate_from_desired_state: true`` (hardware/fr3_controllers.yaml).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_rl_ros.fr3_vendor import (
    DT,
    FR3_POSITION_LOWER,
    FR3_POSITION_UPPER,
    JointPoint,
    MotionShaper,
    Reflex,
    ReflexCheck,
    TrajectoryControllerModel,
)


def forward_interface_error() -> str:
    """Why ``command_interface: forward`` is refused without ``allow_forward`` (one message, with the fix)."""
    return (
        "`command_interface` is 'forward': a forward_command_controller writes each 25 Hz target as a 1 ms step "
        "and franka_hardware passes it to libfranka unfiltered, which a real FR3 stops with a "
        "joint_motion_generator reflex. Use `command_interface: trajectory` with the JointTrajectoryController of "
        "hardware/fr3_controllers.yaml, or set `allow_forward: true` only behind a controller that interpolates "
        "(or the sim bridge with `fr3_limits: false`)."
    )


def gripper_interface_error(task: str) -> str:
    """Why a gripper task is refused with an empty ``gripper_topic`` (the real FR3's setting)."""
    return (
        f"`gripper_topic` is empty and {task} opens and closes the gripper. franka_gripper takes actions only "
        "(franka_gripper src/gripper_action_server.cpp: ~/move, ~/grasp (franka_msgs), ~/gripper_action "
        "(control_msgs/GripperCommand)), whose types are not on PyPI, so this package sends a width on a topic "
        "that nothing on the robot reads. Run a relay on the robot that turns `gripper_topic` "
        "(std_msgs/Float64MultiArray, total opening [m]) into franka_gripper actions and set `gripper_topic` to it, "
        "or run a task without the gripper."
    )


class PredictedReflex(RuntimeError):
    """The command about to be sent would break libfranka's FR3 limits."""

    def __init__(self, reflex: Reflex) -> None:
        super().__init__(f"predicted FR3 reflex, command not sent: {reflex}")
        self.reflex = reflex


class Fr3CommandPath:
    """Joint targets -> JointTrajectory messages within the FR3's limits (see the module docstring).

    The plan is a timeline of 1 ms states on the node's clock. Each message carries the timeline from now
    on: the part planned before, unchanged, for ``commit`` periods (so a message delivered anywhere in that
    window switches the controller between identical trajectories), then the motion towards the new target
    for one more period. Messages are stamped with the node's clock (the controller places the points on its
    own: the two clocks must agree, as on franka_ros2's one real-time PC or with chrony/PTP between two).

    Args:
        joint_names: The controller's joints, in the order of the targets.
        period: Control period [s].
        commit: Periods of the previous plan each message keeps (>= 1; the jitter a message may arrive with).
        margin: Share of libfranka's velocity, acceleration and jerk limits the motion may use, in (0, 1].
    """

    def __init__(self, joint_names: Sequence[str], period: float, commit: int = 1, margin: float = 0.8) -> None:
        if commit < 1:
            raise ValueError(f"`commit` must be >= 1. Got {commit}.")
        self.joint_names = list(joint_names)
        self.steps = max(1, round(period / DT))
        self.commit = commit
        self.tail_ms = 4
        self.blend_ms = 200
        self.shaper = MotionShaper(FR3_POSITION_LOWER, FR3_POSITION_UPPER, margin=margin)
        self._model = TrajectoryControllerModel()
        self._check = ReflexCheck(FR3_POSITION_LOWER, FR3_POSITION_UPPER)
        self._origin = 0
        self._ticks = np.zeros(0, dtype=np.int64)
        self._plan = np.zeros((3, 0, 7))
        self._sampled = 0
        self._target = np.zeros(7)
        self._fresh = True

    def reset(self, q: np.ndarray, now: float) -> None:
        """At rest at the measured posture ``q`` [rad] (7,) at ``now`` [s] (activation, a new episode)."""
        q = np.asarray(q, dtype=np.float64)
        self._origin = round(float(now) * 1e9)  # [ns]: stamps exactly 1 ms apart
        self._ticks = np.zeros(1, dtype=np.int64)
        self._plan = np.stack([q, np.zeros(7), np.zeros(7)])[:, None]
        self._sampled = 0
        self._target = q.copy()
        self._fresh = True
        self._model.reset(q)
        self._check.reset(q)

    @property
    def peak(self) -> dict[str, np.ndarray]:
        """Largest |velocity|, |acceleration|, |jerk| per joint of the predicted 1 kHz command since the reset."""
        return self._check.peak

    def _extend(self, target: np.ndarray, until: int) -> None:
        last = int(self._ticks[-1])
        if until <= last:
            return
        start = JointPoint(*(self._plan[i, -1] for i in range(3)))
        q, dq, ddq = self.shaper.run(start, target, until - last)
        self._ticks = np.concatenate([self._ticks, np.arange(last + 1, until + 1)])
        self._plan = np.concatenate([self._plan, np.stack([q, dq, ddq])], axis=1)

    def message(self, target: np.ndarray, now: float) -> JointTrajectory:
        """The message for the joint target [rad] (7,) of the tick at ``now`` [s, node clock].

        A tick after the last message has run out (its braking tail done: the node paused) plans afresh from
        where that message stopped.

        Raises:
            PredictedReflex: the controller would command beyond libfranka's limits (nothing is sent; the
                plan is not changed).
        """
        tick = max(int(np.ceil((round(now * 1e9) - self._origin) / 1e6 - 1e-6)), self._sampled)
        if tick >= int(self._ticks[-1]) and not self._fresh:
            # Past the last message's end: the controller holds its last point, at rest, exactly; plan from there
            # (not from the measured posture, which misses it by the tracking error).
            self.reset(self._plan[0, -1], now)
            tick = 0
        # After a reset the plan holds the measured posture for `blend_ms` first (see below).
        commit_end = tick + (max(self.blend_ms, self.commit * self.steps) if self._fresh else self.commit * self.steps)
        self._extend(self._target, commit_end)  # a late tick: the previous target carries the plan to the commit
        # The first message after a reset: no points before `blend_ms` ahead, so the controller's first segment
        # blends from the position it holds (its own command, which the measured posture the plan starts from
        # misses by the tracking error and the state's age) to the plan over 0.2 s instead of a millisecond.
        # Otherwise the points up to the commit, and the one that ends a longer segment across it (the blend).
        after = self._ticks[self._ticks > tick]
        bound = commit_end if self._fresh or len(after) == 0 else max(commit_end, int(after[0]))
        keep = (self._ticks > (commit_end - 1 if self._fresh else tick)) & (self._ticks <= bound)
        ticks, plan = self._ticks, self._plan
        self._ticks, self._plan = ticks[keep], plan[:, keep]
        self._extend(target, commit_end + self.steps)
        # Every message ends at rest: a braking tail the next message replaces, so a node that stops sending
        # (yields, dies) leaves the arm stopping within its limits instead of a held last point at speed.
        steps, q, dq, ddq = self.shaper.brake(JointPoint(*(self._plan[i, -1] for i in range(3))), self.tail_ms)
        self._ticks = np.concatenate([self._ticks, int(self._ticks[-1]) + steps * self.tail_ms])
        self._plan = np.concatenate([self._plan, np.stack([q, dq, ddq])], axis=1)
        points = [JointPoint(*(self._plan[i, k] for i in range(3))) for k in range(len(self._ticks))]
        times = ((self._ticks - tick) * DT).tolist()
        # The controller's next period, as franka_hardware will pass it to libfranka: the previous message until
        # this one is sent, then this one.
        saved = copy.copy(self._model), copy.copy(self._check)
        saved[1].peak = dict(self._check.peak)
        reflex = self._check.check(self._model.sample(np.arange(self._sampled + 1, tick + 1) * DT))
        if reflex is None:
            self._model.receive(points, times, tick * DT, tick * DT if tick else 1e-12)
            reflex = self._check.check(self._model.sample(np.arange(tick + 1, tick + self.steps + 1) * DT))
        if reflex is not None:
            self._ticks, self._plan = ticks, plan
            self._model, self._check = saved
            raise PredictedReflex(reflex)
        self._sampled = tick + self.steps
        self._target = np.asarray(target, dtype=np.float64).copy()
        self._fresh = False
        return trajectory_message(points, times, self.joint_names, self._origin + tick * 1_000_000)


def trajectory_message(
    points: Sequence[JointPoint], times: Sequence[float], joint_names: Sequence[str], stamp_ns: int = 0
) -> JointTrajectory:
    """A JointTrajectory: ``points`` at ``times`` [s] after ``stamp_ns`` [ns] (0: on receipt)."""
    msg = JointTrajectory()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.joint_names = list(joint_names)
    out = []
    for point, t in zip(points, times, strict=True):
        p = JointTrajectoryPoint()
        p.positions = point.positions.tolist()
        if point.velocities is not None:
            p.velocities = point.velocities.tolist()
        if point.accelerations is not None:
            p.accelerations = point.accelerations.tolist()
        nanoseconds = int(round(t * 1e9))
        p.time_from_start = Duration(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
        out.append(p)
    msg.points = out
    return msg


def message_points(msg: JointTrajectory, joint_names: Sequence[str]) -> tuple[list[JointPoint], list[float]]:
    """The points of a JointTrajectory in ``joint_names`` order, with their ``time_from_start`` [s].

    Raises:
        ValueError: names that are not ``joint_names`` once each, no points, lengths that disagree, times not
            strictly increasing, non-finite values (the controller refuses these too).
    """
    names = list(msg.joint_names)
    if sorted(names) != sorted(joint_names) or len(names) != len(joint_names):
        raise ValueError(f"the trajectory must name {list(joint_names)} once each. Got {names}.")
    if not msg.points:
        raise ValueError("the trajectory has no points.")
    order = [names.index(n) for n in joint_names]
    points, times = [], []
    for p in msg.points:
        fields = []
        for values in (p.positions, p.velocities, p.accelerations):
            if len(values) == 0:
                fields.append(None)
                continue
            array = np.asarray(values, dtype=np.float64)
            if array.shape != (len(names),) or not np.all(np.isfinite(array)):
                raise ValueError(f"each point needs {len(names)} finite values per field. Got {list(values)}.")
            fields.append(array[order])
        if fields[0] is None:
            raise ValueError("each point needs positions.")
        t = p.time_from_start.sec + p.time_from_start.nanosec * 1e-9
        if times and t <= times[-1]:
            raise ValueError(f"time_from_start must increase strictly. Got {times[-1]} then {t}.")
        points.append(JointPoint(fields[0], fields[1], fields[2]))
        times.append(t)
    return points, times
