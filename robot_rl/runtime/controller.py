"""The control step, ROS-free: observation in, the command to send out, one call per control period.

:class:`Controller` is the one code path between a policy and a robot: ``robot-rl eval --policy
policies/NAME`` drives it with simulated time and the ROS 2 node with the wall clock. Per call it

1. records the clock (``now``, the caller's time [s]) and flags a late step;
2. appends the observation to the history (padded with the first observation after a reset), with the
   policy's observation features when it has any (:mod:`robot_rl.policies.features`: state such as a
   disturbance observer, updated from the observation and the command sent in the previous period);
3. takes up the next action chunk when one is due (computed now, or ahead of time with prefetch);
4. builds the command from the chunks in play (``blend``: plain receding horizon, ACT-style temporal
   ensembling, or a linear cross-fade from the previous chunk);
5. feeds the monitors (which can raise the alarm) and passes the command through the filters in
   order (the safety filter plugs in here);

an observation holding NaN or inf never reaches the policy: the step returns the fallback command
(hold; or the one given) with the reason in ``status.fallback``, and the history keeps the last good
observation. A policy output that is not finite (a finite but absurd observation, e.g. 3e38, can
overflow the network) is never sent either: the fallback's command goes through the filters instead,
with ``status.fallback`` "non-finite policy output"; and should a filter return a non-finite
command, the fallback's command is sent unfiltered. So a step never returns a non-finite command.
An observation missing an entry or with one of the wrong shape raises (KeyError / ValueError naming
the entry and the expected shape): that is a wiring fault, not a transient;

and returns a :class:`ControlOutput`: the command and a :class:`ControlStatus` saying what happened.

Chunk timing: a chunk computed at step ``s`` (from the history ending with observation ``s``) holds
the actions for steps ``s, s + 1, ..., s + horizon - 1``; the action of step ``t`` is always
``chunk[t - s]``. A prefetched chunk computed ``lead`` steps early is therefore entered at index
``lead``: the actions for the steps already past are skipped, not replayed late.

The step never sleeps; it blocks on inference only when a chunk is computed in the call (no
prefetch, or the first chunk of an episode) or, with prefetch, when the background chunk is still
missing after every action of the previous one has been used (``status.waited``). With prefetch, a
caller that sees the episode's first observation before its first control period (a ROS node, on
the first state message after a reset) can start the first chunk in the background too:
:meth:`Controller.prime`.

Needs numpy only (and onnxruntime for :meth:`Controller.load`); never torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, Protocol, get_args

import numpy as np

from robot_rl.policies.layout import Policy

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


@dataclasses.dataclass
class _Chunk:
    actions: np.ndarray
    """(horizon, A): actions for steps origin, origin + 1, ..."""
    origin: int
    """Step whose observation the chunk was computed from."""
    index: int
    """Chunks taken up before it in this episode."""
    arrived: int = -1
    """Step at which it took effect."""
    inference_s: float = 0.0


class Controller:
    """Runs a policy at its control rate: history, action chunks, blending, monitors and filters.

    Args:
        policy: The policy (``OnnxPolicy`` on hardware; any :class:`~robot_rl.policies.layout.Policy`).
        config: Chunk execution and timing.
        filters: Applied to every command in order; each returns the action to send and a report.
        monitors: Fed every step's observation, newest chunk and status; any of them can raise the alarm.
        fallback: The command for a step whose observation is not finite, from that observation (the
            safety chain's hold / hover). Default: zeros, except that a Franka policy's gripper keeps
            its last command (zero displacement holds the arm where it is).

    Raises:
        ValueError: a config that does not fit the policy's horizon, or no control period known.
    """

    def __init__(
        self,
        policy: Policy,
        config: ControllerConfig | None = None,
        filters: Sequence[ActionFilter] = (),
        monitors: Sequence[Monitor] = (),
        fallback: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None,
    ) -> None:
        self.policy = policy
        self.fallback = fallback
        self.config = config = config or ControllerConfig()
        self.filters = list(filters)
        self.monitors = list(monitors)
        horizon = policy.horizon
        metadata = getattr(policy, "metadata", None)
        ctrl_dt = config.ctrl_dt if config.ctrl_dt is not None else getattr(metadata, "ctrl_dt", None)
        if ctrl_dt is None:
            raise ValueError(
                "the control period is unknown: the policy has no metadata; pass `ControllerConfig(ctrl_dt=...)`."
            )
        self.ctrl_dt = float(ctrl_dt)
        # Steps between chunks.
        if config.blend == "ensemble":
            self.period = config.replan_every
            if self.period > horizon:
                raise ValueError(f"`replan_every` must be in [1, horizon={horizon}]. Got {self.period}.")
        else:
            self.period = config.n_action_steps or policy.n_action_steps
            if self.period > horizon:
                raise ValueError(f"`n_action_steps` must be in [1, horizon={horizon}]. Got {self.period}.")
        if config.blend == "crossfade" and config.crossfade_steps > horizon - self.period:
            raise ValueError(
                f"`crossfade_steps` must be in [1, horizon - n_action_steps = {horizon - self.period}] (the previous "
                f"chunk has no actions beyond). Got {config.crossfade_steps}."
            )
        if config.prefetch and config.lead + self.period > horizon:
            raise ValueError(
                f"`lead` + steps between chunks must be <= horizon={horizon} (a chunk started `lead` steps early "
                f"must still cover its {self.period} steps). Got lead={config.lead}, {self.period} steps."
            )
        self.rng = np.random.default_rng(config.seed)
        self._executor: ThreadPoolExecutor | None = None
        self._history: deque[np.ndarray] = deque(maxlen=policy.n_obs_steps)
        self._chunks: list[_Chunk] = []
        self._job: Future[_Chunk] | None = None
        self._t = 0
        self._due = 0
        self._taken = 0
        self._last_now: float | None = None
        self._last_command: np.ndarray | None = None
        self._features = policy.layout.new_feature_state()
        """Observation features with memory (e.g. a disturbance observer), fed the commands actually sent."""
        family = getattr(getattr(metadata, "action", None), "family", None)
        self._hold_dims = [3] if family == "franka" else []
        """Dims the default fallback keeps at their last command (the Franka gripper)."""
        self._residual = bool(getattr(policy, "has_residual", False))
        self._feedback = self._residual and bool(getattr(policy, "residual_feedback", False))
        """The residual reads the previous corrected action (its ``previous_action`` input)."""
        self._previous_action: np.ndarray | None = None
        """With feedback: the episode's last corrected policy action (before the filters); None before its first."""

    @classmethod
    def load(
        cls,
        policy_dir: str | os.PathLike[str],
        config: ControllerConfig | None = None,
        filters: Sequence[ActionFilter] = (),
        monitors: Sequence[Monitor] = (),
        threads: int = 1,
    ) -> Controller:
        """A controller for an exported policy folder (``policies/NAME``) on onnxruntime with ``threads`` threads."""
        from robot_rl.runtime.onnx_policy import OnnxPolicy

        return cls(OnnxPolicy(policy_dir, threads=threads), config, filters, monitors)

    def reset(self, seed: int | None = None) -> None:
        """New episode: forget the history, the chunks and the clock (and reseed the noise when given).

        A chunk still being computed in the background is waited for and dropped.
        """
        self._drop_job()
        self._history.clear()
        self._chunks.clear()
        self._t = self._due = self._taken = 0
        self._last_now = None
        self._last_command = None
        self._previous_action = None
        self._features.reset()
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    @property
    def feature_values(self) -> np.ndarray:
        """The policy's observation features after the latest step (e.g. the disturbance estimate); empty without."""
        return self._features.last.copy()

    @property
    def wants_chunk(self) -> bool:
        """With prefetch: the next step takes up a new chunk and none is on the way (:meth:`prime` would start one)."""
        return self.config.prefetch and self._job is None and (not self._chunks or self._t >= self._due)

    def prime(self, observation: Mapping[str, np.ndarray]) -> bool:
        """With prefetch: start the chunk the next step takes up, from ``observation``, in the background.

        For a caller that receives the next step's observation ahead of its control period (the ROS
        node, on the first complete state after a tick): the next step then takes up this chunk
        instead of computing one inside the period. The chunk is computed from the kept history with
        ``observation`` appended, as the next step would compute it, and draws the same noise; the
        history itself is untouched (the step appends its own observation). With ``lead`` 0 this is
        the only prefetch (every chunk from the newest state before its step: the chunks of no
        prefetch when the step's observation is the primed one); with ``lead`` >= 1 the steps start
        the later chunks themselves and ``prime`` serves the episode's first.

        Returns:
            True when a chunk was started; False when :attr:`wants_chunk` is False or the observation is
            not finite.
        """
        if not self.wants_chunk:
            return False
        layout = self.policy.layout
        layout.check(observation)
        flat = self._flatten(observation, peek=True)
        if flat is None:
            return False
        n = self.policy.n_obs_steps
        history = [*self._history, flat][-n:] if self._history else [flat] * n  # what the step will hold
        self._job = self._submit(self._t, np.stack(history))
        return True

    def step(self, observation: Mapping[str, np.ndarray], now: float) -> ControlOutput:
        """One control step.

        Args:
            observation: The env's observation dict (the entries named by the policy's layout).
            now: The caller's clock [s] (simulated time in evaluation, the node's clock on hardware).

        Returns:
            The command to send and what this step did.
        """
        start = time.perf_counter()
        t = self._t
        period_s = None if self._last_now is None else float(now) - self._last_now
        self._last_now = float(now)
        self.policy.layout.check(observation)
        flat = self._flatten(observation)
        if flat is None:
            self._features.interrupt()
            return self._fallback_step(observation, t, now, period_s, start)
        if not self._history:
            self._history.extend([flat] * self.policy.n_obs_steps)
        else:
            self._history.append(flat)

        computed = stale = waited = False
        arrived: _Chunk | None = None
        if not self._chunks or t >= self._due:
            if self._job is not None:
                if not self._chunks or self._job.done() or not self._covers(self._chunks[-1], t):
                    waited = not self._job.done()
                    chunk, self._job = self._job.result(), None
                    if self._take(chunk, t):
                        arrived = chunk
                else:
                    stale = True
            if arrived is None and not stale:
                # No chunk on the way (or it came too late to cover this step): compute one now.
                arrived = self._compute(t)
                computed = True
                self._take(arrived, t)

        action, weight, active = self._blend(t)
        if self._residual:
            # A per-step residual corrects the executed (blended) base action from this step's observation.
            if self._feedback:
                # It also reads the previous corrected action (the base action at the episode's first step);
                # the safety filters come after, as in training, where the env applied the corrected action.
                previous = action if self._previous_action is None else self._previous_action
                action = np.asarray(self.policy.correct(flat, action, previous), dtype=np.float64)
                self._previous_action = action.copy()
            else:
                action = np.asarray(self.policy.correct(flat, action), dtype=np.float64)
        newest = self._chunks[-1]
        if self.config.prefetch and self.config.lead > 0 and self._job is None and t >= self._due - self.config.lead:
            self._job = self._submit(t)
            computed = computed or self.config.prefetch_sync
        self._t += 1

        status = ControlStatus(
            step=t,
            now=float(now),
            period_s=period_s,
            late=period_s is not None and period_s > self.config.late_factor * self.ctrl_dt,
            chunk_index=newest.index,
            chunk_step=t - newest.origin,
            new_chunk=arrived is not None,
            computed_chunk=computed,
            inference_s=arrived.inference_s if arrived is not None else None,
            queue_length=max(self._due - t - 1, 0),
            blend_weight=weight,
            active_chunks=active,
            stale=stale,
            waited=waited,
            prefetching=self._job is not None and not self._job.done(),
        )
        if self.policy.layout.features:
            status.features = self._features.last.copy()
        for monitor in self.monitors:
            if monitor(observation, newest.actions, status):
                status.alarm = True
                status.alarms.append(getattr(monitor, "name", type(monitor).__name__))
        command = action
        if not np.all(np.isfinite(action)):
            # A finite observation the network cannot digest (e.g. 3e38 overflowing the normalization) gives a
            # non-finite action: never sent. The fallback's command goes through the filters instead.
            status.fallback = "non-finite policy output"
            command = self._fallback_command(observation)
        for action_filter in self.filters:
            command, report = action_filter(command, observation, status)
            command = np.asarray(command, dtype=np.float64)
            status.filter_reports.append(report)
        if not np.all(np.isfinite(command)):
            status.fallback = "non-finite command after the filters"
            command = self._fallback_command(observation)
        status.compute_s = time.perf_counter() - start
        self._last_command = command
        return ControlOutput(action=command, policy_action=action, status=status)

    def _flatten(self, observation: Mapping[str, np.ndarray], peek: bool = False) -> np.ndarray | None:
        """The flattened observation with the layout's features (None when it is not finite).

        Features update only on finite observations, from the command sent in the previous period;
        ``peek`` computes them without advancing their state.
        """
        layout = self.policy.layout
        if not layout.features:
            flat = layout.flatten(observation)
            return flat if math.isfinite(float(flat.sum())) else None
        head = layout.plain.flatten(observation)
        if not math.isfinite(float(head.sum())):
            return None
        update = self._features.peek if peek else self._features.update
        return np.concatenate([head, update(observation, self._last_command)])

    def _fallback_command(self, observation: Mapping[str, np.ndarray]) -> np.ndarray:
        """The fallback's command (hold by default), zeros should the fallback itself give a non-finite one."""
        if self.fallback is not None:
            command = np.asarray(self.fallback(observation), dtype=np.float64)
        else:
            command = np.zeros(self.policy.action_dim)
            if self._last_command is not None:
                command[self._hold_dims] = self._last_command[self._hold_dims]
        return command if np.all(np.isfinite(command)) else np.zeros(self.policy.action_dim)

    def _fallback_step(
        self,
        observation: Mapping[str, np.ndarray],
        t: int,
        now: float,
        period_s: float | None,
        start: float,
    ) -> ControlOutput:
        """The step for an observation with NaN/inf: the fallback command, the policy untouched."""
        bad = [name for name in self.policy.layout.names if not np.all(np.isfinite(observation[name]))]
        reason = f"non-finite observation entries {bad}" if bad else "non-finite observation"
        command = self._fallback_command(observation)
        self._t += 1
        newest = self._chunks[-1] if self._chunks else None
        status = ControlStatus(
            step=t,
            now=float(now),
            period_s=period_s,
            late=period_s is not None and period_s > self.config.late_factor * self.ctrl_dt,
            chunk_index=newest.index if newest else -1,
            chunk_step=t - newest.origin if newest else 0,
            new_chunk=False,
            computed_chunk=False,
            inference_s=None,
            queue_length=max(self._due - t - 1, 0),
            blend_weight=1.0,
            active_chunks=0,
            fallback=reason,
        )
        status.compute_s = time.perf_counter() - start
        self._last_command = command
        return ControlOutput(action=command, policy_action=command.copy(), status=status)

    def sync(self) -> None:
        """Wait until a chunk being computed in the background is ready (tests, shutdown)."""
        if self._job is not None:
            self._job.exception()

    def close(self) -> None:
        """Stop the background thread (the controller can still step; prefetch restarts it)."""
        self._drop_job()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _covers(self, chunk: _Chunk, t: int) -> bool:
        return chunk.origin <= t < chunk.origin + self.policy.horizon

    def _compute(self, origin: int) -> _Chunk:
        """Inference on the current history; the chunk's action 0 is for step ``origin``."""
        start = time.perf_counter()
        actions = np.asarray(self.policy.predict(np.stack(self._history), self.rng), dtype=np.float64)
        return _Chunk(actions, origin, index=-1, inference_s=time.perf_counter() - start)

    def _submit(self, t: int, history: np.ndarray | None = None) -> Future[_Chunk]:
        """Start the next chunk from the history now (in the thread, or here with ``prefetch_sync``).

        One chunk at most is on the way and only it uses ``self.rng``, so the noise sequence is the
        same in the thread and in sync mode. ``history``: the observations to use instead of the
        kept history (:meth:`prime`).
        """
        history = np.stack(self._history) if history is None else history
        if self.config.prefetch_sync:
            start = time.perf_counter()
            actions = np.asarray(self.policy.predict(history, self.rng), dtype=np.float64)
            job: Future[_Chunk] = Future()
            job.set_result(_Chunk(actions, t, index=-1, inference_s=time.perf_counter() - start))
            return job
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robot_rl-prefetch")

        def run() -> _Chunk:
            start = time.perf_counter()
            actions = np.asarray(self.policy.predict(history, self.rng), dtype=np.float64)
            return _Chunk(actions, t, index=-1, inference_s=time.perf_counter() - start)

        return self._executor.submit(run)

    def _take(self, chunk: _Chunk, t: int) -> bool:
        """Put ``chunk`` in play at step ``t`` (False, and dropped, when it no longer covers ``t``)."""
        if not self._covers(chunk, t):
            return False
        chunk.arrived, chunk.index = t, self._taken
        self._taken += 1
        self._chunks.append(chunk)
        keep = {"none": 1, "crossfade": 2}.get(self.config.blend)
        if keep is not None:
            del self._chunks[:-keep]
        self._due = min(t + self.period, chunk.origin + self.policy.horizon)
        return True

    def _blend(self, t: int) -> tuple[np.ndarray, float, int]:
        """The policy action for step ``t``, the newest chunk's weight in it and how many chunks it mixes."""
        self._chunks = [c for c in self._chunks if c.origin + self.policy.horizon > t]
        newest = self._chunks[-1]
        own = newest.actions[t - newest.origin]
        blend = self.config.blend
        if blend == "crossfade" and len(self._chunks) == 2:
            j = t - newest.arrived
            if j < self.config.crossfade_steps:
                old = self._chunks[0]
                weight = (j + 1) / (self.config.crossfade_steps + 1)
                return (1.0 - weight) * old.actions[t - old.origin] + weight * own, weight, 2
        if blend == "ensemble" and len(self._chunks) > 1:
            first = self._chunks[0].origin
            weights = np.array([math.exp(-self.config.ensemble_decay * (c.origin - first)) for c in self._chunks])
            weights /= weights.sum()
            stacked = np.stack([c.actions[t - c.origin] for c in self._chunks])
            return weights @ stacked, float(weights[-1]), len(self._chunks)
        return own.copy(), 1.0, 1

    def _drop_job(self) -> None:
        if self._job is not None:
            with contextlib.suppress(Exception):
                self._job.result()
            self._job = None
