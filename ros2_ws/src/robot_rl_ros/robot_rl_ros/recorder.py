"""rosbag2 recorder without ros2bag: raw subscriptions written by ``rosbags`` (MCAP by default).

``ros2 bag record`` (rosbag2_py) is not on PyPI; this node records the same way: one raw
subscription per topic (the serialized CDR as it arrived, never re-serialized: rclpy's
``serialize_message`` leaves Fast DDS padding bytes that rosbags refuses), written with the receipt
time [ns, node clock] into a rosbag2 folder that ``ros2 bag info/play`` reads. Metadata version 8
by default, which Humble's rosbag2 reads as well as Jazzy's (version 9 needs Jazzy).

Parameters: ``output`` (the bag folder; must not exist), ``topics`` (default: the step records,
episode events, the policy node's status, interventions and diagnostics that ``robot-rl data from-bag`` and a
review need; add the robot's topics to keep the raw data too), ``storage`` (``mcap`` or ``sqlite3``),
``version`` (8 or 9), ``foxglove`` (also write this MCAP file for Foxglove, in the channels of ``robot-rl eval
--log``: the scene of the episode's env with the arm posed from ``/joint_states``, the goal, each episode's
success, and from the policy node's ``/robot_rl/status`` its action, the command sent, each safety filter's
report, the watchdog, e-stop and chunk verdicts and the monitor's scores with thresholds and alarm;
:mod:`robot_rl.data.mcap_steps`; "" off).
Topics are picked up as they appear in the graph (checked every ``discovery_period`` s); their type comes from
the graph and must be a standard ROS 2 Jazzy type. The bag and the Foxglove file are finalized (metadata.yaml
written) on shutdown or ``~/stop`` (std_srvs/Trigger).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile
from std_srvs.srv import Trigger

from robot_rl.data.bag import EPISODE_TOPIC, STEP_TOPIC
from robot_rl.data.mcap_messages import STATUS_TOPIC
from robot_rl_ros.spin import spin_node

DEFAULT_TOPICS = [STEP_TOPIC, EPISODE_TOPIC, STATUS_TOPIC, "/robot_rl/intervention", "/diagnostics"]
"""What ``robot-rl data from-bag`` and a review of a run need."""


def message_class(type_name: str) -> Any:
    """The Python class of ``pkg/msg/Type``."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


