"""Cartesian end-effector controller for the Panda: differential IK to joint position targets.

The real FR3 is commanded by streaming joint (or Cartesian) setpoints to its 1 kHz joint
impedance controller. This controller does the same in simulation: it keeps a *commanded*
posture, and each control period moves the commanded TCP by the policy's displacement with one
damped-least-squares step on the 6-D task (TCP position and a fixed gripper-down orientation),
a null-space pull towards the home posture, joint steps bounded by the Panda's velocity limits
over one period, and the joint position limits. The MJCF's joint servos track the commanded
posture at the physics rate. Working on the commanded rather than the measured posture gives
steady-state motion equal to the command (no servo-lag shrinkage), as on the real robot; the
command is held within a few periods of motion of the measured posture so a blocked arm does
not wind up.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence

import mujoco
import numpy as np

PANDA_JOINT_VELOCITY_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
"""Panda joint velocity limits [rad/s] (Franka's published specification)."""


@dataclasses.dataclass(frozen=True)
class CartesianControllerConfig:
    """Gains of the differential-IK controller."""

    damping: float = 0.01
    """Damped-least-squares regularisation lambda [m] (larger is smoother near singularities)."""
    orientation_gain: float = 0.5
    """Fraction of the orientation error corrected per control period [1]."""
    nullspace_gain: float = 0.1
    """Fraction of the posture error (to the home pose) corrected per period in the null space [1]."""

    def __post_init__(self) -> None:
        if self.damping <= 0:
            raise ValueError(f"`damping` must be > 0. Got {self.damping}.")
        for name in ("orientation_gain", "nullspace_gain"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Got {value}.")


class CartesianController:
    """Maps a TCP position target to 7 joint position targets, one IK step per control period.

    Args:
        model: The MuJoCo model holding the arm (joints ``joint1`` .. ``joint7``, site ``tcp``).
        data: The MuJoCo data it reads the current state from.
        home_qpos: Home posture the null space is pulled towards. Shape: (7,)
        ctrl_dt: Control period [s]; bounds each joint step by velocity limit x ctrl_dt.
        config: Controller gains.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        home_qpos: np.ndarray,
        ctrl_dt: float,
        config: CartesianControllerConfig | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.config = config or CartesianControllerConfig()
        self._site = model.site("tcp").id
        self._qadr = np.array([model.jnt_qposadr[model.joint(f"joint{i}").id] for i in range(1, 8)])
        self._dofadr = np.array([model.jnt_dofadr[model.joint(f"joint{i}").id] for i in range(1, 8)])
        self.home_qpos = np.asarray(home_qpos, dtype=np.float64).copy()
        self.q_low = model.jnt_range[[model.joint(f"joint{i}").id for i in range(1, 8)], 0].copy()
        self.q_high = model.jnt_range[[model.joint(f"joint{i}").id for i in range(1, 8)], 1].copy()
        self.max_step = PANDA_JOINT_VELOCITY_LIMIT * ctrl_dt
        if not (np.array_equal(self._qadr, np.arange(7)) and np.array_equal(self._dofadr, np.arange(7))):
            raise ValueError("the arm joints joint1..joint7 must be the model's first 7 joints.")
        self._inv_max_step = 1.0 / self.max_step
        self._max_lead = 2.0 * self.max_step
        self._q_cmd = self.home_qpos.copy()
        self._cmd = mujoco.MjData(model)
        """Scratch data holding the commanded posture (its kinematics only)."""
        self._damp = (self.config.damping**2) * np.eye(6)
        self.target_rotation = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
        """Desired TCP orientation (world frame): gripper pointing down, fingers along world y."""
        self._target_quat = np.zeros(4)
        mujoco.mju_mat2Quat(self._target_quat, self.target_rotation.flatten())

        # Hot-path state for joint_targets, which runs once per env step: views into the MjData
        # buffers (every `data.qpos` attribute access builds a new array) and preallocated outputs,
        # so the step allocates no arrays; 3-vector and scalar math is done on Python floats
        # (several times cheaper than numpy calls on tiny arrays, and the same IEEE operations).
        self._qpos = data.qpos[:7]
        self._cmd_qpos = self._cmd.qpos[:7]
        self._cmd_tcp_pos = self._cmd.site_xpos[self._site]
        self._cmd_tcp_mat = self._cmd.site_xmat[self._site]
        self._orientation_gain = float(self.config.orientation_gain)
        self._nullspace_gain = float(self.config.nullspace_gain)
        self._inv_max_step_list = self._inv_max_step.tolist()
        # mj_jacSite writes the 3 x nv position and rotation Jacobians straight into the two halves
        # of one 6 x nv buffer; the arm's 7 columns are a strided view of it (no copies).
        self._jac_full = np.zeros((6, model.nv))
        self._jacp = self._jac_full[:3]
        self._jacr = self._jac_full[3:]
        self._jac = self._jac_full[:, :7]
        self._jac_t = self._jac.T
        self._target_quat_floats = tuple(self._target_quat.tolist())
        self._err = np.zeros(6)
        self._posture = np.zeros(7)
        self._gram = np.zeros((6, 6))
        self._gram_exact = np.zeros((6, 6))
        self._projector_reg = 1e-6 * np.eye(6)
        self._sol_null = np.zeros(6)
        self._rhs = np.zeros(6)
        self._sol = np.zeros(6)
        self._dq = np.zeros(7)
        self._low_bound = np.zeros(7)
        self._high_bound = np.zeros(7)

    def reset(self) -> None:
        """Set the commanded posture to the measured one (call after every env reset)."""
        self._q_cmd[:] = self.data.qpos[:7]

    @property
    def commanded_tcp(self) -> np.ndarray:
        """TCP position of the commanded posture [m, world] (a view: it follows the command). Shape: (3,)."""
        return self._cmd_tcp_pos

    def update_command_kinematics(self) -> None:
        """Forward kinematics of the commanded posture (after reset or an external change)."""
        self._cmd_qpos[:] = self._q_cmd
        mujoco.mj_kinematics(self.model, self._cmd)
        mujoco.mj_comPos(self.model, self._cmd)

    def joint_targets(self, displacement: Sequence[float], low: Sequence[float], high: Sequence[float]) -> np.ndarray:
        """Advance the commanded posture so its TCP moves by ``displacement`` [m, world].

        The commanded TCP target is clipped to the box [``low``, ``high``] [m, world]. Returns the
        joint position targets [rad] for the servos (the controller's own buffer: copy it to keep
        it past the next call). Shape: (7,)

        The same arithmetic as the textbook numpy form, operation for operation, so results are
        bit-identical to it; only the bookkeeping is cheaper (floats, views, ``out=`` buffers).
        """
        x, y, z = self._cmd_tcp_pos.tolist()
        dx, dy, dz = displacement
        lx, ly, lz = low
        hx, hy, hz = high
        rx, ry, rz = _orientation_error(self._cmd_tcp_mat.tolist(), self._target_quat_floats)
        k = self._orientation_gain
        err = self._err
        err[:] = (
            min(max(x + dx, lx), hx) - x,
            min(max(y + dy, ly), hy) - y,
            min(max(z + dz, lz), hz) - z,
            k * rx,
            k * ry,
            k * rz,
        )
        mujoco.mj_jacSite(self.model, self._cmd, self._jacp, self._jacr, self._site)
        # dq = J+ err + (I - J# J) p: the task step through the damped pseudo-inverse
        # J+ = J^T (J J^T + lambda^2 I)^-1 (smooth near singularities), the posture pull
        # p = k (q_home - q) through a near-exact projector (J# with a 1e-6 regulariser), so the
        # posture pull does not leak into the TCP and a held pose does not creep. Two 6x6 Cholesky
        # solves, no 7x7 matrices.
        jac, jac_t = self._jac, self._jac_t
        q_cmd, posture, gram, rhs, dq = self._q_cmd, self._posture, self._gram, self._rhs, self._dq
        gram_exact = self._gram_exact
        np.subtract(self.home_qpos, q_cmd, out=posture)
        np.multiply(posture, self._nullspace_gain, out=posture)
        np.matmul(jac, jac_t, out=gram)
        np.add(gram, self._projector_reg, out=gram_exact)
        np.add(gram, self._damp, out=gram)
        mujoco.mju_cholFactor(gram, 0.0)
        mujoco.mju_cholFactor(gram_exact, 0.0)
        mujoco.mju_cholSolve(self._sol, gram, err)
        np.matmul(jac, posture, out=rhs)
        mujoco.mju_cholSolve(self._sol_null, gram_exact, rhs)
        np.subtract(self._sol, self._sol_null, out=self._sol)
        np.matmul(jac_t, self._sol, out=dq)
        np.add(dq, posture, out=dq)
        # Respect joint velocity limits over one period, keeping the direction of motion.
        ratio = max(map(operator.mul, map(abs, dq.tolist()), self._inv_max_step_list))
        if ratio > 1.0:
            np.divide(dq, ratio, out=dq)
        np.add(q_cmd, dq, out=q_cmd)
        # Joint limits, and anti-windup: the command never runs more than a few periods of motion
        # ahead of the measured posture (a blocked arm does not wind up a large jump). Two-sided
        # clip as maximum then minimum, which is what np.clip computes.
        q, lead, low_bound, high_bound = self._qpos, self._max_lead, self._low_bound, self._high_bound
        np.maximum(self.q_low, np.subtract(q, lead, out=low_bound), out=low_bound)
        np.minimum(self.q_high, np.add(q, lead, out=high_bound), out=high_bound)
        np.maximum(q_cmd, low_bound, out=q_cmd)
        np.minimum(q_cmd, high_bound, out=q_cmd)
        self.update_command_kinematics()
        return q_cmd


def _orientation_error(mat: list[float], target_quat: tuple[float, ...]) -> tuple[float, float, float]:
    """Rotation vector [rad, world] from the orientation ``mat`` (row-major 3x3) to ``target_quat``.

    MuJoCo's ``mju_mat2Quat(quat, mat)``, ``mju_subQuat(err, target_quat, quat)`` (the rotation in
    the frame of ``mat``) and ``mju_mulMatVec3(err_world, mat, err)``, transcribed operation for
    operation to Python floats: bit-identical to the three calls (MuJoCo's x86-64 build has no
    fused multiply-adds; Python's math uses the same libm), without their per-call overhead.
    """
    m0, m1, m2, m3, m4, m5, m6, m7, m8 = mat
    # mju_mat2Quat: the largest component first, then mju_normalize4.
    if m0 + m4 + m8 > 0:
        w = 0.5 * math.sqrt(1.0 + m0 + m4 + m8)
        x = 0.25 * (m7 - m5) / w
        y = 0.25 * (m2 - m6) / w
        z = 0.25 * (m3 - m1) / w
    elif m0 > m4 and m0 > m8:
        x = 0.5 * math.sqrt(1.0 + m0 - m4 - m8)
        w = 0.25 * (m7 - m5) / x
        y = 0.25 * (m1 + m3) / x
        z = 0.25 * (m2 + m6) / x
    elif m4 > m8:
        y = 0.5 * math.sqrt(1.0 - m0 + m4 - m8)
        w = 0.25 * (m2 - m6) / y
        x = 0.25 * (m1 + m3) / y
        z = 0.25 * (m5 + m7) / y
    else:
        z = 0.5 * math.sqrt(1.0 - m0 - m4 + m8)
        w = 0.25 * (m3 - m1) / z
        x = 0.25 * (m2 + m6) / z
        y = 0.25 * (m5 + m7) / z
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if norm < mujoco.mjMINVAL:
        w, x, y, z = 1.0, 0.0, 0.0, 0.0
    elif abs(norm - 1.0) > mujoco.mjMINVAL:
        inv = 1.0 / norm
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
    # mju_subQuat: d = conj(quat) * target_quat, then mju_quat2Vel(d, dt=1) as axis * angle.
    tw, tx, ty, tz = target_quat
    x, y, z = -x, -y, -z
    dw = w * tw - x * tx - y * ty - z * tz
    dx = w * tx + x * tw + y * tz - z * ty
    dy = w * ty - x * tz + y * tw + z * tx
    dz = w * tz + x * ty - y * tx + z * tw
    sin_half = math.sqrt(dx * dx + dy * dy + dz * dz)
    if sin_half < mujoco.mjMINVAL:
        ax, ay, az = 1.0, 0.0, 0.0
    else:
        inv = 1.0 / sin_half
        ax, ay, az = dx * inv, dy * inv, dz * inv
    angle = 2 * math.atan2(sin_half, dw)
    if angle > math.pi:
        angle -= 2 * math.pi
    ex, ey, ez = ax * angle, ay * angle, az * angle
    # mju_mulMatVec3: from the frame of mat to the world frame.
    return m0 * ex + m1 * ey + m2 * ez, m3 * ex + m4 * ey + m5 * ez, m6 * ex + m7 * ey + m8 * ez
