"""Keyboard teleoperation in the terminal: works over SSH, needs no display.

A terminal sends key presses, not releases, and repeats a held key. So a press of a motion key
moves along its axis for ``hold_time`` seconds; holding the key keeps re-arming it through the
terminal's auto-repeat, and letting go stops the motion within ``hold_time``.

Layout (the status line prints it):

=========  ============================  =========  ==========================
key        action                        key        action
=========  ============================  =========  ==========================
w / s      +x / -x (forward / back)      space      toggle gripper
a / d      +y / -y (left / right)        enter      save episode (success)
r / f      +z / -z (up / down)           x          discard episode
q / e      yaw left / right              backspace  reset without saving
i / k      pitch (roll about y)          t          take over / hand back
j / l      roll (about x)                esc, ctrl-c  quit
=========  ============================  =========  ==========================
"""

from __future__ import annotations

import os
import re
import select
import sys
import termios
import time
import tty
from collections.abc import Callable

import numpy as np

from robot_rl.teleop.base import DeviceNotFoundError, TeleopCommand, TeleopEvent

MOTION_KEYS: dict[str, tuple[int, float]] = {
    "w": (0, 1.0),
    "s": (0, -1.0),
    "a": (1, 1.0),
    "d": (1, -1.0),
    "r": (2, 1.0),
    "f": (2, -1.0),
    "j": (3, 1.0),
    "l": (3, -1.0),
    "i": (4, 1.0),
    "k": (4, -1.0),
    "q": (5, 1.0),
    "e": (5, -1.0),
}
"""Key -> (twist axis, direction)."""

EVENT_KEYS: dict[str, TeleopEvent] = {
    "\r": TeleopEvent.SAVE,
    "\n": TeleopEvent.SAVE,
    "x": TeleopEvent.DISCARD,
    "\x7f": TeleopEvent.RESET,
    "\x08": TeleopEvent.RESET,
    "t": TeleopEvent.TAKEOVER,
    "\x1b": TeleopEvent.QUIT,
    "\x03": TeleopEvent.QUIT,
    "\x04": TeleopEvent.QUIT,
}
"""Key -> episode event (enter, x, backspace, t, esc / ctrl-c / ctrl-d)."""

_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-9;]*[A-Za-z~]|O[A-Za-z])")

HELP = "w/s a/d r/f: move x y z | q/e yaw | space: gripper | enter: save | x: discard | backspace: reset | esc: quit"


class KeyboardTeleop:
    """Reads single key presses from a terminal file descriptor in raw mode.

    Args:
        fd: File descriptor of the terminal (standard input by default; a pseudo-terminal in tests).
        hold_time: How long one press keeps its axis moving [s].
        clock: Time source [s] (injectable for tests).
    """

    name = "keyboard"

    def __init__(
        self, fd: int | None = None, hold_time: float = 0.12, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.fd = sys.stdin.fileno() if fd is None else fd
        self.hold_time = hold_time
        self.clock = clock
        self._pressed_at: dict[int, tuple[float, float]] = {}
        self._gripper = 1.0
        self._saved_attrs: list | None = None

    def connect(self) -> None:
        """Put the terminal in raw (cbreak) mode; restored by :meth:`close`."""
        if not os.isatty(self.fd):
            raise DeviceNotFoundError(
                f"keyboard teleoperation needs an interactive terminal on file descriptor {self.fd}, but it is "
                "not a TTY (input is redirected or there is no terminal). Run `robot-rl collect --source "
                "keyboard` in a terminal (an SSH session works; use `ssh -t` when running a command remotely)."
            )
        self._saved_attrs = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)

    def close(self) -> None:
        """Restore the terminal."""
        if self._saved_attrs is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved_attrs)
            self._saved_attrs = None

    def _read_keys(self) -> str:
        keys = ""
        while select.select([self.fd], [], [], 0.0)[0]:
            chunk = os.read(self.fd, 64)
            if not chunk:
                break
            keys += chunk.decode("utf-8", errors="ignore")
        return keys

    def read(self) -> TeleopCommand:
        """The command from the keys pressed since the last call (non-blocking)."""
        now = self.clock()
        events: list[TeleopEvent] = []
        # Drop terminal escape sequences (arrow and function keys) so they do not read as "esc".
        for key in _ESCAPE_SEQUENCE.sub("", self._read_keys()):
            lower = key.lower()
            if lower in MOTION_KEYS:
                axis, direction = MOTION_KEYS[lower]
                self._pressed_at[axis] = (now, direction)
            elif key == " ":
                self._gripper = -self._gripper
            elif key in EVENT_KEYS:
                events.append(EVENT_KEYS[key])
        twist = np.zeros(6)
        for axis, (pressed, direction) in list(self._pressed_at.items()):
            if now - pressed <= self.hold_time:
                twist[axis] = direction
            else:
                del self._pressed_at[axis]
        return TeleopCommand(twist=twist, gripper=self._gripper, events=events)
