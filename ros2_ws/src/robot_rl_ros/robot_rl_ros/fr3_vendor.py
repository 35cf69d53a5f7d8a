"""What franka_ros2 and libfranka do with the joint commands the policy node streams, ROS-free.

The policy node sends one joint target per control period (25 Hz). controller_manager runs the
command controller at 1 kHz, franka_hardware hands every 1 ms value to libfranka, and the FR3
answers a command that breaks its motion limits with a reflex (the motion stops, the controllers
are deactivated). This module models that chain so the sim bridge can judge commands as the robot
would, and the node can predict a reflex before sending:

- :class:`TrajectoryControllerModel`: a ros2_controllers ``JointTrajectoryController`` with
  ``interpolate_from_desired_state: true`` fed one point per message (joint_trajectory_controller
  ``src/trajectory.cpp``, ``Trajectory::sample`` and ``interpolate_between_points``: linear,
  cubic or quintic per segment depending on whether both ends carry velocities and accelerations;
  the segment starts at the last commanded state; a zero ``header.stamp`` starts the trajectory at
  the first update after receipt; past the last point the last point is held).
- :class:`ForwardControllerModel`: ``forward_command_controller`` (``src/forward_controllers_base.cpp``:
  the newest message in a realtime buffer, written as is every update, no interpolation), so a
  new target is a step of the 1 kHz command.
- :class:`ReflexCheck` (:mod:`robot_rl.envs.franka.fr3_motion`, with the limits): libfranka's FR3 limits on the
  1 kHz joint position command
  (``include/franka/rate_limiting.h``: ``computeUpperLimitsJointVelocity`` /
  ``computeLowerLimitsJointVelocity`` (position-dependent velocity limits), ``kMaxJointAcceleration``
  10 rad/s^2, ``kMaxJointJerk`` 5000 rad/s^3, derivatives by finite differences over ``kDeltaT``
  1 ms as ``limitRate`` takes them). franka_hardware leaves libfranka's joint position rate limiter
  and low-pass filter off (franka_hardware ``include/franka_hardware/robot.hpp``:
  ``joint_position_command_rate_limit_active_{false}``, ``joint_position_command_low_pass_filter_active_{false}``;
  ``src/robot.cpp`` ``writeOnceJointPositions``), so nothing between the controller and the robot
  smooths the command.
- :class:`Fr3ArmModel`: the three above, period by period, for the sim bridge's FR3 mode.
- :class:`MotionShaper`: the node's side: targets turned into motion within those limits.

Vendor sources read (2026-12-06): frankaemika/libfranka 155ddac8, frankarobotics/franka_ros2 43357d15,
ros-controls/ros2_controllers 94e74de3. Not run on a robot: the robot's own reflex thresholds are
the published limits; the robot may react to less (packet loss, the ``q_d`` it tracks).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# libfranka's FR3 limits and the 1 kHz check live with the env's FR3 motion model (numpy only): the env, the node and
# this model share one copy.
from robot_rl.envs.franka.fr3_motion import (
    DT,
    FR3_POSITION_LOWER,
    FR3_POSITION_UPPER,
    MAX_ACCELERATION,
    MAX_JERK,
    Reflex,
    ReflexCheck,
    velocity_limits,
)

__all__ = [
    "DT",
    "FR3_POSITION_LOWER",
    "FR3_POSITION_UPPER",
    "MAX_ACCELERATION",
    "MAX_JERK",
    "CommandedSetpoints",
    "Fr3ArmModel",
    "ForwardControllerModel",
    "JointPoint",
    "MotionShaper",
    "Reflex",
    "ReflexCheck",
    "TrajectoryControllerModel",
    "interpolate",
    "millisecond_ticks",
    "quintic",
    "velocity_limits",
]


@dataclasses.dataclass
class JointPoint:
    """One trajectory point or controller state (the JointTrajectoryPoint fields the controller uses)."""

    positions: np.ndarray
    """[rad]. Shape: (7,)."""
    velocities: np.ndarray | None = None
    """[rad/s]. Shape: (7,). None: not given (the segment is interpolated linearly)."""
    accelerations: np.ndarray | None = None
    """[rad/s^2]. Shape: (7,). None: not given (cubic at most)."""


def interpolate(a: JointPoint, b: JointPoint, duration: float, t: np.ndarray) -> tuple[np.ndarray, ...]:
    """Position, velocity and acceleration between two points, as ``Trajectory::interpolate_between_points``.

    Linear without velocities at both ends, cubic with velocities, quintic with accelerations too;
    ``t`` is clamped to ``[0, duration]`` (outside it the controller falls back to linear, i.e. the end point).

    Args:
        a: Start point (at ``t = 0``).
        b: End point (at ``t = duration``).
        duration: Segment length [s] (> 0).
        t: Sample times from the start [s]. Shape: (n,).

    Returns:
        ``(q, dq, ddq)``, each shape (n, 7).
    """
    t = np.clip(np.asarray(t, dtype=np.float64), 0.0, duration)[:, None]
    p0, p1 = a.positions[None], b.positions[None]
    has_vel = a.velocities is not None and b.velocities is not None
    has_acc = has_vel and a.accelerations is not None and b.accelerations is not None
    T = duration
    if not has_vel:
        slope = (p1 - p0) / T
        return p0 + slope * t, np.repeat(slope, len(t), 0), np.zeros((len(t), p0.shape[1]))
    v0, v1 = a.velocities[None], b.velocities[None]  # type: ignore[index]
    if not has_acc:
        c2 = (-3.0 * p0 + 3.0 * p1 - 2.0 * T * v0 - T * v1) / T**2
        c3 = (2.0 * p0 - 2.0 * p1 + T * v0 + T * v1) / T**3
        return p0 + v0 * t + c2 * t**2 + c3 * t**3, v0 + 2 * c2 * t + 3 * c3 * t**2, 2 * c2 + 6 * c3 * t
    a0, a1 = a.accelerations[None], b.accelerations[None]  # type: ignore[index]
    return quintic(p0, p1, v0, v1, a0, a1, T, t)


def quintic(
    p0: np.ndarray,
    p1: np.ndarray,
    v0: np.ndarray,
    v1: np.ndarray,
    a0: np.ndarray,
    a1: np.ndarray,
    T: np.ndarray | float,
    t: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, velocity and acceleration at ``t`` of the quintic from (p0, v0, a0) to (p1, v1, a1) over ``T``."""
    c2 = 0.5 * a0
    c3 = (-20 * p0 + 20 * p1 - 3 * a0 * T**2 + a1 * T**2 - 12 * v0 * T - 8 * v1 * T) / (2 * T**3)
    c4 = (30 * p0 - 30 * p1 + 3 * a0 * T**2 - 2 * a1 * T**2 + 16 * v0 * T + 14 * v1 * T) / (2 * T**4)
    c5 = (-12 * p0 + 12 * p1 - a0 * T**2 + a1 * T**2 - 6 * v0 * T - 6 * v1 * T) / (2 * T**5)
    q = p0 + v0 * t + c2 * t**2 + c3 * t**3 + c4 * t**4 + c5 * t**5
    dq = v0 + 2 * c2 * t + 3 * c3 * t**2 + 4 * c4 * t**3 + 5 * c5 * t**4
    ddq = 2 * c2 + 6 * c3 * t + 12 * c4 * t**2 + 20 * c5 * t**3
    return q, dq, ddq


