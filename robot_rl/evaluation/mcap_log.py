"""``robot-rl eval --log FILE.mcap``: every rollout of an evaluation on one Foxglove timeline.

:class:`EvalLog` feeds :class:`robot_rl.data.mcap_log.RolloutLog` from the eval loop: the scene and the
bodies' poses from the env's MuJoCo model and data, the policy's action and the command sent, the safety
chain's report (:class:`~robot_rl.evaluation.guard.Guard` keeps the latest), the failure monitor's scored
chunks (its ``trace``) and each episode's summary. The channels are described in
:mod:`robot_rl.data.mcap_log` and docs/observability.md.

Time: the simulated clock. Episode ``k`` starts one control period after episode ``k - 1`` ended, on a
timeline that begins at the wall-clock time the evaluation started; step ``t``'s action is stamped
``t * ctrl_dt`` into its episode, the state it reached (poses, goal) ``(t + 1) * ctrl_dt``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data.mcap_log import RolloutLog


class EvalLog:
    """The MCAP log of one evaluation.

    Args:
        path: The MCAP file (``--log``).
        env: The evaluated env (``env.unwrapped.model``/``data``: the scene; ``ctrl_dt``: the clock).
        guard: The evaluation's :class:`~robot_rl.evaluation.guard.Guard` (chain reports, monitor, violations).
        info: What ran (``/robot_rl/info``).
        warn: Where the one warning line of a failed log goes (default: stderr).
    """

    def __init__(
        self,
        path: str | Path,
        env: Any,
        guard: Any,
        info: Mapping[str, Any],
        warn: Any = None,
        background: bool = False,
    ) -> None:
        unwrapped = env.unwrapped
        self.guard = guard
        self.data = unwrapped.data
        self.dt_ns = round(float(unwrapped.ctrl_dt) * 1e9)
        self.log = RolloutLog(
            path,
            unwrapped.model,
            getattr(unwrapped, "distance_threshold", None),
            label=f"--log {path}",
            warn=warn,
            background=background,
            batched=True,
        )
        self._next_origin = time.time_ns()
        self._origin = self._next_origin
        self._episode = -1
        self._step = 0
        self._return = 0.0
        self._scored = 0
        self._violations: list[str] = []
        self.log.info(self._origin, {**info, "ctrl_dt": float(unwrapped.ctrl_dt)})

    def start_episode(self, episode: int, seed: int, obs: Mapping[str, np.ndarray]) -> None:
        """After the env's reset: the scene, the goal and the first poses."""
        self._origin = self._next_origin
        self._episode, self._step, self._return, self._scored = episode, 0, 0.0, 0
        self._violations = []
        self.log.start_episode(self._origin, episode, seed, self.data, obs.get("desired_goal"))

    def step(
        self,
        raw_action: np.ndarray,
        command: np.ndarray,
        next_obs: Mapping[str, np.ndarray],
        reward: float,
        human: bool | None = None,
    ) -> None:
        """After ``env.step(command)`` and ``guard.after_step()``.

        Args:
            raw_action: What the policy returned (an exported policy: the Controller's command; its own action
                before the chain is in the guard's ``last_output``).
            command: The command sent to the env.
            next_obs: The observation the step reached.
            reward: The step's reward.
            human: A takeover device commanded the step (None: no takeover).
        """
        log, guard = self.log, self.guard
        if not log.enabled:
            return
        t, episode = self._step, self._episode
        stamp = self._origin + t * self.dt_ns
        after = stamp + self.dt_ns
        output = guard.last_output if guard.in_controller else None
        policy = (output.policy_action if output is not None else np.asarray(raw_action, dtype=np.float64)).tolist()
        command = np.asarray(command, dtype=np.float64).tolist()
        log.action(stamp, episode, t, policy, command, output.status if output is not None else None, human)
        chain = guard.chain
        change = None
        if policy and len(policy) == len(command):
            change = max(abs(a - b) for a, b in zip(command, policy, strict=True))
        log.safety(
            stamp,
            episode,
            t,
            guard.last_report if chain is not None else None,
            self._violations,
            chain.estop if chain is not None else None,
            getattr(chain, "chunk_report", None) if chain is not None else None,
            change,
        )
        self._violations = list(guard.last_violations)  # the state reached: judged at the next step's stamp
        monitor = guard.monitor
        if monitor is not None:
            trace = monitor.trace
            while self._scored < len(trace):
                score = trace[self._scored]
                self._scored += 1
                log.monitor(
                    self._origin + int(score.step) * self.dt_ns,
                    episode,
                    score,
                    monitor.thresholds,
                    getattr(monitor, "name", None),
                    getattr(monitor, "rule", None),
                )
        self._return += float(reward)
        log.poses(after, self.data)
        if "desired_goal" in next_obs and "achieved_goal" in next_obs:
            log.goal(
                after, episode, t, next_obs["desired_goal"], next_obs["achieved_goal"], float(reward), self._return
            )
        self._step += 1

    def end_episode(self, summary: Mapping[str, Any]) -> None:
        """The episode's report entry (seed, success, return, length, first alarm step, ...)."""
        end = self._origin + self._step * self.dt_ns
        self.log.end_episode(end, self._episode, summary)
        self.log.flush()
        self._next_origin = end + self.dt_ns

    def close(self) -> str:
        """Finish the file; returns the report's ``log`` entry (the path, or ``off: <why>``)."""
        return self.log.close()


def open_eval_log(config: Any, env: Any, env_id: str, guard: Any) -> EvalLog | None:
    """The evaluation's log when ``config.log`` is set (a file that cannot be written: a warning, the log off)."""
    if config.log is None:
        return None
    info = {
        "env_id": env_id,
        "policy": config.policy,
        "seed": config.seed,
        "episodes": config.episodes,
        "safety": config.safety,
        "monitor": guard.monitor_state,
        "monitor_detector": config.monitor_detector if guard.monitor is not None else None,
        "randomize": config.randomize,
    }
    return EvalLog(config.log, env, guard, info)
