"""The FR3 command path a real FR3 accepts: shaped joint motion streamed to a JointTrajectoryController.

Why not a forward_command_controller: it writes the newest ``~/commands`` message unchanged at every
1 kHz update (ros2_controllers ``forward_command_controller/src/forward_controllers_base.cpp``), and
franka_hardware passes each value to libfranka with the joint position rate limiter and low-pass
filter off (franka_ros2 ``franka_hardware/include/franka_hardware/robot.hpp``, ``src/robot.cpp``
``writeOnceJointPositions``): a 25 Hz target is a 1 ms step, which the FR3 answers with a
``joint_motion_generator_*`` reflex. :mod:`robot_rl_ros.fr3_vendor` models that chain.

:class:`Fr3CommandPath` turns each period's joint target into a ``trajectory_msgs/JointTrajectory``
for ``/<controller>/joint_trajectory``: a motion within libfranka's FR3 limits, one point per millisecond
with positions, velocities and accelerations, stamped with the node's clock (joint_trajectory_controller
``src/trajectory.cpp``: the points' times are ``header.stamp + time_from_start``; a point already in
the past is passed through, so a message that arrives late continues the same motion). Before a
message leaves, the same controller model and limit check the sim bridge uses predict the 1 kHz
command of the coming period; a predicted reflex refuses the message (:class:`PredictedReflex`).
Every message ends at rest (a braking tail the next message replaces): a node that stops sending leaves the arm
stopping within the limits, where a held last point at speed would be a step. The controller must run with
``interpolate_from_desired_state: true`` (hardware/fr3_controllers.yaml).

The commit is the latency the path adds: the motion towards a target starts ``commit_ms`` after the tick that
computed it (one control period by default), where the env starts it at once. A policy acts with displacements
of the TCP it measures; the adapter therefore aims each target from where the arm is predicted at the motion's
start (:meth:`Fr3CommandPath.motion_start`). The commit only needs to cover the time from the tick to the
controller's receipt of its message: a message the controller receives after its commit switches between
trajectories that already differ, a step in the 1 kHz command.

The motion towards each target comes from one of two generators:

- a policy trained with ``motion="fr3"`` (its card's ``env_kwargs``): the env's own setpoint generator,
  :class:`robot_rl.envs.franka.fr3_motion.Fr3Motion`, period by period from the state the timeline reaches,
  so the robot is streamed exactly the setpoints the policy was trained on (the node adds the commit and,
  after a reset, the blend);
- a policy trained on the sim's servo (``motion="servo"``): :class:`~robot_rl_ros.fr3_vendor.MotionShaper`,
  an approach filter towards each target (the motion the policy asks for is not one the FR3 executes: it
  arrives late).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from builtin_interfaces.msg import Duration
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robot_rl.envs.franka.fr3_motion import Fr3Motion
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


class MotionStart(NamedTuple):
    """When and where the motion towards a message's target starts (:meth:`Fr3CommandPath.motion_start`)."""

    at_now: np.ndarray
    """The plan's positions at the tick [rad]. Shape: (7,)."""
    start: np.ndarray
    """The plan's positions where the motion starts [rad]. Shape: (7,)."""
    lead: float
    """How long after the tick it starts [s]: the commit (after a reset, the blend)."""
    planned: bool
    """Whether the target moves the arm at all (with the next tick a period later; see ``motion_start``)."""


@dataclasses.dataclass
class _Commit:
    """What a message at one tick keeps of the plan (:meth:`Fr3CommandPath._commit`)."""

    tick: int
    """The tick [ms after the origin; 0 after a restart]."""
    commit_end: int
    """Where the kept plan ends and the motion towards the message's target starts [ms]."""
    ticks: np.ndarray
    """The kept points' times [ms]."""
    plan: np.ndarray
    """The kept points: positions, velocities, accelerations. Shape: (3, n, 7)."""
    motion: Fr3Motion | None
    """A copy of the generator, advanced to the kept plan's end."""
    restart: bool
    """The previous message ran out (the node paused): the path restarts at rest where it ended."""
    now_q: np.ndarray
    """The plan's positions at the tick [rad]. Shape: (7,)."""


