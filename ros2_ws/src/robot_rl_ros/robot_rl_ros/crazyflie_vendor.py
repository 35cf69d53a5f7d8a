"""crazyswarm2's two server backends, as their sources define them (the firmware: ``crazyflie_firmware``).

ROS-free: the policy node's adapter reads ``/cfN/odom`` through :class:`OdomReader` and checks its rate with
:class:`RateCheck`; the sim bridge turns ``cmd_vel_legacy`` into what the vehicle does through
:class:`~robot_rl_ros.crazyflie_firmware.LegacyFirmware` and publishes odometry the way the configured backend
does (:func:`backend_odometry`), at the rates of the crazyflies.yaml it is given (:class:`CrazyswarmConfig`).

Read in the vendors' code (not flown; commits in ros2_ws/README.md, "Crazyflie bring-up"):

- Odometry. crazyswarm2 ``crazyflie/src/crazyflie_server.cpp`` (backend ``cpp``, the launch default in
  ``crazyflie/launch/launch.py``), ``on_logging_odom``: ``header.frame_id`` is the vehicle's name, no
  ``child_frame_id``, ``twist.linear`` is ``stateEstimateZ.vx..vz`` (the firmware's ``state.velocity``,
  world frame: crazyflie-firmware ``src/modules/src/stabilizer.c``, ``compressState``), ``twist.angular``
  is left zero (the rate lines are commented out). ``crazyflie_server_py/crazyflie_server_py/crazyflie_server.py``
  (backend ``cflib``), ``_log_odom_data_callback``: ``header.frame_id`` the reference frame (``world``),
  ``child_frame_id`` the vehicle, ``twist.linear`` is ``kalman.statePX..PZ`` (the Kalman filter's body-frame
  velocity: firmware ``src/modules/src/kalman_core/kalman_core.c``), ``twist.angular`` is ``gyro.x..z``
  [deg/s], and the orientation is built from ``stabilizer.roll/pitch/yaw``, whose pitch the firmware logs
  negated (``kalman_core.c``, ``.pitch = -pitch*RAD_TO_DEG``), so the quaternion's pitch is inverted.
- Logging rates. crazyswarm2 ``crazyflie/config/crazyflies.yaml``: ``pose`` at 10 Hz and ``status`` at 1 Hz;
  ``odom`` only when listed under ``firmware_logging.default_topics``. The cpp backend's log period is
  ``uint8(100 / frequency)`` tens of milliseconds (``crazyflie_server.cpp``), so 100 Hz is its fastest.
- Commands. Both backends map ``cmd_vel_legacy`` as ``roll = linear.y``, ``pitch = -linear.x``,
  ``yawrate = angular.z``, ``thrust = clip(linear.z, 0, 60000)``; cflib's ``Commander.send_setpoint``
  (crazyflie-lib-python ``cflib/crazyflie/commander.py``) then sends ``-pitch``, crazyflie_cpp's
  ``sendSetpoint`` (``include/crazyflie_cpp/crtp.h``, ``crtpSetpointRequest``) sends ``pitch`` as is. The
  cflib backend sends one zero setpoint before the first legacy command; the cpp backend does not.
- Firmware and setpoint timeouts: :mod:`robot_rl_ros.crazyflie_firmware`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_rl_ros.crazyflie import (
    MAX_RATES,
    QuadrotorMeasurement,
    _from_roll_pitch_yaw,
    _roll_pitch_yaw,
    _rotation_log,
    quat_to_rotation,
)
from robot_rl_ros.crazyflie_firmware import (
    CONTROLLERS,
    FIRMWARE_MAX_THRUST,
    FIRMWARE_MIN_THRUST,
    LEVEL_AFTER_S,
    MELLINGER_TAU,
    STOP_AFTER_S,
    LegacyFirmware,
)

__all__ = [
    "BACKENDS",
    "BACKEND_SPECS",
    "CONTROLLERS",
    "FIRMWARE_MAX_THRUST",
    "FIRMWARE_MIN_THRUST",
    "GYRO_RANGE_RAD_S",
    "LEVEL_AFTER_S",
    "MAX_RATES",
    "MELLINGER_TAU",
    "RATE_UNITS",
    "STOP_AFTER_S",
    "Backend",
    "CrazyflieVendorChecks",
    "CrazyswarmConfig",
    "LegacyFirmware",
    "OdomReader",
    "RateCheck",
    "backend",
    "backend_odometry",
    "backend_pose_quat",
    "quat_to_rotation",
]
"""The firmware stand-in lives in :mod:`robot_rl_ros.crazyflie_firmware`; importing it from here works too."""

BACKENDS = ("cpp", "cflib")
"""crazyswarm2 server backends modelled here (the ``backend`` launch argument of ``crazyflie/launch/launch.py``)."""
RATE_UNITS = ("none", "deg/s", "rad/s")
"""How ``twist.angular`` of ``/cfN/odom`` is read: absent (derived from attitude differences), deg/s, rad/s."""
GYRO_RANGE_RAD_S = math.radians(2000.0)
"""The Crazyflie's gyro full range (+-2000 deg/s): larger rates cannot be a rad/s reading."""


