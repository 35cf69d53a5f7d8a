"""The optional human parts of an eval rollout: a takeover device with its live view, and a recorder.

With ``--takeover`` a teleop device can take over from the policy during the rollout
(:mod:`robot_rl.teleop.intervention`); with ``--record`` every episode is recorded into a demo file
with the per-step ``interventions`` flag (the RLIF / HIL-SERL signal).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from robot_rl.evaluation.config import EvalConfig
    from robot_rl.teleop.base import Teleoperator


class HumanInTheLoop:
    """The optional parts of an eval rollout: a takeover device with its live view, and a recorder."""

    def __init__(self, config: EvalConfig, env: Any, env_id: str, device: Teleoperator | None, seed: int) -> None:
        self.takeover: Any = None
        self.view: Any = None
        self.recorder: Any = None
        self._owned: Teleoperator | None = None
        try:
            if config.takeover != "none":
                from robot_rl.teleop.intervention import HumanTakeover
                from robot_rl.teleop.view import LiveView

                if device is None:
                    from robot_rl.teleop import make_teleoperator

                    device = make_teleoperator(config.takeover)
                    device.connect()
                    self._owned = device
                self.takeover = HumanTakeover(device, env, hold_s=config.takeover_hold, realtime=config.realtime)
                self.view = LiveView(f"{config.policy}+{device.name}", env, viewer=config.view)
            if config.record is not None:
                from robot_rl.data.collect import file_env_kwargs
                from robot_rl.data.recorder import DemoRecorder, StateReader

                source = f"policy:{config.policy}" + (f"+{device.name}" if device is not None else "")
                unwrapped = env.unwrapped
                self.recorder = DemoRecorder(
                    config.record,
                    env_id,
                    file_env_kwargs(env, {"randomize": config.randomize}),
                    unwrapped.ctrl_dt,
                    source,
                    seed=seed,
                    randomization=unwrapped.randomization,
                    action_bounds=(env.action_space.low, env.action_space.high),
                )
                self._read_state = StateReader(env)
        except BaseException:
            self.close()
            raise

    @property
    def quit(self) -> bool:
        """The operator asked to stop."""
        return self.takeover is not None and self.takeover.quit

    def start_episode(self, seed: int, reset_info: dict[str, Any]) -> None:
        """New episode: the takeover released, the recorder's episode started (with its randomization)."""
        if self.takeover is not None:
            self.takeover.reset()
        if self.recorder is not None:
            self.recorder.start_episode(seed, reset_info.get("randomization"))

    def act(self, obs: dict[str, np.ndarray], action: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to apply (the policy's or the device's) and whether a human gave it."""
        return (action, False) if self.takeover is None else self.takeover(obs, action)

    def state(self) -> np.ndarray | None:
        """The MuJoCo state before the step (when recording)."""
        return self._read_state() if self.recorder is not None else None

    def record(self, obs: Any, action: Any, reward: float, done: bool, next_obs: Any, state: Any, human: bool) -> None:
        """Record one step (when recording), with whether a human gave its action."""
        if self.recorder is not None:
            self.recorder.add_step(obs, action, reward, done, next_obs, state, human)

    def show(self, episode: int, step: int, human: bool, info: dict[str, Any]) -> None:
        """Update the live view (with a takeover device): who acts, the step, the demos saved."""
        if self.view is not None:
            saved = len(self.recorder.committed) if self.recorder is not None else None
            self.view.show(episode, step, "HUMAN" if human else "POLICY", info, saved)

    def end_episode(self, success: bool) -> None:
        """Commit the recorded episode (when recording)."""
        if self.recorder is not None:
            self.recorder.commit(success=success)

    def close(self) -> None:
        """Discard an unfinished episode, close the recorder, the view and a device opened here."""
        if self.recorder is not None:
            self.recorder.discard()  # an episode cut short (quit, error) is not recorded
            self.recorder.close()
            self.recorder = None
        if self.view is not None:
            self.view.close()
            self.view = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None
