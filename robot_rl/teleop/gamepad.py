"""Gamepad teleoperation through SDL (pygame): Xbox / PlayStation-style controllers.

Button layout (SDL game-controller numbering; Xbox names, PlayStation in brackets):

==============================  ==========================================
input                           action
==============================  ==========================================
left stick                      x (forward/back), y (left/right)
right stick vertical            z (up/down)
right stick horizontal          yaw
right trigger (axis 5)          close gripper (released: open)
A [cross] (button 0)            save episode (success)
B [circle] (button 1)           discard episode
X [square] (button 2)           reset without saving
Y [triangle] (button 3)         take over / hand back (interventions)
START (button 7)                start recording
BACK (button 6)                 quit
==============================  ==========================================

Sticks report y down as positive; the mapping flips them so pushing forward is +x.
"""

from __future__ import annotations

import os

import numpy as np

from robot_rl.teleop.base import DeviceNotFoundError, TeleopCommand, TeleopEvent

BUTTON_EVENTS = {
    0: TeleopEvent.SAVE,
    1: TeleopEvent.DISCARD,
    2: TeleopEvent.RESET,
    3: TeleopEvent.TAKEOVER,
    7: TeleopEvent.START,
    6: TeleopEvent.QUIT,
}
"""SDL button index -> episode event."""

AXIS_TWIST = {1: (0, -1.0), 0: (1, -1.0), 4: (2, -1.0), 3: (5, -1.0)}
"""SDL axis -> (twist component, sign): left stick y -> x, left x -> y, right y -> z, right x -> yaw."""

TRIGGER_AXIS = 5
"""Right trigger: -1 released ... +1 fully pressed."""


class GamepadTeleop:
    """Reads a gamepad from SDL's event queue (joystick axis and button events).

    Args:
        index: Which joystick to open (0 = the first).
        headless: Use SDL's dummy video driver (no window needed).
    """

    name = "gamepad"

    def __init__(self, index: int = 0, headless: bool = True) -> None:
        self.index = index
        self.headless = headless
        self._axes: dict[int, float] = {}
        self._joystick = None
        self._pygame = None

    def connect(self) -> None:
        """Initialise SDL and open the joystick."""
        if self.headless:
            os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        try:
            import pygame
        except ImportError:
            raise DeviceNotFoundError("gamepad teleoperation needs pygame (SDL): pip install -e '.[teleop]'.") from None
        pygame.display.init()  # the event queue; not pygame.init(), which also opens audio
        pygame.joystick.init()
        self._pygame = pygame
        count = pygame.joystick.get_count()
        if count <= self.index:
            raise DeviceNotFoundError(
                f"no gamepad at SDL joystick index {self.index}: SDL sees {count} joystick(s). Plug in a USB or "
                "Bluetooth controller (Xbox, PlayStation or any SDL game controller), check that it shows under "
                "/dev/input/js* and that your user can read /dev/input/event* (the `input` group), then retry."
            )
        self._joystick = pygame.joystick.Joystick(self.index)
        self._joystick.init()

    def attach(self, pygame_module: object) -> None:
        """Use an already initialised pygame (tests post SDL events without a physical device)."""
        self._pygame = pygame_module

    def close(self) -> None:
        """Release the joystick."""
        if self._joystick is not None:
            self._joystick.quit()
            self._joystick = None

    def read(self) -> TeleopCommand:
        """Drain SDL's joystick events and return the current command."""
        pygame = self._pygame
        if pygame is None:
            raise RuntimeError("the gamepad is not connected. Run `.connect()` first.")
        events: list[TeleopEvent] = []
        for event in pygame.event.get((pygame.JOYAXISMOTION, pygame.JOYBUTTONDOWN)):
            if event.type == pygame.JOYAXISMOTION:
                self._axes[event.axis] = float(event.value)
            elif event.button in BUTTON_EVENTS:
                events.append(BUTTON_EVENTS[event.button])
        twist = np.zeros(6)
        for axis, (component, sign) in AXIS_TWIST.items():
            twist[component] = sign * self._axes.get(axis, 0.0)
        trigger = self._axes.get(TRIGGER_AXIS, -1.0)
        gripper = -1.0 if trigger > 0.0 else 1.0
        return TeleopCommand(twist=np.clip(twist, -1.0, 1.0), gripper=gripper, events=events)