@dataclasses.dataclass(frozen=True)
class Backend:
    """What one crazyswarm2 backend publishes and sends (see the module docstring for the sources)."""

    name: str
    velocity_frame: Literal["world", "body"]
    """Frame of ``odom`` ``twist.linear``."""
    rate_units: Literal["none", "deg/s"]
    """``odom`` ``twist.angular``: left zero (``none``) or the gyro in deg/s."""
    odom_frame_is_vehicle: bool
    """``odom`` ``header.frame_id`` is the vehicle's name (else the reference frame, ``world``)."""
    pitch_inverted: bool
    """The odometry/pose quaternion carries the firmware's negated legacy pitch."""
    packet_pitch_sign: float
    """Pitch in the radio packet = ``packet_pitch_sign * linear.x``."""
    sends_unlock: bool
    """The server sends a zero setpoint before the first legacy command (unlocking the firmware's thrust)."""

    @property
    def node_signs(self) -> tuple[float, float]:
        """``(pitch_sign, yaw_sign)`` of :class:`robot_rl_ros.crazyflie.LegacyConfig` that fly body-FLU rates.

        The packet's pitch must be ``-pitch`` and its yaw rate ``-yaw rate`` (firmware legacy conventions), so
        ``linear.x = -packet_pitch_sign * pitch`` and ``angular.z = -yaw rate``.
        """
        return -self.packet_pitch_sign, -1.0


BACKEND_SPECS = {
    "cpp": Backend("cpp", "world", "none", True, False, -1.0, False),
    "cflib": Backend("cflib", "body", "deg/s", False, True, 1.0, True),
}


def backend(name: str) -> Backend:
    """The :class:`Backend` named ``name``; ``ValueError`` listing the valid ones otherwise."""
    if name not in BACKEND_SPECS:
        raise ValueError(f"`backend` must be one of {list(BACKENDS)} (crazyswarm2's server backends). Got {name!r}.")
    return BACKEND_SPECS[name]


