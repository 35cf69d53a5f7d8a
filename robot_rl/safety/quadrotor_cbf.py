"""The quadrotor safety filter's model: one-step attitude prediction, CBF rows, the thrust polytope, projections.

Frames as in the env: world z up, body FLU, rotation body -> world row-major. The vehicle model is the point
mass ``a = (T / m) b3 - gravity`` (``b3`` the body z axis in the world, ``T`` the collective thrust,
``gravity`` = ``g e3`` less any estimated disturbance acceleration) and the attitude kinematics
``d/dt R = R [w]x``.

Position constraints (geofence faces and minimum altitude) are braking-distance high-order CBFs on the
acceleration: for a face ``n . p <= b`` with clearance ``h = b - n . p - margin`` and approach speed
``u = n . v``, the barrier ``h_b = h - t_r u+ - u+^2 / (2 a_b)`` (room left after reacting for ``t_r`` and
braking at ``a_b``) must satisfy ``d/dt h_b >= -alpha h_b``, i.e.
``(t_r + u+ / a_b) n . a <= alpha h_b - u``. Each face bounds one acceleration component, so the six faces
make a box on ``a``. The tilt limit is a first-order CBF on the body rates: the world-z component of body z,
``c = R[2,2]``, has ``dc/dt = R[2,0] w_y - R[2,1] w_x``, kept ``>= -alpha_tilt (c - cos(max_tilt))``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

GRAVITY = 9.81
"""Gravitational acceleration [m/s^2] (as the env)."""


@dataclasses.dataclass(frozen=True)
class QuadrotorModel:
    """What the filter's constraints are built from (the validated ``safety:`` section, in SI units)."""

    mass: float
    """Take-off mass [kg]."""
    full_thrust: float
    """Collective thrust at thrust action +1 [N] (action -1 is 0 N)."""
    full_rates: tuple[float, float, float]
    """Body rates at |action| = 1: roll, pitch, yaw [rad/s]."""
    ctrl_dt: float
    """Control period [s]."""
    low: tuple[float, float, float]
    """Geofence lower corner; z is the minimum altitude [m, world]."""
    high: tuple[float, float, float]
    """Geofence upper corner [m, world]."""
    max_tilt: float
    """Largest angle between body z and world z the check allows [rad]."""
    max_rates: tuple[float, float, float]
    """Body-rate command limits: roll, pitch, yaw [rad/s]."""
    thrust_range: tuple[float, float]
    """Collective thrust command limits [N]."""
    alpha: float
    """Position CBF rate [1/s]."""
    reaction_time: tuple[float, float]
    """Horizontal, vertical reaction time in the braking distance [s]."""
    brake_acc: tuple[float, float]
    """Horizontal, vertical braking acceleration the barrier budgets [m/s^2]."""
    margin: tuple[float, float]
    """Horizontal, vertical distance kept inside the faces [m]."""
    alpha_tilt: float
    """Tilt CBF rate [1/s]."""
    tilt_margin: float
    """The filter keeps the tilt this far below ``max_tilt`` [rad]."""
    attitude_gain: float
    """Body-rate command per attitude error when the filter steers the thrust direction [1/s]."""
    prediction_time: float
    """Horizon of the attitude prediction along the measured body rates [s]."""
    disturbance_gain: float = 0.0
    """Per-step low-pass gain of the acceleration-disturbance observer [1] (0: off)."""
    disturbance_limit: float = 0.0
    """Bound on the estimated disturbance acceleration [m/s^2]."""

    @property
    def enforced_tilt(self) -> float:
        """Tilt the rate CBF keeps below [rad]."""
        return self.max_tilt - self.tilt_margin


