"""The MuJoCo sim bridge: a robot_rl env behind the topics and services of franka_ros2 or crazyswarm2.

The policy node cannot tell the bridge from the robot: the same topic names, types and frames
(:mod:`robot_rl_ros.adapters`), plus the perception inputs a real cell gets from elsewhere (the
object pose and twist, the goal).

Franka envs (``robot_rl/Panda*``). Out: ``/joint_states`` (fr3_joint1..7 and the two finger
joints), ``/franka_robot_state_broadcaster/current_pose`` (TCP, PoseStamped), ``/object_pose``,
``/object_twist``, ``/goal`` (``fr3_link0`` = the sim's world frame). In: joint position targets on
``/<forward_controller>/commands`` (Float64MultiArray) and ``trajectory_topic`` (JointTrajectory),
the gripper width on ``/robot_rl/gripper_width``. Service ``/franka_gripper/stop`` (std_srvs/Trigger).

``fr3_limits`` (default true): the FR3 as franka_ros2 drives it (:class:`robot_rl_ros.fr3_vendor.Fr3ArmModel`).
Each command goes to a model of its controller (JointTrajectoryController interpolation, or the steps of a
forward_command_controller), the 1 kHz command of every period is checked against libfranka's FR3
limits, and the period's last command is the env's joint target. A violation is a reflex: the arm stops
following commands, ``/joint_states`` and ``current_pose`` fall silent (franka_hardware's ``read()``
returns ERROR on the ControlException and controller_manager stops the component, its broadcasters
with it: franka_hardware ``src/franka_hardware_interface.cpp``), and the episode ends with
``crash: "reflex: <libfranka error>: ..."`` on ``/sim/episode_info``; the next reset recovers.
After a reset, trajectories planned from where the arm was (stamped before the reset, or starting more than
0.01 rad from the reset posture: sent before the node saw the reset) are not judged: the arm holds.
``fr3_limits: false``: each command's last positions replace the env's differential-IK output and go
through the env's servo ramp exactly as the env's controller output does, so an adapter running the
same CartesianController reproduces ``robot-rl eval``. ``motion`` (default ``servo``): the env's ``motion`` kwarg
(a policy card's ``env_kwargs``); ``fr3`` needs ``fr3_limits`` and moves the arm's servos along the 1 kHz command of
the FR3 model (:class:`robot_rl_ros.fr3_vendor.CommandedSetpoints`) instead of a ramp to its last point.
``joint_state_rate`` (default 30 Hz, as
franka_bringup's ``joint_state_rate``; realtime mode only, 0: with every step) sets how often
``/joint_states`` is published.

Quadrotor envs (``robot_rl/Quadrotor*``). Out: ``/<robot_name>/pose`` (PoseStamped),
``/<robot_name>/odom`` (Odometry), ``/<robot_name>/goal`` (``world``). In: ``/<robot_name>/cmd_vel_legacy``.
The bridge stands in for crazyswarm2 and the firmware as their sources define them
(:mod:`robot_rl_ros.crazyflie_vendor`), independent of the policy node's configuration: the ``backend``
(``cpp`` or ``cflib``) sets the pitch sign on the radio and how odom is filled (frames, units, cflib's
negated pitch); ``crazyflies_yaml`` (default ``hardware/crazyswarm2/crazyflies.yaml``) sets the controller,
the flight modes and which topics are published at what rate (in simulated time); the firmware's thrust
lock (released by a zero-thrust packet; in lockstep that packet takes no step) and the supervisor's
setpoint timeouts (``realtime`` mode: level out after 0.5 s, motors off after 2 s) apply. (The bridge used
to decode with the node's own ``legacy_*`` parameters, :func:`robot_rl_ros.crazyflie.legacy_to_ctbr`, which
could not catch a sign error; that stand-in is gone. Its ``max_thrust`` and ``thrust_full_scale`` are the
simulated vehicle's.)
Services ``/<robot_name>/emergency`` and ``/all/emergency`` (std_srvs/Empty: motors off, the
episode ends). takeoff, land and notify_setpoints_stop take crazyflie_interfaces types (not on
PyPI): served only when that package is importable; the sim starts each episode in the air at the
task's start state, so takeoff is a no-op.

Stepping (``mode``):

- ``lockstep`` (default): one env step (``ctrl_dt`` of simulated time) per command received, then
  the new state is published at once: the simulation runs exactly as ``robot-rl eval`` does, at
  the pace of the policy node's timer (real time). While no command arrives the current state is
  re-published every ``republish_period`` seconds (so a policy node activated after a reset sees
  it).
- ``realtime``: the bridge's own timer steps every ``ctrl_dt`` with the newest command (held when
  none arrived), like a robot that does not wait.

Episodes: ``/sim/reset_episode`` (std_srvs/Trigger) resets with the next seed (``seed``, then
``seed + 1``, ...: ``robot-rl eval --seed S`` replays the same episodes; the reset at start-up,
``reset_on_start``, uses ``seed`` without consuming it) and answers JSON ``{"seed": S}``;
``autoreset`` starts the next episode by itself. ``/sim/episode_info`` (String
JSON: seed, step, return, success, done, crash) follows every step; ``/robot_rl/episode`` carries
``start`` and ``end`` (with the env's success) events for the recorder. After the episode ends
(TimeLimit truncation or a crash) commands are ignored until the next reset.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped, TwistStamped
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from robot_rl.data.bag import EPISODE_TOPIC
from robot_rl_ros import conversions as conv
from robot_rl_ros import crazyflie_vendor as vendor
from robot_rl_ros.fr3 import BASE_FRAME, FR3_ARM_JOINTS, Fr3Measurement
from robot_rl_ros.fr3_command import message_points
from robot_rl_ros.fr3_vendor import CommandedSetpoints, Fr3ArmModel, JointPoint
from robot_rl_ros.sim_bridge_crazyflie import CrazyflieSim
from robot_rl_ros.spin import node_param, node_seconds, spin_node

STATE_QOS = QoSProfile(depth=1)
EVENT_QOS = QoSProfile(depth=10, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class _ExternalTargets:
    """Stands in for a PandaEnv's CartesianController: returns the joint targets received from ROS.

    Everything else (reset, the commanded TCP the env reads) is the wrapped controller's. With no
    target since the last reset, the wrapped controller computes the targets (a hold for a zero action).
    """

    def __init__(self, controller: Any) -> None:
        self._controller = controller
        self.target: np.ndarray | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._controller, name)

    def reset(self) -> None:
        self.target = None
        self._controller.reset()

    def joint_targets(self, displacement: Any, low: Any, high: Any) -> np.ndarray:
        if self.target is None:
            return self._controller.joint_targets(displacement, low, high)
        return self.target


class SimBridge(CrazyflieSim, Node):
    """A robot_rl env as a franka_ros2 or crazyswarm2 robot (see the module docstring).

    The crazyswarm2 side is :class:`robot_rl_ros.sim_bridge_crazyflie.CrazyflieSim`.

    Args:
        node_name: The node's name.
        **kwargs: Passed to ``Node`` (``context=`` in tests, ``parameter_overrides=``).
    """

    state_qos = STATE_QOS
    """QoS of the published robot state and perception inputs."""

    def __init__(self, node_name: str = "sim_bridge", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from robot_rl.envs.registry import check_env_id, make, robot_of

        param = self._param
        self.env_id = check_env_id(str(param("env_id", "robot_rl/PandaPush-v0")))
        self.mode = str(param("mode", "lockstep"))
        if self.mode not in ("lockstep", "realtime"):
            raise ValueError(f"`mode` must be 'lockstep' or 'realtime'. Got {self.mode!r}.")
        self.next_seed = int(param("seed", 0))
        self.autoreset = bool(param("autoreset", False))
        self.republish_period = float(param("republish_period", 0.1))
        # `motion` (Franka envs): the card's env_kwargs["motion"]; "fr3": the arm's servos follow the 1 kHz command.
        motion = str(param("motion", "servo"))
        self.env = make(self.env_id, **({} if motion == "servo" else {"motion": motion}))
        self.unwrapped = self.env.unwrapped
        self.ctrl_dt = float(self.unwrapped.ctrl_dt)
        self.franka = robot_of(self.env_id).family == "franka"
        self.seed: int | None = None
        self.steps = 0
        self.total_return = 0.0
        self.done = True
        self.success = False
        self.ignored_commands = 0
        self._last_publish = 0.0
        self.firmware: vendor.LegacyFirmware | None = None
        """The Crazyflie firmware stand-in (quadrotor envs; None for arms)."""
        self._log_periods: dict[str, float | None] = {}
        self._last_logged: dict[str, float] = {}
        self._last_logged_wall: dict[str, float] = {}
        self._setpoint_steps = 0
        self._last_command_time = -float("inf")
        self._idle_publish = False
        self._pending: Any = None
        self._obs: dict[str, np.ndarray] = {}
        self._info_pub = self.create_publisher(String, "/sim/episode_info", 10)
        self._event_pub = self.create_publisher(String, EPISODE_TOPIC, EVENT_QOS)
        self.create_service(Trigger, "/sim/reset_episode", self._on_reset)
        if self.franka:
            self._setup_franka()
        else:
            self._setup_quadrotor()
        if self.mode == "realtime":
            self.create_timer(self.ctrl_dt, self._realtime_tick)
        periods = [p for p in self._log_periods.values() if p] if self.firmware is not None else []
        self.create_timer(min([self.republish_period, *periods]), self._idle_tick)
        if bool(param("reset_on_start", True)):
            # A robot to look at from the start; the first /sim/reset_episode still starts at `seed`.
            first = self.next_seed
            self.reset_episode()
            self.next_seed = first

    def _param(self, name: str, default: Any) -> Any:
        return node_param(self, name, default)

    def now(self) -> float:
        """The node's clock [s]."""
        return node_seconds(self)

    # ----------------------------------------------------------------- franka
    def _setup_franka(self) -> None:
        import mujoco

        from robot_rl.envs.franka.panda_env import FINGER_OPEN

        self._finger_open = FINGER_OPEN
        m = self.unwrapped.model
        self._finger_qadr = [int(m.jnt_qposadr[m.joint(n).id]) for n in ("finger_joint1", "finger_joint2")]
        self._finger_dofadr = [int(m.jnt_dofadr[m.joint(n).id]) for n in ("finger_joint1", "finger_joint2")]
        self._tcp_site = m.site("tcp").id
        self._mat2quat = mujoco.mju_mat2Quat
        if self.unwrapped.has_object:
            joint = m.joint("object").id
            self._obj_qadr, self._obj_dofadr = int(m.jnt_qposadr[joint]), int(m.jnt_dofadr[joint])
            self._obj_body = m.body("object").id
        self._targets = _ExternalTargets(self.unwrapped.controller)
        self.unwrapped.controller = self._targets
        self._gripper_action = -1.0
        controller = str(self._param("forward_controller", "forward_position_controller"))
        self._arm = Fr3ArmModel(self.ctrl_dt) if bool(self._param("fr3_limits", True)) else None
        if getattr(self.unwrapped, "motion", None) is not None:  # motion "fr3": the servos follow the arm's commands
            if self._arm is None:
                raise ValueError("`motion` 'fr3' needs `fr3_limits: true` (the servos follow the FR3 model's command).")
            self.unwrapped.motion = CommandedSetpoints(self._arm, self.ctrl_dt)
        self._reset_ns = self._arm_wall_ns = 0
        self.create_subscription(Float64MultiArray, f"/{controller}/commands", self._on_joint_command, 10)
        trajectory_topic = str(self._param("trajectory_topic", "/robot_rl_arm_controller/joint_trajectory"))
        self.create_subscription(JointTrajectory, trajectory_topic, self._on_trajectory, 10)
        rate = float(self._param("joint_state_rate", 30.0))
        self._joint_states_each_step = self.mode == "lockstep" or rate <= 0.0
        if not self._joint_states_each_step:
            self.create_timer(1.0 / rate, self._publish_joint_states)
        self.create_subscription(Float64MultiArray, "/robot_rl/gripper_width", self._on_gripper, 10)
        self.create_service(Trigger, "/franka_gripper/stop", self._on_gripper_stop)
        self._joint_pub = self.create_publisher(JointState, "/joint_states", STATE_QOS)
        self._tcp_pub = self.create_publisher(PoseStamped, "/franka_robot_state_broadcaster/current_pose", STATE_QOS)
        self._goal_pub = self.create_publisher(PointStamped, "/goal", STATE_QOS)
        if self.unwrapped.has_object:
            self._object_pub = self.create_publisher(PoseStamped, "/object_pose", STATE_QOS)
            self._twist_pub = self.create_publisher(TwistStamped, "/object_twist", STATE_QOS)

    def _on_joint_command(self, msg: Float64MultiArray) -> None:
        try:
            q = conv.joint_command_to_array(msg)
        except conv.MessageError as err:
            self.ignored_commands += 1
            self.get_logger().warning(f"joint command refused: {err}", throttle_duration_sec=1.0)
            return
        if self._arm is not None and not self.done:
            self._arm.receive("forward", [JointPoint(q)], [0.0])
        self._command(q)

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            if self._arm is None:
                q = conv.trajectory_to_joint_targets(msg)
            else:
                points, times = message_points(msg, FR3_ARM_JOINTS)
                q = points[-1].positions
        except (conv.MessageError, ValueError) as err:
            self.ignored_commands += 1
            self.get_logger().warning(f"trajectory refused: {err}", throttle_duration_sec=1.0)
            return
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if self._arm is not None and not self._arm.commanded:
            held = self._arm.controllers["trajectory"].state.positions
            if 0 < stamp_ns < self._reset_ns or np.max(np.abs(points[0].positions - held)) > 0.01:
                # Planned before the node saw the episode's reset, from where the arm no longer is: not judged, and
                # the arm holds (a lockstep step still follows, as for any command).
                self._command(held)
                return
        if self._arm is not None and not self.done:
            self._arm.receive("trajectory", points, times, stamp_ns)
        self._command(q)

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        if len(msg.data) == 1 and np.isfinite(msg.data[0]):
            self._gripper_action = float(np.clip(msg.data[0] / self._finger_open - 1.0, -1.0, 1.0))

    def _on_gripper_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        width = float(self.unwrapped.robot_state()["gripper_width"][0])
        self._gripper_action = float(np.clip(width / self._finger_open - 1.0, -1.0, 1.0))
        response.success, response.message = True, f"gripper held at {width:.4f} m"
        return response

    def _publish_joint_states(self, stamp: Any = None) -> None:
        if self._arm is not None and self._arm.reflex is not None:
            return  # the reflex stopped the hardware component and its broadcasters
        stamp = self.get_clock().now().to_msg() if stamp is None else stamp
        state = self.unwrapped.robot_state()
        data = self.unwrapped.data
        qpos, qvel = data.qpos, data.qvel
        meas = Fr3Measurement(
            state["joint_pos"], state["joint_vel"], qpos[self._finger_qadr].copy(), qvel[self._finger_dofadr].copy()
        )
        self._joint_pub.publish(conv.fr3_joint_state(meas, stamp))
        tcp_quat = np.zeros(4)
        self._mat2quat(tcp_quat, data.site_xmat[self._tcp_site])
        self._tcp_pub.publish(conv.pose_stamped(state["tcp_pos"], tcp_quat, BASE_FRAME, stamp))

    def _publish_franka(self, stamp: Any) -> None:
        data = self.unwrapped.data
        qpos, qvel = data.qpos, data.qvel
        if self._joint_states_each_step:
            self._publish_joint_states(stamp)
        self._goal_pub.publish(conv.point_stamped(self._obs["desired_goal"], BASE_FRAME, stamp))
        if self.unwrapped.has_object:
            q, v = self._obj_qadr, self._obj_dofadr
            self._object_pub.publish(conv.pose_stamped(qpos[q : q + 3], qpos[q + 3 : q + 7], BASE_FRAME, stamp))
            # Free joint: linear velocity in the world frame, angular in the body frame.
            angular = data.xmat[self._obj_body].reshape(3, 3) @ qvel[v + 3 : v + 6]
            self._twist_pub.publish(conv.twist_stamped(qvel[v : v + 3], angular, BASE_FRAME, stamp))

    # --------------------------------------------------------------- stepping
    def _command(self, command: np.ndarray) -> None:
        """A command arrived: step now (lockstep) or keep it for the next tick (realtime)."""
        if self.done:
            self.ignored_commands += 1
            return
        self._pending = command
        if self.mode == "lockstep":
            self._step(command)

    def _action(self, command: np.ndarray | None) -> np.ndarray:
        if self.franka:
            if command is not None and self._arm is None:
                self._targets.target = np.asarray(command, dtype=np.float64)
            return np.array([0.0, 0.0, 0.0, self._gripper_action])
        if command is None:
            return self.unwrapped.hover_action
        return command

    def _step(self, command: np.ndarray | None) -> None:
        if self.franka and self._arm is not None:
            duration = None
            if self.mode == "realtime":
                now_ns = self.get_clock().now().nanoseconds
                duration, self._arm_wall_ns = (now_ns - self._arm_wall_ns) * 1e-9, now_ns
            target = self._arm.advance(duration)
            if target is None:
                self.get_logger().error(f"FR3 reflex at step {self.steps}: {self._arm.reflex}")
                self._finish(crash=f"reflex: {self._arm.reflex}")
                return
            if self._arm.commanded:
                self._targets.target = target
        self._obs, reward, terminated, truncated, info = self.env.step(self._action(command))
        self.steps += 1
        self.total_return += float(reward)
        self.success = bool(info["is_success"])
        self.publish_state()
        if terminated or truncated:
            self._finish(crash=info.get("crash"))
        else:
            self._publish_info(crash=None)

    def _finish(self, crash: str | None) -> None:
        self.done = True
        self._publish_info(crash=crash)
        self._event_pub.publish(
            String(data=json.dumps({"source": "sim", "event": "end", "seed": self.seed, "success": self.success,
                                    "steps": self.steps, "return": self.total_return, "crash": crash}))
        )  # fmt: skip

    def _publish_info(self, crash: str | None) -> None:
        info = {
            "seed": self.seed,
            "step": self.steps,
            "return": self.total_return,
            "success": self.success,
            "done": self.done,
            "crash": crash,
            "ignored_commands": self.ignored_commands,
        }
        self._info_pub.publish(String(data=json.dumps(info)))

    def _realtime_tick(self) -> None:
        if self.done:
            return
        if self.firmware is not None and self.firmware.packet is not None:
            # The firmware keeps flying the last setpoint; the supervisor's timeouts count simulated time.
            age = self._setpoint_steps * self.ctrl_dt
            self._setpoint_steps += 1
            self._step(self.firmware.action(self.unwrapped.robot_state()["rotation"], age))
            return
        self._step(self._pending)

    def _idle_tick(self) -> None:
        if self.done and self.autoreset:
            self.reset_episode()
        elif self.now() - self._last_publish >= 0.9 * self._idle_period():
            self._idle_publish = True
            try:
                self.publish_state()
            finally:
                self._idle_publish = False

    def _idle_period(self) -> float:
        """Between commands, ``republish_period``; after ``republish_period`` without one, the vendor's log period."""
        periods = [p for p in self._log_periods.values() if p]
        if self.firmware is None or not periods or self.now() - self._last_command_time < self.republish_period:
            return self.republish_period
        return min(periods)

    def publish_state(self) -> None:
        """Publish the robot state and the perception inputs, stamped now."""
        stamp = self.get_clock().now().to_msg()
        if self.franka:
            self._publish_franka(stamp)
        else:
            self._publish_quadrotor(stamp)
        self._last_publish = self.now()

    # ---------------------------------------------------------------- episodes
    def reset_episode(self, seed: int | None = None) -> int:
        """Reset the env with ``seed`` (default: the next seed) and publish its first state. Returns the seed."""
        seed = self.next_seed if seed is None else seed
        self.next_seed = seed + 1
        self._obs, _ = self.env.reset(seed=seed)
        self.seed, self.steps, self.total_return, self.done, self.success = seed, 0, 0.0, False, False
        self._pending = None
        self._last_logged.clear()
        if self.firmware is not None:
            self.firmware.packet = None  # a new flight: no setpoint yet (the thrust lock stays as it was)
        if self.franka:
            self._targets.target = None
            if self._arm is not None:
                self._reset_ns = self._arm_wall_ns = self.get_clock().now().nanoseconds
                # realtime: the controller model runs on this clock (a late tick covers the time that passed);
                # lockstep: on the commands (one period each).
                realtime = self.mode == "realtime"
                self._arm.reset(self.unwrapped.robot_state()["joint_pos"], self._reset_ns if realtime else None)
            width = float(self.unwrapped.robot_state()["gripper_width"][0])
            self._gripper_action = float(np.clip(width / self._finger_open - 1.0, -1.0, 1.0))
        self._event_pub.publish(
            String(data=json.dumps({"source": "sim", "event": "start", "env_id": self.env_id, "seed": seed}))
        )
        self.publish_state()
        self._publish_info(crash=None)
        return seed

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        seed = self.reset_episode()
        response.success, response.message = True, json.dumps({"seed": seed})
        return response

    def close(self) -> None:
        """Release the env."""
        self.env.close()


def main(args: list[str] | None = None) -> None:
    """``ros2 run robot_rl_ros sim_bridge --ros-args -p env_id:=robot_rl/PandaPush-v0``."""
    rclpy.init(args=args)
    node = SimBridge()
    spin_node(node, close=node.close)
