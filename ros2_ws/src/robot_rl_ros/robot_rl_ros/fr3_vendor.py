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
- :class:`ReflexCheck`: libfranka's FR3 limits on the 1 kHz joint position command
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

DT = 1e-3
"""libfranka's control period ``kDeltaT`` [s] (controller_manager ``update_rate: 1000`` in franka_bringup)."""
MAX_ACCELERATION = 10.0
"""``kMaxJointAcceleration`` of the FR3, every joint [rad/s^2] (libfranka rate_limiting.h, less its 1e-3 eps)."""
MAX_JERK = 5000.0
"""``kMaxJointJerk`` of the FR3, every joint [rad/s^3] (libfranka rate_limiting.h, less its 1e-3 eps)."""
_VEL_MAX = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
# computeUpperLimitsJointVelocity: min(vmax, max(0, -o + sqrt(max(0, k (u - q))))), and the mirror for the lower.
_VEL_OFFSET = np.array([0.30, 0.20, 0.20, 0.30, 0.35, 0.35, 0.35])
_VEL_GAIN = np.array([12.0, 5.17, 7.00, 8.00, 34.0, 11.0, 34.0])
_VEL_UPPER_POS = np.array([2.75010, 1.79180, 2.90650, -0.1458, 2.81010, 4.52050, 3.01960])
_VEL_LOWER_POS = np.array([-2.750100, -1.791800, -2.906500, -3.048100, -2.810100, 0.54092, -3.019600])
FR3_POSITION_LOWER = np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
"""FR3 joint position limits [rad] (franka_description ``robots/fr3/joint_limits.yaml``, as hardware/fr3.yaml)."""
FR3_POSITION_UPPER = np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
"""FR3 joint position limits [rad] (franka_description ``robots/fr3/joint_limits.yaml``, as hardware/fr3.yaml)."""
_LIMIT_EPS = 1e-3
"""``kLimitEps``/``kJointVelocityLimitsTolerance`` of libfranka (FR3: no packet loss assumed)."""


