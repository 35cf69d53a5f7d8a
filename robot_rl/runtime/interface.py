"""What the control step takes and gives: its configuration, a step's status and output, the hooks.

:class:`ControllerConfig` (chunk execution and timing), :class:`ControlStatus` and
:class:`ControlOutput` (what one :meth:`~robot_rl.runtime.controller.Controller.step` did and
returns), and the two hook protocols a caller plugs into the step: :class:`ActionFilter` (safety
filters, rate limiters) and :class:`Monitor` (failure prediction, chunk validation). Numpy only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal, Protocol, get_args

import numpy as np

BlendMode = Literal["none", "ensemble", "crossfade"]
BLEND_MODES: tuple[str, ...] = get_args(BlendMode)


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """How the controller executes action chunks and keeps time."""

    blend: BlendMode = "none"
    """Transitions between chunks: ``none`` (receding horizon: run ``n_action_steps`` actions of a chunk, then
    the next chunk; the actions of ``ChunkedActor``), ``ensemble`` (a new chunk every ``replan_every`` steps;
    the command averages every chunk's action for the step with exponential weights, as in ACT), ``crossfade``
    (receding horizon, but over the first ``crossfade_steps`` steps of a new chunk the command moves linearly
    from the previous chunk's actions to the new chunk's)."""
    n_action_steps: int | None = None
    """``none``/``crossfade``: actions of a chunk executed before the next chunk (default: the policy's)."""
    replan_every: int = 2
    """``ensemble``: steps between chunks (1: a chunk every step, as in ACT)."""
    ensemble_decay: float = 0.01
    """``ensemble``: a chunk computed ``d`` steps after the oldest one in play weighs ``exp(-ensemble_decay * d)``
    [1/step]; positive favours older chunks (ACT's choice), negative newer ones, 0 averages."""
    crossfade_steps: int = 4
    """``crossfade``: steps over which the command moves to the new chunk; at the ``j``-th step of the new chunk
    (j = 0, 1, ...) it weighs ``(j + 1) / (crossfade_steps + 1)``."""
    prefetch: bool = False
    """Compute the next chunk ``lead`` steps before it is due, from the observation then, in a background thread,
    so that steps do not wait on inference."""
    lead: int = 1
    """With ``prefetch``: how many steps before it is due the next chunk is started; 0: only by :meth:`Controller.prime`
    (the caller starts each chunk from the newest observation before the step that needs it). Each step of lead costs
    success (the chunk is planned from an older observation): PandaPush 0.81 without prefetch, 0.76 with lead 1,
    0.61 with lead 2 (``robot-rl eval --policy policies/panda_push_diffusion --episodes 100 --prefetch-lead N``).
    One period is ample time for the inference at 25-50 Hz."""
    prefetch_sync: bool = False
    """With ``prefetch``: compute the early chunk inside the step instead of in a thread. Same chunks at the same
    steps as the thread when the thread finishes in time, without timing dependence: for tests and evaluation."""
    ctrl_dt: float | None = None
    """Control period [s]; default: the policy's ``metadata.ctrl_dt``."""
    late_factor: float = 1.5
    """A step is late when ``now`` advanced by more than ``late_factor * ctrl_dt`` since the previous step."""
    seed: int = 0
    """Seed of the sampling noise (diffusion) until the next ``reset(seed)``."""

    def __post_init__(self) -> None:
        if self.blend not in BLEND_MODES:
            raise ValueError(f"`blend` must be one of {list(BLEND_MODES)}. Got {self.blend!r}.")
        if self.lead < 0:
            raise ValueError(f"`lead` must be >= 0 (0: chunks only from `Controller.prime`). Got {self.lead}.")
        for name in ("replan_every", "crossfade_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1. Got {getattr(self, name)}.")
        if self.n_action_steps is not None and self.n_action_steps < 1:
            raise ValueError(f"`n_action_steps` must be >= 1. Got {self.n_action_steps}.")
        if not math.isfinite(self.ensemble_decay):
            raise ValueError(f"`ensemble_decay` must be finite. Got {self.ensemble_decay}.")
        if self.ctrl_dt is not None and not self.ctrl_dt > 0.0:
            raise ValueError(f"`ctrl_dt` must be > 0. Got {self.ctrl_dt}.")
        if not self.late_factor > 1.0:
            raise ValueError(f"`late_factor` must be > 1. Got {self.late_factor}.")


@dataclasses.dataclass
class ControlStatus:
    """What one control step did (logged per step; the watchdog and the report read it)."""

    step: int
    """Steps since the last reset (0 for the first)."""
    now: float
    """The caller's clock at this step [s]."""
    period_s: float | None
    """``now`` minus the previous step's [s]; None at the first step after a reset."""
    late: bool
    """``period_s`` exceeded ``late_factor * ctrl_dt``."""
    chunk_index: int
    """Index of the newest chunk in play (0: the episode's first)."""
    chunk_step: int
    """Position of this step's action in the newest chunk."""
    new_chunk: bool
    """The newest chunk took effect at this step."""
    computed_chunk: bool
    """Inference ran inside this call (the step waited for it)."""
    inference_s: float | None
    """Inference time of the chunk that took effect at this step [s]; None otherwise."""
    queue_length: int
    """Steps left after this one before the next chunk is due."""
    blend_weight: float
    """Weight of the newest chunk in the command (1.0 with ``blend="none"``)."""
    active_chunks: int
    """Chunks whose actions were blended into the command."""
    stale: bool = False
    """Prefetch: the due chunk was still being computed; the command continues the previous chunk."""
    waited: bool = False
    """Prefetch: the previous chunk ran out before the background chunk was ready; the step waited for it."""
    prefetching: bool = False
    """A chunk is being computed in the background after this step."""
    compute_s: float = 0.0
    """Wall time of this call [s], hooks included."""
    alarm: bool = False
    """A monitor raised the alarm at this step."""
    alarms: list[str] = dataclasses.field(default_factory=list)
    """Names of the monitors that raised it."""
    filter_reports: list[Any] = dataclasses.field(default_factory=list)
    """What each filter reported, in the order they ran."""
    fallback: str | None = None
    """Why the step returned the fallback command instead of the policy's (None: it did not)."""
    features: np.ndarray | None = None
    """The policy's observation features at this step (the values appended to the flattened observation; None for
    a policy without features): monitors that read the policy's input use them."""


@dataclasses.dataclass(frozen=True)
class ControlOutput:
    """The result of :meth:`Controller.step`."""

    action: np.ndarray
    """The command to send, after the filters. Shape: (action_dim,)."""
    policy_action: np.ndarray
    """The blended policy action before the filters. Shape: (action_dim,)."""
    status: ControlStatus


class ActionFilter(Protocol):
    """Changes a command before it is sent (safety filter, rate limiter)."""

    def __call__(
        self, action: np.ndarray, observation: Mapping[str, np.ndarray], status: ControlStatus
    ) -> tuple[np.ndarray, Any]:
        """The action to send instead, and a report of what was changed (kept in ``status.filter_reports``)."""
        ...


class Monitor(Protocol):
    """Watches the policy (failure prediction, chunk validation); it can raise the alarm but not act."""

    def __call__(self, observation: Mapping[str, np.ndarray], chunk: np.ndarray, status: ControlStatus) -> bool:
        """Whether to raise the alarm.

        ``chunk`` is the newest chunk in play, shape (horizon, A); ``status.new_chunk`` says whether it took
        effect at this step.
        """
        ...
