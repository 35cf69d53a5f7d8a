"""The teleoperation loop: paced at the env's control rate, episode control from the device.

One :meth:`TeleopSession.episode` resets the env, then each control period reads the device,
maps its command to an action, steps the env and hands the step to ``on_step`` (the recorder).
The operator ends the episode from the device: save (kept, marked successful), discard, reset or
quit; reaching the env's time limit keeps the episode only if it succeeded. The rollout shows in a
:class:`~robot_rl.teleop.view.LiveView` (a MuJoCo viewer where a display exists, else a status line).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import numpy as np

from robot_rl.teleop.base import CommandMapper, Teleoperator, TeleopEvent
from robot_rl.teleop.view import LiveView


@dataclasses.dataclass
class EpisodeOutcome:
    """How a teleoperated episode ended."""

    keep: bool
    """Whether the episode should be committed."""
    success: bool
    """Operator's save, or the env's success at the time limit."""
    reason: str
    """save, discard, reset, quit or timeout."""
    steps: int
    """Control periods recorded."""


StepCallback = Callable[[dict[str, np.ndarray], np.ndarray, float, bool, dict[str, Any], np.ndarray], None]
"""on_step(obs_before, action, reward, done, info, state_before): state_before is the MuJoCo
integration state (mjSTATE_INTEGRATION) before the action, for exact replay."""


class TeleopSession:
    """Runs teleoperated episodes on an env with one device.

    Args:
        env: The environment (gym.make'd, with its TimeLimit).
        device: A connected :class:`Teleoperator`.
        mapper: Command to action mapping (default: for this env).
        realtime: Pace the loop at the env's control period (off in tests).
        view: Open a MuJoCo viewer when a display exists.
        status: Where the text status line goes.
    """

    def __init__(
        self,
        env: Any,
        device: Teleoperator,
        mapper: CommandMapper | None = None,
        realtime: bool = True,
        view: bool = True,
        status: TextIO | None = None,
    ) -> None:
        self.env = env
        self.device = device
        self.mapper = mapper or CommandMapper(env)
        self.realtime = realtime
        self.status = status or sys.stderr
        self.ctrl_dt = float(env.unwrapped.ctrl_dt)
        self.saved = 0
        self.discarded = 0
        self.quit = False
        self.view = LiveView(device.name, env, viewer=view, stream=self.status)

    def close(self) -> None:
        """Close the live view."""
        self.view.close()

    def _show(self, episode: int, step: int, recording: bool, info: dict[str, Any]) -> None:
        mode = "REC" if recording else "idle (move or press start)"
        self.view.show(episode, step, mode, info, self.saved, self.discarded)

    def episode(self, seed: int, index: int, on_step: StepCallback) -> EpisodeOutcome:
        """Run one episode; ``on_step`` receives every recorded step."""
        obs, info = self.env.reset(seed=seed)
        self.mapper.reset()
        recording = False
        steps = 0
        next_tick = time.monotonic()
        while True:
            command = self.device.read()
            for event in command.events:
                if event is TeleopEvent.START:
                    recording = True
                elif event in (TeleopEvent.SAVE, TeleopEvent.DISCARD, TeleopEvent.RESET, TeleopEvent.QUIT):
                    if event is TeleopEvent.QUIT:
                        self.quit = True
                    keep = event is TeleopEvent.SAVE and steps > 0
                    self._count(keep)
                    return EpisodeOutcome(keep, keep, event.value, steps)
            if not recording and np.any(np.abs(command.twist) > self.mapper.config.deadband):
                recording = True  # the first motion starts the recording
            action = self.mapper(command, obs)
            state = self._state() if recording else None
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            done = bool(terminated or truncated)
            if recording:
                on_step(obs, action, float(reward), done, info, state)
                steps += 1
            obs = next_obs
            self._show(index, steps, recording, info)
            if done:
                success = bool(info.get("is_success", 0.0))
                keep = success and steps > 0
                self._count(keep)
                return EpisodeOutcome(keep, success, "timeout", steps)
            if self.realtime:
                next_tick += self.ctrl_dt
                delay = next_tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    next_tick = time.monotonic()

    def _state(self) -> np.ndarray:
        import mujoco

        model, data = self.env.unwrapped.model, self.env.unwrapped.data
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(model, spec))
        mujoco.mj_getState(model, data, state, spec)
        return state

    def _count(self, keep: bool) -> None:
        if keep:
            self.saved += 1
        else:
            self.discarded += 1
