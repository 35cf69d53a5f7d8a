"""Low-level flight control for the quadrotor: body-rate loop, attitude loop and motor mixer.

This is the part of the stack that runs on the vehicle, faster than any policy: a policy sends
collective thrust and body rates (CTBR) at 50 Hz; the rate loop runs every physics step (500 Hz to
1 kHz) and the mixer turns thrust and torques into per-rotor thrust commands, clipped to what the
motors can give. The attitude loop (attitude -> body rates) serves position-level controllers
such as the expert. Frames: world z up; body x forward, y left, z up (FLU); rates in the body frame.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

GRAVITY = 9.81
"""Gravitational acceleration [m/s^2]."""


@dataclasses.dataclass(frozen=True)
class QuadrotorParams:
    """Nominal vehicle parameters the controllers are tuned with (read from the MJCF)."""

    mass: float = 0.027
    """Take-off mass [kg]."""
    inertia: tuple[float, float, float] = (1.395e-5, 1.436e-5, 2.173e-5)
    """Principal moments of inertia about body x, y, z [kg m^2]."""
    arm: float = 0.0325
    """Rotor offset along body x and y from the centre [m]."""
    torque_ratio: float = 0.0251
    """Rotor yaw reaction torque per newton of thrust [m]."""
    max_rotor_thrust: float = 0.149
    """Largest thrust one rotor gives [N]."""

    @property
    def max_thrust(self) -> float:
        """Largest collective thrust [N]."""
        return 4.0 * self.max_rotor_thrust

    @property
    def hover_thrust(self) -> float:
        """Collective thrust that balances gravity [N]."""
        return self.mass * GRAVITY


@dataclasses.dataclass(frozen=True)
class RateControllerConfig:
    """Gains of the body-rate PI loop (per axis: roll, pitch, yaw)."""

    kp: tuple[float, float, float] = (40.0, 40.0, 20.0)
    """Proportional gain: angular acceleration per rate error [1/s]."""
    ki: tuple[float, float, float] = (20.0, 20.0, 10.0)
    """Integral gain [1/s^2]."""
    integral_limit: float = 2.0
    """Bound on each axis' integrated rate error [rad]."""

    def __post_init__(self) -> None:
        for name in ("kp", "ki"):
            values = getattr(self, name)
            if len(values) != 3 or any(v < 0 for v in values):
                raise ValueError(f"`{name}` must be three gains >= 0. Got {values}.")


class RateController:
    """Body-rate PI loop with gyroscopic feed-forward: torque = J (kp e + ki int e) + w x J w.

    Args:
        params: Vehicle parameters (inertia).
        dt: Period the loop runs at [s] (the physics step).
        config: Gains.
    """

    def __init__(self, params: QuadrotorParams, dt: float, config: RateControllerConfig | None = None) -> None:
        self.params = params
        self.dt = float(dt)
        self.config = config or RateControllerConfig()
        self._integral = [0.0, 0.0, 0.0]

    def reset(self) -> None:
        """Clear the integrator."""
        self._integral = [0.0, 0.0, 0.0]

    def torque(self, rates_des: tuple[float, float, float], rates: tuple[float, float, float]) -> tuple[float, ...]:
        """Body torque [N m] that drives the body rates [rad/s] to ``rates_des`` [rad/s]."""
        jx, jy, jz = self.params.inertia
        kp, ki, lim, dt = self.config.kp, self.config.ki, self.config.integral_limit, self.dt
        p, q, r = rates
        acc = []
        for axis in range(3):
            err = rates_des[axis] - rates[axis]
            integ = min(lim, max(-lim, self._integral[axis] + err * dt))
            self._integral[axis] = integ
            acc.append(kp[axis] * err + ki[axis] * integ)
        # w x (J w): cancels the gyroscopic coupling between axes.
        gx = (jz - jy) * q * r
        gy = (jx - jz) * p * r
        gz = (jy - jx) * p * q
        return (jx * acc[0] + gx, jy * acc[1] + gy, jz * acc[2] + gz)


