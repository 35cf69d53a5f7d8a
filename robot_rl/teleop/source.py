"""A teleoperation device as an :class:`robot_rl.data.ActionSource` for ``robot-rl collect``.

Until the operator moves (or presses start) the source returns None, so the env waits at its
reset state and every demonstration starts there and replays exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from robot_rl.data.collect import EpisodeEvent, register_source
from robot_rl.teleop.base import CommandMapper, Teleoperator, TeleopEvent

_EVENTS = {
    TeleopEvent.START: EpisodeEvent.START,
    TeleopEvent.SAVE: EpisodeEvent.SAVE,
    TeleopEvent.DISCARD: EpisodeEvent.DISCARD,
    TeleopEvent.RESET: EpisodeEvent.RESET,
    TeleopEvent.QUIT: EpisodeEvent.QUIT,
}


class TeleopSource:
    """Reads a connected device each control period and maps it to the env's action.

    Args:
        device: A connected teleoperator.
        env: The environment being recorded.
    """

    realtime = True

    def __init__(self, device: Teleoperator, env: Any) -> None:
        self.device = device
        self.name = device.name
        self.mapper = CommandMapper(env)
        self._events: list[EpisodeEvent] = []
        self._moving = False
        self.intervention = True
        """Every recorded step is a human's (the interventions dataset)."""

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """A new episode: wait for the operator again."""
        self.mapper.reset()
        self._moving = False

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The mapped action, or None while the operator has not started."""
        command = self.device.read()
        for event in command.events:
            if event is TeleopEvent.START:
                self._moving = True
            if event in _EVENTS:
                self._events.append(_EVENTS[event])
        if not self._moving and float(np.max(np.abs(command.twist))) > self.mapper.config.deadband:
            self._moving = True
        return self.mapper(command, obs) if self._moving else None

    def episode_control(self) -> Sequence[EpisodeEvent]:
        """Device events since the last call."""
        events, self._events = self._events, []
        return events


def register_devices() -> None:
    """Make ``collect(source="keyboard"|"gamepad"|"spacemouse")`` open the device."""
    from robot_rl.teleop import make_teleoperator

    for name in ("keyboard", "gamepad", "spacemouse"):

        def factory(env: Any, env_id: str, _name: str = name) -> TeleopSource:
            device = make_teleoperator(_name)
            device.connect()
            return TeleopSource(device, env)

        register_source(name, factory)
