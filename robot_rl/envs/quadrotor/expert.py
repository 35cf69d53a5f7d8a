"""Position-level expert for the quadrotor tasks: cascaded PID to attitude, then CTBR commands.

Sees only the policy's observation: a PID position loop (with reference velocity and
acceleration feed-forward on Track, taken from the upcoming setpoints) gives a desired
acceleration; its direction is the desired body z axis and its projection on the current body z
the collective thrust; the geometric attitude loop turns that into body-rate commands for the
vehicle's rate controller.
"""

from __future__ import annotations

import math

import numpy as np

from robot_rl.envs.quadrotor.flight_controller import GRAVITY, QuadrotorParams, attitude_rates
from robot_rl.envs.quadrotor.quadrotor_env import MAX_RATES


class QuadrotorExpert:
    """Cascaded position controller producing CTBR actions in [-1, 1]."""

    kp = (8.0, 8.0, 10.0)
    """Position gain [1/s^2] along x, y, z."""
    kd = (4.5, 4.5, 5.5)
    """Velocity gain [1/s] along x, y, z."""
    ki = (3.0, 3.0, 4.0)
    """Integral gain [1/s^3] (rejects mass and thrust-constant errors, steady wind)."""
    observer_gain = 0.1
    """Per-step low-pass gain of the disturbance observer [1] (time constant about 0.2 s)."""
    integral_zone = 0.2
    """Position error below which the integrator runs [m]."""
    max_horizontal_acc = 6.0
    """Bound on the commanded horizontal acceleration [m/s^2] (about 30 degrees of tilt)."""

    def __init__(self, params: QuadrotorParams | None = None, ctrl_dt: float = 0.02, horizon_dt: float = 0.1) -> None:
        self.params = params or QuadrotorParams()
        self.ctrl_dt = ctrl_dt
        self.horizon_dt = horizon_dt
        self.reset()

    def reset(self) -> None:
        """Clear the integrator and the disturbance estimate."""
        self._integral = [0.0, 0.0, 0.0]
        self._disturbance = [0.0, 0.0, 0.0]
        self._last_vel: list[float] | None = None
        self._last_acc: list[float] | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action for one observation. Shape: (4,)."""
        o = obs["observation"].tolist()
        pos, vel, rot = o[0:3], o[3:6], (tuple(o[6:9]), tuple(o[9:12]), tuple(o[12:15]))
        goal = obs["desired_goal"].tolist()
        v_ref, a_ref = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        if len(o) >= 27:  # Track: upcoming reference points relative to the vehicle
            h = self.horizon_dt
            p1 = [pos[i] + o[21 + i] for i in range(3)]
            p2 = [pos[i] + o[24 + i] for i in range(3)]
            # Reference at t, t + h, t + 2h (goal is the reference now, after this step's update).
            v_ref = [(p1[i] - goal[i]) / h for i in range(3)]
            a_ref = [(p2[i] - 2.0 * p1[i] + goal[i]) / (h * h) for i in range(3)]
        # Disturbance observer: the measured acceleration minus the one asked for last step is what
        # the model gets wrong (mass, thrust constant, drag, wind); low-pass it and cancel it.
        if self._last_vel is not None and self._last_acc is not None:
            for i in range(3):
                measured = (vel[i] - self._last_vel[i]) / self.ctrl_dt
                expected = self._last_acc[i] - (GRAVITY if i == 2 else 0.0)
                self._disturbance[i] += self.observer_gain * (measured - expected - self._disturbance[i])
        self._last_vel = list(vel)
        acc = []
        for i in range(3):
            err = goal[i] - pos[i]
            if abs(err) < self.integral_zone:  # conditional integration: no wind-up on long flights
                self._integral[i] = min(1.5, max(-1.5, self._integral[i] + err * self.ctrl_dt))
            acc.append(
                self.kp[i] * err
                + self.kd[i] * (v_ref[i] - vel[i])
                + self.ki[i] * self._integral[i]
                + a_ref[i]
                - self._disturbance[i]
            )
        horizontal = math.hypot(acc[0], acc[1])
        if horizontal > self.max_horizontal_acc:
            acc[0] *= self.max_horizontal_acc / horizontal
            acc[1] *= self.max_horizontal_acc / horizontal
        acc[2] = max(acc[2] + GRAVITY, 0.3 * GRAVITY)
        norm = math.sqrt(acc[0] ** 2 + acc[1] ** 2 + acc[2] ** 2)
        self._last_acc = list(acc)
        z_des = (acc[0] / norm, acc[1] / norm, acc[2] / norm)
        body_z = (rot[0][2], rot[1][2], rot[2][2])
        thrust = self.params.mass * max(0.0, sum(a * b for a, b in zip(acc, body_z, strict=True)))
        rates = attitude_rates(rot, z_des, 0.0)
        return np.clip(
            np.array(
                [
                    2.0 * thrust / self.params.max_thrust - 1.0,
                    rates[0] / MAX_RATES[0],
                    rates[1] / MAX_RATES[1],
                    rates[2] / MAX_RATES[2],
                ]
            ),
            -1.0,
            1.0,
        )
