"""The Crazyflie's robot adapter (crazyswarm2); the common part is :mod:`robot_rl_ros.adapter_base`.

:class:`CrazyflieAdapter`: crazyswarm2. In: ``/<name>/odom`` (Odometry) or ``/<name>/pose`` (PoseStamped,
differentiated), ``/<name>/goal`` (PointStamped, ``world``). Out: ``/<name>/cmd_vel_legacy`` (Twist;
:mod:`robot_rl_ros.crazyflie`). ``/<name>/emergency`` (std_srvs/Empty) on e-stop when ``estop_emergency`` is
set; ``notify_setpoints_stop`` and ``land`` on deactivation need ``crazyflie_interfaces`` (built with
crazyswarm2, not on PyPI) and are skipped with a log line without it. ``cmd_full_state``
(crazyflie_interfaces/FullState) is not offered: CTBR has no full-state form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped, PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from std_srvs.srv import Empty

from robot_rl_ros import conversions as conv
from robot_rl_ros.adapter_base import COMMAND_QOS, INPUT_QOS, PublisherFactory, RobotAdapter
from robot_rl_ros.crazyflie import PoseDifferentiator, QuadrotorObserver, ctbr_to_legacy, legacy_config
from robot_rl_ros.crazyflie_vendor import CrazyflieVendorChecks


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
