"""Robot adapters: the topics of one robot, cached, converted into a policy observation; actions into commands.

An adapter owns a robot's subscriptions and command publishers on a node. Its subscription
callbacks check and convert each message as it arrives (:mod:`robot_rl_ros.conversions`) and cache
the newest valid one with its header stamp; a malformed message is refused there, counted in
``rejected`` (every one of them, not only those a tick happens to see) and never reaches the
policy. The streaming inputs (the robot state, the object pose and twist) are also judged by their
own header stamp against the node's clock (:class:`robot_rl_ros.control.StampCheck`, parameters
``max_state_age`` and ``clock_skew_tolerance``): a stale, future or zero stamp is refused the same
way and counted per kind in ``stamp_check.counts``. :meth:`RobotAdapter.observation` (called from the
node's timer) assembles the cached values into the mapping :meth:`robot_rl.runtime.Controller.step`
takes: the env observation keys, the safety chain's robot-state keys, and ``stamp``: the header
stamp [s, the publisher's clock, synchronized with the node's] of the oldest of the newest streaming
inputs, which the chain's watchdog compares with ``now``. :meth:`RobotAdapter.publish` turns an
action into the robot's command message.

- :class:`Fr3Adapter`: franka_ros2. In: ``/joint_states`` (fr3_joint1..7, fingers optional),
  ``/object_pose`` (PoseStamped), optional ``/object_twist`` (TwistStamped; else the pose is
  differentiated), ``/goal`` (PointStamped), all in ``fr3_link0``. Out: ``trajectory_topic``
  (JointTrajectory to a JointTrajectoryController: the motion towards each joint target shaped within
  libfranka's FR3 limits, :mod:`robot_rl_ros.fr3_command`), or, only with ``allow_forward``, joint
  position targets on ``/<forward_controller>/commands`` (Float64MultiArray: steps a real FR3 answers
  with a reflex unless the controller behind it interpolates), and the gripper width on
  ``gripper_topic`` (Float64MultiArray; franka_gripper takes actions whose types are not on PyPI, so
  a small relay on the robot forwards it).
- :class:`CrazyflieAdapter`: crazyswarm2. In: ``/<name>/odom`` (Odometry) or ``/<name>/pose``
  (PoseStamped, differentiated), ``/<name>/goal`` (PointStamped, ``world``). Out:
  ``/<name>/cmd_vel_legacy`` (Twist; :mod:`robot_rl_ros.crazyflie`). ``/<name>/emergency``
  (std_srvs/Empty) on e-stop when ``estop_emergency`` is set; ``notify_setpoints_stop`` and
  ``land`` on deactivation need ``crazyflie_interfaces`` (built with crazyswarm2, not on PyPI) and
  are skipped with a log line without it. ``cmd_full_state`` (crazyflie_interfaces/FullState) is
  not offered: CTBR has no full-state form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped, PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rclpy.client import Client
from rclpy.lifecycle import LifecyclePublisher
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rclpy.subscription import Subscription
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import Empty
from trajectory_msgs.msg import JointTrajectory

from robot_rl_ros import conversions as conv
from robot_rl_ros.control import CLOCK_SKEW_TOLERANCE_S, STALE_PERIODS, StampCheck
from robot_rl_ros.crazyflie import (
    PoseDifferentiator,
    QuadrotorObserver,
    ctbr_to_legacy,
    legacy_config,
    quat_to_rotation,
)
from robot_rl_ros.crazyflie_vendor import CrazyflieVendorChecks
from robot_rl_ros.fr3 import FR3_ARM_JOINTS, FR3_FINGER_JOINTS, Fr3Kinematics, Fr3Measurement
from robot_rl_ros.fr3_command import (
    Fr3CommandPath,
    PredictedReflex,
    forward_interface_error,
    gripper_interface_error,
)

PublisherFactory = Callable[[Any, str, Any], Any]
"""``(msg_type, topic, qos) -> publisher``: ``node.create_publisher`` or ``create_lifecycle_publisher``."""
COMMAND_QOS = QoSProfile(depth=1)
"""Commands: reliable, keep the newest only (a late command is worth nothing)."""
INPUT_QOS = QoSProfile(depth=1)
"""Perception inputs (object pose, goal): reliable, newest only; matches volatile and latched publishers."""


class _Input:
    """The newest valid conversion of one topic's messages, with its receipt time."""

    def __init__(self, name: str, convert: Callable[[Any], Any]) -> None:
        self.name = name
        self.convert = convert
        self.value: Any = None
        self.received = 0.0
        self.stamp = 0.0
        """The message's header stamp [s] (its receipt time for a message without a header)."""
        self.accepted = 0
        self.rejected = 0
        self.last_error = ""

    def store(self, msg: Any, now: float, check: StampCheck | None = None) -> bool:
        """Convert ``msg`` (received at ``now``); a refused one is counted and leaves the last valid value.

        Args:
            msg: The message.
            now: Its receipt time [s, node clock].
            check: Judges the header stamp first (streaming state inputs); None: no stamp check.

        Returns:
            Whether the message was accepted.
        """
        header = getattr(msg, "header", None)
        stamp = conv.stamp_to_seconds(header.stamp) if header is not None else now
        refusal = check.refuse(stamp, now) if check is not None else ""
        if refusal:  # before converting: a refused state must not advance a differentiator either
            self.rejected += 1
            self.last_error = f"{self.name}: {refusal}"
            return False
        try:
            value = self.convert(msg)
        except ValueError as err:
            self.rejected += 1
            self.last_error = f"{self.name}: {err}"
            return False
        self.value, self.received, self.stamp = value, now, stamp
        self.accepted += 1
        return True

    def clear(self) -> None:
        """Forget the value (a new episode needs fresh messages)."""
        self.value = None


