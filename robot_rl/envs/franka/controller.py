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

import mujoco
import numpy as np

PANDA_JOINT_VELOCITY_LIMIT = np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61])
"""Panda joint velocity limits [rad/s] (Franka's published specification)."""


@dataclasses.dataclass(frozen=True)
class CartesianControllerConfig:
    """Gains of the differential-IK controller."""

    damping: float = 0.05
    """Damped-least-squares regularisation lambda [m] (larger is smoother near singularities)."""
    orientation_gain: float = 0.5
    """Fraction of the orientation error corrected per control period [1]."""
    nullspace_gain: float = 0.2
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
        self._err = np.zeros(6)
        self._sol = np.zeros(6)
        self._quat = np.zeros(4)
        self._rot_err = np.zeros(3)
        self._rot_err_world = np.zeros(3)
        self._jac = np.zeros((6, 7))
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._damp = (self.config.damping**2) * np.eye(6)
        self._eye7 = np.eye(7)
        self.target_rotation = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])
        """Desired TCP orientation (world frame): gripper pointing down, fingers along world y."""
        self._target_quat = np.zeros(4)
        mujoco.mju_mat2Quat(self._target_quat, self.target_rotation.flatten())

    def reset(self) -> None:
        """Set the commanded posture to the measured one (call after every env reset)."""
        self._q_cmd[:] = self.data.qpos[:7]

    @property
    def commanded_tcp(self) -> np.ndarray:
        """TCP position of the commanded posture [m, world]. Shape: (3,)"""
        return self._cmd.site_xpos[self._site]

    def update_command_kinematics(self) -> None:
        """Forward kinematics of the commanded posture (after reset or an external change)."""
        self._cmd.qpos[:7] = self._q_cmd
        mujoco.mj_kinematics(self.model, self._cmd)
        mujoco.mj_comPos(self.model, self._cmd)

    def joint_targets(self, displacement: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Advance the commanded posture so its TCP moves by ``displacement`` [m, world].

        The commanded TCP target is clipped to the box [``low``, ``high``] [m, world]. Returns the
        joint position targets [rad] for the servos. Shape: (7,)
        """
        model, cmd = self.model, self._cmd
        q_cmd = self._q_cmd
        err = self._err
        tcp = cmd.site_xpos[self._site]
        err[:3] = np.minimum(np.maximum(tcp + displacement, low), high) - tcp
        mujoco.mju_mat2Quat(self._quat, cmd.site_xmat[self._site])
        # mju_subQuat gives the rotation from the current to the target orientation in the TCP's
        # own frame; the rotational Jacobian is in the world frame, so rotate it there.
        mujoco.mju_subQuat(self._rot_err, self._target_quat, self._quat)
        mujoco.mju_mulMatVec3(self._rot_err_world, cmd.site_xmat[self._site], self._rot_err)
        err[3:] = self.config.orientation_gain * self._rot_err_world
        mujoco.mj_jacSite(model, cmd, self._jacp, self._jacr, self._site)
        jac = self._jac
        jac[:3] = self._jacp[:, :7]
        jac[3:] = self._jacr[:, :7]
        # dq = J+ err + (I - J+ J) p with the damped pseudo-inverse J+ = J^T (J J^T + lambda^2 I)^-1
        # and the posture pull p = k (q_home - q), as one 6x6 Cholesky solve (no 7x7 matrices).
        posture = self.config.nullspace_gain * (self.home_qpos - q_cmd)
        gram = jac @ jac.T + self._damp
        mujoco.mju_cholFactor(gram, 0.0)
        rhs = err - jac @ posture
        mujoco.mju_cholSolve(self._sol, gram, rhs)
        dq = jac.T @ self._sol + posture
        # Respect joint velocity limits over one period, keeping the direction of motion.
        ratio = (np.abs(dq) * self._inv_max_step).max()
        if ratio > 1.0:
            dq /= ratio
        q_cmd += dq
        # Joint limits, and anti-windup: the command never runs more than a few periods of motion
        # ahead of the measured posture (a blocked arm does not wind up a large jump).
        q = self.data.qpos[:7]
        np.clip(q_cmd, np.maximum(self.q_low, q - self._max_lead), np.minimum(self.q_high, q + self._max_lead), out=q_cmd)
        self.update_command_kinematics()
        return q_cmd
