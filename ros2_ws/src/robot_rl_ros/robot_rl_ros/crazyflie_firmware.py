"""The Crazyflie firmware's legacy commander and supervisor, as its sources define them: the sim bridge's vehicle.

ROS-free. :class:`LegacyFirmware` turns ``cmd_vel_legacy``, as a crazyswarm2 backend
(:mod:`robot_rl_ros.crazyflie_vendor`) packs it into a radio packet, into the normalized CTBR action
the simulated vehicle flies. Read in the vendor's code (not flown; commits in ros2_ws/README.md,
"Crazyflie bring-up"), crazyflie-firmware:

- Firmware, ``src/modules/src/crtp_commander_rpyt.c``: thrust is locked at boot until a packet with thrust 0
  arrives, below 1000 it is 0, above 60000 it is 60000; roll and pitch are rates [deg/s] or angles [deg] per
  ``flightmode.stabModeRoll``/``stabModePitch`` (0 rate, 1 angle; default angle); yaw per ``stabModeYaw``
  (default rate) and the legacy yaw rate is inverted. The packet's pitch is the firmware's legacy pitch, the
  negative of the body-FLU pitch (``controller_pid.c`` tracks it against ``-gyro.y``). Controllers
  (``stabilizer.controller``, ``src/modules/src/controller/controller.c``: 1 PID, 2 Mellinger): the PID
  (``controller_pid.c``) flies rate setpoints; Mellinger (``controller_mellinger.c``) handles roll/pitch
  rate mode as an "unknown combination of modes": its attitude target is level and the commanded rates
  enter only its angular-velocity term, so a constant rate command holds a tilt (about 0.29 rad per rad/s
  with its default gains) instead of turning; the thrust still comes from the packet.
- Setpoint timeouts, ``src/modules/src/supervisor.c``: 500 ms without a setpoint the supervisor levels the
  vehicle (roll and pitch angle 0, yaw rate 0, the last thrust kept); after 2000 ms it stops the motors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from robot_rl_ros.crazyflie import MAX_RATES, _from_roll_pitch_yaw, _roll_pitch_yaw, _rotation_log

if TYPE_CHECKING:
    from robot_rl_ros.crazyflie_vendor import Backend, CrazyswarmConfig

FIRMWARE_MIN_THRUST = 1000
"""Below this the firmware's legacy decoder sets thrust 0 (crtp_commander_rpyt.c ``MIN_THRUST``)."""
FIRMWARE_MAX_THRUST = 60000
"""The firmware's and crazyswarm2's thrust ceiling (crtp_commander_rpyt.c ``MAX_THRUST``)."""
LEVEL_AFTER_S = 0.5
"""Setpoint age after which the supervisor levels the vehicle (supervisor.c ``COMMANDER_WDT_TIMEOUT_STABILIZE``)."""
STOP_AFTER_S = 2.0
"""Setpoint age after which the supervisor stops the motors (supervisor.c ``COMMANDER_WDT_TIMEOUT_SHUTDOWN``)."""
CONTROLLERS = {0: "auto (PID)", 1: "PID", 2: "Mellinger"}
"""``stabilizer.controller`` values modelled here (controller.c; auto selects PID)."""
MELLINGER_TAU = 20000.0 / 70000.0
"""Mellinger's default ``kw_xy / kR_xy`` [s] (controller_mellinger.c): tilt held per rad/s of commanded rate."""


