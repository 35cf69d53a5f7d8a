"""The Crazyflie side of a quadrotor policy, ROS-free: pose/odometry in, env observation out, CTBR to cmd_vel_legacy.

A robot_rl quadrotor policy observes position, world velocity, the body->world rotation, body rates
and the goal relative to the vehicle (:class:`robot_rl.envs.quadrotor.quadrotor_env.QuadrotorEnv`),
and commands collective thrust and body rates (CTBR), normalized to [-1, 1]. crazyswarm2 publishes
``/cfN/odom`` (nav_msgs/Odometry; frames and units depend on its backend, read by
:class:`robot_rl_ros.crazyflie_vendor.OdomReader`) and ``/cfN/pose``, and takes ``/cfN/cmd_vel_legacy``
(geometry_msgs/Twist), which both backends forward as ``roll = linear.y``, ``pitch = -linear.x``,
``yawrate = angular.z`` [deg, deg/s] and ``thrust = linear.z`` (0 to 60000, clipped there); cflib then
negates the pitch again, crazyflie_cpp does not (:mod:`robot_rl_ros.crazyflie_vendor`).

Two ways to fly CTBR through that message (:class:`LegacyConfig.mode`):

- ``rate`` (default): the firmware's legacy commander in rate mode for roll and pitch (firmware
  parameters ``flightmode.stabModeRoll = 0`` and ``flightmode.stabModePitch = 0``, set in
  crazyswarm2's ``crazyflies.yaml`` under ``firmware_params``): roll and pitch are body rates
  [deg/s], so CTBR maps one to one;
- ``angle`` (firmware default): roll and pitch are attitude setpoints; the commanded rates are
  turned into the attitude ``R exp([w] tau)`` the vehicle would reach after ``attitude_lookahead``
  seconds, and the firmware's attitude loop flies it. An approximation of CTBR: tune the
  look-ahead to the attitude loop's time constant.

Thrust: ``linear.z = thrust / max_thrust * thrust_full_scale`` clipped to ``[0, thrust_limit]``,
a linear map of collective thrust [N] to the 16-bit motor command. The real motors are not
linear: calibrate ``max_thrust`` (hardware/crazyflie.yaml) on the vehicle. Sign conventions
(``pitch_sign``, ``yaw_sign``) default to the ``backend``'s; check them with the propellers off
before the first flight.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

MAX_RATES = (6.0, 6.0, 3.0)
"""Body-rate command at |action| = 1 for roll, pitch, yaw [rad/s] (the env's ``MAX_RATES``)."""
WORLD_FRAME = "world"
"""Frame of positions, goals and world velocities (crazyswarm2's ``world``)."""


@dataclasses.dataclass(frozen=True)
class LegacyConfig:
    """How CTBR commands become ``cmd_vel_legacy`` values (and back, in the sim bridge)."""

    mode: Literal["rate", "angle"] = "rate"
    """``rate``: roll/pitch are body rates [deg/s] (firmware stabMode 0); ``angle``: attitude setpoints [deg]."""
    max_thrust: float = 0.596
    """Collective thrust at ``thrust_full_scale`` [N] (the sim's 4 x 0.149 N; calibrate on the vehicle)."""
    thrust_full_scale: float = 65535.0
    """Motor command that gives ``max_thrust`` [1]."""
    thrust_limit: float = 60000.0
    """Largest thrust command sent (crazyswarm2 clips ``linear.z`` here) [1]."""
    attitude_lookahead: float = 0.05
    """``angle`` mode: the attitude setpoint is where the commanded rates lead in this time [s]."""
    pitch_sign: float = 1.0
    """``linear.x = pitch_sign * pitch`` [body FLU]: +1 for crazyswarm2's cpp backend, -1 for cflib
    (:attr:`robot_rl_ros.crazyflie_vendor.Backend.node_signs`)."""
    yaw_sign: float = -1.0
    """``angular.z = yaw_sign * yaw rate``: -1 (the firmware inverts the legacy yaw rate, crtp_commander_rpyt.c)."""

    def __post_init__(self) -> None:
        if self.mode not in ("rate", "angle"):
            raise ValueError(f"`mode` must be 'rate' or 'angle'. Got {self.mode!r}.")
        for name in ("max_thrust", "thrust_full_scale", "thrust_limit", "attitude_lookahead"):
            if not getattr(self, name) > 0.0:
                raise ValueError(f"`{name}` must be > 0. Got {getattr(self, name)}.")
        for name in ("pitch_sign", "yaw_sign"):
            if getattr(self, name) not in (-1.0, 1.0):
                raise ValueError(f"`{name}` must be 1 or -1. Got {getattr(self, name)}.")


def legacy_config(param: Callable[[str, Any], Any]) -> LegacyConfig:
    """The ``cmd_vel_legacy`` mapping from node parameters (``param(name, default)``).

    ``pitch_sign`` and ``yaw_sign`` default to the signs of the crazyswarm2 ``backend`` parameter (``cpp``).
    """
    from robot_rl_ros.crazyflie_vendor import backend

    signs = backend(str(param("backend", "cpp"))).node_signs
    return LegacyConfig(
        mode=str(param("legacy_mode", "rate")),  # type: ignore[arg-type]
        max_thrust=float(param("max_thrust", 0.596)),
        thrust_full_scale=float(param("thrust_full_scale", 65535.0)),
        thrust_limit=float(param("thrust_limit", 60000.0)),
        attitude_lookahead=float(param("attitude_lookahead", 0.05)),
        pitch_sign=float(param("pitch_sign", signs[0])),
        yaw_sign=float(param("yaw_sign", signs[1])),
    )


def quat_to_rotation(w: float, x: float, y: float, z: float) -> np.ndarray:
    """Body->world rotation of a unit quaternion, row-major, as the env computes it. Shape: (9,)."""
    return np.array(
        (
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        )
    )  # fmt: skip


def _skew_exp(v: np.ndarray) -> np.ndarray:
    """Rodrigues: exp([v]x) for a rotation vector [rad]. Shape: (3, 3)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)


def _rotation_log(r: np.ndarray) -> np.ndarray:
    """Rotation vector [rad] of a rotation matrix (the inverse of :func:`_skew_exp`). Shape: (3,)."""
    cos = min(1.0, max(-1.0, (float(np.trace(r)) - 1.0) / 2.0))
    angle = math.acos(cos)
    vee = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-9:
        return 0.5 * vee
    return angle / (2.0 * math.sin(angle)) * vee


def _roll_pitch_yaw(r: np.ndarray) -> tuple[float, float, float]:
    """ZYX Euler angles (roll about x, pitch about y, yaw about z) [rad] of a body->world rotation."""
    return (
        math.atan2(r[2, 1], r[2, 2]),
        math.asin(min(1.0, max(-1.0, -r[2, 0]))),
        math.atan2(r[1, 0], r[0, 0]),
    )


def _from_roll_pitch_yaw(roll: float, pitch: float, yaw: float) -> np.ndarray:
    cr, sr, cp, sp, cy, sy = (
        math.cos(roll),
        math.sin(roll),
        math.cos(pitch),
        math.sin(pitch),
        math.cos(yaw),
        math.sin(yaw),
    )
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def ctbr_to_legacy(
    action: np.ndarray, rotation: np.ndarray, env_max_thrust: float, config: LegacyConfig
) -> tuple[float, float, float, float]:
    """``cmd_vel_legacy`` values for a normalized CTBR action.

    Args:
        action: ``[thrust, roll rate, pitch rate, yaw rate]`` in [-1, 1] (clipped here). Shape: (4,).
        rotation: Measured body->world rotation, row-major (``angle`` mode). Shape: (9,).
        env_max_thrust: The env's collective thrust at action +1 [N].
        config: Mode, thrust scale and signs.

    Returns:
        ``(linear.x, linear.y, linear.z, angular.z)`` of the Twist.
    """
    a0, a1, a2, a3 = (min(max(v, -1.0), 1.0) for v in np.asarray(action, dtype=np.float64).tolist())
    thrust = 0.5 * (a0 + 1.0) * env_max_thrust
    units = min(max(thrust / config.max_thrust * config.thrust_full_scale, 0.0), config.thrust_limit)
    p, q, r = a1 * MAX_RATES[0], a2 * MAX_RATES[1], a3 * MAX_RATES[2]
    if config.mode == "rate":
        roll, pitch = math.degrees(p), math.degrees(q)
    else:
        current = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        target = current @ _skew_exp(np.array([p, q, r]) * config.attitude_lookahead)
        roll_rad, pitch_rad, _ = _roll_pitch_yaw(target)
        roll, pitch = math.degrees(roll_rad), math.degrees(pitch_rad)
    return config.pitch_sign * pitch, roll, units, config.yaw_sign * math.degrees(r)


def legacy_to_ctbr(
    twist: tuple[float, float, float, float], rotation: np.ndarray, env_max_thrust: float, config: LegacyConfig
) -> np.ndarray:
    """The normalized CTBR action a ``cmd_vel_legacy`` command asks for, read with the sender's own conventions.

    The inverse of :func:`ctbr_to_legacy`, so it cannot catch a sign error; the sim bridge reads commands as
    crazyswarm2 and the firmware do instead (:class:`robot_rl_ros.crazyflie_vendor.LegacyFirmware`).

    Args:
        twist: ``(linear.x, linear.y, linear.z, angular.z)``.
        rotation: Measured body->world rotation, row-major (``angle`` mode). Shape: (9,).
        env_max_thrust: The env's collective thrust at action +1 [N].
        config: Mode, thrust scale and signs (the same the sender used).

    Returns:
        ``[thrust, roll rate, pitch rate, yaw rate]`` in [-1, 1]. Shape: (4,).
    """
    lx, ly, lz, az = (float(v) for v in twist)
    thrust = min(max(lz, 0.0), config.thrust_limit) / config.thrust_full_scale * config.max_thrust
    r = math.radians(az * config.yaw_sign)
    if config.mode == "rate":
        p, q = math.radians(ly), math.radians(lx * config.pitch_sign)
    else:
        current = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        _, _, yaw = _roll_pitch_yaw(current)
        target = _from_roll_pitch_yaw(math.radians(ly), math.radians(lx * config.pitch_sign), yaw)
        p, q, _ = (_rotation_log(current.T @ target) / config.attitude_lookahead).tolist()
    action = np.array([2.0 * thrust / env_max_thrust - 1.0, p / MAX_RATES[0], q / MAX_RATES[1], r / MAX_RATES[2]])
    return np.clip(action, -1.0, 1.0)


@dataclasses.dataclass
class QuadrotorMeasurement:
    """One state estimate of the vehicle."""

    position: np.ndarray
    """Position [m, world]. Shape: (3,)."""
    velocity: np.ndarray
    """Linear velocity [m/s, world]. Shape: (3,)."""
    rotation: np.ndarray
    """Body->world rotation, row-major. Shape: (9,)."""
    body_rates: np.ndarray
    """Angular velocity [rad/s, body FLU]. Shape: (3,)."""


class PoseDifferentiator:
    """Velocity and body rates from consecutive poses (for ``/cfN/pose`` without odometry)."""

    def __init__(self) -> None:
        self._previous: tuple[float, np.ndarray, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the previous pose."""
        self._previous = None

    def __call__(self, t: float, position: np.ndarray, rotation: np.ndarray) -> QuadrotorMeasurement:
        """The measurement at time ``t`` [s]; zero velocities for the first pose or a non-increasing time."""
        velocity, rates = np.zeros(3), np.zeros(3)
        if self._previous is not None:
            t0, p0, r0 = self._previous
            dt = t - t0
            if dt > 1e-6:
                velocity = (position - p0) / dt
                rates = _rotation_log(r0.reshape(3, 3).T @ rotation.reshape(3, 3)) / dt
        self._previous = (t, position.copy(), rotation.copy())
        return QuadrotorMeasurement(position.copy(), velocity, rotation.copy(), rates)


class QuadrotorObserver:
    """Env observation and robot state of a quadrotor env from a measurement and a goal.

    Args:
        env: The robot_rl quadrotor env the policy was trained on (constants only).

    Raises:
        ValueError: not a quadrotor env, or one whose observation needs more than the vehicle state
            and the goal (QuadrotorTrack's reference points).
    """

    def __init__(self, env: Any) -> None:
        from robot_rl.envs.quadrotor.quadrotor_env import QuadrotorEnv

        unwrapped = env.unwrapped
        if not isinstance(unwrapped, QuadrotorEnv):
            raise ValueError(f"QuadrotorObserver needs a robot_rl quadrotor env. Got {type(unwrapped).__name__}.")
        size = env.observation_space["observation"].shape[0]
        if size != 21:
            raise ValueError(
                f"{type(unwrapped).__name__} observes {size} values; the ROS adapter builds the 21 of Hover and "
                "Waypoint (vehicle state and goal). QuadrotorTrack's reference points have no topic yet."
            )
        self.ctrl_dt = float(unwrapped.ctrl_dt)
        self.max_thrust = float(unwrapped.params.max_thrust)
        self.hover_action = unwrapped.hover_action

    def observe(
        self, meas: QuadrotorMeasurement, goal: np.ndarray
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``(obs, state)``: the env's observation dict and the safety filter's state keys.

        ``obs["observation"]`` is position, velocity, rotation (9), body rates, goal - position (21,);
        ``state`` holds ``position``, ``velocity``, ``rotation``, ``body_rates``.
        """
        goal = np.asarray(goal, dtype=np.float64)
        observation = np.concatenate(
            [meas.position, meas.velocity, meas.rotation, meas.body_rates, goal - meas.position]
        )
        obs = {"observation": observation, "achieved_goal": meas.position.copy(), "desired_goal": goal.copy()}
        state = {
            "position": meas.position.copy(),
            "velocity": meas.velocity.copy(),
            "rotation": meas.rotation.copy(),
            "body_rates": meas.body_rates.copy(),
        }
        return obs, state