def predict_rotation(rot: list[float], rates: list[float], dt: float) -> list[float]:
    """``R exp([w]x dt)`` (Rodrigues), row-major: the attitude after ``dt`` [s] at body rates ``w`` [rad/s]."""
    wx, wy, wz = rates[0] * dt, rates[1] * dt, rates[2] * dt
    angle = math.sqrt(wx * wx + wy * wy + wz * wz)
    if angle < 1e-12:
        return list(rot)
    s = math.sin(angle) / angle
    c = (1.0 - math.cos(angle)) / (angle * angle)
    # E = I + s K + c K^2 with K = [w dt]x.
    e = (
        1.0 - c * (wy * wy + wz * wz), -s * wz + c * wx * wy, s * wy + c * wx * wz,
        s * wz + c * wx * wy, 1.0 - c * (wx * wx + wz * wz), -s * wx + c * wy * wz,
        -s * wy + c * wx * wz, s * wx + c * wy * wz, 1.0 - c * (wx * wx + wy * wy),
    )  # fmt: skip
    out = []
    for i in range(3):
        r0, r1, r2 = rot[3 * i], rot[3 * i + 1], rot[3 * i + 2]
        out += [r0 * e[j] + r1 * e[3 + j] + r2 * e[6 + j] for j in range(3)]
    return out


def acceleration_box(
    model: QuadrotorModel, pos: list[float], vel: list[float]
) -> tuple[list[float], list[float], list[float], list[float]]:
    """The CBF bounds on the world acceleration and the barrier values.

    Returns:
        ``(lo, hi, h_lo, h_hi)``: ``lo[i] <= a[i] <= hi[i]`` [m/s^2] (x, y, z), and the braking barriers
        ``h_b`` [m] of the low and high faces (negative: already inside the braking distance).
    """
    lo, hi, h_lo, h_hi = [], [], [], []
    for i in range(3):
        k = 1 if i == 2 else 0
        tr, ab, mg = model.reaction_time[k], model.brake_acc[k], model.margin[k]
        for sign, bound in ((1.0, model.high[i]), (-1.0, model.low[i])):
            u = sign * vel[i]
            up = u if u > 0.0 else 0.0
            hb = sign * (bound - pos[i]) - mg - tr * up - up * up / (2.0 * ab)
            d = (model.alpha * hb - u) / (tr + up / ab)
            if sign > 0.0:
                hi.append(d)
                h_hi.append(hb)
            else:
                lo.append(-d)
                h_lo.append(hb)
    return lo, hi, h_lo, h_hi


def tilt_row(model: QuadrotorModel, rot: list[float]) -> tuple[float, float, float]:
    """The tilt CBF as ``gx w_x + gy w_y >= rhs`` on the commanded roll and pitch rates [rad/s]."""
    return -rot[7], rot[6], -model.alpha_tilt * (rot[8] - math.cos(model.enforced_tilt))


