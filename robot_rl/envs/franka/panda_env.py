"""The Panda base environment: Cartesian control of a simulated Franka arm on a table.

Shared by the Reach, Push, Slide and PickAndPlace tasks. Frames: world frame with z up, the
robot base at the origin, the table top at z = 0; the arm faces +x.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import gymnasium as gym
import mujoco
import numpy as np

from robot_rl.envs.base import MujocoGoalEnv
from robot_rl.envs.franka.controller import CartesianController, CartesianControllerConfig
from robot_rl.envs.franka.fr3_motion import Fr3Motion

FINGER_OPEN = 0.04
"""Per-finger opening when fully open [m] (0.08 m between the pads)."""
MOTIONS = ("servo", "fr3")
"""The values of the ``motion`` kwarg: how the joint set points move between two IK targets."""


class PandaEnv(MujocoGoalEnv):
    """Franka Panda with an end-effector displacement action; see the task classes for details.

    Action space ``Box(-1, 1, (4,), float64)``:

    ===  =====================================================  =========================
    idx  action                                                 unit after scaling
    ===  =====================================================  =========================
    0-2  TCP displacement target along world x, y, z            x ``max_displacement`` [m]
    3    gripper opening: -1 closed, +1 fully open (0.08 m)     absolute width command
    ===  =====================================================  =========================

    Each control period (``ctrl_dt``, 0.04 s) the TCP target is the current TCP position plus the
    scaled displacement, clipped to ``workspace_low`` / ``workspace_high``; a differential-IK
    controller turns it into joint position targets that the joint impedance servos track at
    the physics rate (``sim_dt`` 0.002 s). No mocap: the arm moves only through its actuators.
    Out-of-range action entries are clipped to [-1, 1]; NaN/inf or a wrong shape raises
    ``ValueError`` and leaves the simulation untouched.

    ``motion`` sets how the servos' set points move from one IK target to the next:

    - ``"servo"`` (default): a linear ramp over the period, which reaches each target at the period's
      end; its velocity steps at every period boundary (unbounded acceleration), which a real FR3
      refuses. The shipped policies were trained this way.
    - ``"fr3"``: the setpoint trajectory of :class:`~robot_rl.envs.franka.fr3_motion.Fr3Motion`, within
      0.8 of libfranka's FR3 velocity, acceleration and jerk limits (at most 8 rad/s^2 per joint), which
      the ROS node streams unchanged to the robot; the servos follow it (set point and velocity
      feed-forward, exact every ``fr3_chunk_steps`` physics steps and linear in between). The arm is
      slower to start and stop; a policy trained this way asks only for motion a real FR3 executes.
      ``env.unwrapped.motion`` is the generator (None in servo mode).
    """

    has_object: ClassVar[bool] = True
    block_gripper: ClassVar[bool] = False
    fr3_chunk_steps: ClassVar[int] = 4
    """Physics steps per chunk in ``motion="fr3"`` mode: the set point is exact every 4 x 2 ms, linear in between."""
    max_displacement: ClassVar[float] = 0.05
    """TCP displacement per control period at |action| = 1 [m]."""
    workspace_low: ClassVar[np.ndarray] = np.array([0.3, -0.4, 0.01])
    """Lower corner of the TCP workspace box [m, world]."""
    workspace_high: ClassVar[np.ndarray] = np.array([0.85, 0.4, 0.55])
    """Upper corner of the TCP workspace box [m, world]."""

    def __init__(
        self, controller: CartesianControllerConfig | None = None, motion: str = "servo", **kwargs: Any
    ) -> None:
        if not (isinstance(motion, str) and motion in MOTIONS):
            raise ValueError(f"`motion` must be one of {', '.join(map(repr, MOTIONS))}. Got {motion!r}.")
        self._controller_config = controller
        self.motion_mode = motion
        """``"servo"`` or ``"fr3"`` (see the class docstring)."""
        self.motion: Fr3Motion | None = None
        """The FR3 setpoint generator in ``motion="fr3"`` mode, else None."""
        super().__init__(**kwargs)

    def _setup(self) -> None:
        m = self.model
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float64)
        self._tcp = m.site("tcp").id
        self._goal_site = m.site("goal").id
        self._finger_qadr = np.array([m.jnt_qposadr[m.joint(n).id] for n in ("finger_joint1", "finger_joint2")])
        self._finger_dofadr = np.array([m.jnt_dofadr[m.joint(n).id] for n in ("finger_joint1", "finger_joint2")])
        self._arm_dofadr = np.array([m.jnt_dofadr[m.joint(f"joint{i}").id] for i in range(1, 8)])
        self._home_qpos = m.key_qpos[self._home_key][:7].copy()
        self.controller = CartesianController(m, self.data, self._home_qpos, self.ctrl_dt, self._controller_config)
        self._q_cmd_prev = self._home_qpos.copy()
        self._q_step = np.zeros(7)
        # kv / kp per arm servo [s]; actuator_gain_scale scales kp and kv together, so the ratio (the
        # servo's time constant) is the same under randomization.
        self._lead = -m.actuator_biasprm[:7, 2] / m.actuator_gainprm[:7, 0]
        self._inv_ctrl_dt = 1.0 / self.ctrl_dt
        if self.motion_mode == "fr3":
            self.motion = Fr3Motion(self.ctrl_dt)
            # The period in chunks of `fr3_chunk_steps` physics steps: the servos' set point is exact at each chunk
            # boundary and ramps linearly (the integrator activation) in between.
            bounds = sorted({*range(0, self.n_substeps, self.fr3_chunk_steps), self.n_substeps})
            self._chunk_steps = np.diff(bounds).tolist()
            self._chunk_times = np.array(bounds[:-1] + [0]) * self.sim_dt
            self._chunk_times[-1] = self.ctrl_dt
            self._inv_chunk_dt = 1.0 / (np.diff(bounds) * self.sim_dt)[:, None]
            self._set_points = np.zeros((len(bounds), 7))
            self._slopes = np.zeros((len(bounds) - 1, 7))
            self._chunk_starts = self._set_points[:-1]
            # The set point ramps may be faster than the Panda servo's velocity range (the FR3's is wider, and the
            # feed-forward adds to it): the generator bounds the motion, the actuator's ctrl clip must not.
            m.actuator_ctrllimited[:7] = 0
        # The per-step code reads the state through views made once here (every `data.<field>`
        # access builds a new array) and does its scalar math on Python floats: several times
        # faster than numpy on 3-vectors, and the same IEEE arithmetic, so results are identical.
        d = self.data
        self._tcp_pos = d.site_xpos[self._tcp]
        tcp_body = int(m.site_bodyid[self._tcp])
        self._tcp_cvel = d.cvel[tcp_body]
        self._tcp_com = d.subtree_com[int(m.body_rootid[tcp_body])]
        self._qpos = d.qpos
        self._qvel = d.qvel
        self._arm_ctrl = d.ctrl[:7]
        self._arm_act = d.act[:7]
        self._finger_ctrl = d.ctrl[7:9]
        self._finger_q1, self._finger_q2 = (int(i) for i in self._finger_qadr)
        self._finger_v1, self._finger_v2 = (int(i) for i in self._finger_dofadr)
        if self.has_object:
            self._obj_body = m.body("object").id
            joint = m.joint("object").id
            self._obj_qadr = int(m.jnt_qposadr[joint])
            self._obj_dofadr = int(m.jnt_dofadr[joint])
            self._obj_pos = d.qpos[self._obj_qadr : self._obj_qadr + 3]
            self._obj_xmat = d.xmat[self._obj_body]
        mujoco.mj_resetDataKeyframe(m, self.data, self._home_key)
        mujoco.mj_forward(m, self.data)
        self.initial_tcp = self.data.site_xpos[self._tcp].copy()
        """TCP position at the home keyframe [m, world]."""
        self._goal = self.initial_tcp.copy()

    def _object_body(self) -> int | None:
        return self._obj_body if self.has_object else None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset (see :meth:`MujocoGoalEnv.reset`) and align the controller's command with it."""
        out = super().reset(seed=seed, options=options)
        self.controller.reset()
        self.controller.update_command_kinematics()
        self._q_cmd_prev[:] = self.data.qpos[:7]
        if self.motion is not None:
            self.motion.reset(self.data.qpos[:7])
        return out

    # ------------------------------------------------------------------ control
    def _apply_action(self, action: np.ndarray) -> None:
        # The action displaces the *measured* TCP (what the policy observes); the controller reaches
        # that target from its commanded posture, so a lagging arm is not commanded twice.
        ax, ay, az, grip = action.tolist()
        mx, my, mz = self._tcp_pos.tolist()
        cx, cy, cz = self.controller.commanded_tcp.tolist()
        scale = self.max_displacement
        displacement = ((mx - cx) + scale * ax, (my - cy) + scale * ay, (mz - cz) + scale * az)
        previous = self._q_cmd_prev
        q_cmd = self.controller.joint_targets(displacement, self.workspace_low.tolist(), self.workspace_high.tolist())
        if self.motion is not None:
            self._plan_fr3(q_cmd)
            self._finger_ctrl[:] = 0.0 if self.block_gripper else 0.5 * (grip + 1.0) * FINGER_OPEN
            return
        # The servos' set points (their activations) ramp from the previous command to this one over
        # the period at the velocity ctrl, as the robot's joint controller interpolates a streamed
        # trajectory. Starting the ramp (kv / kp) * velocity ahead cancels the servo's steady-state
        # lag kv qdot / kp, so the joints follow the ramp itself.
        np.subtract(q_cmd, previous, out=self._q_step)
        np.multiply(self._q_step, self._inv_ctrl_dt, out=self._arm_ctrl)
        np.multiply(self._arm_ctrl, self._lead, out=self._q_step)
        np.add(previous, self._q_step, out=self._arm_act)
        previous[:] = q_cmd
        # Both finger servos get the same width command.
        self._finger_ctrl[:] = 0.0 if self.block_gripper else 0.5 * (grip + 1.0) * FINGER_OPEN

    def _plan_fr3(self, q_cmd: np.ndarray) -> None:
        """The period's FR3 setpoints towards ``q_cmd``, as the servos' set point at each chunk boundary."""
        assert self.motion is not None
        q, dq, _ = self.motion.plan(q_cmd, self._chunk_times)
        # Set point plus (kv / kp) x setpoint velocity: the servo then applies kp (q_d - q) + kv (dq_d - dq), the
        # joint impedance law of the robot's own controller tracking (q_d, dq_d).
        points, slopes = self._set_points, self._slopes
        np.multiply(dq, self._lead, out=points)
        np.add(points, q, out=points)
        np.subtract(points[1:], points[:-1], out=slopes)
        np.multiply(slopes, self._inv_chunk_dt, out=slopes)

    def _simulate(self) -> None:
        if self.motion is None:
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
            return
        m, d, act, ctrl, step = self.model, self.data, self._arm_act, self._arm_ctrl, mujoco.mj_step
        for point, slope, n in zip(self._chunk_starts, self._slopes, self._chunk_steps, strict=True):
            act[:] = point
            ctrl[:] = slope
            step(m, d, nstep=n)

    def _neutral_action(self) -> np.ndarray:
        # Hold position and keep the current finger opening.
        width = float(np.mean(self.data.qpos[self._finger_qadr]))
        return np.array([0.0, 0.0, 0.0, 2.0 * width / FINGER_OPEN - 1.0])

    def robot_state(self) -> dict[str, np.ndarray]:
        """The measured robot state the safety filter and its violation check read (copies).

        Keys: ``tcp_pos`` [m, world] (3,), ``tcp_vel`` [m/s, world] (3,), ``joint_pos`` [rad] (7,),
        ``joint_vel`` [rad/s] (7,), ``gripper_width`` [m] (1,). On hardware the same keys come from
        ``/joint_states`` and forward kinematics.
        """
        qpos, qvel = self._qpos, self._qvel
        return {
            "tcp_pos": self._tcp_pos.copy(),
            "tcp_vel": np.array(self._tcp_velocity()),
            "joint_pos": qpos[:7].copy(),
            "joint_vel": qvel[:7].copy(),
            "gripper_width": np.array([qpos[self._finger_q1] + qpos[self._finger_q2]]),
        }

    @property
    def tcp_position(self) -> np.ndarray:
        """Measured TCP position [m, world]. Shape: (3,)."""
        return self.data.site_xpos[self._tcp].copy()

    # -------------------------------------------------------------- observation
    def _tcp_velocity(self) -> tuple[float, float, float]:
        """TCP linear velocity [m/s, world].

        ``mj_objectVelocity`` (site, world frame) transcribed to Python floats, bit-identical: the
        linear part of the body's com-based velocity ``cvel`` moved to the site,
        ``v - (p_site - p_com) x w``.
        """
        wx, wy, wz, vx, vy, vz = self._tcp_cvel.tolist()
        px, py, pz = self._tcp_pos.tolist()
        cx, cy, cz = self._tcp_com.tolist()
        dx, dy, dz = px - cx, py - cy, pz - cz
        return vx - (dy * wz - dz * wy), vy - (dz * wx - dx * wz), vz - (dx * wy - dy * wx)

    def _observation(self) -> np.ndarray:
        # One np.array call on Python floats; the layout is OBSERVATION_TABLE's.
        gx, gy, gz = self._tcp_pos.tolist()
        vx, vy, vz = self._tcp_velocity()
        qpos, qvel = self._qpos.tolist(), self._qvel.tolist()
        f1, f2 = qpos[self._finger_q1], qpos[self._finger_q2]
        fv1, fv2 = qvel[self._finger_v1], qvel[self._finger_v2]
        if not self.has_object:
            return np.array((gx, gy, gz, f1, f2, vx, vy, vz, fv1, fv2))
        q, v = self._obj_qadr, self._obj_dofadr
        ox, oy, oz = qpos[q : q + 3]
        roll, pitch, yaw = _quat_to_euler(*qpos[q + 3 : q + 7])
        lx, ly, lz, ax, ay, az = qvel[v : v + 6]
        # Free-joint angular velocity is in the body frame; rotate it to the world frame (the
        # arithmetic of mju_mulMatVec3).
        r0, r1, r2, r3, r4, r5, r6, r7, r8 = self._obj_xmat.tolist()
        wx, wy, wz = r0 * ax + r1 * ay + r2 * az, r3 * ax + r4 * ay + r5 * az, r6 * ax + r7 * ay + r8 * az
        return np.array(
            (
                *(gx, gy, gz),  # 0-2 TCP position
                *(ox, oy, oz),  # 3-5 object position
                *(ox - gx, oy - gy, oz - gz),  # 6-8 object relative to the TCP
                *(f1, f2),  # 9-10 finger positions
                *(roll, pitch, yaw),  # 11-13 object orientation
                *(lx - vx, ly - vy, lz - vz),  # 14-16 object velocity relative to the TCP
                *(wx, wy, wz),  # 17-19 object angular velocity
                *(vx, vy, vz),  # 20-22 TCP velocity
                *(fv1, fv2),  # 23-24 finger velocities
            )
        )

    def _achieved_goal(self) -> np.ndarray:
        return self._obj_pos if self.has_object else self._tcp_pos

    def _set_goal(self, goal: np.ndarray) -> None:
        self._goal = np.asarray(goal, dtype=np.float64).copy()
        self.model.site_pos[self._goal_site] = self._goal

    def _place_object(self, xy: np.ndarray, z: float) -> None:
        q = self._obj_qadr
        self.data.qpos[q : q + 3] = (xy[0], xy[1], z)
        self.data.qpos[q + 3 : q + 7] = (1.0, 0.0, 0.0, 0.0)
        self.data.qvel[self._obj_dofadr : self._obj_dofadr + 6] = 0.0


