"""The motion a real FR3 executes: libfranka's joint limits and a setpoint generator that stays within them.

A Franka FR3 commanded through franka_ros2 receives a joint position setpoint every millisecond, and
libfranka refuses (with a reflex that stops the arm) a setpoint stream whose finite differences over
1 ms break the FR3's limits. The constants here are libfranka's (frankaemika/libfranka 155ddac8,
``include/franka/rate_limiting.h``):

- ``kDeltaT`` 1 ms, the control period over which the differences are taken;
- ``kMaxJointAcceleration`` 10 rad/s^2 and ``kMaxJointJerk`` 5000 rad/s^3 for every joint (each less
  the header's ``kLimitEps`` 1e-3);
- ``computeUpperLimitsJointVelocity`` / ``computeLowerLimitsJointVelocity``: position-dependent
  velocity limits, ``min(vmax, max(0, -o + sqrt(max(0, k (u - q)))))`` and its mirror, less
  ``kJointVelocityLimitsTolerance``;
- the position limits of franka_description ``robots/fr3/joint_limits.yaml`` (as hardware/fr3.yaml).

:class:`ReflexCheck` judges a 1 kHz setpoint stream as libfranka does. :class:`Fr3Motion` produces
one: each control period it turns the period's joint target (the differential-IK output of
:class:`~robot_rl.envs.franka.controller.CartesianController`) into a setpoint trajectory within
``margin`` of those limits. The Franka envs' ``motion="fr3"`` mode servos the simulated arm along it,
and the ROS node streams the very same trajectory to the robot's JointTrajectoryController.
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
VELOCITY_MAX = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])
"""The caps of the FR3's velocity limits [rad/s] (libfranka rate_limiting.h ``computeUpperLimitsJointVelocity``)."""
# computeUpperLimitsJointVelocity: min(vmax, max(0, -o + sqrt(max(0, k (u - q))))), and the mirror for the lower
# (libfranka rate_limiting.h: the offsets o, gains k and the positions u where the square root is zero).
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
        q: Joint positions [rad]. Shape: (..., 7).

    Returns:
        ``(lower, upper)`` [rad/s], each of ``q``'s shape: a joint near its position limit may only move away.
    """
    room_up = np.sqrt(np.maximum(0.0, _VEL_GAIN * (_VEL_UPPER_POS - q)))
    room_down = np.sqrt(np.maximum(0.0, _VEL_GAIN * (q - _VEL_LOWER_POS)))
    upper = np.minimum(VELOCITY_MAX, np.maximum(0.0, room_up - _VEL_OFFSET))
    lower = np.maximum(-VELOCITY_MAX, np.minimum(0.0, _VEL_OFFSET - room_down))
    return lower + _LIMIT_EPS, upper - _LIMIT_EPS


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

    def __init__(self, lower: np.ndarray = FR3_POSITION_LOWER, upper: np.ndarray = FR3_POSITION_UPPER) -> None:
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self._q = np.zeros(7)
        self._dq = np.zeros(7)
        self._ddq = np.zeros(7)
        self.peak = {"velocity": np.zeros(7), "acceleration": np.zeros(7), "jerk": np.zeros(7)}
        """Largest |commanded velocity|, |acceleration|, |jerk| per joint since the last reset."""
        self.velocity_use = np.zeros(7)
        """Largest commanded velocity as a share of libfranka's limit at that position, per joint."""

    def reset(self, q: np.ndarray) -> None:
        """The robot at rest at ``q`` (the command's history starts there)."""
        self._q = np.asarray(q, dtype=np.float64).copy()
        self._dq, self._ddq = np.zeros(7), np.zeros(7)
        for value in self.peak.values():
            value[:] = 0.0
        self.velocity_use[:] = 0.0

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
                low_limit = np.broadcast_to(lower, values.shape)[row, j]
                high_limit = np.broadcast_to(upper, values.shape)[row, j]
                limit = low_limit if values[row, j] < low_limit else high_limit
                first, first_row = Reflex(kind, j, float(values[row, j]), float(limit)), row
        upto = first_row + 1
        for key, values in (("velocity", dq), ("acceleration", ddq), ("jerk", jerk)):
            self.peak[key] = np.maximum(self.peak[key], np.abs(values[:upto]).max(axis=0))
        # The share of the limit on the side the joint moves to (a limit of 0 counts as fully used when moving).
        side = np.where(dq[:upto] >= 0.0, high[:upto], -low[:upto])
        use = np.abs(dq[:upto]) / np.maximum(side, 1e-9)
        self.velocity_use = np.maximum(self.velocity_use, use.max(axis=0))
        if first is None:
            self._q, self._dq, self._ddq = q[-1].copy(), dq[-1].copy(), ddq[-1].copy()
        return first


