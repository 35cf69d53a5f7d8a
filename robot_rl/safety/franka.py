"""The Franka arm's safety filter, constraint check and fallback.

:class:`FrankaSafetyFilter` keeps the commanded TCP displacement inside every constraint of
hardware/fr3.yaml with one small QP over the 3-D displacement ``x`` (action entries 0-2 [action units];
the TCP target moves ``s x``, ``s = max_displacement`` [m]):

    min ||x - x_ref||^2  subject to
      -1 <= x <= 1; x within rate_limit of x_prev, or nearer zero          (action box, rate limit per axis)
      h(p + s x + tau v) >= (1 - gamma) h(p)      for each box face        (workspace CBF)
      h(q + s M x + tau qd) >= (1 - gamma) h(q)   for each joint limit     (joint position CBF)
      |(1 + k) s M x - k qd ctrl_dt| <= (1 - r) qd_max ctrl_dt             (joint velocity)
      s M x / ctrl_dt within c qd_max of qd, or nearer zero                 (joint velocity change)

``p``, ``v``: measured TCP position, velocity; ``q``, ``qd``: joint positions, velocities; ``h``: distance to a
limit less its margin; ``tau``: ``velocity_lead_s``; ``k``: the servos' velocity overshoot; ``r``: velocity
reserve; ``M`` (7 x 3): the joint step per TCP displacement of the env's differential IK (damped pseudo-inverse
of the 6-D TCP Jacobian, orientation held), from ``q`` with MuJoCo on a private ``MjData`` of
assets/franka/panda.xml (the FR3 has the same kinematic parameters). The bottom face (the table) uses
``floor_gamma`` and no lead. Every constraint is linear in ``x``.

``x_ref`` is the nominal command clipped to the bounds and, when it breaks a joint velocity row, scaled down
along its own direction (as the arm's own velocity limiting keeps the direction; projecting would turn it).
The workspace rows are bounds on ``x``; when the CBF asks for more than one step can give they are clamped to
the reachable commands (the command brakes as hard as allowed), so the bounds are never empty. A command that
meets every constraint passes bit for bit; when the joint rows hold at ``x_ref`` clipped to the bounds, that
clip is the QP's solution; else DAQP (through qpsolvers) solves it, then again without the rate limit (safety
before smoothness), then also without the velocity-change rows, then the filter holds and says so. The gripper
entry is only clipped to [-1, 1].
"""

from __future__ import annotations

import time

import mujoco
import numpy as np
import qpsolvers

from robot_rl.safety.base import FilterReport, RobotState
from robot_rl.safety.config import REPO_ROOT, FrankaSafetyConfig

MODEL_PATH = REPO_ROOT / "assets" / "franka" / "panda.xml"
"""The arm model the Jacobian comes from."""
STATE_KEYS = ("tcp_pos", "tcp_vel", "joint_pos", "joint_vel", "gripper_width")
"""Robot-state keys the Franka pieces read (``PandaEnv.robot_state``)."""
AXES = ("x", "y", "z")
_SOLVER_SLACK = 1e-5
"""DAQP solves against joint rows tightened by this much [rad per step]; it meets rows to about 1e-6."""


