"""Human takeover of a policy rollout: a teleop device overrides the policy when the operator acts.

Each control period :class:`HumanTakeover` reads the device and decides who acts, the policy or
the human. The rules:

1. **Takeover button** (keyboard ``t``, gamepad Y, the :attr:`TeleopEvent.TAKEOVER` event) toggles
   a latched takeover: the human acts until the button is pressed again.
2. **Motion**: while not latched, moving the device beyond the deadband takes over for as long as
   it moves, plus a short hold after it stops (``hold_s``, 0.5 s by default, counted in control
   periods), so an operator can nudge the robot with a SpaceMouse and let go, HIL-SERL style;
   during the hold the device's (still) command is applied, then the policy resumes.
3. While the human acts, the whole action comes from the device through the
   :class:`~robot_rl.teleop.base.CommandMapper`, the gripper included: the device's gripper state
   replaces the policy's (close it on the device before taking over a grasped object).
4. :meth:`HumanTakeover.reset` at each episode start hands control back to the policy.
5. A :attr:`TeleopEvent.QUIT` sets :attr:`HumanTakeover.quit`: the caller stops (``robot-rl eval``
   ends early and reports the episodes that finished). Other episode events are ignored.

The per-step flag it returns is the intervention signal of RLIF and HIL-SERL, recorded as the
``interventions`` dataset of a demonstration file.

With ``realtime`` the call first waits for the next control period, so the rollout runs at the
env's real rate and the operator can react; tests turn it off.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from robot_rl.teleop.base import CommandMapper, Teleoperator, TeleopEvent


class HumanTakeover:
    """Lets a connected device take over from a policy (rules in the module docstring).

    Args:
        device: A connected :class:`Teleoperator`.
        env: The environment (its control period sets the pacing and the hold length).
        mapper: Command to action mapping (default: for this env).
        hold_s: How long a motion takeover lasts after the device stops moving [s].
        realtime: Pace each call at the env's control period.
    """

    def __init__(
        self,
        device: Teleoperator,
        env: Any,
        mapper: CommandMapper | None = None,
        hold_s: float = 0.5,
        realtime: bool = True,
    ) -> None:
        if hold_s < 0.0:
            raise ValueError(f"`hold_s` must be >= 0. Got {hold_s}.")
        self.device = device
        self.mapper = mapper or CommandMapper(env)
        self.ctrl_dt = float(env.unwrapped.ctrl_dt)
        self.hold_steps = round(hold_s / self.ctrl_dt)
        """Control periods a motion takeover outlasts the motion."""
        self.realtime = realtime
        self.quit = False
        """The operator asked to stop."""
        self.latched = False
        """The takeover button is on."""
        self.active = False
        """The human acted at the last call."""
        self._hold = 0
        self._next_tick: float | None = None

    def reset(self) -> None:
        """A new episode: the policy acts until the operator takes over again."""
        self.mapper.reset()
        self.latched = False
        self.active = False
        self._hold = 0
        self._next_tick = None

    def __call__(self, obs: dict[str, np.ndarray], policy_action: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to apply for ``obs`` and whether the human gave it.

        Args:
            obs: The latest observation.
            policy_action: What the policy proposes. Shape: (A,).

        Returns:
            ``(action, intervened)``: the device's mapped action and True while taken over, else
            ``policy_action`` and False.
        """
        self._pace()
        command = self.device.read()
        for event in command.events:
            if event is TeleopEvent.TAKEOVER:
                self.latched = not self.latched
                self._hold = 0  # handing back is immediate
            elif event is TeleopEvent.QUIT:
                self.quit = True
        moving = float(np.max(np.abs(command.twist))) > self.mapper.config.deadband
        if moving:
            self._hold = self.hold_steps
            motion = True
        elif self._hold > 0:
            self._hold -= 1
            motion = True
        else:
            motion = False
        human = self.latched or motion
        if human and not self.active:
            self.mapper.reset()  # a quadrotor setpoint starts at the vehicle
        self.active = human
        if not human:
            return policy_action, False
        return self.mapper(command, obs), True

    def _pace(self) -> None:
        if not self.realtime:
            return
        now = time.monotonic()
        if self._next_tick is None:
            self._next_tick = now
        delay = self._next_tick - now
        if delay > 0:
            time.sleep(delay)
            self._next_tick += self.ctrl_dt
        else:
            self._next_tick = now + self.ctrl_dt  # fell behind: do not try to catch up