class RobotAdapter:
    """Base of the robot adapters (see the module docstring).

    Args:
        node: The node the subscriptions and publishers live on.
        env: The robot_rl env the policy was trained on (constants and kinematics only).
        publisher_factory: How command publishers are made (lifecycle publishers in the policy node).
        clock: The node's clock in seconds (receipt times and ``stamp``).
    """

    robot = ""
    hardware_id = ""

    def __init__(self, node: Node, env: Any, publisher_factory: PublisherFactory, clock: Callable[[], float]) -> None:
        self.node = node
        self.env = env
        self.clock = clock
        self.inputs: dict[str, _Input] = {}
        self.required: list[str] = []
        """Inputs without which no observation is made."""
        self.streaming: list[str] = []
        """Inputs whose receipt time bounds ``stamp`` (a silent one makes the state stale)."""
        self.companions: list[str] = []
        """Optional inputs published with the state (used when they arrive): part of a fresh state once seen."""
        self.last_command: Any = None
        """The last command message published."""
        # A state may be stamped ahead of receipt only by the skew between the publisher's clock and the node's
        # (0 on one machine; chrony/PTP between the robot's computer and this one): see CLOCK_SKEW_TOLERANCE_S.
        skew = float(self._param("clock_skew_tolerance", CLOCK_SKEW_TOLERANCE_S))
        max_age = float(self._param("max_state_age", 0.0))
        if max_age < 0:
            raise ValueError(f"`max_state_age` must be >= 0 [s] (0: the watchdog's deadline). Got {max_age}.")
        self.stamp_check = StampCheck(max_age or STALE_PERIODS * float(env.unwrapped.ctrl_dt), skew)
        """Judges the streaming inputs' stamps (the policy node sets ``max_age_s`` to the watchdog's deadline when
        ``max_state_age`` is 0)."""
        self.max_state_age = max_age
        """The ``max_state_age`` parameter [s] (0: the watchdog's deadline, or 2.5 periods without one)."""
        self.on_input: Callable[[str], None] | None = None
        """Called with the input's name after each accepted message (the policy node primes a chunk with it)."""
        self._entities: list[Any] = []
        self._factory = publisher_factory

    def _create_publisher(self, msg_type: Any, topic: str, qos: Any) -> Any:
        publisher = self._factory(msg_type, topic, qos)
        self._entities.append(publisher)
        return publisher

    def close(self) -> None:
        """Destroy the adapter's subscriptions, publishers and clients (the node lives on)."""
        node = self.node
        for entity in self._entities:
            if isinstance(entity, LifecyclePublisher):
                node.destroy_lifecycle_publisher(entity)
            elif isinstance(entity, Publisher):
                node.destroy_publisher(entity)
            elif isinstance(entity, Subscription):
                node.destroy_subscription(entity)
            elif isinstance(entity, Client):
                node.destroy_client(entity)
        self._entities.clear()

    def _param(self, name: str, default: Any) -> Any:
        node = self.node
        if not node.has_parameter(name):
            node.declare_parameter(name, default)
        return node.get_parameter(name).value

    def _subscribe(self, name: str, msg_type: Any, topic: str, qos: Any, convert: Callable[[Any], Any]) -> None:
        entry = self.inputs[name] = _Input(name, convert)

        def callback(msg: Any) -> None:
            checked = name in self.streaming or name in self.companions
            if entry.store(msg, self.clock(), self.stamp_check if checked else None) and self.on_input is not None:
                self.on_input(name)

        self._entities.append(self.node.create_subscription(msg_type, topic, callback, qos))

    @property
    def rejected(self) -> dict[str, int]:
        """Messages refused per input."""
        return {name: entry.rejected for name, entry in self.inputs.items()}

    @property
    def last_error(self) -> str:
        """The newest refusal's reason ('' when none)."""
        return next((e.last_error for e in self.inputs.values() if e.last_error), "")

    def waiting_for(self) -> list[str]:
        """Required inputs with no valid message since the last reset."""
        return [name for name in self.required if self.inputs[name].value is None]

    def fresh_since(self, t: float) -> bool:
        """Every streaming input holds a message stamped after ``t`` [s] (header stamps; the node's clock).

        Stamps, not receipt times: a message of the previous state delivered late is not fresh. (The stamp check
        refuses states from a clock more than ``clock_skew_tolerance`` off this one; within it, the answer may be
        off by that much, and the node then computes the chunk in the tick, or primes it from the next state.)
        """
        streaming = all(self.inputs[n].value is not None and self.inputs[n].stamp > t for n in self.streaming)
        return streaming and all(self.inputs[n].value is None or self.inputs[n].stamp > t for n in self.companions)

    def reset(self) -> None:
        """New episode: cached states are dropped (the first step waits for fresh ones)."""
        for entry in self.inputs.values():
            entry.clear()

    def observation(self) -> dict[str, Any] | None:
        """The Controller's observation mapping from the cached messages, or None while an input is missing."""
        raise NotImplementedError

    def publish(self, action: np.ndarray) -> None:
        """Send the command for ``action``."""
        raise NotImplementedError

    def hold_action(self) -> np.ndarray:
        """An action that holds the robot where it is (without a safety chain's fallback)."""
        raise NotImplementedError

    def stop(self) -> None:
        """The controller stops streaming commands (deactivation)."""

    def estop(self) -> None:
        """The e-stop was triggered (beyond the chain's fallback command)."""

    def preflight(self) -> str:
        """Checked at activation: one line saying why the inputs do not match the configuration, or ''."""
        return ""

    def start(self) -> None:
        """Called once the command publishers are active (activation), before the first tick."""

    def _stamp(self) -> float:
        """The oldest header stamp of the streaming inputs [s]: when the state the tick reads was measured."""
        return min(self.inputs[name].stamp for name in self.streaming)


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
            margin=float(self._param("motion_margin", 0.8)),
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
        q, width = self.kinematics.joint_targets(action)
        if self.interface == "forward":
            msg = conv.joint_command(q)
        else:
            if self.fault:
                return
            try:
                msg = self.command_path.message(q, self.clock())
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


