"""The FR3 side of a Franka policy, ROS-free: measured joints in, env observation out, Cartesian action to joints.

A robot_rl Franka policy observes what :class:`robot_rl.envs.franka.panda_env.PandaEnv` computes
(TCP pose and velocity, object pose and velocity, finger positions, the goal) and acts with a TCP
displacement. On hardware the measurements arrive as joint states plus a perceived object pose,
and ``franka_ros2`` takes joint position targets. :class:`Fr3Kinematics` bridges the two on the
very MuJoCo model the simulation uses:

- :meth:`Fr3Kinematics.observe`: forward kinematics (TCP position, TCP velocity ``J(q) dq``, where the env
  reads them: one physics step before the joint state) and the env's observation vector, entry for entry as
  ``PandaEnv._observation`` lays it out;
- :meth:`Fr3Kinematics.joint_targets`: the env's ``_apply_action`` arithmetic: the displacement
  from the measured TCP (carried on to where the target's motion starts when the command path starts it
  later), clipped to the workspace box, one differential-IK step of
  :class:`~robot_rl.envs.franka.controller.CartesianController` from the commanded posture, bounded
  by the joint velocity and position limits.
- :attr:`Fr3Kinematics.motion`: for an env made with ``motion="fr3"``, a fresh copy of its setpoint
  generator (:class:`~robot_rl.envs.franka.fr3_motion.Fr3Motion`, same parameters), which the command path
  runs on these targets as the env does.

Frames: ``fr3_link0`` (the robot base) is the sim's world frame: z up, the arm facing +x, the table
top at z = 0. Object poses and goals must be given in that frame.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import mujoco
import numpy as np

FR3_ARM_JOINTS: tuple[str, ...] = tuple(f"fr3_joint{i}" for i in range(1, 8))
"""Arm joint names in ``/joint_states`` (franka_ros2), in the order the model uses."""
FR3_FINGER_JOINTS: tuple[str, ...] = ("fr3_finger_joint1", "fr3_finger_joint2")
"""Finger joint names (franka_gripper), each the opening of one finger [m]."""
BASE_FRAME = "fr3_link0"
"""Frame of every pose, point and twist the FR3 side exchanges (the sim's world frame)."""


@dataclasses.dataclass
class Fr3Measurement:
    """The measured state one control step uses (arrays copied from the messages)."""

    joint_pos: np.ndarray
    """Arm joint positions [rad]. Shape: (7,)."""
    joint_vel: np.ndarray
    """Arm joint velocities [rad/s]. Shape: (7,)."""
    finger_pos: np.ndarray
    """Finger openings (left, right) [m]. Shape: (2,)."""
    finger_vel: np.ndarray
    """Finger velocities [m/s]. Shape: (2,)."""
    object_pos: np.ndarray | None = None
    """Object position [m, base frame]. Shape: (3,). None for tasks without an object."""
    object_quat: np.ndarray | None = None
    """Object orientation (w, x, y, z). Shape: (4,)."""
    object_lin_vel: np.ndarray | None = None
    """Object linear velocity [m/s, base frame]. Shape: (3,)."""
    object_ang_vel: np.ndarray | None = None
    """Object angular velocity [rad/s, base frame]. Shape: (3,)."""


class Fr3Kinematics:
    """Observation and joint targets for one Franka env, on that env's MuJoCo model.

    Args:
        env: The robot_rl Franka env the policy was trained on (``robot_rl.make(env_id)``); only its
            model, constants and controller configuration are used, never its simulation state.

    Raises:
        ValueError: ``env`` is not a Franka env.
    """

    def __init__(self, env: Any) -> None:
        from robot_rl.envs.franka.controller import CartesianController
        from robot_rl.envs.franka.panda_env import FINGER_OPEN, PandaEnv, _quat_to_euler

        unwrapped = env.unwrapped
        if not isinstance(unwrapped, PandaEnv):
            raise ValueError(f"Fr3Kinematics needs a robot_rl Franka env. Got {type(unwrapped).__name__}.")
        self.model = unwrapped.model
        self.data = mujoco.MjData(self.model)
        self.ctrl_dt = float(unwrapped.ctrl_dt)
        self.lag = float(unwrapped.sim_dt)
        """How far the env's TCP lags its joint state [s]: one physics step (see :meth:`observe`)."""
        self.has_object = bool(unwrapped.has_object)
        self.block_gripper = bool(unwrapped.block_gripper)
        self.max_displacement = float(unwrapped.max_displacement)
        self.workspace_low = [float(v) for v in unwrapped.workspace_low]
        self.workspace_high = [float(v) for v in unwrapped.workspace_high]
        self.finger_open = FINGER_OPEN
        m = self.model
        self._site = m.site("tcp").id
        self._finger_qadr = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("finger_joint1", "finger_joint2")]
        home = m.key_qpos[m.key(unwrapped.home_keyframe).id][:7].copy()
        mujoco.mj_resetDataKeyframe(m, self.data, m.key(unwrapped.home_keyframe).id)
        mujoco.mj_forward(m, self.data)
        # The controller's own data holds the posture a target's motion starts from (its anti-windup bound and its
        # reset read it): the measured one, or the `reference` of joint_targets.
        self._anchor = mujoco.MjData(m)
        mujoco.mj_resetDataKeyframe(m, self._anchor, m.key(unwrapped.home_keyframe).id)
        self._anchor_qpos = self._anchor.qpos[:7]
        self._anchor_tcp = self._anchor.site_xpos[m.site("tcp").id]
        self.controller = CartesianController(
            m, self._anchor, home, self.ctrl_dt, getattr(unwrapped, "_controller_config", None)
        )
        motion = getattr(unwrapped, "motion", None)
        self.motion = None if motion is None else copy.deepcopy(motion)
        """The env's FR3 setpoint generator (a copy, same parameters) for ``motion="fr3"`` envs, else None."""
        self._joint_pos, self._joint_vel = np.zeros(7), np.zeros(7)
        self._jacp = np.zeros((3, m.nv))
        self._tcp_vel = np.zeros(3)
        self._measured = False
        # Hot path (once per control tick): views into the MjData buffers made once (each `data.qpos`
        # access builds a new array), the Euler conversion looked up once.
        self._quat_to_euler = _quat_to_euler
        self._arm_qpos = self.data.qpos[:7]
        self._arm_qvel = self.data.qvel[:7]
        self._qpos = self.data.qpos
        self._arm_jacp = self._jacp[:, :7]
        self._tcp_pos = self.data.site_xpos[self._site]

    # ---------------------------------------------------------------- measurement
    def _set_measured(self, meas: Fr3Measurement) -> None:
        d, m = self.data, self.model
        self._joint_pos = np.array(meas.joint_pos, dtype=np.float64)
        self._joint_vel = np.array(meas.joint_vel, dtype=np.float64)
        # The TCP where the env reads it: at the joint state one physics step earlier (see `observe`).
        np.subtract(self._joint_pos, self.lag * self._joint_vel, out=self._arm_qpos)
        self._anchor_qpos[:] = meas.joint_pos
        self._arm_qvel[:] = meas.joint_vel
        f1, f2 = meas.finger_pos.tolist()
        qpos, (a1, a2) = self._qpos, self._finger_qadr
        qpos[a1] = f1
        qpos[a2] = f2
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        mujoco.mj_jacSite(m, d, self._jacp, None, self._site)
        np.matmul(self._arm_jacp, meas.joint_vel, out=self._tcp_vel)
        self._measured = True

    def observe(self, meas: Fr3Measurement, goal: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The env observation and the robot state for one measurement.

        The env reads its TCP pose and velocity from the kinematics MuJoCo computed at the start of the last physics
        step of a period (``mj_step`` integrates after computing them), one physics step (:attr:`lag`) before the
        joint, finger and object state it reports; its actions displace that TCP. The TCP here is taken at the
        measured joint positions moved back by ``lag`` times the measured joint velocities, so the observation and
        the displacement are the env's (the velocity is ``J dq`` there: the acceleration over ``lag`` is not
        measured).

        Args:
            meas: Joint, finger and object measurements.
            goal: Desired goal [m, base frame]. Shape: (3,).

        Returns:
            ``(obs, state)``: ``obs`` has the env's keys ``observation`` (25,) (10 without an object),
            ``achieved_goal`` (3,), ``desired_goal`` (3,); ``state`` the safety filter's keys
            ``tcp_pos``, ``tcp_vel``, ``joint_pos``, ``joint_vel``, ``gripper_width``.

        Raises:
            ValueError: the task has an object and ``meas`` has no object pose.
        """
        self._set_measured(meas)
        gx, gy, gz = self._tcp_pos.tolist()
        vx, vy, vz = self._tcp_vel.tolist()
        f1, f2 = meas.finger_pos.tolist()
        fv1, fv2 = meas.finger_vel.tolist()
        tcp = np.array((gx, gy, gz))
        if not self.has_object:
            observation = np.array((gx, gy, gz, f1, f2, vx, vy, vz, fv1, fv2))
            achieved = tcp.copy()
        else:
            if meas.object_pos is None or meas.object_quat is None:
                raise ValueError("this task observes an object: the measurement needs the object pose.")
            ox, oy, oz = meas.object_pos.tolist()
            roll, pitch, yaw = self._quat_to_euler(*meas.object_quat.tolist())
            lin = meas.object_lin_vel if meas.object_lin_vel is not None else np.zeros(3)
            ang = meas.object_ang_vel if meas.object_ang_vel is not None else np.zeros(3)
            lx, ly, lz = lin.tolist()
            observation = np.array(
                (
                    *(gx, gy, gz),
                    *(ox, oy, oz),
                    *(ox - gx, oy - gy, oz - gz),
                    *(f1, f2),
                    *(roll, pitch, yaw),
                    *(lx - vx, ly - vy, lz - vz),
                    *ang.tolist(),
                    *(vx, vy, vz),
                    *(fv1, fv2),
                )
            )
            achieved = np.array((ox, oy, oz))
        obs = {"observation": observation, "achieved_goal": achieved, "desired_goal": np.asarray(goal, float).copy()}
        state = {
            "tcp_pos": tcp,
            "tcp_vel": self._tcp_vel.copy(),
            "joint_pos": np.array(meas.joint_pos, dtype=np.float64),
            "joint_vel": np.array(meas.joint_vel, dtype=np.float64),
            "gripper_width": np.array([f1 + f2]),
        }
        return obs, state

    # ------------------------------------------------------------------- command
    def reset(self) -> None:
        """Align the commanded posture with the last measurement (a new episode, or after a hold)."""
        self.controller.reset()
        self.controller.update_command_kinematics()

    def joint_targets(self, action: np.ndarray, lead: float = 0.0) -> tuple[np.ndarray, float]:
        """Joint position targets and gripper width for a policy action, as the sim computes them.

        Call after :meth:`observe` (the measured posture is the one from the last measurement).

        The env displaces the TCP measured at the start of the period whose motion the target drives (as
        :meth:`observe` gives it). On the robot that motion starts ``lead`` after the measurement (a trajectory
        message keeps the committed plan first, :meth:`robot_rl_ros.fr3_command.Fr3CommandPath.motion_start`):
        the displacement is taken from the TCP there, the measured joint motion carried on for ``lead``, and that
        posture bounds the command as the measured one bounds it in the env (the IK's anti-windup). The measured
        motion, not the plan: an arm the table or the object blocks does not follow its plan, and the env
        anchors each target on what the arm does. Displacing the measured TCP instead aims each target where the
        arm was ``lead`` before its motion starts: a steady motion then runs at half the speed the policy asks for.

        Args:
            action: ``[dx, dy, dz, gripper]`` in [-1, 1] (clipped here). Shape: (4,).
            lead: How long after the measurement the target's motion starts [s] (0: at once, as in the env).

        Returns:
            ``(q_targets, gripper_width)``: joint targets [rad] (a new array, shape (7,)) and the total
            gripper opening [m] (0 for tasks that hold the gripper closed).

        Raises:
            RuntimeError: no measurement yet.
        """
        if not self._measured:
            raise RuntimeError("no joint measurement yet: call observe() before joint_targets().")
        ax, ay, az, grip = _clip_unit(action)
        if lead == 0.0:
            mx, my, mz = self._tcp_pos.tolist()
        else:
            mx, my, mz = self.tcp_at(self._joint_pos + (lead - self.lag) * self._joint_vel).tolist()
        np.add(self._joint_pos, lead * self._joint_vel, out=self._anchor_qpos)  # the posture the motion starts from
        cx, cy, cz = self.controller.commanded_tcp.tolist()
        scale = self.max_displacement
        displacement = ((mx - cx) + scale * ax, (my - cy) + scale * ay, (mz - cz) + scale * az)
        q_cmd = self.controller.joint_targets(displacement, self.workspace_low, self.workspace_high).copy()
        width = 0.0 if self.block_gripper else (grip + 1.0) * self.finger_open
        return q_cmd, width

    def tcp_at(self, joint_pos: np.ndarray) -> np.ndarray:
        """The TCP position [m, base frame] (3,) at arm joint positions ``joint_pos`` [rad] (7,) (forward kinematics).

        (Computed on the controller's anchor data, whose posture :meth:`joint_targets` sets before each IK step.)
        """
        self._anchor_qpos[:] = joint_pos
        mujoco.mj_kinematics(self.model, self._anchor)
        return self._anchor_tcp.copy()

    def hold_action(self, meas: Fr3Measurement | None) -> np.ndarray:
        """The action that holds the TCP where it is and keeps the finger opening. Shape: (4,)."""
        width = 0.0 if meas is None else float(np.mean(meas.finger_pos))
        return np.array([0.0, 0.0, 0.0, 2.0 * width / self.finger_open - 1.0])


def _clip_unit(action: np.ndarray) -> list[float]:
    """``np.clip(action, -1, 1)`` as Python floats (the same values, NaN included, without numpy's per-call cost)."""
    return [min(max(v, -1.0), 1.0) for v in np.asarray(action, dtype=np.float64).tolist()]
