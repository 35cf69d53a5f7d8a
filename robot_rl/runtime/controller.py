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

The step's config, status and hook protocols are in :mod:`robot_rl.runtime.interface`, the chunks
in play and their blending in :mod:`robot_rl.runtime.chunks`. Needs numpy only (and onnxruntime for
:meth:`Controller.load`); never torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from robot_rl.policies.layout import Policy
from robot_rl.runtime.chunks import Chunk, ChunkQueue
from robot_rl.runtime.interface import (
    BLEND_MODES,
    ActionFilter,
    BlendMode,
    ControllerConfig,
    ControlOutput,
    ControlStatus,
    Monitor,
)

__all__ = [
    "BLEND_MODES",
    "ActionFilter",
    "BlendMode",
    "ControlOutput",
    "ControlStatus",
    "Controller",
    "ControllerConfig",
    "Monitor",
]
"""The config, status and hook types live in :mod:`robot_rl.runtime.interface`; importing them from here works too."""


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
        self._queue = queue = ChunkQueue(config, horizon, policy.n_action_steps)
        if config.prefetch and config.lead + queue.period > horizon:
            raise ValueError(
                f"`lead` + steps between chunks must be <= horizon={horizon} (a chunk started `lead` steps early "
                f"must still cover its {queue.period} steps). Got lead={config.lead}, {queue.period} steps."
            )
        self.rng = np.random.default_rng(config.seed)
        self._executor: ThreadPoolExecutor | None = None
        self._history: deque[np.ndarray] = deque(maxlen=policy.n_obs_steps)
        self._job: Future[Chunk] | None = None
        self._t = 0
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
        self._queue.clear()
        self._t = 0
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
        return self.config.prefetch and self._job is None and self._queue.is_due(self._t)

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
        arrived: Chunk | None = None
        queue = self._queue
        if queue.is_due(t):
            if self._job is not None:
                if queue.newest is None or self._job.done() or not queue.covers(queue.newest, t):
                    waited = not self._job.done()
                    chunk, self._job = self._job.result(), None
                    if queue.take(chunk, t):
                        arrived = chunk
                else:
                    stale = True
            if arrived is None and not stale:
                # No chunk on the way (or it came too late to cover this step): compute one now.
                arrived = self._compute(t)
                computed = True
                queue.take(arrived, t)

        action, weight, active = queue.blend(t)
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
        newest = queue.chunks[-1]
        if self.config.prefetch and self.config.lead > 0 and self._job is None and t >= queue.due - self.config.lead:
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
            queue_length=self._queue.queue_length(t),
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
        newest = self._queue.newest
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
            queue_length=self._queue.queue_length(t),
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

    def _compute(self, origin: int) -> Chunk:
        """Inference on the current history; the chunk's action 0 is for step ``origin``."""
        start = time.perf_counter()
        actions = np.asarray(self.policy.predict(np.stack(self._history), self.rng), dtype=np.float64)
        return Chunk(actions, origin, index=-1, inference_s=time.perf_counter() - start)

    def _submit(self, t: int, history: np.ndarray | None = None) -> Future[Chunk]:
        """Start the next chunk from the history now (in the thread, or here with ``prefetch_sync``).

        One chunk at most is on the way and only it uses ``self.rng``, so the noise sequence is the
        same in the thread and in sync mode. ``history``: the observations to use instead of the
        kept history (:meth:`prime`).
        """
        history = np.stack(self._history) if history is None else history
        if self.config.prefetch_sync:
            start = time.perf_counter()
            actions = np.asarray(self.policy.predict(history, self.rng), dtype=np.float64)
            job: Future[Chunk] = Future()
            job.set_result(Chunk(actions, t, index=-1, inference_s=time.perf_counter() - start))
            return job
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robot_rl-prefetch")

        def run() -> Chunk:
            start = time.perf_counter()
            actions = np.asarray(self.policy.predict(history, self.rng), dtype=np.float64)
            return Chunk(actions, t, index=-1, inference_s=time.perf_counter() - start)

        return self._executor.submit(run)

    def _drop_job(self) -> None:
        if self._job is not None:
            with contextlib.suppress(Exception):
                self._job.result()
            self._job = None