class LegacyFirmware:
    """``cmd_vel_legacy`` through a crazyswarm2 backend and the firmware, as the normalized CTBR the sim flies.

    Args:
        backend: The crazyswarm2 backend between ROS and the radio.
        config: Controller and flight modes (from crazyflies.yaml).
        vehicle_max_thrust: The vehicle's collective thrust at ``thrust_full_scale`` motor units [N].
        env_max_thrust: The env's collective thrust at action +1 [N].
        thrust_full_scale: Motor units of ``vehicle_max_thrust``.
        attitude_time_constant: The stand-in attitude loop: body rate = attitude error / this [s].
        thrust_locked: The firmware's thrust lock at start (true after boot; crtp_commander_rpyt.c).
    """

    def __init__(
        self, backend: Backend, config: CrazyswarmConfig, vehicle_max_thrust: float, env_max_thrust: float,
        thrust_full_scale: float = 65535.0, attitude_time_constant: float = 0.05, thrust_locked: bool = True,
    ) -> None:  # fmt: skip
        if config.controller not in CONTROLLERS:
            raise ValueError(f"`stabilizer.controller` {config.controller} is not modelled. Valid: {CONTROLLERS}.")
        self.backend, self.config = backend, config
        self.vehicle_max_thrust, self.env_max_thrust = float(vehicle_max_thrust), float(env_max_thrust)
        self.thrust_full_scale, self.tau = float(thrust_full_scale), float(attitude_time_constant)
        self.thrust_locked = thrust_locked
        self.packet: tuple[float, float, float, int] | None = None
        """The last radio packet ``(roll, pitch, yaw rate, thrust)`` the firmware got."""

    def receive(self, twist: tuple[float, float, float, float]) -> tuple[float, float, float, int]:
        """The server's and firmware's reading of ``(linear.x, linear.y, linear.z, angular.z)``; the packet kept."""
        lx, ly, lz, az = (float(v) for v in twist)
        thrust = int(min(max(lz, 0.0), FIRMWARE_MAX_THRUST))  # both servers clip and truncate to an integer
        packet = (ly, self.backend.packet_pitch_sign * lx, az, thrust)
        if thrust == 0:
            self.thrust_locked = False
        self.packet = packet
        return packet

    def action(self, rotation: np.ndarray, setpoint_age: float = 0.0) -> np.ndarray:
        """The normalized CTBR action the vehicle flies now. Shape: (4,).

        Args:
            rotation: Body->world rotation, row-major. Shape: (9,).
            setpoint_age: Seconds since the last packet (the supervisor's timeouts).
        """
        current = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        if self.packet is None or setpoint_age > STOP_AFTER_S:
            return np.array([-1.0, 0.0, 0.0, 0.0])  # motors stopped
        roll, pitch, yaw, units = self.packet
        if self.thrust_locked or units < FIRMWARE_MIN_THRUST:
            units = 0
        newtons = units / self.thrust_full_scale * self.vehicle_max_thrust
        c = self.config
        if setpoint_age > LEVEL_AFTER_S:  # supervisor level-out: attitude 0, yaw rate 0, thrust kept
            p, q = self._attitude_rates(current, 0.0, 0.0)
            r = 0.0
        else:
            r = math.radians(-yaw) if c.stab_mode_yaw == 0 else 0.0  # legacy yaw rate is inverted
            rate_mode = (c.stab_mode_roll == 0, c.stab_mode_pitch == 0)
            if c.controller == 2 and any(rate_mode):
                # Mellinger, an "unknown combination of modes": a level attitude target, and the packet's rates
                # only in the angular-velocity term, moment = -kR_xy eR + kw_xy (w_cmd - w): w settles at
                # w_cmd - eR kR_xy / kw_xy, so a constant rate command holds a tilt instead of turning.
                lp, lq = self._attitude_rates(current, 0.0, 0.0, MELLINGER_TAU)
                p = lp + (math.radians(roll) if rate_mode[0] else 0.0)
                q = lq + (-math.radians(pitch) if rate_mode[1] else 0.0)
            else:
                target_roll = 0.0 if rate_mode[0] else math.radians(roll)
                target_pitch = 0.0 if rate_mode[1] else -math.radians(pitch)
                p, q = self._attitude_rates(current, target_roll, target_pitch)
                if rate_mode[0]:
                    p = math.radians(roll)
                if rate_mode[1]:
                    q = -math.radians(pitch)  # the packet's pitch is the firmware's (negated) legacy pitch
        action = np.array(
            [2.0 * newtons / self.env_max_thrust - 1.0, p / MAX_RATES[0], q / MAX_RATES[1], r / MAX_RATES[2]]
        )
        return np.clip(action, -1.0, 1.0)

    def _attitude_rates(
        self, current: np.ndarray, roll: float, pitch: float, tau: float | None = None
    ) -> tuple[float, float]:
        _, _, yaw = _roll_pitch_yaw(current)
        error = _rotation_log(current.T @ _from_roll_pitch_yaw(roll, pitch, yaw)) / (tau or self.tau)
        return float(error[0]), float(error[1])