class Fr3Motion:
    """Joint setpoints that track a moving joint target within ``margin`` of the FR3's limits, period by period.

    Each control period the IK gives one joint target ``g`` for the period's end; the servo mode ramps the set
    point to it linearly (a velocity step at every period boundary, which a real FR3 refuses). This generator
    plans the period instead: a jerk-limited change of acceleration at the start of the period (the corner),
    then a constant acceleration ``u``, chosen per joint so that the setpoint tracks the target as a reference
    moving at the target's own velocity. Why it tracks with little lag and never breaks a limit:

    - Feed-forward: the reference is taken to move on at ``vr = (g - g_prev) / T`` (the velocity of the servo
      mode's ramp). In the error coordinates ``e = q - r``, ``e' = q' - vr`` the reference drops out, so a target
      that moves steadily is followed with zero error once reached (no lag, unlike a filter that approaches
      the target: :class:`~robot_rl_ros.fr3_vendor.MotionShaper` lags ``v * settle`` and more).
    - The acceleration is the discrete-time time-optimal law for a double integrator with a bounded
      acceleration (the exact zero-order-hold counterpart of Han's ``fhan``): ``u`` is chosen so that the error
      at the end of the period lands on the switching curve ``e' = -phi(e)``. Near zero ``phi(e) = 2 e / T``,
      from which the next period's ``u`` lands exactly on zero: a two-period deadbeat, without the velocity
      ripple a one-period deadbeat leaves. Farther out ``phi(e) = sqrt(2 B (|e| - e_l / 2))``, the curve of a
      stop at the braking acceleration ``B = braking * a_max`` (C1 with the linear part at ``e_l = B T^2 / 4``),
      so a large error closes at full acceleration and brakes onto the target without overshoot; ``B < a_max``
      leaves the headroom the corner and the discretisation need. Both cases are solved in closed form.
    - Limits by construction: ``|u| <= margin * 10 rad/s^2``; the acceleration changes from the previous
      period's only by a ramp at ``margin * 5000 rad/s^3`` (at most 4 ms of a 40 ms period), so acceleration is
      continuous and piecewise linear. Finite differences over 1 ms of a trajectory whose acceleration and
      jerk are bounded are bounded by the same values. ``u`` also keeps the period's end velocity (with the
      corner's shift of it) within ``margin`` of libfranka's position-dependent velocity limit, taken at the
      farthest position this period and the next corner can reach, and below the speed that stops the joint at
      the edge of the target box at half the acceleration bound (near a position limit libfranka's velocity
      limit falls faster than the acceleration bound can follow where its gain is high: fr3_joint5 and 7). The
      target box lies inside the FR3's position limits where that limit is still >= 0.25 rad/s. The velocity
      bound holds at the period's ends; within a period the 1 ms velocity reaches at most 0.81 of libfranka's
      limit (measured over the tests' extreme target sequences), never the limit.
    - Synchronised: when a joint asks for more than the acceleration bound, every joint's acceleration is scaled
      by the same factor, so the joints keep the direction of their velocity change and the TCP its course.
    - Deterministic: the plan depends only on the generator's own state (the commanded setpoint ``q``, ``dq``,
      ``ddq`` at the start of the period) and the targets; the trajectory is a closed-form piecewise cubic that
      :meth:`sample` evaluates at any time, the same values for the env's physics steps and the node's 1 ms
      points.

    Args:
        period: Control period ``T`` [s] (the env's ``ctrl_dt``).
        margin: Share of libfranka's velocity, acceleration and jerk limits the setpoints may use, in (0, 1].
        braking: Share of the acceleration bound the approach brakes with, in (0, 1].
        synchronize: When a joint asks for more than the acceleration bound, scale every joint's acceleration by
            the same factor (the joints keep the direction of their velocity change, so the TCP keeps its course)
            instead of saturating that joint alone.
    """

    edge_velocity = 0.25
    """libfranka's velocity limit at the edge of the target box [rad/s] (the box stays clear of the limit's zero)."""

    def __init__(self, period: float, margin: float = 0.8, braking: float = 0.75, synchronize: bool = True) -> None:
        if not (isinstance(period, int | float) and period > 0.0):
            raise ValueError(f"`period` must be > 0 s. Got {period!r}.")
        if not (0.0 < margin <= 1.0):
            raise ValueError(f"`margin` must be in (0, 1]. Got {margin}.")
        if not (0.0 < braking <= 1.0):
            raise ValueError(f"`braking` must be in (0, 1]. Got {braking}.")
        self.period = float(period)
        self.margin = float(margin)
        self.synchronize = bool(synchronize)
        self.acceleration = margin * MAX_ACCELERATION
        """Acceleration bound [rad/s^2]."""
        self.jerk = margin * MAX_JERK
        """Jerk bound [rad/s^3]."""
        room = (self.edge_velocity + _VEL_OFFSET) ** 2 / _VEL_GAIN
        self.lower = np.maximum(FR3_POSITION_LOWER, _VEL_LOWER_POS + room)
        """Lower corner of the target box [rad]."""
        self.upper = np.minimum(FR3_POSITION_UPPER, _VEL_UPPER_POS - room)
        """Upper corner of the target box [rad]."""
        T = self.period
        self._brake = braking * self.acceleration
        self._linear = self._brake * T * T / 4.0
        self._reach = 0.5 * self.acceleration * T * T
        n = round(T / DT)
        self.ticks = np.arange(1, n + 1) * DT if abs(n * DT - T) < 1e-12 else np.append(np.arange(1, n + 1) * DT, T)
        """Times of the 1 kHz setpoints of a period, from its start [s] (the last is the period's end)."""
        self.q, self.dq, self.ddq = np.zeros(7), np.zeros(7), np.zeros(7)
        """The commanded setpoint now (the end of the last planned period): [rad], [rad/s], [rad/s^2]."""
        self.target = np.zeros(7)
        """The last (clipped) target [rad]."""
        self._plan = (np.zeros(7), np.zeros(7), np.zeros(7), np.zeros(7), np.zeros(7), np.zeros(7))
        self._constants = tuple(
            a.tolist() for a in (self.lower, self.upper, _VEL_GAIN, _VEL_OFFSET, _VEL_UPPER_POS, _VEL_LOWER_POS,
                                 VELOCITY_MAX)
        )  # fmt: skip

    def reset(self, q: np.ndarray) -> None:
        """At rest at ``q`` [rad] (7,) (a new episode: the arm stands at its measured posture)."""
        self.q = np.array(q, dtype=np.float64)
        self.dq, self.ddq = np.zeros(7), np.zeros(7)
        self.target = np.clip(self.q, self.lower, self.upper)
        self._plan = (self.q, self.dq, self.ddq, np.zeros(7), np.zeros(7), np.zeros(7))

    def plan(self, target: np.ndarray, times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Plan the next period towards ``target`` [rad] (7,), advance the state to its end, return its setpoints.

        Args:
            target: The period's joint target (the IK's output for the period's end) [rad]. Shape: (7,).
            times: Where to evaluate the period's setpoints [s from its start], ascending, the last one exactly
                ``period`` (default :attr:`ticks`, the 1 kHz points). The state after the call is the last row.

        Returns:
            ``(q, dq, ddq)`` at ``times`` [rad, rad/s, rad/s^2], each shape (len(times), 7).
        """
        times = self.ticks if times is None else times
        if times[-1] != self.period:
            raise ValueError(f"`times` must end at the period {self.period} s. Got {times[-1]}.")
        T, m, a_max, jerk_max = self.period, self.margin, self.acceleration, self.jerk
        b, linear, reach, eps, sqrt = self._brake, self._linear, self._reach, _LIMIT_EPS, math.sqrt
        edge_braking = 2.0 * 0.5 * a_max  # 2 a for v = sqrt(2 a d), braking at half the bound
        corner = 2.0 * a_max / jerk_max  # the longest corner [s]
        goals, wanted, bounds, accelerations, corners, jerks = [], [], [], [], [], []
        # Per joint on Python floats, clips as conditional expressions (min/max calls cost more than the
        # arithmetic): a fraction of the cost of the same arithmetic as numpy calls on 7-vectors.
        for p0, v0, a0, aim, last, low_q, high_q, k, o, u_pos, l_pos, v_max in zip(
            self.q.tolist(), self.dq.tolist(), self.ddq.tolist(), np.asarray(target, dtype=np.float64).tolist(),
            self.target.tolist(), *self._constants, strict=True
        ):  # fmt: skip
            g = low_q if aim < low_q else (high_q if aim > high_q else aim)
            coast = p0 + v0 * T
            # libfranka's velocity limits where the period can take the joint at the farthest, and the speed from
            # which it still stops at the box's edge with `edge_braking` (libfranka's limit near a position limit
            # asks for more deceleration than the bound where its gain is high: fr3_joint5 and 7, 17 rad/s^2).
            ahead = reach + ((v0 if v0 > 0.0 else -v0) + a_max * T) * corner  # and the next period's corner
            far = (coast if coast > p0 else p0) + ahead
            room = k * (u_pos - far)
            high = sqrt(room) - o if room > 0.0 else 0.0
            high = m * ((v_max if high > v_max else (high if high > 0.0 else 0.0)) - eps)
            edge = sqrt(edge_braking * (high_q - far)) if far < high_q else 0.0
            high = edge if edge < high else high
            far = (coast if coast < p0 else p0) - ahead
            room = k * (far - l_pos)
            low = o - sqrt(room) if room > 0.0 else 0.0
            low = m * ((-v_max if low < -v_max else (low if low < 0.0 else 0.0)) + eps)
            edge = -sqrt(edge_braking * (far - low_q)) if far > low_q else 0.0
            low = edge if edge > low else low
            # Feed-forward: the reference moves on at the target's velocity (within the limits).
            vr = (g - last) / T
            vr = low if vr < low else vr
            vr = high if vr > high else vr  # the upper bound last, as min(max(vr, low), high)
            # In error coordinates: the end velocity error w lands the end error f + w T / 2 on the switching curve.
            d = v0 - vr
            f = coast - g - 0.5 * T * d
            size = f if f > 0.0 else -f
            if size <= 2.0 * linear:
                w = -f / T
            else:
                w = -math.copysign(0.5 * (sqrt(b * b * T * T + 8.0 * b * (size - 0.5 * linear)) - b * T), f)
            goals.append(g)
            wanted.append((w - d) / T)
            bounds.append(((low - v0) / T, (high - v0) / T, a0))
        # One scale for every joint's acceleration when one of them asks for more than the bound: the joints keep
        # the direction of their velocity change (the TCP keeps its course) instead of each saturating alone.
        peak = max(map(abs, wanted))
        scale = a_max / peak if self.synchronize and peak > a_max else 1.0
        for u, (slow, fast, a0) in zip(wanted, bounds, strict=True):
            u *= scale
            u = slow if u < slow else u
            u = fast if u > fast else u
            # The corner shifts the end velocity by (u - a0)^2 / (2 j) towards a0's side: keep that within the bound.
            shift = (u - a0) * (u - a0) / (2.0 * jerk_max * T)
            if u < a0:
                u = fast - shift if u > fast - shift else u
            else:
                u = slow + shift if u < slow + shift else u
            u = -a_max if u < -a_max else (a_max if u > a_max else u)
            jerk = jerk_max if u >= a0 else -jerk_max
            accelerations.append(u)
            corners.append((u - a0) / jerk)
            jerks.append(jerk)
        self._plan = (self.q, self.dq, self.ddq, np.array(accelerations), np.array(corners), np.array(jerks))
        self.target = np.array(goals)
        q, dq, ddq = self.sample(times)
        self.q, self.dq, self.ddq = q[-1].copy(), dq[-1].copy(), ddq[-1].copy()
        return q, dq, ddq

    def sample(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last planned period's setpoints at times ``t`` [s] from its start (in ``[0, period]``).

        Returns:
            ``(q, dq, ddq)`` [rad, rad/s, rad/s^2], each shape (n, 7).
        """
        p0, v0, a0, u, tau, jerk = self._plan
        t = np.asarray(t, dtype=np.float64)[:, None]
        t1 = np.minimum(t, tau)  # in the corner: constant jerk; after it: constant acceleration u
        t2 = t - t1
        v_tau = v0 + tau * (a0 + 0.5 * jerk * tau)
        q = p0 + t1 * (v0 + t1 * (0.5 * a0 + t1 * jerk / 6.0)) + t2 * (v_tau + 0.5 * u * t2)
        dq = v0 + t1 * (a0 + 0.5 * jerk * t1) + u * t2
        ddq = a0 + jerk * t1
        return q, dq, ddq