class TrajectoryControllerModel:
    """A JointTrajectoryController (``interpolate_from_desired_state: true``) fed streamed messages.

    Each message replaces the trajectory: its first segment starts at the last commanded state (its
    position, velocity, acceleration) and ends at the first point, ``time_from_start`` after receipt
    (a zero ``header.stamp``: the first update after receipt); past the last point it is held.
    """

    def __init__(self) -> None:
        self._points: list[JointPoint] = []
        self._stacked: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._times = np.zeros(0)
        self.state: JointPoint | None = None
        """The last commanded state (position, velocity, acceleration)."""

    def reset(self, q: np.ndarray) -> None:
        """Hold ``q`` at rest (activation: the controller starts from the measured state)."""
        q = np.asarray(q, dtype=np.float64).copy()
        self.state = JointPoint(q, np.zeros(7), np.zeros(7))
        self._points = []

    def receive(self, points: list[JointPoint], times_from_start: list[float], now: float, stamp: float = 0.0) -> None:
        """A message arrived after the update at ``now`` [s]: ``points`` at ``times_from_start`` [s] after ``stamp``.

        ``stamp`` 0 starts the trajectory at the first update after receipt (``now``); points stamped in the
        past are passed through (sampled where the time falls), as the controller does.
        """
        assert self.state is not None, "reset() first"
        start = self.state
        first = points[0]
        # set_point_before_trajectory_msg: the start state lends the derivatives the first point carries; the
        # degree of a segment needs them at both ends (interpolate_between_points).
        before = JointPoint(
            start.positions.copy(),
            None if first.velocities is None else start.velocities,
            None if first.accelerations is None else start.accelerations,
        )
        self._points = [before, *points]
        # Every point with all three fields (the node's messages): quintic segments, evaluated all at once.
        self._stacked = None
        if all(p.velocities is not None and p.accelerations is not None for p in self._points):
            self._stacked = tuple(
                np.array([getattr(p, f) for p in self._points]) for f in ("positions", "velocities", "accelerations")
            )
        start_time = stamp if stamp != 0.0 else now
        self._times = np.concatenate([[now], start_time + np.asarray(times_from_start, dtype=np.float64)])

    def sample(self, times: np.ndarray) -> np.ndarray:
        """The 1 kHz position commands at ``times`` [s] (ascending, after the last ``receive``). Shape: (n, 7)."""
        assert self.state is not None, "reset() first"
        times = np.asarray(times, dtype=np.float64)
        if not self._points or len(times) == 0:
            return np.repeat(self.state.positions[None], len(times), 0)
        q = np.empty((len(times), 7))
        dq, ddq = np.zeros_like(q), np.zeros_like(q)
        # Before the first point: the segment from the state before the message; then the message's own segments.
        segment = np.searchsorted(self._times[1:], times, side="right")
        if self._stacked is not None:
            q, dq, ddq = self._sample_quintic(segment, times)
            self.state = JointPoint(q[-1].copy(), dq[-1].copy(), ddq[-1].copy())
            return q
        for i in np.unique(segment):
            rows = segment == i
            if i == len(self._points) - 1:  # past the last point: held
                q[rows] = self._points[-1].positions
                continue
            t0, t1 = self._times[i], self._times[i + 1]
            q[rows], dq[rows], ddq[rows] = interpolate(self._points[i], self._points[i + 1], t1 - t0, times[rows] - t0)
        self.state = JointPoint(q[-1].copy(), dq[-1].copy(), ddq[-1].copy())
        return q

    def _sample_quintic(self, segment: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`interpolate` for every row at once (quintic segments; past the last point: held at rest)."""
        assert self._stacked is not None
        pos, vel, acc = self._stacked
        last = len(self._points) - 1
        held = segment >= last
        i = np.minimum(segment, last - 1)
        T = (self._times[i + 1] - self._times[i])[:, None]
        t = np.clip(times - self._times[i], 0.0, None)[:, None]
        t = np.minimum(t, T)
        q, dq, ddq = quintic(pos[i], pos[i + 1], vel[i], vel[i + 1], acc[i], acc[i + 1], T, t)
        q[held], dq[held], ddq[held] = pos[last], 0.0, 0.0
        return q, dq, ddq


class ForwardControllerModel:
    """A forward_command_controller: the newest target, unchanged, every update (no interpolation)."""

    def __init__(self) -> None:
        self.target = np.zeros(7)

    def reset(self, q: np.ndarray) -> None:
        """Hold ``q``."""
        self.target = np.asarray(q, dtype=np.float64).copy()

    def receive(self, points: list[JointPoint], times_from_start: list[float], now: float, stamp: float = 0.0) -> None:
        """A ``~/commands`` message (``points[-1]``): the new target replaces the old one at the next update."""
        self.target = np.asarray(points[-1].positions, dtype=np.float64).copy()

    def sample(self, times: np.ndarray) -> np.ndarray:
        """The 1 kHz position commands at ``times``. Shape: (n, 7)."""
        return np.repeat(self.target[None], len(np.atleast_1d(times)), 0)


def millisecond_ticks(t_from: float, t_to: float) -> np.ndarray:
    """The controller updates in ``(t_from, t_to]`` on a 1 ms grid [s]."""
    first = math.floor(t_from / DT + 1e-9) + 1
    last = math.floor(t_to / DT + 1e-9)
    return np.arange(first, last + 1) * DT


class MotionShaper:
    """Joint targets as a motion the FR3 accepts, one state per millisecond (the node's side of the command path).

    A policy trained on the sim's servo asks for steps its servo smooths (the shipped Push policy's first
    target is 0.087 rad from rest on fr3_joint2: 2.2 rad/s within one 40 ms period, 55 rad/s^2). Sent as is,
    even a controller that interpolates commands more than the FR3 accepts. The shaper tracks a target with a
    jerk-, acceleration- and velocity-limited second-order filter within ``margin`` of libfranka's limits.

    Args:
        lower: Joint position limits [rad]. Shape: (7,).
        upper: Joint position limits [rad]. Shape: (7,).
        margin: Share of libfranka's velocity, acceleration and jerk limits the motion may use, in (0, 1].
        settle: Time constant of the approach to the target [s].
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray, margin: float = 0.8, settle: float = 0.04) -> None:
        if not (0.0 < margin <= 1.0):
            raise ValueError(f"`margin` must be in (0, 1]. Got {margin}.")
        self.lower, self.upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        self.margin = margin
        self.settle = settle

    def run(self, start: JointPoint, target: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``steps`` milliseconds from ``start`` (with velocities and accelerations) towards ``target`` [rad].

        Returns:
            ``(q, dq, ddq)`` after each millisecond, each shape (steps, 7).
        """
        goal = np.clip(np.asarray(target, dtype=np.float64), self.lower, self.upper)
        q = start.positions.copy()
        dq = np.zeros(7) if start.velocities is None else start.velocities.copy()
        ddq = np.zeros(7) if start.accelerations is None else start.accelerations.copy()
        a_max, j_max = self.margin * MAX_ACCELERATION, self.margin * MAX_JERK
        # Braking from v takes v/a plus the a/j ramp: the approach speed keeps both within reach.
        a_brake, tau_v = 0.5 * a_max, 4.0 * a_max / j_max
        out = np.empty((3, steps, 7))
        for k in range(steps):
            error = goal - q
            speed = np.minimum(np.abs(error) / self.settle, np.sqrt(2.0 * a_brake * np.abs(error)))
            low, high = velocity_limits(q)
            v_des = np.clip(np.sign(error) * speed, self.margin * low, self.margin * high)
            a_des = np.clip((v_des - dq) / tau_v, -a_max, a_max)
            jerk = np.clip((a_des - ddq) / DT, -j_max, j_max)
            # Exact for constant jerk over the step (the controller's quintic between two states reproduces the
            # cubic), the same integration as the braking tail: no half-step offsets where the two meet.
            q = q + dq * DT + ddq * DT**2 / 2 + jerk * DT**3 / 6
            dq = dq + ddq * DT + jerk * DT**2 / 2
            ddq = ddq + jerk * DT
            out[0, k], out[1, k], out[2, k] = q, dq, ddq
        return out[0], out[1], out[2]

    def brake(self, start: JointPoint, step_ms: int = 4, max_steps: int = 250) -> tuple[np.ndarray, ...]:
        """A stop from ``start``: piecewise-constant jerk every ``step_ms`` milliseconds, ending at rest.

        Within each step the motion is a cubic, which the controller's quintic segment between two of these
        states reproduces exactly, so points every ``step_ms`` carry the stop without 1 ms resolution. Half of
        ``margin`` of the acceleration and jerk limits.

        Returns:
            ``(steps, q, dq, ddq)``: the time of each state in steps of ``step_ms`` from ``start`` (ints),
            and the states, each shape (n, 7); the last is at rest.
        """
        h = step_ms * DT
        q, dq, ddq = start.positions.copy(), start.velocities.copy(), start.accelerations.copy()  # type: ignore[union-attr]
        a_max, j_max = 0.5 * self.margin * MAX_ACCELERATION, 0.5 * self.margin * MAX_JERK
        tau = max(4.0 * a_max / j_max, 3.0 * h)
        states = []
        for _ in range(max_steps):
            if np.all(np.abs(dq) < 1e-3) and np.all(np.abs(ddq) < 0.05):
                break
            a_des = np.clip(-dq / tau, -a_max, a_max)
            jerk = np.clip((a_des - ddq) / h, -j_max, j_max)
            q = q + dq * h + ddq * h**2 / 2 + jerk * h**3 / 6
            dq = dq + ddq * h + jerk * h**2 / 2
            ddq = ddq + jerk * h
            states.append((q.copy(), dq.copy(), ddq.copy()))
        end = (q.copy(), np.zeros(7), np.zeros(7))
        states.append(end)
        q_all, dq_all, ddq_all = (np.array(x) for x in zip(*states, strict=True))
        return np.arange(1, len(states) + 1), q_all, dq_all, ddq_all


class Fr3ArmModel:
    """A real FR3 behind franka_ros2 judging streamed commands period by period (the sim bridge's FR3 mode).

    Commands go to the controller model of their kind (``trajectory``: :class:`TrajectoryControllerModel`,
    ``forward``: :class:`ForwardControllerModel`); :meth:`advance` runs one period of 1 kHz updates through
    :class:`ReflexCheck` and returns where the command ends, or None once a reflex stopped the arm
    (until :meth:`reset`, franka_ros2's error recovery).

    Args:
        period: Simulated time per :meth:`advance` [s].
    """

    def __init__(self, period: float) -> None:
        self.period = float(period)
        self.check = ReflexCheck(FR3_POSITION_LOWER, FR3_POSITION_UPPER)
        self.controllers = {"trajectory": TrajectoryControllerModel(), "forward": ForwardControllerModel()}
        self.active = "trajectory"
        self.reflex: Reflex | None = None
        self.commanded = False
        """Whether a command arrived since the reset."""
        self._t = 0.0
        self._last = 0.0
        self._offset: int | None = None
        self._fixed = False
        self._held = np.zeros(7)
        self._pending: list[tuple[float, str, list[JointPoint], list[float], float]] = []
        self._catch_up = 0.0
        self.period_commands = np.zeros((1, 7))
        """The last :meth:`advance`'s 1 kHz commands [rad], led by the command it started from. Shape: (n + 1, 7)."""

    def reset(self, q: np.ndarray, clock_ns: int | None = None) -> None:
        """At rest at ``q`` [rad], no reflex (a new episode: error recovery and the controller restarted).

        ``clock_ns``: the senders' clock now [ns], when this model's time follows that clock (a sim paced by wall
        time, each :meth:`advance` given the time elapsed): stamps then map with this fixed offset.
        """
        for controller in self.controllers.values():
            controller.reset(q)
        self.check.reset(q)
        self.reflex, self.commanded, self._t, self._offset, self._last = None, False, 0.0, clock_ns, 0.0
        self._catch_up = 0.0
        self._fixed = clock_ns is not None
        self._held = np.asarray(q, dtype=np.float64).copy()
        self._pending.clear()
        self.period_commands = self._held[None].copy()

    def receive(self, kind: str, points: list[JointPoint], times_from_start: list[float], stamp_ns: int = 0) -> None:
        """A command message of ``kind`` ('trajectory' or 'forward') arrived, stamped ``stamp_ns`` [ns, sender's clock].

        A message takes effect at the next :meth:`advance`, at its stamp when that falls within the period
        (a message cannot act before it was sent). The sim shares no clock with the sender: a nonzero stamp
        is mapped into sim time by the offset of the first stamped message after the reset (the sender's ticks
        follow wall time, a lockstep sim the commands). A message stamped more than a period after this model's
        time comes from a sender that paused: the real controller went on following the previous message
        meanwhile (its braking tail), and the sender planned from there, so the next :meth:`advance` first runs
        the controller through the gap. One stamped more than a period early re-anchors the offset.
        Integer nanoseconds: a float of an epoch time has 0.2 us steps, and a 0.2 us shift of a moving command
        is a jerk of hundreds of rad/s^3 in 1 ms finite differences.
        """
        at, stamp = self._t, 0.0
        if stamp_ns != 0:
            t_ns = round(self._t * 1e9)
            if not self._fixed and self._offset is None:
                self._offset = stamp_ns - t_ns
            ahead = stamp_ns - (self._offset or 0) - t_ns
            if not self._fixed and ahead > round(self.period * 1e9):
                self._catch_up = max(self._catch_up, ahead * 1e-9)
            elif not self._fixed and ahead < -round(self.period * 1e9):
                self._offset = stamp_ns - t_ns
            stamp = (stamp_ns - self._offset) * 1e-9
            at = max(stamp, self._t)
            stamp = stamp if stamp != 0.0 else 1e-12  # 0 would mean "on receipt"
        self._pending.append((at, kind, points, times_from_start, stamp))
        self.commanded = True

    def advance(self, duration: float | None = None) -> np.ndarray | None:
        """``duration`` [s] of controller updates (default: a period; plus a paused sender's gap).

        Returns the command at the end [rad] (7,), or None.

        None: a reflex stopped the arm (now or before).
        """
        if self.reflex is not None:
            return None
        end = self._t + (self.period if duration is None else duration) + self._catch_up
        self._catch_up = 0.0
        ticks = millisecond_ticks(self._t, end)
        parts = []
        due = sorted((m for m in self._pending if m[0] <= end), key=lambda m: m[0])
        self._pending = [m for m in self._pending if m[0] > end]
        for at, kind, points, times, stamp in due:
            before = ticks[ticks <= at + 1e-9]
            parts.append(self.controllers[self.active].sample(before))
            ticks = ticks[len(before) :]
            now = float(before[-1]) if len(before) else self._last
            if kind != self.active:  # another controller takes over from the last command
                self.controllers[kind].reset(self.controllers[self.active].sample(np.array([now]))[-1])
                self.active = kind
            self.controllers[kind].receive(points, times, now, stamp)
        parts.append(self.controllers[self.active].sample(ticks))
        commands = np.concatenate(parts)
        self._t = end
        self.period_commands = np.concatenate([self._held[None], commands])
        if len(commands) == 0:  # less than a millisecond passed: no controller update
            return self._held.copy()
        self._last = math.floor(end / DT + 1e-9) * DT  # the last controller update (the state's time)
        self.reflex = self.check.check(commands)
        if self.reflex is not None:
            return None
        self._held = commands[-1].copy()
        return self._held.copy()


class CommandedSetpoints:
    """Stands in for a ``motion="fr3"`` env's setpoint generator in the sim bridge.

    The arm's servos follow the 1 kHz command the :class:`Fr3ArmModel` computed for the period (what
    franka_hardware hands to libfranka), not a plan of their own.
    The env asks :meth:`plan` for the set point and its velocity at a few times of the period; they are read
    off the period's commands (velocities by central differences over 1 ms), the period mapped onto the
    commands' span when it is not one control period (a realtime bridge's late tick).

    Args:
        arm: The FR3 model whose commands the servos follow.
        period: The env's control period [s].
    """

    def __init__(self, arm: Fr3ArmModel, period: float) -> None:
        self.arm = arm
        self.period = float(period)
        self.q, self.dq, self.ddq = np.zeros(7), np.zeros(7), np.zeros(7)
        self.target = np.zeros(7)

    def reset(self, q: np.ndarray) -> None:
        """At rest at ``q`` [rad] (the env's reset; the arm model is reset by the bridge)."""
        self.q, self.dq, self.ddq = np.array(q, dtype=np.float64), np.zeros(7), np.zeros(7)
        self.target = self.q.copy()

    def plan(self, target: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The commanded set points at ``times`` [s from the period's start] (``target``, the IK's, is unused)."""
        commands = self.arm.period_commands
        times = np.asarray(times, dtype=np.float64)
        if len(commands) < 2:
            q, dq = np.repeat(commands[-1:], len(times), 0), np.zeros((len(times), 7))
        else:
            span = (len(commands) - 1) * DT
            at = times * (span / self.period)
            grid = np.arange(len(commands)) * DT
            velocity = np.gradient(commands, DT, axis=0)
            q = np.stack([np.interp(at, grid, commands[:, j]) for j in range(7)], axis=1)
            dq = np.stack([np.interp(at, grid, velocity[:, j]) for j in range(7)], axis=1)
        self.q, self.dq, self.target = q[-1].copy(), dq[-1].copy(), np.asarray(target, dtype=np.float64).copy()
        return q, dq, np.zeros_like(q)