# ---------------------------------------------------------------------------------------------- reading odometry
class OdomReader:
    """Odometry of one crazyswarm2 backend as the policy observes it: world velocity, body rates [rad/s].

    Each message is checked against the configuration first; a mismatch raises ``ValueError`` with one line
    that names the parameter to change (the adapter refuses the message and counts it).

    Args:
        backend: The backend the node is configured for.
        vehicle: The vehicle's name (``robot_name``).
        reference_frame: crazyswarm2's ``reference_frame`` (``world`` unless set in crazyflies.yaml).
        rate_units: ``twist.angular`` units; ``None``: the backend's (cpp ``none``: derived from consecutive
            attitudes; cflib ``deg/s``). ``rad/s`` for a server that fills them so.
    """

    def __init__(
        self, backend: Backend, vehicle: str, reference_frame: str = "world", rate_units: str | None = None
    ) -> None:
        self.backend = backend
        self.expected_frame = vehicle if backend.odom_frame_is_vehicle else reference_frame
        self.rate_units = rate_units or backend.rate_units
        if self.rate_units not in RATE_UNITS:
            raise ValueError(f"`odom_rate_units` must be one of {list(RATE_UNITS)}. Got {self.rate_units!r}.")
        self._previous: tuple[float, np.ndarray] | None = None

    def reset(self) -> None:
        """Forget the previous attitude (rates are derived again from the next two messages)."""
        self._previous = None

    def __call__(
        self, t: float, frame_id: str, position: np.ndarray, quat_wxyz: np.ndarray, linear: np.ndarray,
        angular: np.ndarray,
    ) -> QuadrotorMeasurement:  # fmt: skip
        """The measurement of one odometry message stamped ``t`` [s].

        Raises:
            ValueError: ``header.frame_id`` is not the backend's, or the rates are not in the configured units.
        """
        b = self.backend
        if frame_id != self.expected_frame:
            other = "cflib" if b.name == "cpp" else "cpp"
            raise ValueError(
                f"odom header.frame_id is {frame_id!r}, but crazyswarm2's {b.name} backend publishes "
                f"{self.expected_frame!r} ({_FRAME_SOURCE[b.name]}); {other!r} would match: set `backend` "
                f"(hardware/crazyflie.yaml ros.backend) to the backend crazyswarm2 runs"
            )
        rotation = quat_to_rotation(*np.asarray(quat_wxyz, dtype=np.float64).tolist())
        if b.pitch_inverted:
            roll, pitch, yaw = _roll_pitch_yaw(rotation.reshape(3, 3))
            rotation = _from_roll_pitch_yaw(roll, -pitch, yaw).ravel()
        r = rotation.reshape(3, 3)
        velocity = np.asarray(linear, dtype=np.float64)
        if b.velocity_frame == "body":
            velocity = r @ velocity
        derived = None
        if self._previous is not None and t - self._previous[0] > 1e-4:
            derived = _rotation_log(self._previous[1].T @ r) / (t - self._previous[0])
        self._previous = (t, r)
        angular = np.asarray(angular, dtype=np.float64)
        if self.rate_units == "none":
            if np.any(angular != 0.0):
                raise ValueError(
                    f"odom twist.angular is {angular.round(3).tolist()}, but crazyswarm2's cpp backend leaves it "
                    "zero (crazyflie_server.cpp on_logging_odom): set `backend` to the backend crazyswarm2 runs, "
                    "or `odom_rate_units` to the rates' units"
                )
            rates = derived if derived is not None else np.zeros(3)
        elif self.rate_units == "deg/s":
            rates = np.radians(angular)
        else:
            rates = angular
            _check_rad_s(angular, derived)
        return QuadrotorMeasurement(np.asarray(position, dtype=np.float64), velocity, rotation, rates)


_FRAME_SOURCE = {
    "cpp": "crazyflie/src/crazyflie_server.cpp on_logging_odom: the vehicle's name",
    "cflib": "crazyflie_server_py/crazyflie_server.py _log_odom_data_callback: the reference frame",
}


def _check_rad_s(angular: np.ndarray, derived: np.ndarray | None) -> None:
    """Refuse rates configured as rad/s that look like deg/s.

    Heuristic: a magnitude beyond the gyro's range (2000 deg/s = 34.9 rad/s) cannot be rad/s; and while the
    attitude visibly turns (> 0.2 rad/s between two messages; the compressed quaternion's noise over 10 ms is of
    that order) rates 20 to 150 times the attitude's rate are deg/s (the factor is 57.3).
    """
    norm = float(np.linalg.norm(angular))
    looks_deg = norm > GYRO_RANGE_RAD_S
    if derived is not None and float(np.linalg.norm(derived)) > 0.2:
        looks_deg = looks_deg or 20.0 < norm / float(np.linalg.norm(derived)) < 150.0
    if looks_deg:
        raise ValueError(
            f"odom twist.angular {angular.round(2).tolist()} looks like deg/s (|w| {norm:.1f} with `odom_rate_units` "
            "rad/s; the attitude turns ~57 times slower): set `odom_rate_units` to deg/s (crazyswarm2's cflib "
            "backend logs gyro.x..z in deg/s, crazyflie_server.py _log_odom_data_callback)"
        )