def _clamp(lb: np.ndarray, ub: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CBF bounds clamped into the reachable range [low, high]; never empty (where they cross, ``lb`` wins)."""
    lb = np.minimum(np.maximum(lb, low), high)
    return lb, np.maximum(np.minimum(np.maximum(ub, low), high), lb)


def _state_arrays(state: RobotState) -> tuple[np.ndarray, ...]:
    """The five state arrays as float64, in :data:`STATE_KEYS` order."""
    try:
        return tuple(np.asarray(state[key], dtype=np.float64).reshape(-1) for key in STATE_KEYS)
    except KeyError as error:
        raise ValueError(
            f"the robot state lacks {error.args[0]!r}. The Franka safety pieces read {list(STATE_KEYS)} "
            "(env.unwrapped.robot_state() merged into the observation)."
        ) from None


class FrankaKinematics:
    """Joint step per TCP displacement, from joint positions, on a private MuJoCo data.

    Args:
        damping: Damped-least-squares regulariser [m] (the env controller's, 0.01).
    """

    def __init__(self, damping: float = 0.01) -> None:
        self.model = mujoco.MjModel.from_xml_path(str(MODEL_PATH))
        self.data = mujoco.MjData(self.model)
        self._site = self.model.site("tcp").id
        self._jac_full = np.zeros((6, self.model.nv))
        self._jac = self._jac_full[:, :7]
        self._damp = damping**2 * np.eye(6)
        self._gram = np.zeros((6, 6))
        self._inv = np.zeros((3, 6))
        self._unit = np.eye(6)
        self._map = np.zeros((7, 3))

    def tcp_position(self, joint_pos: np.ndarray) -> np.ndarray:
        """Forward kinematics: the TCP position [m, world] of ``joint_pos`` (7,). Shape: (3,)."""
        self.data.qpos[:7] = joint_pos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self._site].copy()

    def displacement_map(self, joint_pos: np.ndarray) -> np.ndarray:
        """``M`` [rad/m]: the joint step for a TCP displacement with the orientation held. Shape: (7, 3).

        ``M = J^T (J J^T + lambda^2 I)^-1 [I_3; 0]`` with ``J`` the 6 x 7 TCP Jacobian at ``joint_pos`` (the
        env controller's damped least squares). Returns an internal buffer, overwritten by the next call.
        """
        self.data.qpos[:7] = joint_pos
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jac_full[:3], self._jac_full[3:], self._site)
        np.matmul(self._jac, self._jac.T, out=self._gram)
        np.add(self._gram, self._damp, out=self._gram)
        mujoco.mju_cholFactor(self._gram, 0.0)
        for i in range(3):  # the first three columns of the gram's inverse (it is symmetric)
            mujoco.mju_cholSolve(self._inv[i], self._gram, self._unit[i])
        return np.matmul(self._jac.T, self._inv.T, out=self._map)


class FrankaFallback:
    """Hold: zero TCP displacement, the gripper kept at its measured width (closed when unknown)."""

    name = "hold"

    def __init__(self, config: FrankaSafetyConfig) -> None:
        self.max_width = config.command.gripper_max_width

    def command(self, state: RobotState) -> np.ndarray:
        """The hold command ``[0, 0, 0, width command]``. Shape: (4,)."""
        try:
            width = float(np.asarray(state["gripper_width"], dtype=np.float64).reshape(-1)[0])
        except (KeyError, IndexError, TypeError, ValueError):
            width = float("nan")
        # An unknown width closes the hand: it keeps a grasped object rather than dropping it.
        grip = 2.0 * width / self.max_width - 1.0 if np.isfinite(width) else -1.0
        return np.array([0.0, 0.0, 0.0, min(max(grip, -1.0), 1.0)])


class FrankaConstraintCheck:
    """Judges a measured Franka state: TCP outside the workspace box, a joint past its FR3 position/velocity limit."""

    def __init__(self, config: FrankaSafetyConfig) -> None:
        self.low = np.array(config.workspace.low)
        self.high = np.array(config.workspace.high)
        limits = config.joint_limits
        self.names = limits.names
        self.q_low = np.array(limits.position_lower)
        self.q_high = np.array(limits.position_upper)
        self.qd_max = np.array(limits.velocity)

    def violations(self, state: RobotState) -> list[str]:
        """Names of the broken constraints (``tcp_z_low``, ``fr3_joint4_upper``, ``fr3_joint2_velocity``, ...)."""
        p, _, q, qd, _ = _state_arrays(state)
        if not (np.isfinite(p).all() and np.isfinite(q).all() and np.isfinite(qd).all()):
            return ["nonfinite_state"]
        if (p >= self.low).all() and (p <= self.high).all() and (q >= self.q_low).all() and (q <= self.q_high).all():
            if (np.abs(qd) <= self.qd_max).all():
                return []
        out = [f"tcp_{AXES[i]}_low" for i in np.flatnonzero(p < self.low)]
        out += [f"tcp_{AXES[i]}_high" for i in np.flatnonzero(p > self.high)]
        out += [f"{self.names[i]}_lower" for i in np.flatnonzero(q < self.q_low)]
        out += [f"{self.names[i]}_upper" for i in np.flatnonzero(q > self.q_high)]
        out += [f"{self.names[i]}_velocity" for i in np.flatnonzero(np.abs(qd) > self.qd_max)]
        return out


class FrankaSafetyFilter:
    """Action box, rate limit, workspace CBF and joint limits on the Franka's displacement command, as one QP.

    Args:
        config: The ``safety:`` section of hardware/fr3.yaml.
        kinematics: Jacobian source (default: a new one).
    """

    name = "franka_cbf_qp"

    def __init__(self, config: FrankaSafetyConfig, kinematics: FrankaKinematics | None = None) -> None:
        self.config = c = config
        self.kinematics = kinematics or FrankaKinematics()
        self.fallback = FrankaFallback(config)
        self.scale = c.command.max_displacement
        self.gamma = c.cbf_gamma
        self.lead = c.velocity_lead_s
        self.rate = np.array(c.rate_limit)
        """Rate limit per displacement entry (x, y, z) [action units per period]. Shape: (3,)."""
        self.low = np.array(c.workspace.low) + c.margins.workspace
        """Lowest TCP position the CBF keeps (box less margin) [m]."""
        self.high = np.array(c.workspace.high) - c.margins.workspace
        """Highest TCP position the CBF keeps [m]."""
        limits = c.joint_limits
        self.q_low = np.array(limits.position_lower) + c.margins.joint_position
        self.q_high = np.array(limits.position_upper) - c.margins.joint_position
        self.step_max = (1.0 - np.array(c.margins.joint_velocity)) * np.array(limits.velocity) * c.command.ctrl_dt
        """Largest joint step per period the velocity rows allow [rad]."""
        self.overshoot = c.margins.joint_velocity_overshoot
        self.ctrl_dt = c.command.ctrl_dt
        self.change = c.margins.joint_velocity_change * np.array(limits.velocity)
        """Largest change of a commanded joint velocity per period away from zero [rad/s]."""
        self.constraint_names = tuple(
            f"{n}_{row}" for row in ("upper", "lower", "velocity_pos", "velocity_neg", "velocity_change_pos",
                                     "velocity_change_neg") for n in limits.names
        )  # fmt: skip
        """Names of the rows of ``G``."""
        # The joint rows are affine in (q, qd) and linear in M: h = h0 + H [q; qd], G = S M (see _joint_rows).
        eye, k, gamma = np.eye(7), self.overshoot, self.gamma
        self._h0 = np.concatenate([gamma * self.q_high, -gamma * self.q_low, self.step_max, self.step_max])
        self._h_state = np.block(
            [
                [-gamma * eye, -self.lead * eye],
                [gamma * eye, self.lead * eye],
                [0.0 * eye, k * self.ctrl_dt * eye],
                [0.0 * eye, -k * self.ctrl_dt * eye],
            ]
        )
        self._g_scale = self.scale * np.vstack([eye, -eye, (1.0 + k) * eye, -(1.0 + k) * eye, eye, -eye])
        self._z = np.zeros(14)
        # The bottom face (the table) has its own rate and no velocity lead.
        self.gamma_low = np.array([self.gamma, self.gamma, c.floor_gamma])
        self.lead_low = np.array([self.lead, self.lead, 0.0])
        self._p = 2.0 * np.eye(3)
        self.previous = np.zeros(3)
        """The displacement command sent last (the rate limit's reference) [action units]. Shape: (3,)."""

    def reset(self) -> None:
        """New episode: the arm starts at rest, so the rate limit starts from a zero command."""
        self.previous = np.zeros(3)

    def commanded(self, command: np.ndarray) -> None:
        """Tell the filter what was actually sent when something else replaced its output (chain fallback)."""
        self.previous = np.asarray(command, dtype=np.float64)[:3].copy()

    def workspace_cbf_bounds(self, p: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The workspace CBF as bounds on ``x`` before clamping into the reachable commands. Shapes: (3,), (3,).

        ``h_high = high - p`` and ``h_low = p - low`` (box less margin); ``h(p + s x + tau v) >= (1 - gamma) h(p)``
        reads ``x <= (gamma h_high - tau v) / s`` and ``x >= -(gamma h_low + tau v) / s``; the bottom face uses
        ``floor_gamma`` and no lead. Works on stacked states too (shapes (N, 3)).
        """
        ub = (self.gamma * (self.high - p) - self.lead * v) / self.scale
        lb = (-self.gamma_low * (p - self.low) - self.lead_low * v) / self.scale
        return lb, ub

    def reach(self, previous: np.ndarray, rate: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The commands reachable after ``previous`` (3,) or (N, 3): the action box and the rate limit.

        The rate limit bounds changes that speed up or reverse the motion; slowing down towards zero is free
        (it cannot make the servos overshoot a velocity limit): ``[min(prev - r, 0), max(prev + r, 0)]``.
        """
        if not rate:
            return np.full(np.shape(previous), -1.0), np.full(np.shape(previous), 1.0)
        low = np.maximum(np.minimum(previous - self.rate, 0.0), -1.0)
        high = np.minimum(np.maximum(previous + self.rate, 0.0), 1.0)
        return low, high

    def _bounds(self, p: np.ndarray, v: np.ndarray, rate: bool) -> tuple[np.ndarray, np.ndarray]:
        """The workspace CBF bounds clamped into the reachable commands (never empty; the table face wins)."""
        return _clamp(*self.workspace_cbf_bounds(p, v), *self.reach(self.previous, rate))

    def _joint_rows(self, q: np.ndarray, qd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``G`` (42, 3) and ``h`` (42,), six groups of 7 rows (named by :attr:`constraint_names`).

        With ``dq = s M x`` the joint step: joint position CBF ``dq <= gamma (q_high - q) - tau qd`` and
        ``-dq <= gamma (q - q_low) + tau qd``; joint velocity ``+-(1 + k) dq <= step_max +- k ctrl_dt qd`` (the
        servo overshoots a velocity change ``qd_cmd - qd`` by k times it, so the peak ``(1 + k) qd_cmd - k qd``
        has to stay within the limit, ``qd_cmd = dq / ctrl_dt``); velocity change ``dq <= ctrl_dt max(qd + c, 0)``
        and ``-dq <= ctrl_dt max(c - qd, 0)`` (at most ``c`` away from the measured velocity, braking free).
        """
        z = self._z
        z[:7] = q
        z[7:] = qd
        h = np.empty(42)
        np.matmul(self._h_state, z, out=h[:28])
        h[:28] += self._h0
        np.maximum(self.ctrl_dt * (qd + self.change), 0.0, out=h[28:35])
        np.maximum(self.ctrl_dt * (self.change - qd), 0.0, out=h[35:])
        return self._g_scale @ self.kinematics.displacement_map(q), h

    def filter(self, command: np.ndarray, state: RobotState) -> tuple[np.ndarray, FilterReport]:
        """The command to send for the nominal ``command`` (4,) in ``state``, and what changed.

        Returns:
            The safe command (4,) and the report; ``report.changed`` is False exactly when the output equals
            the input.
        """
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (4,):
            raise ValueError(f"the Franka command must have shape (4,). Got {command.shape}.")
        report = FilterReport(self.name)
        p, v, q, qd, _ = _state_arrays(state)
        if not np.isfinite(command).all():
            return self._hold(state, report, "nonfinite_command")
        if not (np.isfinite(p).all() and np.isfinite(v).all() and np.isfinite(q).all() and np.isfinite(qd).all()):
            return self._hold(state, report, "nonfinite_state")

        out = command.copy()
        if np.abs(command).max() > 1.0:
            np.clip(out, -1.0, 1.0, out=out)
            report.active.append("action_box")
        x_nom = out[:3].copy()
        lb, ub = self._bounds(p, v, rate=True)
        g, h = self._joint_rows(q, qd)
        target = self._velocity_scaled(np.minimum(np.maximum(x_nom, lb), ub), g, h)
        x = np.minimum(np.maximum(target, lb), ub)
        rate = True
        if not (g @ x <= h).all():
            start = time.perf_counter()
            x = self._solve(target, g, h, lb, ub)
            if x is None:
                # Safety before smoothness: the joint rows cannot be met within the rate limit; then not with the
                # velocity-change rows either (a joint near its limit that must turn back faster).
                rate = False
                report.active.append("rate_relaxed")
                lb, ub = self._bounds(p, v, rate=False)
                x = self._solve(target, g, h, lb, ub)
                if x is None:
                    report.active.append("velocity_change_relaxed")
                    x = self._solve(target, g[:28], h[:28], lb, ub)
            report.detail["solve_s"] = time.perf_counter() - start
            if x is None:
                return self._hold(state, report, "infeasible")
        if (x == x_nom).all():
            self.previous = x
            report.changed = bool(report.active)
            return out, report
        out[:3] = x
        report.changed = True
        binding = self._binding(x, x_nom, lb, ub, g, h, p, v, rate)
        report.active = list(dict.fromkeys(report.active + binding))
        report.detail["max_change"] = float(np.abs(x - x_nom).max())
        self.previous = x
        return out, report

    def _velocity_scaled(self, x_nom: np.ndarray, g: np.ndarray, h: np.ndarray) -> np.ndarray:
        """``x_nom`` (clipped to the bounds) scaled down, direction kept, to meet the joint velocity rows.

        Projecting a too-fast command onto the velocity rows would turn its direction; scaling keeps it, the way
        the arm's own velocity limiting does. When a row cannot be met by scaling (its bound is negative), the
        nominal is left to the QP.
        """
        demand = g[14:] @ x_nom
        bound = h[14:]
        over = demand > bound
        if not over.any() or (bound < 0.0).any():
            return x_nom
        # A hair inside the binding row, so that rounding in G x cannot push the scaled command back out.
        return float(np.min(bound[over] / demand[over])) * (1.0 - 1e-12) * x_nom

    def filter_batch(
        self, commands: np.ndarray, states: RobotState, previous: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Filter N independent (command, state, previous command) triples at once, for sweeps and logs.

        Row ``i`` gets what :meth:`filter` returns for ``commands[i]`` in state ``i`` with
        ``self.previous = previous[i]`` (equal up to the rounding of vectorized sums): bounds, rows and the fast
        path are vectorized, DAQP runs per row that needs it. The filter's own memory is left alone.

        Args:
            commands: Nominal commands. Shape: (N, 4).
            states: Each of :data:`STATE_KEYS` with a leading axis of N.
            previous: The rate limit's reference per row (default: zeros). Shape: (N, 3).

        Returns:
            The commands to send (N, 4), which rows got the hold fallback (N,), and per row what was relaxed
            (N,): 0 nothing, 1 the rate limit, 2 the rate limit and the joint velocity-change rows.
        """
        commands = np.asarray(commands, dtype=np.float64)
        n = commands.shape[0]
        p, v, q, qd = (np.asarray(states[key], dtype=np.float64).reshape(n, -1) for key in STATE_KEYS[:4])
        prev = np.zeros((n, 3)) if previous is None else np.asarray(previous, dtype=np.float64)
        held = ~np.isfinite(np.hstack([commands, p, v, q, qd])).all(axis=1)
        out = np.clip(np.where(held[:, None], 0.0, commands), -1.0, 1.0)
        p, v, q, qd = (np.where(held[:, None], 0.0, a) for a in (p, v, q, qd))
        cbf_lb, cbf_ub = self.workspace_cbf_bounds(p, v)
        lb, ub = _clamp(cbf_lb, cbf_ub, *self.reach(prev))
        unique, index = np.unique(q, axis=0, return_inverse=True)  # logs repeat states (an arm at rest)
        maps = np.stack([self.kinematics.displacement_map(row).copy() for row in unique])[index.reshape(-1)]
        g = self._g_scale @ maps
        dt = self.ctrl_dt
        h = np.hstack([np.hstack([q, qd]) @ self._h_state.T + self._h0, np.maximum(dt * (qd + self.change), 0.0),
                       np.maximum(dt * (self.change - qd), 0.0)])  # fmt: skip
        target = np.minimum(np.maximum(out[:, :3], lb), ub)
        demand = np.einsum("nij,nj->ni", g[:, 14:], target)
        over = demand > h[:, 14:]
        scale = np.where(over, h[:, 14:] / np.where(over, demand, 1.0), np.inf).min(axis=1)
        scalable = over.any(axis=1) & (h[:, 14:] >= 0.0).all(axis=1)
        target[scalable] *= scale[scalable, None] * (1.0 - 1e-12)
        x = np.minimum(np.maximum(target, lb), ub)
        needs_qp = ~(np.einsum("nij,nj->ni", g, x) <= h).all(axis=1) & ~held
        relaxed = np.zeros(n, dtype=np.int8)
        for i in np.flatnonzero(needs_qp):
            xi = self._solve(target[i], g[i], h[i], lb[i], ub[i])
            if xi is None:
                relaxed[i] = 1
                free = _clamp(cbf_lb[i], cbf_ub[i], *self.reach(prev[i], False))
                xi = self._solve(target[i], g[i], h[i], *free)
                if xi is None:
                    relaxed[i] = 2
                    xi = self._solve(target[i], g[i, :28], h[i, :28], *free)
            if xi is None:
                held[i] = True
            else:
                x[i] = xi
        out[:, :3] = x
        for i in np.flatnonzero(held):
            out[i] = self.fallback.command({"gripper_width": np.asarray(states["gripper_width"])[i]})
        return out, held, relaxed

    def _hold(self, state: RobotState, report: FilterReport, reason: str) -> tuple[np.ndarray, FilterReport]:
        out = self.fallback.command(state)
        report.changed, report.fallback = True, reason
        self.previous = out[:3].copy()
        return out, report

    def _solve(
        self, target: np.ndarray, g: np.ndarray, h: np.ndarray, lb: np.ndarray, ub: np.ndarray
    ) -> np.ndarray | None:
        """``argmin ||x - target||^2`` subject to ``lb <= x <= ub``, ``G x <= h`` on DAQP; None when infeasible."""
        x = qpsolvers.solve_qp(self._p, -2.0 * target, g, h - _SOLVER_SLACK, lb=lb, ub=ub, solver="daqp")
        if x is None or not np.isfinite(x).all():
            return None
        x = np.minimum(np.maximum(x, lb), ub)  # the bounds exactly
        if (g @ x > h).any():
            return None
        return x

    def _binding(self, x: np.ndarray, x_nom: np.ndarray, lb: np.ndarray, ub: np.ndarray, g: np.ndarray,
                 h: np.ndarray, p: np.ndarray, v: np.ndarray, rate: bool) -> list[str]:  # fmt: skip
        """Names of the constraints that hold ``x`` away from ``x_nom`` (bounds) or have no slack left (rows)."""
        w_lb, w_ub = self.workspace_cbf_bounds(p, v)
        low, high = self.reach(self.previous, rate)
        names = []
        for i, axis in enumerate(AXES):
            if x_nom[i] < x[i] and x[i] <= lb[i]:
                names.append(f"tcp_{axis}_low" if w_lb[i] >= low[i] else self._reach_name(axis, low[i], rate))
            elif x_nom[i] > x[i] and x[i] >= ub[i]:
                names.append(f"tcp_{axis}_high" if w_ub[i] <= high[i] else self._reach_name(axis, high[i], rate))
        names += [self.constraint_names[i] for i in np.flatnonzero(g @ x >= h - 2.0 * _SOLVER_SLACK)]
        return names

    @staticmethod
    def _reach_name(axis: str, reach: float, rate: bool) -> str:
        return f"rate_{axis}" if rate and abs(reach) != 1.0 else "action_box"
