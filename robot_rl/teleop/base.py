"""The Teleoperator interface: devices give a 6-D twist, a gripper command and episode events.

A device reports what the operator asks for in device-independent terms (:class:`TeleopCommand`):
a normalized twist in [-1, 1] (linear x, y, z and angular roll, pitch, yaw, in the world frame
the operator sees), a gripper opening in [-1, 1] and episode events (start, save as success,
discard, reset, quit). :func:`command_to_action` maps a command to an env's action: end-effector
displacement and gripper for the Franka tasks, a velocity setpoint flown by a position controller
for the quadrotor. Scaling and deadband are applied here, once, for every device.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Protocol

import numpy as np


class TeleopEvent(enum.Enum):
    """Episode control from the device."""

    START = "start"
    """Begin recording the episode (motion before it is not recorded)."""
    SAVE = "save"
    """End the episode and keep it, marked successful."""
    DISCARD = "discard"
    """End the episode and drop it."""
    RESET = "reset"
    """Reset the environment without saving."""
    QUIT = "quit"
    """Stop collecting."""
    TAKEOVER = "takeover"
    """Toggle a human intervention during a policy rollout."""


@dataclasses.dataclass
class TeleopCommand:
    """One reading of a device."""

    twist: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(6))
    """Normalized twist in [-1, 1]: linear x, y, z then angular x, y, z (world frame)."""
    gripper: float = 1.0
    """Gripper opening in [-1, 1]: -1 closed, +1 open."""
    events: list[TeleopEvent] = dataclasses.field(default_factory=list)
    """Episode events since the last reading."""


@dataclasses.dataclass(frozen=True)
class TeleopConfig:
    """Scaling and deadband shared by every device."""

    deadband: float = 0.08
    """Twist components with |value| below this are zeroed (stick and puck drift) [1]."""
    linear_scale: float = 0.5
    """Fraction of the env's largest step a full deflection asks for [1] (finer control)."""
    quadrotor_speed: float = 0.6
    """Quadrotor velocity setpoint at full deflection [m/s]."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.deadband < 1.0:
            raise ValueError(f"`deadband` must be in [0, 1). Got {self.deadband}.")
        if not 0.0 < self.linear_scale <= 1.0:
            raise ValueError(f"`linear_scale` must be in (0, 1]. Got {self.linear_scale}.")
        if self.quadrotor_speed <= 0.0:
            raise ValueError(f"`quadrotor_speed` must be > 0. Got {self.quadrotor_speed}.")


class Teleoperator(Protocol):
    """A teleoperation device."""

    name: str
    """Short device name recorded with the demonstrations (keyboard, gamepad, spacemouse)."""

    def connect(self) -> None:
        """Open the device; raise :class:`DeviceNotFoundError` naming what was looked for."""

    def read(self) -> TeleopCommand:
        """The current command (non-blocking)."""

    def close(self) -> None:
        """Release the device."""


class DeviceNotFoundError(RuntimeError):
    """A device is missing; the message names what was looked for and how to connect it."""


def apply_deadband(twist: np.ndarray, deadband: float) -> np.ndarray:
    """Zero the components below ``deadband`` and rescale the rest to keep the full range."""
    out = np.zeros_like(twist)
    mask = np.abs(twist) >= deadband
    out[mask] = np.sign(twist[mask]) * (np.abs(twist[mask]) - deadband) / (1.0 - deadband)
    return np.clip(out, -1.0, 1.0)


class CommandMapper:
    """Turns :class:`TeleopCommand` into an env action, for Franka and quadrotor tasks.

    Args:
        env: The (possibly wrapped) environment.
        config: Scaling and deadband.
    """

    def __init__(self, env: object, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig()
        self.env = env
        unwrapped = env.unwrapped  # type: ignore[attr-defined]
        self.quadrotor = hasattr(unwrapped, "rate_controller")
        if self.quadrotor:
            from robot_rl.envs.quadrotor.expert import QuadrotorExpert

            self._pilot = QuadrotorExpert(unwrapped.params, unwrapped.ctrl_dt)
            self._setpoint: np.ndarray | None = None
            self._ctrl_dt = unwrapped.ctrl_dt

    def reset(self) -> None:
        """Start a new episode (the quadrotor setpoint restarts at the vehicle)."""
        if self.quadrotor:
            self._pilot.reset()
            self._setpoint = None

    def __call__(self, command: TeleopCommand, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The env action for ``command`` given the latest observation. Shape: (4,)."""
        twist = apply_deadband(np.asarray(command.twist, dtype=np.float64), self.config.deadband)
        if not self.quadrotor:
            gripper = float(np.clip(command.gripper, -1.0, 1.0))
            return np.array([*(self.config.linear_scale * twist[:3]), gripper])
        # Quadrotor: the twist is a velocity setpoint; a position controller flies a moving setpoint.
        position = obs["observation"][0:3]
        if self._setpoint is None:
            self._setpoint = position.copy()
        self._setpoint = self._setpoint + self.config.quadrotor_speed * twist[:3] * self._ctrl_dt
        # Keep the setpoint close to the vehicle so releasing the stick stops it promptly.
        offset = self._setpoint - position
        distance = float(np.linalg.norm(offset))
        if distance > 0.3:
            self._setpoint = position + offset * (0.3 / distance)
        steered = dict(obs)
        steered["desired_goal"] = self._setpoint
        steered["observation"] = obs["observation"][:21]  # no reference feed-forward: the human leads
        return self._pilot(steered)