class RateCheck:
    """The state topic's measured rate against what the control loop needs.

    Args:
        topic: The topic (for the message).
        min_rate_hz: Slowest acceptable rate: the control rate (each tick then sees a state newer than the
            previous tick's; the watchdog's 0.05 s deadline of hardware/crazyflie.yaml is 2.5 periods).
        window: Intervals whose median is judged.
    """

    def __init__(self, topic: str, min_rate_hz: float, window: int = 5) -> None:
        self.topic = topic
        self.min_rate_hz = float(min_rate_hz)
        self._times: deque[float] = deque(maxlen=window + 1)

    def reset(self) -> None:
        """Forget the arrival times."""
        self._times.clear()

    def observe(self, t: float) -> None:
        """One arrival at ``t`` [s, receipt]."""
        self._times.append(t)

    def problem(self) -> str:
        """One line naming the fix when the median interval is over 1.2 periods of ``min_rate_hz``; '' otherwise."""
        if len(self._times) < self._times.maxlen:  # type: ignore[operator]
            return ""
        median = float(np.median(np.diff(np.asarray(self._times))))
        if median <= 1.2 / self.min_rate_hz:
            return ""
        topic = self.topic.rsplit("/", 1)[-1]
        return (
            f"{self.topic} arrives at {1.0 / max(median, 1e-9):.1f} Hz (median of {len(self._times) - 1} intervals); "
            f"the {self.min_rate_hz:g} Hz control loop and its watchdog need >= {self.min_rate_hz:g} Hz: set "
            f"firmware_logging.default_topics.{topic}.frequency: 100 in crazyswarm2's crazyflies.yaml (as "
            "hardware/crazyswarm2/crazyflies.yaml does; crazyswarm2's default logs pose at 10 Hz and no odom)"
        )


# ----------------------------------------------------------------------------------------- crazyflies.yaml
@dataclasses.dataclass(frozen=True)
class CrazyswarmConfig:
    """What one vehicle's crazyflies.yaml sets that the sim and the checks need (all/robot_types/robots merged)."""

    controller: int = 2
    """``stabilizer.controller`` (crazyswarm2's default crazyflies.yaml: 2, Mellinger)."""
    stab_mode_roll: int = 1
    """``flightmode.stabModeRoll`` (firmware default 1, angle)."""
    stab_mode_pitch: int = 1
    stab_mode_yaw: int = 0
    log_hz: dict[str, float] = dataclasses.field(default_factory=lambda: {"pose": 10.0})
    """Default topics logged and their frequencies [Hz] (crazyswarm2's default: pose at 10 Hz)."""
    reference_frame: str = "world"

    @classmethod
    def from_yaml(cls, path: str | Path, vehicle: str) -> CrazyswarmConfig:
        """Read ``path`` as crazyswarm2 does: ``all``, then ``robot_types.<type>``, then ``robots.<vehicle>``."""
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        robot = (data.get("robots") or {}).get(vehicle)
        if robot is None:
            raise ValueError(f"{path} has no robot {vehicle!r} under `robots` (set `robot_name`).")
        levels = [data.get("all") or {}, (data.get("robot_types") or {}).get(robot.get("type"), {}) or {}, robot]
        params: dict[str, Any] = {}
        logging: dict[str, float] = {}
        enabled, frame = True, "world"
        for level in levels:
            for group, values in (level.get("firmware_params") or {}).items():
                for name, value in (values or {}).items():
                    params[f"{group}.{name}"] = value
            log = level.get("firmware_logging") or {}
            enabled = bool(log.get("enabled", enabled))
            for topic, spec in (log.get("default_topics") or {}).items():
                logging[topic] = float((spec or {}).get("frequency", 10))
            frame = str(level.get("reference_frame", frame))
        return cls(
            controller=int(params.get("stabilizer.controller", 0)),
            stab_mode_roll=int(params.get("flightmode.stabModeRoll", 1)),
            stab_mode_pitch=int(params.get("flightmode.stabModePitch", 1)),
            stab_mode_yaw=int(params.get("flightmode.stabModeYaw", 0)),
            log_hz=logging if enabled else {},
            reference_frame=frame,
        )

    def log_period(self, topic: str, backend: Backend) -> float | None:
        """Seconds between messages of a default topic as the backend logs it; None when not logged."""
        hz = self.log_hz.get(topic)
        if not hz:
            return None
        if backend.name == "cpp":  # uint8(100 / frequency) tens of milliseconds
            return max(1, int(100.0 / hz)) * 0.01
        return 1.0 / hz

    def legacy_problem(self, legacy_mode: str) -> str:
        """One line when the firmware parameters do not fly the node's ``legacy_mode``; '' when they do."""
        modes = (self.stab_mode_roll, self.stab_mode_pitch)
        if self.controller not in CONTROLLERS:
            return f"stabilizer.controller {self.controller} is not modelled (valid: {CONTROLLERS})"
        if legacy_mode == "rate":
            if modes != (0, 0):
                return (
                    f"legacy_mode rate needs flightmode.stabModeRoll/stabModePitch 0 (rate); got {modes} "
                    "(crtp_commander_rpyt.c; firmware default 1, angle)"
                )
            if self.controller == 2:
                return (
                    "legacy_mode rate with stabilizer.controller 2 (Mellinger): Mellinger holds a level attitude "
                    "target and turns roll/pitch rates into a held tilt (controller_mellinger.c); set "
                    "stabilizer.controller: 1 (PID)"
                )
        elif modes != (1, 1):
            return f"legacy_mode angle needs flightmode.stabModeRoll/stabModePitch 1 (angle); got {modes}"
        return ""