OBSERVATION_TABLE = """
    Observation ``observation`` (``Box(-inf, inf, (25,), float64)``; Reach has the 10 entries
    without an object: TCP position, finger positions, TCP velocity, finger velocities):

    =====  ===========================================================  ============
    idx    quantity                                                     unit
    =====  ===========================================================  ============
    0-2    TCP position (world)                                         m
    3-5    object position (world)                                      m
    6-8    object position relative to the TCP                          m
    9-10   finger positions (left, right)                               m
    11-13  object orientation, XYZ Euler angles                         rad
    14-16  object linear velocity relative to the TCP (world)           m/s
    17-19  object angular velocity (world)                              rad/s
    20-22  TCP linear velocity (world)                                  m/s
    23-24  finger velocities                                            m/s
    =====  ===========================================================  ============

    ``achieved_goal``: object position [m] (TCP position for Reach). ``desired_goal``: goal
    position [m]. Both ``Box(-inf, inf, (3,), float64)``.
"""


def _quat_to_euler(w: float, x: float, y: float, z: float) -> tuple[float, float, float]:
    """XYZ (roll, pitch, yaw) Euler angles [rad] of a unit quaternion (w, x, y, z)."""
    roll = math.atan2(2.0 * (w * x + y * z), 1.0 - 2.0 * (x * x + y * y))
    pitch = math.asin(min(1.0, max(-1.0, 2.0 * (w * y - z * x))))
    yaw = math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))
    return roll, pitch, yaw
