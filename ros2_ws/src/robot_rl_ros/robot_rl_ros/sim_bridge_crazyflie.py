"""The sim bridge's crazyswarm2 face: the Crazyflie topics and services, the firmware stand-in and the logging.

Methods of :class:`robot_rl_ros.sim_bridge.SimBridge` for quadrotor envs, kept apart from its stepping, its
episodes and its franka_ros2 face (the module docstring of :mod:`robot_rl_ros.sim_bridge` describes what the
bridge serves). The firmware and the backends are :mod:`robot_rl_ros.crazyflie_firmware` and
:mod:`robot_rl_ros.crazyflie_vendor`.
"""

from __future__ import annotations

from typing import Any

from geometry_msgs.msg import PointStamped, PoseStamped, Twist
from nav_msgs.msg import Odometry
from std_srvs.srv import Empty

from robot_rl_ros import conversions as conv
from robot_rl_ros import crazyflie_vendor as vendor
from robot_rl_ros.crazyflie import WORLD_FRAME, QuadrotorMeasurement, legacy_config


class CrazyflieSim:
    """Mixed into ``SimBridge`` (a ``rclpy.node.Node``): the quadrotor side, on the bridge's own state.

    It sets ``firmware``, ``backend``, ``crazyswarm``, ``legacy``, ``robot_name`` and the log periods, and calls
    the bridge's ``_command`` (a decoded setpoint) and ``_finish`` (an emergency).
    """

    def _setup_quadrotor(self) -> None:
        self.robot_name = str(self._param("robot_name", "cf231"))
        self.legacy = legacy_config(self._param)
        self._setup_vendor()
        base = f"/{self.robot_name}"
        self.create_subscription(Twist, f"{base}/cmd_vel_legacy", self._on_legacy, 10)
        self.create_service(Empty, f"{base}/emergency", self._on_emergency)
        self.create_service(Empty, "/all/emergency", self._on_emergency)
        self._pose_pub = self.create_publisher(PoseStamped, f"{base}/pose", self.state_qos)
        self._odom_pub = self.create_publisher(Odometry, f"{base}/odom", self.state_qos)
        self._goal_pub = self.create_publisher(PointStamped, f"{base}/goal", self.state_qos)
        try:
            from crazyflie_interfaces import srv  # type: ignore[import-not-found]
        except ImportError:
            self.get_logger().info("crazyflie_interfaces not installed: takeoff/land/notify_setpoints_stop not served")
        else:
            for name, kind in (
                ("takeoff", srv.Takeoff),
                ("land", srv.Land),
                ("notify_setpoints_stop", srv.NotifySetpointsStop),
            ):
                self.create_service(kind, f"{base}/{name}", lambda request, response: response)

    def _on_legacy(self, msg: Twist) -> None:
        try:
            values = conv.twist_to_legacy(msg)
        except conv.MessageError as err:
            self.ignored_commands += 1
            self.get_logger().warning(f"cmd_vel_legacy refused: {err}", throttle_duration_sec=1.0)
            return
        rotation = self.unwrapped.robot_state()["rotation"]
        assert self.firmware is not None
        locked = self.firmware.thrust_locked
        self.firmware.receive(values)
        self._setpoint_steps = 0
        self._last_command_time = self.now()
        if locked and not self.firmware.thrust_locked and self.mode == "lockstep":
            return  # the unlock packet: in lockstep it lasts no simulated time
        self._command(self.firmware.action(rotation))

    def _setup_vendor(self) -> None:
        from robot_rl.safety.config import HARDWARE_DIR

        self.backend = vendor.backend(str(self._param("backend", "cpp")))
        path = str(self._param("crazyflies_yaml", "")) or str(HARDWARE_DIR / "crazyswarm2" / "crazyflies.yaml")
        self.crazyswarm = vendor.CrazyswarmConfig.from_yaml(path, self.robot_name)
        self.firmware = vendor.LegacyFirmware(
            self.backend,
            self.crazyswarm,
            vehicle_max_thrust=self.legacy.max_thrust,
            env_max_thrust=float(self.unwrapped.params.max_thrust),
            thrust_full_scale=self.legacy.thrust_full_scale,
            attitude_time_constant=float(self._param("attitude_time_constant", 0.05)),
            thrust_locked=bool(self._param("thrust_locked", True)),
        )
        self._log_periods = {topic: self.crazyswarm.log_period(topic, self.backend) for topic in ("pose", "odom")}

    def _publish_vendor(self, meas: QuadrotorMeasurement, stamp: Any) -> None:
        """Pose and odom as the backend logs them, each at its crazyflies.yaml rate (simulated time)."""
        t, now = self.steps * self.ctrl_dt, self.now()
        frame = self.crazyswarm.reference_frame
        for topic, period in self._log_periods.items():
            if not period:
                continue
            if self._idle_publish:  # between commands: the log rate in wall time
                due = now - self._last_logged_wall.get(topic, -float("inf")) >= 0.9 * period
            else:  # stepping: the log rate in simulated time
                last = self._last_logged.get(topic)
                due = last is None or t - last >= period - 1e-9
            if not due:
                continue
            self._last_logged[topic], self._last_logged_wall[topic] = t, now
            if topic == "pose":
                quat = vendor.backend_pose_quat(self.backend, meas)
                self._pose_pub.publish(conv.pose_stamped(meas.position, quat, frame, stamp))
            else:
                frame_id, child, quat, linear, angular = vendor.backend_odometry(
                    self.backend, self.robot_name, frame, meas
                )
                self._odom_pub.publish(conv.raw_odometry(meas.position, quat, linear, angular, frame_id, child, stamp))
        self._goal_pub.publish(conv.point_stamped(self._obs["desired_goal"], WORLD_FRAME, stamp))

    def _on_emergency(self, request: Empty.Request, response: Empty.Response) -> Empty.Response:
        if not self.done:
            self.get_logger().warning("emergency: motors off, episode over")
            self._finish(crash="emergency")
        return response

    def _publish_quadrotor(self, stamp: Any) -> None:
        state = self.unwrapped.robot_state()
        meas = QuadrotorMeasurement(state["position"], state["velocity"], state["rotation"], state["body_rates"])
        self._publish_vendor(meas, stamp)