def backend_odometry(
    backend: Backend, vehicle: str, reference_frame: str, meas: QuadrotorMeasurement
) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray]:
    """``(frame_id, child_frame_id, quat_wxyz, twist.linear, twist.angular)`` of ``/cfN/odom`` as ``backend`` fills it.

    cpp: world velocity and zero rates; cflib: body velocity, the gyro in deg/s and the negated legacy pitch.
    """
    r = meas.rotation.reshape(3, 3)
    if backend.pitch_inverted:
        roll, pitch, yaw = _roll_pitch_yaw(r)
        r = _from_roll_pitch_yaw(roll, -pitch, yaw)
    quat = _rotation_to_quat(r)
    if backend.name == "cpp":
        return vehicle, "", quat, meas.velocity.copy(), np.zeros(3)
    return reference_frame, vehicle, quat, meas.rotation.reshape(3, 3).T @ meas.velocity, np.degrees(meas.body_rates)


def backend_pose_quat(backend: Backend, meas: QuadrotorMeasurement) -> np.ndarray:
    """The pose quaternion ``(w, x, y, z)``: cpp logs the estimator's; cflib builds it from the negated legacy pitch."""
    r = meas.rotation.reshape(3, 3)
    if backend.pitch_inverted:
        roll, pitch, yaw = _roll_pitch_yaw(r)
        r = _from_roll_pitch_yaw(roll, -pitch, yaw)
    return _rotation_to_quat(r)


def _rotation_to_quat(r: np.ndarray) -> np.ndarray:
    """``(w, x, y, z)`` of a rotation matrix (w >= 0)."""
    angle_axis = _rotation_log(r)
    angle = float(np.linalg.norm(angle_axis))
    if angle < 1e-12:
        return np.array([1.0, 0.0, 0.0, 0.0])
    axis = angle_axis / angle
    return np.concatenate([[math.cos(angle / 2)], math.sin(angle / 2) * axis])