def thrust_polytope(model: QuadrotorModel, sides: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``G f <= h``: an inner polytope of the specific thrusts ``f = (T / m) b3`` the limits allow [m/s^2].

    ``f`` must lie in the cone of half-angle ``enforced_tilt`` (an inscribed ``sides``-gon), under
    the chords from ``f_max e3`` to the cone's rim at ``|f| = f_max`` (inside the ball ``|f| <= f_max``), and
    have ``f_z >= f_min`` (so ``|f| >= f_min``), with ``f_min, f_max`` the thrust limits over the mass.
    """
    f_min, f_max = (t / model.mass for t in model.thrust_range)
    theta = model.enforced_tilt
    top = np.array([0.0, 0.0, f_max])
    rim = [
        f_max * np.array([math.sin(theta) * math.cos(p), math.sin(theta) * math.sin(p), math.cos(theta)])
        for p in (2.0 * math.pi * k / sides for k in range(sides))
    ]
    rows, rhs = [], []
    for k in range(sides):
        a, b = rim[k], rim[(k + 1) % sides]
        side = np.cross(b, a)  # outward normal of the face through 0, a, b
        rows.append(side / np.linalg.norm(side))
        rhs.append(0.0)
        cap = np.cross(a - top, b - top)
        cap = cap if cap @ top > 0 else -cap  # outward: away from the origin
        cap /= np.linalg.norm(cap)
        rows.append(cap)
        rhs.append(float(cap @ top))
    rows.append(np.array([0.0, 0.0, -1.0]))
    rhs.append(-f_min)
    return np.array(rows), np.array(rhs)


def in_thrust_set(model: QuadrotorModel, f: list[float]) -> bool:
    """Whether the specific thrust ``f`` [m/s^2] is within the exact thrust ball and tilt cone (``f_z >= f_min``)."""
    fx, fy, fz = f
    f_min, f_max = model.thrust_range[0] / model.mass, model.thrust_range[1] / model.mass
    if fz < f_min or fx * fx + fy * fy + fz * fz > f_max * f_max:
        return False
    return math.hypot(fx, fy) <= math.tan(model.enforced_tilt) * fz


def thrust_for(
    model: QuadrotorModel, b3: list[float], preferred: float, lo: list[float], hi: list[float], gravity: list[float]
) -> tuple[float, bool]:
    """Collective thrust [N] nearest ``preferred`` whose acceleration ``(T / m) b3 - gravity`` meets the box.

    The thrust limits come first, then the vertical bounds, then the horizontal ones; a bound that cannot be
    met together with those before it is skipped (the thrust moves towards it as far as they allow).

    Returns:
        The thrust and whether every bound is met.
    """
    t_lo, t_hi = model.thrust_range
    m, ok = model.mass, True
    for i in (2, 0, 1):
        # lo <= (T / m) b3_i - gravity_i <= hi  ->  bounds on T.
        c, off = b3[i] / m, gravity[i]
        if abs(c) < 1e-9:
            if not lo[i] <= -off <= hi[i]:
                ok = False
            continue
        a, b = (lo[i] + off) / c, (hi[i] + off) / c
        a, b = (a, b) if c > 0.0 else (b, a)
        if a > t_hi or b < t_lo or a > b:  # move towards the bound as far as the earlier ones allow
            ok = False
            t_lo = t_hi = t_hi if a > t_hi else t_lo
            continue
        t_lo, t_hi = max(t_lo, a), min(t_hi, b)
    return min(t_hi, max(t_lo, preferred)), ok


def steer_rates(rot: list[float], b3_des: list[float], gain: float) -> tuple[float, float]:
    """Roll and pitch rates [rad/s] turning body z towards ``b3_des`` (reduced attitude, proportional)."""
    bx, by, bz = rot[2], rot[5], rot[8]
    dx, dy, dz = b3_des
    # e = b3 x b3_des (world), in the body frame R^T e; its body-z part is zero.
    ex, ey, ez = by * dz - bz * dy, bz * dx - bx * dz, bx * dy - by * dx
    return (
        gain * (rot[0] * ex + rot[3] * ey + rot[6] * ez),
        gain * (rot[1] * ex + rot[4] * ey + rot[7] * ez),
    )


def project_rates(
    w: tuple[float, float], box: tuple[float, float], row: tuple[float, float, float]
) -> tuple[tuple[float, float], bool]:
    """The point of ``{|w_i| <= box_i} and {g . w >= rhs}`` nearest ``w`` (exact; 2-D).

    Returns:
        The rates and whether the half-plane could be met inside the box (else the box corner that best
        meets it).
    """
    gx, gy, rhs = row
    cx = min(box[0], max(-box[0], w[0]))
    cy = min(box[1], max(-box[1], w[1]))
    if gx * cx + gy * cy >= rhs:
        return (cx, cy), True
    nn = gx * gx + gy * gy
    best = (box[0] if gx >= 0 else -box[0], box[1] if gy >= 0 else -box[1])
    if nn < 1e-18 or gx * best[0] + gy * best[1] < rhs:
        return best, False
    # The optimum lies on the line g . w = rhs: w = p0 + s t, t along the line, s clipped to the box.
    scale = (rhs - gx * w[0] - gy * w[1]) / nn
    px, py = w[0] + scale * gx, w[1] + scale * gy
    tx, ty = -gy, gx
    s_lo, s_hi = -math.inf, math.inf
    for p, t, b in ((px, tx, box[0]), (py, ty, box[1])):
        if abs(t) > 1e-12:
            a1, a2 = (-b - p) / t, (b - p) / t
            s_lo, s_hi = max(s_lo, min(a1, a2)), min(s_hi, max(a1, a2))
    s = min(s_hi, max(s_lo, 0.0))
    return (min(box[0], max(-box[0], px + s * tx)), min(box[1], max(-box[1], py + s * ty))), True
