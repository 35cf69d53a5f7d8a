"""Teleoperation over ROS: sensor_msgs/Joy or the terminal keyboard -> robot commands through the safety chain.

The device gives robot_rl's device-independent command (:class:`robot_rl.teleop.base.TeleopCommand`)
and :class:`robot_rl.teleop.base.CommandMapper` turns it into the env's action (Franka: TCP
displacement and gripper; quadrotor: a velocity setpoint flown by the scripted position controller),
exactly as ``robot-rl collect --source ...`` does. The action then takes the policy node's way out:
the robot adapter's observation (for the mapper and the chain), the robot's safety chain, the
adapter's command message.

Interventions: while the operator is engaged (Joy: the dead-man button held; keyboard: a motion
key pressed within ``hold_time``, or ``t`` toggled) the node publishes ``true`` on
``/robot_rl/intervention`` (std_msgs/Bool, every tick) and commands the robot; the policy node
yields meanwhile. Each commanded step goes to ``/robot_rl/steps`` with ``intervention = 1``.

Parameters: ``env_id`` (or ``policy``: a policy folder whose env is used), ``device`` (``joy`` or
``keyboard``), ``joy_topic``, ``deadman_button``, ``gripper_button``, ``joy_axes`` (device axis for
each twist component x, y, z, roll, pitch, yaw; -1 for none), ``joy_axis_signs``, ``safety``,
``require_safety``, plus the robot adapter's parameters (:mod:`robot_rl_ros.adapters`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Joy
from std_msgs.msg import Bool, Float64MultiArray, String

from robot_rl.data.bag import EPISODE_TOPIC, STEP_TOPIC
from robot_rl_ros import conversions as conv
from robot_rl_ros.adapters import ADAPTERS
from robot_rl_ros.control import ROBOT_OF_FAMILY, load_safety
from robot_rl_ros.policy_node import EVENT_QOS
from robot_rl_ros.spin import node_param, node_seconds, spin_node


class JoyDevice:
    """A :class:`robot_rl.teleop.base.Teleoperator` reading the newest sensor_msgs/Joy.

    Args:
        axes: Joy axis index for twist components x, y, z, roll, pitch, yaw (-1: unused). Shape: (6,).
        signs: Sign per twist component. Shape: (6,).
        deadman: Button that must be held for any motion (-1: none).
        gripper: Button that toggles the gripper.
    """

    name = "joy"

    def __init__(self, axes: list[int], signs: list[float], deadman: int, gripper: int) -> None:
        if len(axes) != 6 or len(signs) != 6:
            raise ValueError(f"`joy_axes` and `joy_axis_signs` must have 6 entries. Got {len(axes)}, {len(signs)}.")
        self.axes, self.signs, self.deadman, self.gripper_button = axes, signs, deadman, gripper
        self.msg: Joy | None = None
        self._gripper = 1.0
        self._was_pressed = False

    def connect(self) -> None:
        """Nothing to open: messages arrive on the Joy topic."""

    def close(self) -> None:
        """Nothing to release."""

    def engaged(self) -> bool:
        """The dead-man button is held (always, without one, once a message arrived)."""
        msg = self.msg
        if msg is None:
            return False
        return self.deadman < 0 or (self.deadman < len(msg.buttons) and bool(msg.buttons[self.deadman]))

    def read(self) -> Any:
        """The command of the newest Joy message (zero twist while the dead-man is released)."""
        from robot_rl.teleop.base import TeleopCommand

        msg = self.msg
        twist = np.zeros(6)
        if msg is not None:
            pressed = 0 <= self.gripper_button < len(msg.buttons) and bool(msg.buttons[self.gripper_button])
            if pressed and not self._was_pressed:
                self._gripper = -self._gripper
            self._was_pressed = pressed
            if self.engaged():
                for i, (axis, sign) in enumerate(zip(self.axes, self.signs, strict=True)):
                    if 0 <= axis < len(msg.axes):
                        twist[i] = sign * float(msg.axes[axis])
        return TeleopCommand(twist=np.clip(twist, -1.0, 1.0), gripper=self._gripper)


class TeleopNode(Node):
    """Joy/keyboard teleoperation of a robot_rl robot (see the module docstring).

    Args:
        node_name: The node's name.
        device: A connected device to use instead of the ``device`` parameter's (tests: a scripted one).
        **kwargs: Passed to ``Node``.
    """

    def __init__(self, node_name: str = "robot_rl_teleop", device: Any = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        from robot_rl.envs.registry import check_env_id, make, robot_of
        from robot_rl.teleop.base import CommandMapper

        env_id = str(self._param("env_id", ""))
        policy = str(self._param("policy", ""))
        if not env_id:
            if not policy:
                raise ValueError("set `env_id` (e.g. robot_rl/PandaPush-v0) or `policy` (a policy folder).")
            from robot_rl.export.metadata import read_metadata
            from robot_rl_ros.control import resolve_policy_dir

            env_id = read_metadata(resolve_policy_dir(policy)).env_id
        self.env_id = check_env_id(env_id)
        self.env = make(self.env_id)
        robot = ROBOT_OF_FAMILY[robot_of(self.env_id).family]
        self.adapter = ADAPTERS[robot](self, self.env, self.create_publisher, self.now)
        self.mapper = CommandMapper(self.env)
        self.chain = None
        if bool(self._param("safety", True)):
            try:
                self.chain, _ = load_safety(self.env_id, str(self._param("hardware_dir", "")))
            except RuntimeError as err:
                if bool(self._param("require_safety", True)):
                    raise
                self.get_logger().warning(f"safety: off ({err})")
        self.hold_time = float(self._param("hold_time", 0.5))
        if device is None:
            device = self._make_device(str(self._param("device", "joy")))
        self.device = device
        self.device.connect()
        self.ctrl_dt = float(self.env.unwrapped.ctrl_dt)
        self._intervention = self.create_publisher(Bool, "/robot_rl/intervention", 10)
        self._steps = self.create_publisher(Float64MultiArray, STEP_TOPIC, 10)
        self._events = self.create_publisher(String, EPISODE_TOPIC, EVENT_QOS)
        self._engaged_until = -1.0
        self._active = False
        self._toggled = False
        self._episode = -1
        self._step = 0
        self.commanded_steps = 0
        self.last_report: Any = None
        self.create_timer(self.ctrl_dt, self.tick)

    def _param(self, name: str, default: Any) -> Any:
        return node_param(self, name, default)

    def now(self) -> float:
        """The node's clock [s]."""
        return node_seconds(self)

    def _make_device(self, kind: str) -> Any:
        if kind == "keyboard":
            from robot_rl.teleop.keyboard import KeyboardTeleop

            return KeyboardTeleop()
        if kind != "joy":
            raise ValueError(f"`device` must be 'joy' or 'keyboard'. Got {kind!r}.")
        device = JoyDevice(
            [int(a) for a in self._param("joy_axes", [1, 0, 4, -1, -1, 3])],
            [float(s) for s in self._param("joy_axis_signs", [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])],
            int(self._param("deadman_button", 4)),
            int(self._param("gripper_button", 0)),
        )
        self.create_subscription(Joy, str(self._param("joy_topic", "/joy")), self._on_joy, 10)
        return device

    def _on_joy(self, msg: Joy) -> None:
        self.device.msg = msg

    def _engaged(self, command: Any, now: float) -> bool:
        from robot_rl.teleop.base import TeleopEvent

        if TeleopEvent.TAKEOVER in command.events:
            self._toggled = not self._toggled
        if isinstance(self.device, JoyDevice):
            return self.device.engaged()
        if np.any(np.abs(command.twist) > 0.0):
            self._engaged_until = now + self.hold_time
        return self._toggled or now < self._engaged_until

    def tick(self) -> None:
        """Read the device; while engaged, command the robot through the safety chain."""
        now = self.now()
        command = self.device.read()
        engaged = self._engaged(command, now)
        self._intervention.publish(Bool(data=engaged))
        if engaged and not self._active:
            self._start_episode()
        self._active = engaged
        if not engaged:
            return
        observation = self.adapter.observation()
        if observation is None:
            return
        action = self.mapper(command, observation)
        if self.chain is not None:
            action, self.last_report = self.chain.filter(action, observation, now)
        self.adapter.publish(action)
        self.commanded_steps += 1
        self._steps.publish(
            conv.step_record(
                {
                    "episode": self._episode,
                    "seed": -1,
                    "step": self._step,
                    "observation": observation["observation"],
                    "achieved_goal": observation["achieved_goal"],
                    "desired_goal": observation["desired_goal"],
                    "action": action,
                    "intervention": 1.0,
                }
            )
        )
        self._step += 1

    def _start_episode(self) -> None:
        self._episode += 1
        self._step = 0
        self.mapper.reset()
        if self.chain is not None:
            self.chain.reset()
        self._events.publish(String(data=json.dumps({"source": "teleop", "event": "takeover"})))

    def close(self) -> None:
        """Release the device and the env."""
        self.device.close()
        self.env.close()


def main(args: list[str] | None = None) -> None:
    """``ros2 run robot_rl_ros teleop_node --ros-args -p env_id:=robot_rl/PandaPush-v0 -p device:=joy``."""
    rclpy.init(args=args)
    node = TeleopNode()
    spin_node(node, close=node.close)