# -------------------------------------------------------------------------------------- the adapter's checks
class CrazyflieVendorChecks:
    """The policy node's side of the backend: parameters, odometry reading, and the start-up checks.

    Parameters read through ``param(name, default)``: ``backend`` (``cpp``), ``odom_rate_units`` ('' = the
    backend's), ``frame`` (crazyswarm2's ``reference_frame``, ``world``), ``min_state_rate_hz`` (0 = the
    control rate), ``crazyflies_yaml`` ('' = the firmware parameters are not checked).

    Args:
        param: The node's ``param(name, default)``.
        vehicle: The vehicle's name.
        topic: The state topic (``/cfN/odom`` or ``/cfN/pose``).
        ctrl_dt: The policy's control period [s].
    """

    def __init__(self, param: Any, vehicle: str, topic: str, ctrl_dt: float) -> None:
        self.backend = backend(str(param("backend", "cpp")))
        self.frame = str(param("frame", "world"))
        units = str(param("odom_rate_units", ""))
        self.odom = OdomReader(self.backend, vehicle, self.frame, units or None)
        self.rate = RateCheck(topic, max(float(param("min_state_rate_hz", 0.0)), 1.0 / ctrl_dt))
        self.crazyflies_yaml = str(param("crazyflies_yaml", ""))
        self.vehicle = vehicle
        self.mismatch = ""
        """The newest odometry mismatch (cleared by the next message that matches)."""
        self.unlocked = False
        """The firmware's legacy thrust lock was released (by :meth:`CrazyflieAdapter.start`)."""

    def check_firmware(self, legacy_mode: str) -> None:
        """Refuse a crazyflies.yaml whose firmware parameters do not fly ``legacy_mode`` (``crazyflies_yaml`` set)."""
        if not self.crazyflies_yaml:
            return
        problem = CrazyswarmConfig.from_yaml(self.crazyflies_yaml, self.vehicle).legacy_problem(legacy_mode)
        if problem:
            raise ValueError(f"{self.crazyflies_yaml}: {problem} (firmware_params; or change `legacy_mode`)")

    def sign_warnings(self, pitch_sign: float, yaw_sign: float) -> list[str]:
        """Warnings for command signs that differ from the backend's (a firmware other than the one read)."""
        expected = self.backend.node_signs
        return [
            f"`{name}` {value:g} differs from crazyswarm2's {self.backend.name} backend ({want:g}): every "
            f"{name.split('_')[0]} command is flown backwards unless the firmware differs (crazyflie_vendor.py)"
            for name, value, want in (("pitch_sign", pitch_sign, expected[0]), ("yaw_sign", yaw_sign, expected[1]))
            if value != want
        ]

    def arrived(self, t: float) -> None:
        """A state message arrived at ``t`` [s, node clock]."""
        self.rate.observe(t)

    def check_rate(self) -> None:
        """``ValueError`` while the state topic is slower than the control loop needs."""
        problem = self.rate.problem()
        if problem:
            raise ValueError(problem)

    def read_odom(self, fields: tuple[float, str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> Any:
        """The measurement of one odometry message (see :class:`OdomReader`), the rate checked first."""
        self.check_rate()
        try:
            meas = self.odom(*fields)
        except ValueError as err:
            self.mismatch = str(err)
            raise
        self.mismatch = ""
        return meas

    def pose_rotation(self, frame_id: str, quat_wxyz: np.ndarray) -> np.ndarray:
        """The body->world rotation of a ``/cfN/pose`` (cflib's carries the negated legacy pitch). Shape: (9,)."""
        if frame_id != self.frame:
            raise ValueError(
                f"pose header.frame_id is {frame_id!r}; crazyswarm2 stamps poses in its reference_frame: set "
                f"`frame` (now {self.frame!r}) to crazyflies.yaml's reference_frame"
            )
        rotation = quat_to_rotation(*np.asarray(quat_wxyz, dtype=np.float64).tolist())
        if self.backend.pitch_inverted:
            roll, pitch, yaw = _roll_pitch_yaw(rotation.reshape(3, 3))
            rotation = _from_roll_pitch_yaw(roll, -pitch, yaw).ravel()
        return rotation

    def problem(self) -> str:
        """What arrived so far against the configuration: one line naming the fix, or ''."""
        return self.mismatch or self.rate.problem()

    def reset(self) -> None:
        """New episode: rates derived afresh, the rate measured afresh."""
        self.odom.reset()
        self.rate.reset()
