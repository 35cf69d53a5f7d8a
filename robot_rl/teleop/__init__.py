"""Teleoperation: the Teleoperator interface, the keyboard, gamepad and SpaceMouse devices.

Also human takeover of a policy rollout (:class:`HumanTakeover`) and the live view of a rollout
(:class:`LiveView`).
"""

from robot_rl.teleop.base import (
    CommandMapper,
    DeviceNotFoundError,
    TeleopCommand,
    TeleopConfig,
    Teleoperator,
    TeleopEvent,
)
from robot_rl.teleop.intervention import HumanTakeover
from robot_rl.teleop.view import LiveView

__all__ = [
    "CommandMapper",
    "DeviceNotFoundError",
    "HumanTakeover",
    "LiveView",
    "TeleopCommand",
    "TeleopConfig",
    "TeleopEvent",
    "Teleoperator",
    "make_teleoperator",
]


def make_teleoperator(source: str, **kwargs: object) -> Teleoperator:
    """The device for a ``--source`` name: keyboard, gamepad or spacemouse."""
    if source == "keyboard":
        from robot_rl.teleop.keyboard import KeyboardTeleop

        return KeyboardTeleop(**kwargs)  # type: ignore[arg-type]
    if source == "gamepad":
        from robot_rl.teleop.gamepad import GamepadTeleop

        return GamepadTeleop(**kwargs)  # type: ignore[arg-type]
    if source == "spacemouse":
        from robot_rl.teleop.spacemouse import SpaceMouseTeleop

        return SpaceMouseTeleop(**kwargs)  # type: ignore[arg-type]
    raise ValueError(f"unknown teleoperation device {source!r}. Valid devices: keyboard, gamepad, spacemouse.")
