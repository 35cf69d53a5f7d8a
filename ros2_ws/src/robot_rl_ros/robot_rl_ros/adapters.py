"""Robot adapters: the FR3's here, the Crazyflie's in :mod:`robot_rl_ros.crazyflie_adapter`, and ``ADAPTERS``.

The common part (cached, checked inputs; the observation the Controller takes; publishing commands) is
:class:`robot_rl_ros.adapter_base.RobotAdapter`.

- :class:`Fr3Adapter`: franka_ros2. In: ``/joint_states`` (fr3_joint1..7, fingers optional),
  ``/object_pose`` (PoseStamped), optional ``/object_twist`` (TwistStamped; else the pose is
  differentiated), ``/goal`` (PointStamped), all in ``fr3_link0``. Out: ``trajectory_topic``
  (JointTrajectory to a JointTrajectoryController: the motion towards each joint target shaped within
  libfranka's FR3 limits, :mod:`robot_rl_ros.fr3_command`), or, only with ``allow_forward``, joint
  position targets on ``/<forward_controller>/commands`` (Float64MultiArray: steps a real FR3 answers
  with a reflex unless the controller behind it interpolates), and the gripper width on
  ``gripper_topic`` (Float64MultiArray; franka_gripper takes actions whose types are not on PyPI, so
  a small relay on the robot forwards it).
- :class:`~robot_rl_ros.crazyflie_adapter.CrazyflieAdapter`: crazyswarm2 (see its module).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped, PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from robot_rl_ros import conversions as conv
from robot_rl_ros.adapter_base import COMMAND_QOS, INPUT_QOS, PublisherFactory, RobotAdapter
from robot_rl_ros.crazyflie import PoseDifferentiator, quat_to_rotation
from robot_rl_ros.crazyflie_adapter import CrazyflieAdapter
from robot_rl_ros.fr3 import FR3_ARM_JOINTS, FR3_FINGER_JOINTS, Fr3Kinematics, Fr3Measurement
from robot_rl_ros.fr3_command import (
    Fr3CommandPath,
    PredictedReflex,
    forward_interface_error,
    gripper_interface_error,
)

__all__ = ["ADAPTERS", "CrazyflieAdapter", "Fr3Adapter", "RobotAdapter"]


class Fr3Adapter(RobotAdapter):
    """franka_ros2 topics for a robot_rl Franka policy (see the module docstring)."""

    robot = "fr3"
    hardware_id = "fr3"

    def __init__(self, node: Node, env: Any, publisher_factory: PublisherFactory, clock: Callable[[], float]) -> None:
        super().__init__(node, env, publisher_factory, clock)
        self.kinematics = Fr3Kinematics(env)
        self.interface = str(self._param("command_interface", "trajectory"))
        if self.interface not in ("forward", "trajectory"):
            raise ValueError(f"`command_interface` must be 'forward' or 'trajectory'. Got {self.interface!r}.")
        if self.interface == "forward" and not bool(self._param("allow_forward", False)):
            raise ValueError(forward_interface_error())
        controller = str(self._param("forward_controller", "forward_position_controller"))
        # Other names for the same 7 + 2 joints (franka_ros2 v0.1.0 and multipanda name a Panda's panda_joint1..7).
        self.arm_joints = [str(n) for n in self._param("joint_names", list(FR3_ARM_JOINTS))]
        self.finger_joints = [str(n) for n in self._param("finger_joint_names", list(FR3_FINGER_JOINTS))]
        if len(self.arm_joints) != 7 or len(self.finger_joints) != 2:
            raise ValueError(
                f"`joint_names` must list 7 arm joints and `finger_joint_names` 2 fingers. Got {self.arm_joints}, "
                f"{self.finger_joints}."
            )
        self._fingers: tuple[np.ndarray, np.ndarray] | None = None
        self._object_rates = PoseDifferentiator()
        self._subscribe("joint_states", JointState, str(self._param("joint_states_topic", "/joint_states")),
                        qos_profile_sensor_data, self._joint_states)  # fmt: skip
        self._subscribe("goal", PointStamped, str(self._param("goal_topic", "/goal")), INPUT_QOS, conv.point_to_array)
        self.required = ["joint_states", "goal"]
        self.streaming = ["joint_states"]
        if self.kinematics.has_object:
            self._subscribe("object_pose", PoseStamped, str(self._param("object_pose_topic", "/object_pose")),
                            INPUT_QOS, self._object_pose)  # fmt: skip
            twist_topic = str(self._param("object_twist_topic", "/object_twist"))
            if twist_topic:
                self._subscribe("object_twist", TwistStamped, twist_topic, INPUT_QOS, conv.twist_to_arrays)
                self.companions.append("object_twist")
            self.required.append("object_pose")
            self.streaming.append("object_pose")
        if self.interface == "forward":
            topic = f"/{controller}/commands"
            self._command = self._create_publisher(Float64MultiArray, topic, COMMAND_QOS)
        else:
            topic = str(self._param("trajectory_topic", "/robot_rl_arm_controller/joint_trajectory"))
            self._command = self._create_publisher(JointTrajectory, topic, COMMAND_QOS)
        self.command_path = Fr3CommandPath(
            self.arm_joints,
            self.kinematics.ctrl_dt,
            commit=int(self._param("trajectory_commit", 1)),
            # 0: `trajectory_commit` periods; else the commit in ms (the time a message may take to the controller)
            commit_ms=int(self._param("trajectory_commit_ms", 0)) or None,
            margin=float(self._param("motion_margin", 0.8)),
            motion=self.kinematics.motion,  # a card trained with motion="fr3": the env's own setpoint generator
            blend_ms=int(self._param("trajectory_blend_ms", 200)),
        )
        self.fault = ""
        """A predicted FR3 reflex: no command is sent until the next episode (reset)."""
        self.command_topic = topic
        gripper_topic = str(self._param("gripper_topic", "/robot_rl/gripper_width"))
        if not gripper_topic and not self.kinematics.block_gripper:
            raise ValueError(gripper_interface_error(env.spec.id if env.spec is not None else "this task"))
        self._gripper = self._create_publisher(Float64MultiArray, gripper_topic, COMMAND_QOS) if gripper_topic else None
        self._meas: Fr3Measurement | None = None
        self._gripper_width: float | None = None
        self._align = True

    def reset(self) -> None:
        """New episode: fresh inputs, and the commanded posture re-aligned with the first measurement."""
        super().reset()
        self._object_rates.reset()
        self._align = True
        self._gripper_width = None
        self.fault = ""

    def _joint_states(self, msg: JointState) -> Fr3Measurement:
        meas = conv.joint_state_to_fr3(msg, self._fingers, self.arm_joints, self.finger_joints)
        self._fingers = (meas.finger_pos, meas.finger_vel)
        return meas

    def _object_pose(self, msg: PoseStamped) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Position, quaternion (w, x, y, z) and the velocities differentiated from the previous pose (world)."""
        position, quat = conv.pose_to_arrays(msg)
        rates = self._object_rates(conv.stamp_to_seconds(msg.header.stamp), position, quat_to_rotation(*quat.tolist()))
        return position, quat, rates.velocity, rates.rotation.reshape(3, 3) @ rates.body_rates

    def observation(self) -> dict[str, Any] | None:
        """The env observation, the robot state and ``stamp`` (see the module docstring), or None."""
        if self.waiting_for():
            return None
        meas: Fr3Measurement = self.inputs["joint_states"].value
        if self.kinematics.has_object:
            position, quat, linear, angular = self.inputs["object_pose"].value
            meas.object_pos, meas.object_quat = position, quat
            twist = self.inputs.get("object_twist")
            if twist is not None and twist.value is not None:
                meas.object_lin_vel, meas.object_ang_vel = twist.value
            else:  # no twist topic: the pose differentiated
                meas.object_lin_vel, meas.object_ang_vel = linear, angular
        obs, state = self.kinematics.observe(meas, self.inputs["goal"].value)
        if self._align:
            self.kinematics.reset()
            self.command_path.reset(meas.joint_pos, self.clock())
            self._align = False
        self._meas = meas
        return {**obs, **state, "stamp": self._stamp()}

    def publish(self, action: np.ndarray) -> None:
        """Joint targets (and the gripper width) for ``action`` through the configured interface."""
        if self.interface == "forward":
            q, width = self.kinematics.joint_targets(action)
            msg = conv.joint_command(q)
        else:
            now = self.clock()
            lead = 0.0
            if self._meas is not None:
                # The motion towards this target starts `lead` later (the commit): the IK aims it from where the arm
                # will be then (Fr3Kinematics.joint_targets), as the env aims each target from the TCP it measures
                # where the period's motion starts.
                start = self.command_path.motion_start(now)
                lead = start.lead
                if not start.planned:
                    # The blend after a reset holds past this message's period: its target moves nothing. The IK holds
                    # too (the env's neutral action), so its commanded posture stays the one the plan will start from.
                    action = np.array([0.0, 0.0, 0.0, float(np.asarray(action, dtype=np.float64)[3])])
            q, width = self.kinematics.joint_targets(action, lead)
            if self.fault:
                return
            try:
                msg = self.command_path.message(q, now)
            except PredictedReflex as err:
                self.fault = str(err)
                self.node.get_logger().error(f"{err}; nothing more is sent until the next episode (~/reset)")
                return
        self._command.publish(msg)
        if self._gripper is not None and width != self._gripper_width:  # a set point: sent when it changes
            gripper = Float64MultiArray()
            gripper.data = [float(width)]
            self._gripper.publish(gripper)
            self._gripper_width = width
        self.last_command = msg

    @property
    def last_error(self) -> str:
        """A predicted FR3 reflex first, else the newest refused message."""
        return self.fault or super().last_error

    def hold_action(self) -> np.ndarray:
        """Zero displacement, the current finger opening."""
        return self.kinematics.hold_action(self._meas)


ADAPTERS: dict[str, type[RobotAdapter]] = {"fr3": Fr3Adapter, "crazyflie": CrazyflieAdapter}
"""Robot name -> adapter class."""