def velocity_limits(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FR3 joint velocity limits at joint positions ``q``, as libfranka computes them.

    Args:
        q: Joint positions [rad]. Shape: (7,).

    Returns:
        ``(lower, upper)`` [rad/s], each shape (7,): a joint near its position limit may only move away from it.
    """
    room_up = np.sqrt(np.maximum(0.0, _VEL_GAIN * (_VEL_UPPER_POS - q)))
    room_down = np.sqrt(np.maximum(0.0, _VEL_GAIN * (q - _VEL_LOWER_POS)))
    upper = np.minimum(_VEL_MAX, np.maximum(0.0, room_up - _VEL_OFFSET))
    lower = np.maximum(-_VEL_MAX, np.minimum(0.0, _VEL_OFFSET - room_down))
    return lower + _LIMIT_EPS, upper - _LIMIT_EPS


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


@dataclasses.dataclass
class Reflex:
    """A limit the 1 kHz command broke: what the FR3 would stop with."""

    kind: str
    """libfranka's error name, e.g. ``joint_motion_generator_acceleration_discontinuity``."""
    joint: int
    """Joint index (0-6)."""
    value: float
    """The commanded value [rad, rad/s, rad/s^2 or rad/s^3]."""
    limit: float
    """The limit it broke (same unit)."""

    def __str__(self) -> str:
        return f"{self.kind}: fr3_joint{self.joint + 1} {self.value:.4g} beyond {self.limit:.4g}"


class ReflexCheck:
    """libfranka's FR3 limits on a 1 kHz joint position command (finite differences over 1 ms).

    Args:
        lower: Joint position limits [rad]. Shape: (7,).
        upper: Joint position limits [rad]. Shape: (7,).
    """

    def __init__(self, lower: np.ndarray, upper: np.ndarray) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self._q = np.zeros(7)
        self._dq = np.zeros(7)
        self._ddq = np.zeros(7)
        self.peak = {"velocity": np.zeros(7), "acceleration": np.zeros(7), "jerk": np.zeros(7)}
        """Largest |commanded velocity|, |acceleration|, |jerk| per joint since the last reset."""

    def reset(self, q: np.ndarray) -> None:
        """The robot at rest at ``q`` (the command's history starts there)."""
        self._q = np.asarray(q, dtype=np.float64).copy()
        self._dq, self._ddq = np.zeros(7), np.zeros(7)
        for value in self.peak.values():
            value[:] = 0.0

    def check(self, commands: np.ndarray) -> Reflex | None:
        """Judge consecutive 1 kHz commands; returns the first limit broken (the state stops there) or None.

        Args:
            commands: Joint position commands, one per millisecond. Shape: (n, 7).
        """
        if len(commands) == 0:
            return None
        q = np.concatenate([self._q[None], np.asarray(commands, dtype=np.float64)])
        dq = np.diff(q, axis=0) / DT
        ddq = np.diff(np.concatenate([self._dq[None], dq]), axis=0) / DT
        jerk = np.diff(np.concatenate([self._ddq[None], ddq]), axis=0) / DT
        low, high = velocity_limits(q[:-1])  # at the position the step starts from, as libfranka's limitRate
        checks = (
            ("joint_position_limits_violation", q[1:], self.lower, self.upper),
            ("joint_motion_generator_velocity_limits_violation", dq, low, high),
            ("joint_motion_generator_acceleration_discontinuity", ddq, -MAX_ACCELERATION, MAX_ACCELERATION),
            # libfranka names the jerk limit a discontinuity too
            ("joint_motion_generator_jerk_discontinuity", jerk, -MAX_JERK, MAX_JERK),
        )
        first: Reflex | None = None
        first_row = len(dq)
        for kind, values, lower, upper in checks:
            bad = (values < lower) | (values > upper)
            rows = np.flatnonzero(bad.any(axis=1))
            if len(rows) and rows[0] < first_row:
                row = int(rows[0])
                j = int(np.flatnonzero(bad[row])[0])
                limit = np.broadcast_to(lower, values.shape)[row, j] if values[row, j] < np.broadcast_to(
                    lower, values.shape)[row, j] else np.broadcast_to(upper, values.shape)[row, j]  # fmt: skip
                first, first_row = Reflex(kind, j, float(values[row, j]), float(limit)), row
        upto = first_row + 1
        for key, values in (("velocity", dq), ("acceleration", ddq), ("jerk", jerk)):
            self.peak[key] = np.maximum(self.peak[key], np.abs(values[:upto]).max(axis=0))
        if first is None:
            self._q, self._dq, self._ddq = q[-1].copy(), dq[-1].copy(), ddq[-1].copy()
        return first


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

    def reset(self, q: np.ndarray, clock_ns: int | None = None) -> None:
        """At rest at ``q`` [rad], no reflex (a new episode: error recovery and the controller restarted).

        ``clock_ns``: the senders' clock now [ns], when this model's time follows that clock (a sim paced by wall
        time, each :meth:`advance` given the time elapsed): stamps then map with this fixed offset.
        """
        for controller in self.controllers.values():
            controller.reset(q)
        self.check.reset(q)
        self.reflex, self.commanded, self._t, self._offset, self._last = None, False, 0.0, clock_ns, 0.0
        self._fixed = clock_ns is not None
        self._held = np.asarray(q, dtype=np.float64).copy()
        self._pending.clear()

    def receive(self, kind: str, points: list[JointPoint], times_from_start: list[float], stamp_ns: int = 0) -> None:
        """A command message of ``kind`` ('trajectory' or 'forward') arrived, stamped ``stamp_ns`` [ns, sender's clock].

        A message takes effect at the next :meth:`advance`, at its stamp when that falls within the period
        (a message cannot act before it was sent). The sim shares no clock with the sender: a nonzero stamp
        is mapped into sim time by the offset of the first stamped message after the reset, re-anchored when
        the two part by more than a period (the sender's ticks follow wall time, a lockstep sim the commands).
        Integer nanoseconds: a float of an epoch time has 0.2 us steps, and a 0.2 us shift of a moving command
        is a jerk of hundreds of rad/s^3 in 1 ms finite differences.
        """
        at, stamp = self._t, 0.0
        if stamp_ns != 0:
            t_ns = round(self._t * 1e9)
            drift = abs(stamp_ns - (self._offset or 0) - t_ns)
            if not self._fixed and (self._offset is None or drift > round(self.period * 1e9)):
                self._offset = stamp_ns - t_ns
            stamp = (stamp_ns - self._offset) * 1e-9
            at = max(stamp, self._t)
            stamp = stamp if stamp != 0.0 else 1e-12  # 0 would mean "on receipt"
        self._pending.append((at, kind, points, times_from_start, stamp))
        self.commanded = True

    def advance(self, duration: float | None = None) -> np.ndarray | None:
        """``duration`` [s] (default: a period) of controller updates: the command at its end [rad] (7,), or None.

        None: a reflex stopped the arm (now or before).
        """
        if self.reflex is not None:
            return None
        end = self._t + (self.period if duration is None else duration)
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
        if len(commands) == 0:  # less than a millisecond passed: no controller update
            return self._held.copy()
        self._last = math.floor(end / DT + 1e-9) * DT  # the last controller update (the state's time)
        self.reflex = self.check.check(commands)
        if self.reflex is not None:
            return None
        self._held = commands[-1].copy()
        return self._held.copy()