class Fr3CommandPath:
    """Joint targets -> JointTrajectory messages within the FR3's limits (see the module docstring).

    The plan is a timeline of 1 ms states on the node's clock. Each message carries the timeline from now
    on: the part planned before, unchanged, for ``commit_ms`` (so a message delivered anywhere in that
    window switches the controller between identical trajectories), then the motion towards the new target
    for one more period. Messages are stamped with the node's clock (the controller places the points on its
    own: the two clocks must agree, as on franka_ros2's one real-time PC or with chrony/PTP between two).

    Args:
        joint_names: The controller's joints, in the order of the targets.
        period: Control period [s].
        commit: Periods of the previous plan each message keeps (>= 1; the jitter a message may arrive with).
        commit_ms: The same in milliseconds (>= 1), instead of ``commit`` periods: the latency the path adds to
            each target. None: ``commit`` periods.
        margin: Share of libfranka's velocity, acceleration and jerk limits the shaper's motion may use, in (0, 1].
        motion: The setpoint generator of an env with ``motion="fr3"`` (its period must be ``period``, a whole
            number of milliseconds): the motion is that generator's, whole periods at a time, instead of the
            shaper's (``margin`` then applies only to the braking tail). None: the shaper. With ticks every
            ``period``, each message adds one period of exactly the setpoints the env's generator makes for the
            same targets from the same state; a late or early tick starts the period from the state the timeline
            has there (the braking tail's, or inside the previous period).
        blend_ms: After a reset, how long the first message holds the measured posture before its motion [ms]
            (the controller blends from what it holds to the plan over it; targets meanwhile are not planned).
    """

    def __init__(
        self,
        joint_names: Sequence[str],
        period: float,
        commit: int = 1,
        margin: float = 0.8,
        motion: Fr3Motion | None = None,
        blend_ms: int = 200,
        commit_ms: int | None = None,
    ) -> None:
        if commit < 1:
            raise ValueError(f"`commit` must be >= 1. Got {commit}.")
        if commit_ms is not None and commit_ms < 1:
            raise ValueError(f"`commit_ms` must be >= 1 [ms] (or None: `commit` periods). Got {commit_ms}.")
        if blend_ms < 0:
            raise ValueError(f"`blend_ms` must be >= 0. Got {blend_ms}.")
        if motion is not None and (abs(motion.period - period) > 1e-12 or len(motion.ticks) * DT != motion.period):
            raise ValueError(
                f"the FR3 motion's period must be the control period {period} s, a whole number of milliseconds. "
                f"Got {motion.period} s."
            )
        self.joint_names = list(joint_names)
        self.steps = max(1, round(period / DT))
        self.commit = commit
        self.commit_ms = commit * self.steps if commit_ms is None else int(commit_ms)
        """How long each message keeps the plan it replaces [ms]: the latency the path adds to each target."""
        self.tail_ms = 4
        self.blend_ms = int(blend_ms)
        self.shaper = MotionShaper(FR3_POSITION_LOWER, FR3_POSITION_UPPER, margin=margin)
        self.motion = motion
        """The env's FR3 setpoint generator, or None (the shaper)."""
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
        if self.motion is not None:
            self.motion.reset(q)

    @property
    def peak(self) -> dict[str, np.ndarray]:
        """Largest |velocity|, |acceleration|, |jerk| per joint of the predicted 1 kHz command since the reset."""
        return self._check.peak

    def _extended(
        self, ticks: np.ndarray, plan: np.ndarray, target: np.ndarray, until: int, motion: Fr3Motion | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The timeline ``(ticks, plan)`` carried on towards ``target`` up to ``until`` [ms] (new arrays).

        ``motion`` (a copy of :attr:`motion`, or None for the shaper) is advanced with it.
        """
        last = int(ticks[-1])
        if until <= last:
            return ticks, plan
        if motion is None:
            start = JointPoint(*(plan[i, -1] for i in range(3)))
            q, dq, ddq = self.shaper.run(start, target, until - last)
            return np.concatenate([ticks, np.arange(last + 1, until + 1)]), np.concatenate(
                [plan, np.stack([q, dq, ddq])], axis=1
            )
        # The env's generator, whole periods from the state the timeline ends in (on time: exactly the state its
        # last period left; late: where the braking tail or the previous target's period got to).
        steps = len(motion.ticks)
        new_ticks, new_plan = [ticks], [plan]
        while last < until:
            motion.q, motion.dq, motion.ddq = (new_plan[-1][i, -1].copy() for i in range(3))
            q, dq, ddq = motion.plan(target)
            new_ticks.append(np.arange(last + 1, last + steps + 1))
            new_plan.append(np.stack([q, dq, ddq]))
            last += steps
        return np.concatenate(new_ticks), np.concatenate(new_plan, axis=1)

    def _commit(self, now: float) -> _Commit:
        """What a message at ``now`` keeps of the plan, computed on copies (nothing here changes)."""
        tick = max(int(np.ceil((round(now * 1e9) - self._origin) / 1e6 - 1e-6)), self._sampled)
        ticks, plan, held, fresh = self._ticks, self._plan, self._target, self._fresh
        motion = copy.copy(self.motion)  # the plan's state; the message takes it over when it is sent
        restart = tick >= int(ticks[-1]) and not fresh
        if restart:
            # Past the last message's end: the controller holds its last point, at rest, exactly; plan from there
            # (not from the measured posture, which misses it by the tracking error), as after a reset at `now`.
            held = plan[0, -1].copy()
            tick, fresh = 0, True
            ticks, plan = np.zeros(1, dtype=np.int64), np.stack([held, np.zeros(7), np.zeros(7)])[:, None]
            if motion is not None:
                motion.reset(held)
        # After a reset the plan holds the measured posture for `blend_ms` first (see `message`).
        commit_end = tick + (max(self.blend_ms, self.commit_ms) if fresh else self.commit_ms)
        ticks, plan = self._extended(ticks, plan, held, commit_end, motion)  # a late tick: the previous target
        now_q = np.array([np.interp(tick, ticks, plan[0, :, j]) for j in range(7)])
        # The first message after a reset: no points before `blend_ms` ahead, so the controller's first segment
        # blends from the position it holds (its own command, which the measured posture the plan starts from
        # misses by the tracking error and the state's age) to the plan over 0.2 s instead of a millisecond.
        # Otherwise the points up to the commit, and the one that ends a longer segment across it (the blend).
        after = ticks[ticks > tick]
        bound = commit_end if fresh or len(after) == 0 else max(commit_end, int(after[0]))
        keep = (ticks > (commit_end - 1 if fresh else tick)) & (ticks <= bound)
        return _Commit(tick, commit_end, ticks[keep], plan[:, keep], motion, restart, now_q)

    def motion_start(self, now: float) -> MotionStart:
        """Where and when the motion towards the target of a message sent at ``now`` [s, node clock] starts.

        A message keeps the plan it replaces up to its commit (``commit_ms`` after ``now``; after a reset,
        ``blend_ms``): the motion towards its target starts where the plan is then. Inside the blend the next
        message (a period later) keeps the plan only up to its own commit, so a target moves the arm only when
        its motion starts before that (``planned``: inside the blend only the last tick before its end). Nothing
        changes here.
        """
        c = self._commit(now)
        start_ms = int(c.ticks[-1])
        return MotionStart(
            c.now_q, c.plan[0, -1].copy(), (start_ms - c.tick) * DT, start_ms < c.tick + self.steps + self.commit_ms
        )

    def message(self, target: np.ndarray, now: float) -> JointTrajectory:
        """The message for the joint target [rad] (7,) of the tick at ``now`` [s, node clock].

        A tick after the last message has run out (its braking tail done: the node paused) plans afresh from
        where that message stopped.

        Raises:
            PredictedReflex: the controller would command beyond libfranka's limits (nothing is sent; the
                plan is not changed).
        """
        c = self._commit(now)
        if c.restart:
            self.reset(self._plan[0, -1], now)
        tick, commit_end = c.tick, c.commit_end
        ticks, plan = self._extended(c.ticks, c.plan, np.asarray(target, dtype=np.float64), commit_end + self.steps,
                                     c.motion)  # fmt: skip
        # Every message ends at rest: a braking tail the next message replaces, so a node that stops sending
        # (yields, dies) leaves the arm stopping within its limits instead of a held last point at speed.
        steps, q, dq, ddq = self.shaper.brake(JointPoint(*(plan[i, -1] for i in range(3))), self.tail_ms)
        ticks = np.concatenate([ticks, int(ticks[-1]) + steps * self.tail_ms])
        plan = np.concatenate([plan, np.stack([q, dq, ddq])], axis=1)
        points = [JointPoint(*(plan[i, k] for i in range(3))) for k in range(len(ticks))]
        times = ((ticks - tick) * DT).tolist()
        # The controller's next period, as franka_hardware will pass it to libfranka: the previous message until
        # this one is sent, then this one.
        saved = copy.copy(self._model), copy.copy(self._check)
        saved[1].peak = dict(self._check.peak)
        reflex = self._check.check(self._model.sample(np.arange(self._sampled + 1, tick + 1) * DT))
        if reflex is None:
            self._model.receive(points, times, tick * DT, tick * DT if tick else 1e-12)
            reflex = self._check.check(self._model.sample(np.arange(tick + 1, tick + self.steps + 1) * DT))
        if reflex is not None:
            self._model, self._check = saved
            raise PredictedReflex(reflex)
        self._ticks, self._plan, self.motion = ticks, plan, c.motion
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
