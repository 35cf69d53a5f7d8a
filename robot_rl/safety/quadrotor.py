"""Quadrotor safety: a CBF filter on CTBR commands, a hover/land fallback and the constraint check.

The action is collective thrust and body rates (CTBR) in [-1, 1] (see ``QuadrotorEnv``); the limits come from
the ``safety:`` section of ``hardware/crazyflie.yaml`` (:func:`load_quadrotor_safety`). Per command the
:class:`QuadrotorSafetyFilter`

1. predicts the attitude one control period ahead along the measured body rates and takes the acceleration
   the nominal thrust gives along that body z, ``a = (T / m) b3 - g e3 + d`` (``d``: the acceleration the
   model misses, estimated from the measured velocity when ``cbf.disturbance_gain`` > 0, else 0);
2. if that acceleration breaks a geofence or minimum-altitude CBF (a box on ``a``, see
   :mod:`robot_rl.safety.quadrotor_cbf`), finds the nearest acceleration inside the box and the thrust/tilt
   polytope (clipping where that is exact, else a 3-variable QP on DAQP), and turns it back into CTBR: the
   thrust whose acceleration along the predicted body z best meets the box, roll and pitch rates that turn body
   z towards the safe thrust direction, the nominal yaw rate;
3. clips the thrust and the body rates to their limits and keeps the roll and pitch rates inside the tilt CBF.

A safe command passes bit for bit (``report.changed`` False).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import qpsolvers

from robot_rl.safety.base import ConstraintCheck, FilterReport, RobotState, SafetyFilter
from robot_rl.safety.quadrotor_cbf import (
    GRAVITY,
    QuadrotorModel,
    acceleration_box,
    in_thrust_set,
    predict_rotation,
    project_rates,
    steer_rates,
    thrust_for,
    thrust_polytope,
    tilt_row,
)

FACES = ("geofence_x_low", "geofence_x_high", "geofence_y_low", "geofence_y_high", "min_altitude", "geofence_z_high")
"""Constraint names of the low and high faces per axis (the minimum altitude is the low z face)."""
FALLBACK_MODES = ("hover", "land")
STATE_KEYS = ("position", "velocity", "rotation", "body_rates")


def _read_state(state: RobotState) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """Position, velocity, rotation, body rates as float lists; None when any is missing or non-finite."""
    try:
        parts = [np.asarray(state[k], dtype=np.float64).ravel().tolist() for k in STATE_KEYS]
    except (KeyError, TypeError, ValueError):
        return None
    if [len(p) for p in parts] != [3, 3, 9, 3] or not all(map(math.isfinite, sum(parts, []))):
        return None
    return parts[0], parts[1], parts[2], parts[3]


def _to_action(model: QuadrotorModel, thrust: float, rates: Sequence[float]) -> list[float]:
    """CTBR in action units, clipped to [-1, 1]."""
    out = [2.0 * thrust / model.full_thrust - 1.0] + [w / f for w, f in zip(rates, model.full_rates, strict=True)]
    return [min(1.0, max(-1.0, v)) for v in out]


class QuadrotorFallback:
    """Levels the vehicle and brakes to a hover (``hover``) or descends at ``land_speed`` (``land``).

    The braking acceleration also meets the geofence CBFs where the thrust and tilt limits allow (and the
    minimum-altitude one in ``hover``).

    Args:
        model: Vehicle and limits.
        mode: ``hover`` or ``land``.
        land_speed: Descent speed of ``land`` [m/s].
        velocity_gain: Acceleration per velocity error [1/s].
    """

    def __init__(
        self, model: QuadrotorModel, mode: str = "hover", land_speed: float = 0.3, velocity_gain: float = 2.0
    ) -> None:
        if mode not in FALLBACK_MODES:
            raise ValueError(f"`mode` must be one of {list(FALLBACK_MODES)}. Got {mode!r}.")
        self.model, self.name, self.land_speed, self.velocity_gain = model, mode, land_speed, velocity_gain

    def __call__(self, state: RobotState) -> np.ndarray:
        """The fallback CTBR command for ``state`` (finite, in [-1, 1]). Shape: (4,)."""
        return self.command(state)

    def command(self, state: RobotState) -> np.ndarray:
        """See :meth:`__call__`; a non-finite state gives the level hover command (hover thrust, zero rates)."""
        model, parts = self.model, _read_state(state)
        hover = min(model.thrust_range[1], max(model.thrust_range[0], model.mass * GRAVITY))
        if parts is None:
            return np.array(_to_action(model, hover, (0.0, 0.0, 0.0)))
        pos, vel, rot, rates = parts
        k = self.velocity_gain
        v_target = -self.land_speed if self.name == "land" else 0.0
        acc = [-k * vel[0], -k * vel[1], -k * (vel[2] - v_target)]
        # Brake harder where the geofence CBFs ask for it (landing ignores the minimum altitude).
        lo, hi, _, _ = acceleration_box(model, pos, vel)
        lo[2] = -math.inf if self.name == "land" else lo[2]
        fx, fy, fz = (min(hi[i], max(lo[i], acc[i])) for i in range(3))
        fz += GRAVITY
        limit = 0.5 * math.tan(model.enforced_tilt) * GRAVITY
        horizontal = math.hypot(fx, fy)
        if horizontal > limit:
            fx, fy = fx * limit / horizontal, fy * limit / horizontal
        fz = max(fz, 0.5 * GRAVITY)
        norm = math.sqrt(fx * fx + fy * fy + fz * fz)
        rp = predict_rotation(rot, rates, model.prediction_time)
        thrust = model.mass * (fx * rp[2] + fy * rp[5] + fz * rp[8])
        thrust = min(model.thrust_range[1], max(model.thrust_range[0], thrust))
        wx, wy = steer_rates(rp, [fx / norm, fy / norm, fz / norm], model.attitude_gain)
        box = model.max_rates
        (wx, wy), _ = project_rates((wx, wy), (box[0], box[1]), tilt_row(model, rp))
        # Damp the yaw rate, within the configured limit like every other rate (hardware/crazyflie.yaml).
        wz = min(box[2], max(-box[2], -0.5 * rates[2]))
        return np.array(_to_action(model, thrust, (wx, wy, wz)))


class QuadrotorConstraintCheck:
    """Names the configured constraints a state breaks: geofence faces, ``min_altitude``, ``tilt``."""

    def __init__(self, model: QuadrotorModel) -> None:
        self.model = model
        self._cos_tilt = math.cos(model.max_tilt)

    def violations(self, state: RobotState) -> list[str]:
        """Broken constraints (``state_not_finite`` when the state cannot be read)."""
        parts = _read_state(state)
        if parts is None:
            return ["state_not_finite"]
        pos, _, rot, _ = parts
        out = []
        for i in range(3):
            if pos[i] < self.model.low[i]:
                out.append(FACES[2 * i])
            if pos[i] > self.model.high[i]:
                out.append(FACES[2 * i + 1])
        if rot[8] < self._cos_tilt:
            out.append("tilt")
        return out


class QuadrotorSafetyFilter:
    """Geofence/altitude CBF on the acceleration, tilt CBF on the rates, thrust and rate limits (CTBR).

    With ``model.disturbance_gain`` > 0 the filter also estimates the acceleration its model misses (mass and
    thrust-constant error, drag, wind) from the measured velocity between calls, one call per control period,
    and adds it to the model.

    Args:
        model: Vehicle, limits and gains.
        fallback: Sent when the state or the command cannot be used (default: hover).
    """

    name = "quadrotor_cbf"

    def __init__(self, model: QuadrotorModel, fallback: Callable[[RobotState], np.ndarray] | None = None) -> None:
        self.model = model
        self.fallback = fallback or QuadrotorFallback(model)
        self._poly_g, self._poly_h = thrust_polytope(model)
        self._eye = np.eye(3)
        self.reset()

    def reset(self) -> None:
        """Forget the disturbance estimate."""
        self.disturbance = [0.0, 0.0, 0.0]
        """Estimated acceleration the model misses [m/s^2, world]."""
        self._last: tuple[list[float], list[float]] | None = None

    def _observe(self, vel: list[float]) -> list[float]:
        """Update the disturbance estimate; the effective gravity ``g e3 - d`` the thrust works against."""
        model, d = self.model, self.disturbance
        if self._last is not None and model.disturbance_gain > 0.0:
            v0, a0 = self._last
            gain, dt = model.disturbance_gain, model.ctrl_dt
            d = [d[i] + gain * ((vel[i] - v0[i]) / dt - a0[i] - d[i]) for i in range(3)]
            norm = math.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
            if norm > model.disturbance_limit:
                d = [v * model.disturbance_limit / norm for v in d]
            self.disturbance = d
        return [-d[0], -d[1], GRAVITY - d[2]]

    def filter(self, command: np.ndarray, state: RobotState) -> tuple[np.ndarray, FilterReport]:
        """The command to send instead of ``command`` (CTBR, shape (4,)) and what changed."""
        model = self.model
        report = FilterReport(self.name)
        cmd = np.asarray(command, dtype=np.float64)
        parts = _read_state(state)
        u = cmd.ravel().tolist()
        if cmd.shape != (4,) or parts is None or not all(map(math.isfinite, u)):
            report.changed, report.fallback = True, "bad_state" if parts is None else "bad_command"
            self._last = None
            return np.asarray(self.fallback(state), dtype=np.float64), report
        pos, vel, rot, rates = parts
        gravity = self._observe(vel)
        out = list(u)
        t_lo, t_hi = model.thrust_range
        thrust = 0.5 * (u[0] + 1.0) * model.full_thrust
        rp = predict_rotation(rot, rates, model.prediction_time)
        b3 = [rp[2], rp[5], rp[8]]
        lo, hi, _, _ = acceleration_box(model, pos, vel)
        t_c = min(t_hi, max(t_lo, thrust))
        a_nom = [t_c / model.mass * b3[i] - gravity[i] for i in range(3)]
        active = [FACES[2 * i + (a_nom[i] > hi[i])] for i in range(3) if not lo[i] <= a_nom[i] <= hi[i]]
        roll_pitch = (u[1] * model.full_rates[0], u[2] * model.full_rates[1])
        if active:
            f = self._safe_thrust_vector(a_nom, lo, hi, gravity, report)
            if f is None:
                report.changed, report.fallback = True, "qp_failed"
                self._last = None
                return np.asarray(self.fallback(state), dtype=np.float64), report
            norm = math.sqrt(f[0] * f[0] + f[1] * f[1] + f[2] * f[2])
            preferred = model.mass * (f[0] * b3[0] + f[1] * b3[1] + f[2] * b3[2])
            t_c, _ = thrust_for(model, b3, preferred, lo, hi, gravity)
            roll_pitch = steer_rates(rp, [f[0] / norm, f[1] / norm, f[2] / norm], model.attitude_gain)
            out[0] = 2.0 * t_c / model.full_thrust - 1.0
        elif t_c != thrust:
            active.append("thrust_low" if thrust < t_lo else "thrust_high")
            out[0] = 2.0 * t_c / model.full_thrust - 1.0
        # Rate limits, then the tilt CBF on roll and pitch.
        box = model.max_rates
        w, _ = project_rates(roll_pitch, (box[0], box[1]), tilt_row(model, rp))
        if w != roll_pitch or active:
            for i, axis in ((0, "rate_roll"), (1, "rate_pitch")):
                if abs(roll_pitch[i]) > box[i]:
                    active.append(axis)
            if w != tuple(min(box[i], max(-box[i], roll_pitch[i])) for i in range(2)):
                active.append("tilt")
            out[1], out[2] = w[0] / model.full_rates[0], w[1] / model.full_rates[1]
        yaw = u[3] * model.full_rates[2]
        if abs(yaw) > box[2]:
            active.append("rate_yaw")
            out[3] = math.copysign(box[2], yaw) / model.full_rates[2]
        # What the sent thrust should do over the period (mean of the attitude now and predicted).
        t_sent = t_c / model.mass
        self._last = (vel, [t_sent * 0.5 * (rot[k] + rp[k]) - (GRAVITY if k == 8 else 0.0) for k in (2, 5, 8)])
        if out == u:
            return cmd, report
        report.changed, report.active = True, active or ["rates"]
        report.detail["max_change"] = max(abs(a - b) for a, b in zip(out, u, strict=True))
        return np.array([min(1.0, max(-1.0, v)) for v in out]), report

    def _safe_thrust_vector(
        self, a_nom: list[float], lo: list[float], hi: list[float], gravity: list[float], report: FilterReport
    ) -> list[float] | None:
        """``f = a + gravity`` for the acceleration ``a`` nearest ``a_nom`` in the CBF box and the thrust polytope."""
        for i in range(3):
            if lo[i] > hi[i]:  # the two faces ask for opposite accelerations: split the difference
                lo[i] = hi[i] = 0.5 * (lo[i] + hi[i])
        clipped = [min(hi[i], max(lo[i], a_nom[i])) + gravity[i] for i in range(3)]
        if in_thrust_set(self.model, clipped):
            return clipped  # the box projection is feasible, hence the exact optimum
        start = time.perf_counter()
        # In f: min |f - f_nom|^2  s.t.  G f <= h, lo + gravity <= f <= hi + gravity.
        gv = np.array(gravity)
        target = np.array(a_nom) + gv
        g, h = self._poly_g, self._poly_h
        x = qpsolvers.solve_qp(self._eye, -target, g, h, lb=np.array(lo) + gv, ub=np.array(hi) + gv, solver="daqp")
        if x is None:  # the box and the polytope do not meet: nearest polytope point to the clipped target
            report.detail["qp_infeasible"] = 1.0
            x = qpsolvers.solve_qp(self._eye, -np.array(clipped), g, h, solver="daqp")
        report.detail["qp_time_s"] = time.perf_counter() - start
        return None if x is None else x.tolist()


# ------------------------------------------------------------------------------------------------ config
class _Section:
    """One mapping of the ``safety:`` section with its key path; refuses unread keys on :meth:`done`."""

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: {path} must be a mapping. Got {data!r}.")
        self.data, self.source, self.path, self.read = data, source, path, []

    def error(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.source}: {self.path}.{key} {message}")

    def get(self, key: str) -> Any:
        self.read.append(key)
        if key not in self.data:
            raise self.error(key, "is missing.")
        return self.data[key]

    def sub(self, key: str) -> _Section:
        return _Section(self.get(key), self.source, f"{self.path}.{key}")

    def number(
        self, key: str, low: float = -math.inf, high: float = math.inf, value: Any = None, closed: bool = False
    ) -> float:
        """A finite number in (``low``, ``high``] (``[low, high]`` when ``closed``)."""
        value = self.get(key) if value is None else value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(key, f"must be a finite number. Got {value!r}.")
        if not (low <= value if closed else low < value) or value > high:
            raise self.error(key, f"must be in {'[' if closed else '('}{low:g}, {high:g}]. Got {value!r}.")
        return float(value)

    def vector(
        self, key: str, n: int, low: float = -math.inf, high: float = math.inf, closed: bool = False
    ) -> tuple[float, ...]:
        value = self.get(key)
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != n:
            raise self.error(key, f"must be a list of {n} numbers. Got {value!r}.")
        return tuple(self.number(f"{key}[{i}]", low, high, v, closed) for i, v in enumerate(value))

    def range(self, key: str, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
        """``[lower, upper]`` within ``[low, high]``, lower below upper."""
        lower, upper = self.vector(key, 2, low, high, closed=True)
        if lower >= upper:
            raise self.error(key, f"lower ({lower:g}) must be below upper ({upper:g}).")
        return lower, upper

    def pair(self, key: str, closed: bool = False) -> tuple[float, float]:
        """``{horizontal: .., vertical: ..}``, each > 0 (>= 0 when ``closed``)."""
        sub = self.sub(key)
        out = sub.number("horizontal", 0.0, closed=closed), sub.number("vertical", 0.0, closed=closed)
        sub.done()
        return out

    def done(self) -> None:
        unknown = [k for k in self.data if k not in self.read]
        if unknown:
            raise self.error(str(unknown[0]), f"is not a valid key. Valid keys: {sorted(set(self.read))}.")


def quadrotor_model_from_mapping(
    mapping: Mapping[str, Any], source: str = "hardware/crazyflie.yaml"
) -> tuple[QuadrotorModel, dict[str, Any]]:
    """Validate the ``safety:`` section; the model and the fallback's keyword arguments.

    Raises:
        ValueError: a missing, unknown or out-of-range key, or inconsistent values; the message names the file
            and the key path (``hardware/crazyflie.yaml: safety.geofence.x_m ...``).
    """
    root = _Section(mapping, source, "safety")
    if root.get("robot") != "crazyflie":
        raise root.error("robot", f"must be 'crazyflie'. Got {mapping['robot']!r}.")
    for key in ("chunk", "watchdog"):  # read by the safety chain, which validates them
        if root.data.get(key) is not None and not isinstance(root.data[key], Mapping):
            raise root.error(key, f"must be a mapping. Got {root.data[key]!r}.")
    root.read += ["chunk", "watchdog"]
    vehicle = root.sub("vehicle")
    mass = vehicle.number("mass_kg", 0.0)
    full_thrust = vehicle.number("full_thrust_n", 0.0)
    full_rates = vehicle.vector("full_rates_rad_s", 3, 0.0)
    ctrl_dt = vehicle.number("ctrl_dt_s", 0.0)
    vehicle.done()
    fence = root.sub("geofence")
    x, y = fence.range("x_m"), fence.range("y_m")
    z_max = fence.number("z_max_m", 0.0)
    fence.done()
    min_altitude = root.number("min_altitude_m", 0.0)
    if min_altitude >= z_max:
        raise root.error("min_altitude_m", f"({min_altitude:g}) must be below geofence.z_max_m ({z_max:g}).")
    max_tilt = math.radians(root.number("max_tilt_deg", 0.0, 89.0))
    max_rates = root.vector("max_body_rates_rad_s", 3, 0.0)
    for i, (r, f) in enumerate(zip(max_rates, full_rates, strict=True)):
        if r > f:
            raise root.error(f"max_body_rates_rad_s[{i}]", f"({r:g}) is above vehicle.full_rates_rad_s ({f:g}).")
    thrust = root.range("thrust_n", 0.0, full_thrust)
    if not thrust[0] < mass * GRAVITY < thrust[1]:
        raise root.error("thrust_n", f"{list(thrust)} must contain the hover thrust {mass * GRAVITY:.3f} N.")
    cbf = root.sub("cbf")
    model = QuadrotorModel(
        mass=mass,
        full_thrust=full_thrust,
        full_rates=full_rates,  # type: ignore[arg-type]
        ctrl_dt=ctrl_dt,
        low=(x[0], y[0], min_altitude),
        high=(x[1], y[1], z_max),
        max_tilt=max_tilt,
        max_rates=max_rates,  # type: ignore[arg-type]
        thrust_range=thrust,
        alpha=cbf.number("alpha", 0.0),
        reaction_time=cbf.pair("reaction_time_s"),
        brake_acc=cbf.pair("brake_acc_m_s2"),
        margin=cbf.pair("margin_m", closed=True),
        alpha_tilt=cbf.number("alpha_tilt", 0.0),
        tilt_margin=math.radians(cbf.number("tilt_margin_deg", 0.0, math.degrees(max_tilt) - 1.0, closed=True)),
        attitude_gain=cbf.number("attitude_gain", 0.0),
        prediction_time=cbf.number("prediction_time_s", 0.0, 1.0, closed=True),
        disturbance_gain=cbf.number("disturbance_gain", 0.0, 1.0, closed=True),
        disturbance_limit=cbf.number("disturbance_limit_m_s2", 0.0, closed=True),
    )
    cbf.done()
    for i, (lo, hi) in enumerate(zip(model.low, model.high, strict=True)):
        margin = model.margin[i == 2]
        if hi - lo <= 2.0 * margin:
            raise cbf.error("margin_m", f"leaves no room between the limits along {'xyz'[i]} ({lo:g}, {hi:g}).")
    fallback = root.sub("fallback")
    kwargs = {
        "mode": fallback.get("mode"),
        "land_speed": fallback.number("land_speed_m_s", 0.0),
        "velocity_gain": fallback.number("velocity_gain", 0.0),
    }
    if kwargs["mode"] not in FALLBACK_MODES:
        raise fallback.error("mode", f"must be one of {list(FALLBACK_MODES)}. Got {kwargs['mode']!r}.")
    fallback.done()
    root.done()
    return model, kwargs


def load_quadrotor_safety(
    mapping: Mapping[str, Any], source: str = "hardware/crazyflie.yaml"
) -> tuple[list[SafetyFilter], Callable[[RobotState], np.ndarray], ConstraintCheck]:
    """The filters, the fallback and the constraint check of a quadrotor ``safety:`` section.

    Args:
        mapping: The parsed ``safety:`` section (``yaml.safe_load(file)["safety"]``).
        source: File name for error messages.

    Raises:
        ValueError: see :func:`quadrotor_model_from_mapping`.
    """
    model, kwargs = quadrotor_model_from_mapping(mapping, source)
    fallback = QuadrotorFallback(model, **kwargs)
    return [QuadrotorSafetyFilter(model, fallback)], fallback, QuadrotorConstraintCheck(model)
