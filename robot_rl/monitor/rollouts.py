"""Closed-loop rollouts through the runtime Controller with the monitors attached, traced per chunk.

The same code path as ``robot-rl eval`` of an exported policy: the stack of :func:`robot_rl.deploy.build_stack`
(here without the safety chain) with ``blend="none"`` and the simulated clock ``k * ctrl_dt``. The monitors only
watch (an alarm never stops an episode), so one rollout yields the scores of every alarm rule at once; the
decisions of the rules are replayed from the trace (:func:`robot_rl.monitor.conformal.first_alarm`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from robot_rl.monitor.failure_monitor import FailureMonitor
from robot_rl.monitor.progress import ProgressEnvelope


@dataclasses.dataclass
class EpisodeTrace:
    """One monitored episode."""

    seed: int
    success: bool
    length: int
    """Steps."""
    ctrl_dt: float
    """Control period [s]."""
    steps: list[int]
    """Step at which each chunk took effect."""
    rnd: list[float]
    """RND score per chunk."""
    entropy: list[float]
    """Entropy score per chunk [nats]."""
    plain: dict[str, int | None]
    """First alarm step of each plain monitor (None: never)."""
    final_distance_m: float | None = None
    """Goal tasks: distance between the achieved and the desired goal at the end [m]."""
    goal_distance: list[float] | None = None
    """Goal tasks: that distance at each chunk [m] (the raw input of the progress score)."""
    consistency: list[float] | None = None
    """Chunk-to-chunk consistency of the policy's chunks (an input of the learned risk; None: not traced)."""

    @property
    def duration_s(self) -> float:
        """Episode duration: the failure time of a failed (timed-out) episode [s]."""
        return self.length * self.ctrl_dt

    def scores(self, envelope: ProgressEnvelope | None = None) -> dict[str, np.ndarray]:
        """Per-chunk scores per signal. Shapes: (chunks,).

        Args:
            envelope: The calibration's goal-distance envelope; with it (and a goal task's per-chunk
                distances) the scores include ``progress``.
        """
        out = {"rnd": np.asarray(self.rnd), "entropy": np.asarray(self.entropy)}
        if envelope is not None and self.goal_distance is not None:
            out["progress"] = envelope.scores(self.goal_distance)
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain form (full-precision scores: thresholds recomputed from them match the originals)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> EpisodeTrace:
        """Inverse of :meth:`to_json`."""
        return cls(**{f.name: value[f.name] for f in dataclasses.fields(cls) if f.name in value})


def run_monitored(
    env: Any,
    monitor: FailureMonitor,
    seeds: Iterable[int],
    plain: Sequence[Any] = (),
    progress: str | None = None,
) -> list[EpisodeTrace]:
    """One episode per seed through a Controller with ``monitor`` and the ``plain`` monitors attached.

    Args:
        env: A gym.make'd env of the policy's task (possibly wrapped by a shift condition).
        monitor: The failure monitor; its policy is the one run.
        seeds: Reset seeds; the controller's and the monitor's noise are reseeded from each.
        plain: Plain monitors (``name``, ``reset()``, the Monitor protocol).
        progress: A tqdm label, or None for no progress bar.

    Returns:
        A trace per episode.
    """
    from robot_rl.deploy import build_stack
    from robot_rl.policies.layout import check_layout
    from robot_rl.runtime import ControllerConfig

    policy = monitor.policy
    check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    # The deployed stack without its safety chain (the thresholds are calibrated on the policy's own behaviour, as
    # they always were): the failure monitor, then the plain monitors.
    stack = build_stack(
        policy,
        env,
        safety=False,
        monitor=monitor,
        controller_config=ControllerConfig(ctrl_dt=ctrl_dt),
        extra_monitors=plain,
    )
    controller = stack.controller
    seeds = [int(s) for s in seeds]
    iterator: Iterable[int] = seeds
    if progress is not None:
        from tqdm import tqdm

        iterator = tqdm(seeds, desc=progress, unit="ep", leave=False)
    traces = []
    for seed in iterator:
        obs, _ = env.reset(seed=seed)
        controller.reset(seed)
        monitor.reset(seed + 1)  # its own noise stream, distinct from the controller's
        for extra in plain:
            extra.reset()
        first: dict[str, int | None] = {getattr(m, "name", type(m).__name__): None for m in plain}
        info: dict[str, Any] = {"is_success": 0.0}
        length, done = 0, False
        while not done:
            output = controller.step(obs, length * ctrl_dt)
            for name in output.status.alarms:
                if name in first and first[name] is None:
                    first[name] = length
            obs, _, terminated, truncated, info = env.step(output.action)
            length += 1
            done = terminated or truncated
        arrays = monitor.trace_arrays()
        final = None
        if isinstance(obs, dict) and "achieved_goal" in obs and "desired_goal" in obs:
            final = float(np.linalg.norm(np.asarray(obs["achieved_goal"]) - np.asarray(obs["desired_goal"])))
        traces.append(
            EpisodeTrace(
                seed=seed,
                success=bool(info["is_success"]),
                length=length,
                ctrl_dt=ctrl_dt,
                steps=arrays["step"].tolist(),
                rnd=arrays["rnd"].tolist(),
                entropy=arrays["entropy"].tolist(),
                plain=first,
                final_distance_m=final,
                goal_distance=None if "goal_distance" not in arrays else arrays["goal_distance"].tolist(),
                consistency=arrays["consistency"].tolist(),
            )
        )
    return traces
