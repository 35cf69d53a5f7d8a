"""What evaluation puts around a policy: the safety chain, the constraint check and the failure monitor.

``robot-rl eval --safety on`` runs every command through the robot's safety chain (the one the ROS 2
node runs): for an exported policy inside the runtime Controller (its ``filters``), for the other
policies (expert, random, training runs) right after the policy. The constraint check runs after
every step whether the filter is on or not, on the simulator's true state, so the report can show
that the filter is what keeps ``safety_violations`` at zero.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np


class Guard:
    """Safety chain, constraint check and monitor bookkeeping for one evaluation.

    Args:
        env_id: The evaluated env (selects hardware/fr3.yaml or hardware/crazyflie.yaml).
        env: The gym.make'd env (its ``unwrapped.robot_state()`` is the measured state).
        safety: Filter the commands.
    """

    def __init__(self, env_id: str, env: Any, safety: bool) -> None:
        from robot_rl.deploy import safety_chain

        chain, check = safety_chain(env_id)
        self.chain = chain if safety else None
        self.check = check
        self._unwrapped = env.unwrapped
        self.ctrl_dt = float(env.unwrapped.ctrl_dt)
        self.interventions = 0
        self.fallbacks = 0
        self.violation_steps = 0
        self.by_constraint: collections.Counter[str] = collections.Counter()
        self.episode_interventions = 0
        self.episode_violations = 0
        self.step_index = 0
        self.in_controller = False
        """The chain runs inside the runtime Controller (exported policies) rather than after the policy."""
        self.monitor: Any | None = None
        self.monitor_state = "off"
        """``off``, ``on``, or ``off: <why>`` when it was asked for but cannot run."""
        self.first_alarm_step: int | None = None
        self.last_report: Any = None
        """The chain's report on the latest command (None: none, or the chain is off); read by the --log."""
        self.last_output: Any = None
        """The Controller's output at the latest step (exported policies); read by the --log."""
        self.last_violations: list[str] = []
        """The constraints the state reached by the latest step breaks."""

    def start_episode(self) -> None:
        """New episode: per-episode counts and the chain's memory."""
        self.episode_interventions = self.episode_violations = 0
        self.step_index = 0
        self.first_alarm_step = None
        if self.chain is not None:
            self.chain.reset()

    def observation(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation merged with the measured robot state and its stamp (what the chain reads)."""
        merged = dict(obs)
        merged.update(self._unwrapped.robot_state())
        merged["stamp"] = np.array(self.step_index * self.ctrl_dt)
        return merged

    def filter(self, action: np.ndarray) -> np.ndarray:
        """Policies outside the Controller: the chain's command for ``action`` (counted)."""
        if self.chain is None:
            return action
        state = self.observation({})
        safe, report = self.chain.filter(np.asarray(action, dtype=np.float64), state, self.step_index * self.ctrl_dt)
        self.count_report(report)
        return safe

    def count_report(self, report: Any) -> None:
        """Count one step's chain report (changed the command, or fell back)."""
        self.last_report = report
        if report is None:
            return
        if getattr(report, "changed", False):
            self.interventions += 1
            self.episode_interventions += 1
        if getattr(report, "fallback", None):
            self.fallbacks += 1

    def alarm(self) -> None:
        """The monitor raised the alarm at the current step."""
        if self.first_alarm_step is None:
            self.first_alarm_step = self.step_index

    def after_step(self) -> None:
        """Judge the state the step reached against the configured constraints."""
        self.step_index += 1
        broken = self.check.violations(self._unwrapped.robot_state())
        self.last_violations = broken
        if broken:
            self.violation_steps += 1
            self.episode_violations += 1
            self.by_constraint.update(broken)