class BagRecorder(Node):
    """Records topics into a rosbag2 folder (see the module docstring).

    Args:
        node_name: The node's name.
        **kwargs: Passed to ``Node`` (``context=`` in tests, ``parameter_overrides=``).

    Raises:
        FileExistsError: ``output`` exists.
        ValueError: an unknown ``storage`` or ``version``.
    """

    def __init__(self, node_name: str = "bag_recorder", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.declare_parameter("output", "")
        self.declare_parameter("topics", DEFAULT_TOPICS)
        self.declare_parameter("storage", "mcap")
        self.declare_parameter("version", 8)
        self.declare_parameter("discovery_period", 0.5)
        self.declare_parameter("foxglove", "")
        output = str(self.get_parameter("output").value)
        if not output:
            raise ValueError("`output` must name the bag folder to create. Got ''.")
        self.output = Path(output)
        if self.output.exists():
            raise FileExistsError(f"{self.output} exists; rosbag2 writes a new folder. Choose another `output`.")
        storage = str(self.get_parameter("storage").value)
        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"`storage` must be one of {sorted(plugins)}. Got {storage!r}.")
        version = int(self.get_parameter("version").value)
        if version not in (8, 9):
            raise ValueError(f"`version` must be 8 (Humble and Jazzy read it) or 9 (Jazzy). Got {version}.")
        self.wanted = [str(t) for t in self.get_parameter("topics").value]
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.writer: Any = Writer(self.output, version=version, storage_plugin=plugins[storage])  # type: ignore[arg-type]
        self.writer.open()
        self.counts: dict[str, int] = {}
        self._connections: dict[str, Any] = {}
        self._raw_subscriptions: list[Any] = []
        self.foxglove: Any = None
        foxglove = str(self.get_parameter("foxglove").value)
        if foxglove:
            self._start_foxglove(foxglove)
        self.create_service(Trigger, "~/stop", self._on_stop)
        self._timer = self.create_timer(float(self.get_parameter("discovery_period").value), self.discover)
        self.discover()

    def _start_foxglove(self, path: str) -> None:
        """The Foxglove file: step records, status, episode events and joint states fed to StepRecordLog."""
        import json

        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray, String

        from robot_rl.data.bag import parse_step_record
        from robot_rl.data.mcap_steps import StepRecordLog

        log = self.foxglove = StepRecordLog(path, warn=lambda line: self.get_logger().warning(line))

        def on_step(msg: Float64MultiArray) -> None:
            dims = msg.layout.dim
            try:
                record = parse_step_record([d.label for d in dims], [int(d.size) for d in dims], np.asarray(msg.data))
            except ValueError:
                return  # not a step record of ours
            log.on_step(self.get_clock().now().nanoseconds, record)

        def on_event(msg: String) -> None:
            try:
                event = json.loads(msg.data)
            except ValueError:
                return
            if isinstance(event, dict):
                log.on_event(self.get_clock().now().nanoseconds, event)

        qos = QoSProfile(depth=100)
        events = QoSProfile(depth=100, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(Float64MultiArray, STEP_TOPIC, on_step, qos)
        self.create_subscription(String, STATUS_TOPIC, lambda msg: log.on_status(msg.data), qos)
        self.create_subscription(String, EPISODE_TOPIC, on_event, events)
        self.create_subscription(
            JointState, "/joint_states", lambda msg: log.on_joint_state(list(msg.name), list(msg.position)), qos
        )

    def discover(self) -> None:
        """Subscribe to the wanted topics that appeared in the graph since the last call."""
        if self.writer is None:
            return
        for topic, types in self.get_topic_names_and_types():
            if topic not in self.wanted or topic in self._connections or not types:
                continue
            type_name = types[0]
            if type_name not in self.typestore.fielddefs:
                self.get_logger().warning(f"{topic}: type {type_name} is not a standard Jazzy type; not recorded")
                self._connections[topic] = None
                continue
            connection = self.writer.add_connection(topic, type_name, typestore=self.typestore)
            self._connections[topic] = connection
            self.counts[topic] = 0
            qos = QoSProfile(depth=100)
            if topic == EPISODE_TOPIC:
                qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
            self._raw_subscriptions.append(
                self.create_subscription(
                    message_class(type_name), topic, lambda data, t=topic: self._write(t, data), qos, raw=True
                )
            )
            self.get_logger().info(f"recording {topic} ({type_name})")

    def _write(self, topic: str, data: bytes) -> None:
        if self.writer is None:
            return
        self.writer.write(self._connections[topic], self.get_clock().now().nanoseconds, data)
        self.counts[topic] += 1

    def close(self) -> None:
        """Finalize the bag (metadata.yaml) and the Foxglove file; later messages are dropped."""
        if self.foxglove is not None:
            foxglove, self.foxglove = self.foxglove, None
            result = foxglove.close()
            for reason, count in foxglove.refused.items():
                self.get_logger().warning(f"foxglove: {count} status messages not written: {reason}")
            if result is not None:
                self.get_logger().info(f"foxglove: {result}")
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
            self.get_logger().info(f"{self.output}: {sum(self.counts.values())} messages {self.counts}")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.close()
        response.success, response.message = True, str(self.output)
        return response


def main(args: list[str] | None = None) -> None:
    """``ros2 run robot_rl_ros bag_recorder --ros-args -p output:=runs/bag1``; Ctrl-C finalizes the bag."""
    rclpy.init(args=args)
    node = BagRecorder()
    spin_node(node, close=node.close)