class Mixer:
    """Collective thrust and body torques -> per-rotor thrust commands, clipped to the motor range.

    Rotor layout (X, FLU body frame): 1 front-right (+a, -a), 2 back-right (-a, -a), 3 back-left
    (-a, +a), 4 front-left (+a, +a); rotors 1 and 3 give -c f yaw torque, 2 and 4 +c f.
    """

    def __init__(self, params: QuadrotorParams) -> None:
        a, c = params.arm, params.torque_ratio
        positions = ((a, -a), (-a, -a), (-a, a), (a, a))
        spins = (-1.0, 1.0, -1.0, 1.0)
        # Rows: thrust, roll torque (y f), pitch torque (-x f), yaw torque (s c f).
        allocation = np.array(
            [
                [1.0, 1.0, 1.0, 1.0],
                [y for _, y in positions],
                [-x for x, _ in positions],
                [s * c for s in spins],
            ]
        )
        self._inverse = np.linalg.inv(allocation).tolist()
        self.max_rotor_thrust = params.max_rotor_thrust
        self.saturations = 0
        """Rotor commands clipped to [0, max_rotor_thrust] since the last reset."""

    def reset(self) -> None:
        """Zero the saturation count."""
        self.saturations = 0

    def rotor_thrusts(self, thrust: float, torque: tuple[float, float, float]) -> list[float]:
        """Per-rotor thrust commands [N] for collective ``thrust`` [N] and body ``torque`` [N m]."""
        wrench = (thrust, torque[0], torque[1], torque[2])
        top = self.max_rotor_thrust
        out = []
        for row in self._inverse:
            f = row[0] * wrench[0] + row[1] * wrench[1] + row[2] * wrench[2] + row[3] * wrench[3]
            if f < 0.0 or f > top:
                self.saturations += 1
                f = min(top, max(0.0, f))
            out.append(f)
        return out


@dataclasses.dataclass(frozen=True)
class AttitudeControllerConfig:
    """Gains of the attitude loop."""

    kp: tuple[float, float, float] = (8.0, 8.0, 4.0)
    """Body-rate command per attitude error (roll, pitch, yaw) [1/s]."""


def attitude_rates(
    rot: tuple[tuple[float, float, float], ...],
    z_des: tuple[float, float, float],
    yaw_des: float,
    config: AttitudeControllerConfig | None = None,
) -> tuple[float, float, float]:
    """Body rates [rad/s] that turn the body towards a thrust direction and a heading (geometric).

    Args:
        rot: Current attitude, the rotation matrix body -> world as rows.
        z_des: Desired body z axis in the world frame (unit vector).
        yaw_des: Desired heading [rad].
        config: Gains.
    """
    kp = (config or AttitudeControllerConfig()).kp
    zx, zy, zz = z_des
    cx, cy = math.cos(yaw_des), math.sin(yaw_des)
    # y_des = z_des x (cos yaw, sin yaw, 0), normalised; x_des = y_des x z_des.
    yx, yy, yz = -zz * cy, zz * cx, zx * cy - zy * cx
    n = math.sqrt(yx * yx + yy * yy + yz * yz) or 1.0
    yx, yy, yz = yx / n, yy / n, yz / n
    xx, xy, xz = yy * zz - yz * zy, yz * zx - yx * zz, yx * zy - yy * zx
    des = ((xx, yx, zx), (xy, yy, zy), (xz, yz, zz))
    # e_R = 0.5 vee(R_d^T R - R^T R_d) (Lee et al. 2010); rates = -kp e_R, in the body frame.
    m = [[sum(des[k][i] * rot[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    ex = 0.5 * (m[2][1] - m[1][2])
    ey = 0.5 * (m[0][2] - m[2][0])
    ez = 0.5 * (m[1][0] - m[0][1])
    return (-kp[0] * ex, -kp[1] * ey, -kp[2] * ez)


def quat_to_matrix(quat: tuple[float, float, float, float]) -> tuple[tuple[float, float, float], ...]:
    """Rotation matrix (rows) of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat
    return (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