class CrazyflieAdapter(RobotAdapter):
    """crazyswarm2 topics and services for a robot_rl quadrotor policy (see the module docstring)."""

    robot = "crazyflie"

    def __init__(self, node: Node, env: Any, publisher_factory: PublisherFactory, clock: Callable[[], float]) -> None:
        super().__init__(node, env, publisher_factory, clock)
        self.observer = QuadrotorObserver(env)
        self.name = str(self._param("robot_name", "cf231"))
        self.hardware_id = self.name
        self.state_source = str(self._param("state_source", "odom"))
        if self.state_source not in ("odom", "pose"):
            raise ValueError(f"`state_source` must be 'odom' or 'pose'. Got {self.state_source!r}.")
        self.legacy = legacy_config(self._param)
        self.estop_emergency = bool(self._param("estop_emergency", False))
        self.land_on_stop = bool(self._param("land_on_deactivate", False))
        base = f"/{self.name}"
        topic = f"{base}/{self.state_source}"
        self.vendor = CrazyflieVendorChecks(self._param, self.name, topic, self.observer.ctrl_dt)
        self.vendor.check_firmware(self.legacy.mode)
        for warning in self.vendor.sign_warnings(self.legacy.pitch_sign, self.legacy.yaw_sign):
            node.get_logger().warning(warning)
        self._differentiate = PoseDifferentiator()
        if self.state_source == "odom":
            self._subscribe("state", Odometry, f"{base}/odom", qos_profile_sensor_data, self._measure)
        else:
            self._subscribe("state", PoseStamped, f"{base}/pose", qos_profile_sensor_data, self._measure)
        goal_topic = str(self._param("goal_topic", f"{base}/goal"))
        self._subscribe("goal", PointStamped, goal_topic, INPUT_QOS, conv.point_to_array)
        self.required = ["state", "goal"]
        self.streaming = ["state"]
        self.command_topic = f"{base}/cmd_vel_legacy"
        self._command = self._create_publisher(Twist, self.command_topic, COMMAND_QOS)
        self._emergency = node.create_client(Empty, f"{base}/emergency")
        self._entities.append(self._emergency)
        self._rotation = np.eye(3).ravel()
        self._services = _crazyflie_services(node, base)

    def reset(self) -> None:
        """New episode: fresh inputs."""
        super().reset()
        self._differentiate.reset()
        self.vendor.reset()

    def preflight(self) -> str:
        """What arrived so far against the ``backend`` configuration: one line naming the fix, or ''."""
        return self.vendor.problem()

    def start(self) -> None:
        """Unlock the firmware's legacy thrust where the backend does not (cpp): one zero setpoint."""
        if not self.vendor.backend.sends_unlock and not self.vendor.unlocked:
            self._command.publish(conv.legacy_twist((0.0, 0.0, 0.0, 0.0)))
            self.vendor.unlocked = True

    def _measure(self, msg: Any) -> Any:
        self.vendor.arrived(self.clock())
        if self.state_source == "odom":
            return self.vendor.read_odom(conv.odometry_fields(msg))
        self.vendor.check_rate()
        position, quat = conv.pose_to_arrays(msg)
        rotation = self.vendor.pose_rotation(msg.header.frame_id, quat)
        return self._differentiate(conv.stamp_to_seconds(msg.header.stamp), position, rotation)

    def observation(self) -> dict[str, Any] | None:
        """The env observation, the robot state and ``stamp``, or None while an input is missing."""
        if self.waiting_for():
            return None
        meas = self.inputs["state"].value
        self._rotation = meas.rotation
        obs, state = self.observer.observe(meas, self.inputs["goal"].value)
        return {**obs, **state, "stamp": self._stamp()}

    def publish(self, action: np.ndarray) -> None:
        """``cmd_vel_legacy`` for a CTBR action."""
        values = ctbr_to_legacy(action, self._rotation, self.observer.max_thrust, self.legacy)
        msg = conv.legacy_twist(values)
        self._command.publish(msg)
        self.last_command = msg

    def hold_action(self) -> np.ndarray:
        """Level hover thrust and zero rates (the chain's fallback flies a proper hover)."""
        return self.observer.hover_action.copy()

    def stop(self) -> None:
        """``notify_setpoints_stop`` (and ``land`` with ``land_on_deactivate``), when crazyflie_interfaces exists."""
        if self._services is None:
            self.node.get_logger().info(
                "crazyflie_interfaces is not installed: notify_setpoints_stop/land not sent (without setpoints the "
                "firmware's supervisor levels the vehicle after 0.5 s and stops the motors after 2 s, supervisor.c)."
            )
            return
        self._services.notify_stop()
        if self.land_on_stop:
            self._services.land()

    def estop(self) -> None:
        """Call ``emergency`` (motors off) when ``estop_emergency`` is set."""
        if self.estop_emergency and self._emergency.service_is_ready():
            self._emergency.call_async(Empty.Request())


class _CrazyflieServices:
    """crazyswarm2's typed services (crazyflie_interfaces), when that package is importable."""

    def __init__(self, node: Node, base: str, types: Any) -> None:
        self.types = types
        self._stop = node.create_client(types.NotifySetpointsStop, f"{base}/notify_setpoints_stop")
        self._land = node.create_client(types.Land, f"{base}/land")

    def notify_stop(self) -> None:
        if self._stop.service_is_ready():
            request = self.types.NotifySetpointsStop.Request()
            request.remain_valid_millisecs = 100
            self._stop.call_async(request)

    def land(self) -> None:
        if self._land.service_is_ready():
            request = self.types.Land.Request()
            request.height = 0.0
            request.duration.sec = 3
            self._land.call_async(request)


def _crazyflie_services(node: Node, base: str) -> _CrazyflieServices | None:
    try:
        from crazyflie_interfaces import srv  # type: ignore[import-not-found]
    except ImportError:
        return None
    return _CrazyflieServices(node, base, srv)


ADAPTERS: dict[str, type[RobotAdapter]] = {"fr3": Fr3Adapter, "crazyflie": CrazyflieAdapter}
"""Robot name -> adapter class."""
