"""Robot adapters, the common part: one robot's topics, cached, converted into an observation; actions into commands.

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

The robots' adapters: :mod:`robot_rl_ros.adapters` (the FR3, and ``ADAPTERS``, robot name -> class) and
:mod:`robot_rl_ros.crazyflie_adapter`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.client import Client
from rclpy.lifecycle import LifecyclePublisher
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.subscription import Subscription

from robot_rl_ros import conversions as conv
from robot_rl_ros.control import CLOCK_SKEW_TOLERANCE_S, STALE_PERIODS, StampCheck
from robot_rl_ros.spin import node_param

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
        return node_param(self.node, name, default)

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
