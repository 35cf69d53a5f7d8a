"""The policy node's control loop, timed and made real-time, ROS-free.

:class:`LoopStats` keeps the per-step numbers the diagnostics and the benchmark report (the tick period and its
jitter, compute time, late periods, percentiles over a window).
:class:`RealtimeLoop` is the control thread's real-time setup (SCHED_FIFO, locked memory, the garbage collector kept
out of the tick), as ros2_control's controller_manager does for its loop: a setting the system refuses is a
warning with the fix, never a failure.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import math
import os
import sys
import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import numpy as np


class LoopStats:
    """Counters and latency windows of a control loop (for diagnostics and the benchmark).

    Args:
        ctrl_dt: Control period [s].
        window: Latency samples kept for the percentiles.
    """

    def __init__(self, ctrl_dt: float, window: int = 2000) -> None:
        self.ctrl_dt = float(ctrl_dt)
        self.latency_s: deque[float] = deque(maxlen=window)
        """Tick start (cached messages read) to command published [s]."""
        self.latency_other_s: deque[float] = deque(maxlen=window)
        """The same, of the steps that ran no inference inside the tick [s]."""
        self.inference_steps = 0
        """Steps that ran the policy's inference inside the tick (a chunk computed there, or waited for)."""
        self.state_age_s: deque[float] = deque(maxlen=window)
        """Age of the state a step read at its tick: ``now`` minus the state's header stamp [s]."""
        self.steps = 0
        self.late = 0
        """Ticks more than 1.5 periods after the previous one."""
        self.dropped_periods = 0
        """Control periods with no tick (``round(period / ctrl_dt) - 1`` summed over late ticks)."""
        self.interventions = 0
        """Steps where the safety chain changed the command."""
        self.fallbacks = 0
        """Steps where the safety chain sent its fallback."""
        self.last_fallback = ""
        self.fallback_reasons: Counter[str] = Counter()
        """Fallback steps per reason."""
        self.alarms = 0
        """Steps with a monitor alarm."""
        self.waiting = 0
        """Ticks skipped for lack of a complete state."""
        self._last_tick: float | None = None

    def tick(self, now: float) -> None:
        """Count a tick at ``now`` [s] (late ticks and the periods they dropped)."""
        if self._last_tick is not None:
            period = now - self._last_tick
            if period > 1.5 * self.ctrl_dt:
                self.late += 1
                self.dropped_periods += max(1, round(period / self.ctrl_dt) - 1)
        self._last_tick = now

    def restart(self) -> None:
        """Forget the previous tick (after a pause: the gap is not a dropped period)."""
        self._last_tick = None

    def step(
        self,
        latency_s: float,
        state_age_s: float,
        changed: bool,
        fallback: str | None,
        alarm: bool,
        inference: bool = False,
    ) -> None:
        """Count one published step (``inference``: the policy's inference ran inside it)."""
        self.steps += 1
        self.latency_s.append(latency_s)
        if inference:
            self.inference_steps += 1
        else:
            self.latency_other_s.append(latency_s)
        self.state_age_s.append(state_age_s)
        self.interventions += bool(changed)
        if fallback:
            self.fallbacks += 1
            self.last_fallback = fallback
            self.fallback_reasons[fallback] += 1
        self.alarms += bool(alarm)

    @staticmethod
    def percentile(samples: deque[float] | list[float], q: float) -> float:
        """The ``q``-th percentile of ``samples`` (NaN when empty)."""
        return float(np.percentile(np.asarray(samples), q)) if samples else math.nan

    def summary(self) -> dict[str, float | int | str]:
        """The numbers the diagnostics publish (latencies in ms)."""
        return {
            "steps": self.steps,
            "latency_p50_ms": 1e3 * self.percentile(self.latency_s, 50),
            "latency_p99_ms": 1e3 * self.percentile(self.latency_s, 99),
            "latency_max_ms": 1e3 * max(self.latency_s, default=math.nan),
            "inference_steps": self.inference_steps,
            "latency_p99_other_ms": 1e3 * self.percentile(self.latency_other_s, 99),
            "state_age_p50_ms": 1e3 * self.percentile(self.state_age_s, 50),
            "late_ticks": self.late,
            "dropped_periods": self.dropped_periods,
            "safety_interventions": self.interventions,
            "safety_fallbacks": self.fallbacks,
            "last_fallback": self.last_fallback,
            "fallback_reasons": ", ".join(f"{k}: {v}" for k, v in self.fallback_reasons.most_common()),
            "monitor_alarms": self.alarms,
            "waiting_for_state": self.waiting,
        }


FIFO_PRIORITY_MAX = 99
"""Highest SCHED_FIFO priority on Linux (``sched_get_priority_max``)."""
_MCL_CURRENT, _MCL_FUTURE = 1, 2
"""``mlockall`` flags (Linux)."""
MIDDLEWARE_THREADS = ("dds.",)
"""Name prefixes of the middleware's threads (Fast DDS, the default RMW of Humble and Jazzy: ``dds.ev.*``,
``dds.shm.*``, ``dds.udp.*``, ``dds.asyn.*``). The control thread takes their locks when it waits and
publishes: left under the default scheduler, one preempted while holding a lock stalls the loop."""
RT_HINT = (
    "allow it with an rtprio limit for the user (/etc/security/limits.conf: `@realtime - rtprio 99`, "
    "`@realtime - memlock unlimited`, the user in group realtime; in a container: --cap-add=SYS_NICE, "
    "--ulimit rtprio=99) or set realtime_priority:=0"
)


class RealtimeLoop:
    """Real-time setup of a control loop's thread: SCHED_FIFO, locked memory, collections after the command.

    Everything is undone by :meth:`release` (the node's deactivate), and a refusal by the OS is a
    warning, never an error: the loop then runs as before under the default scheduler.

    Args:
        priority: SCHED_FIFO priority of the thread that runs the loop (1..99; 0: leave the scheduler
            alone). Threads that thread starts afterwards (the Controller's prefetch worker) inherit it.
            The middleware's threads (``middleware_threads``) get ``priority - 1`` (at least 1): the loop's
            thread waits on their locks (the executor's wait set, a synchronous publish), and one of them
            preempted by an ordinary process while holding one delays the tick by a scheduler time slice
            or more (priority inversion; measured here: late ticks every few seconds under load).
        middleware_threads: Name prefixes of the threads put at ``priority - 1`` (see
            :data:`MIDDLEWARE_THREADS`); other RMWs name theirs differently (start such a node under
            ``chrt -f``).
        lock_memory: ``mlockall(MCL_CURRENT | MCL_FUTURE)`` at the first :meth:`start`: no page faults in the
            loop. The whole process, for the rest of its life (as ros2_control's ``lock_memory``).
        manage_gc: While active, automatic collections are off; :meth:`collect` runs the collection that
            is due (same thresholds) where the loop calls it, after its command is out. Objects alive at
            :meth:`start` are frozen (``gc.freeze``), so a full collection does not walk the libraries'
            objects (onnxruntime, mujoco, rclpy: some 85 000, 17-45 ms for a full collection) in the loop.
        warn: Called with one line per refused setting.

    Raises:
        ValueError: ``priority`` outside 0..99.
    """

    def __init__(
        self,
        priority: int = 0,
        lock_memory: bool = False,
        manage_gc: bool = True,
        warn: Callable[[str], None] | None = None,
        middleware_threads: tuple[str, ...] = MIDDLEWARE_THREADS,
    ) -> None:
        if not 0 <= int(priority) <= FIFO_PRIORITY_MAX:
            raise ValueError(
                f"`realtime_priority` must be in [0, {FIFO_PRIORITY_MAX}] (0: off; ros2_control uses 50). "
                f"Got {priority}."
            )
        self.priority = int(priority)
        self.lock_memory = bool(lock_memory)
        self.manage_gc = bool(manage_gc)
        self.warn = warn if warn is not None else (lambda line: None)
        self.middleware_threads = tuple(middleware_threads)
        self.fifo = False
        """The loop's thread runs under SCHED_FIFO."""
        self.fifo_middleware = 0
        """Middleware threads put under SCHED_FIFO."""
        self.locked = False
        """``mlockall`` is in force (from the first :meth:`start` on)."""
        self.collections = 0
        """Collections :meth:`collect` ran."""
        self._previous: dict[int, tuple[int, int]] = {}
        """Thread id -> (policy, priority) before this loop changed it."""
        self._gc_active = False
        self._thresholds = gc.get_threshold()
        self._pending_thread = False

    # ------------------------------------------------------------------ process
    def start(self) -> None:
        """Before the loop starts: lock memory, freeze the objects alive now, stop automatic collections.

        The scheduler change waits for :meth:`enter_thread`, called from the loop's own thread.
        """
        if self.lock_memory and not self.locked:
            reason = _mlockall()
            if reason:
                self.warn(f"lock_memory: mlockall refused ({reason}); memory stays pageable. {RT_HINT}.")
            else:
                self.locked = True
        if self.manage_gc and not self._gc_active:
            _GC.acquire()
            self._thresholds = gc.get_threshold()
            self._gc_active = True
        self._pending_thread = self.priority > 0

    def release(self) -> None:
        """The loop stopped: the thread's previous scheduling, automatic collections and unfrozen objects back.

        Locked memory stays locked.
        """
        self._pending_thread = False
        for thread, (policy, priority) in self._previous.items():
            try:
                os.sched_setscheduler(thread, policy, os.sched_param(priority))
            except OSError:
                pass  # the thread is gone
        self._previous.clear()
        self.fifo, self.fifo_middleware = False, 0
        if self._gc_active:
            _GC.release()
            self._gc_active = False

    # ------------------------------------------------------------------- thread
    def enter_thread(self) -> None:
        """Put the calling thread (the loop's) under SCHED_FIFO at :attr:`priority`, once per :meth:`start`.

        Cheap when there is nothing to do: call it at the top of every iteration.
        """
        if not self._pending_thread:
            return
        self._pending_thread = False
        if not hasattr(os, "sched_setscheduler"):
            self.warn(f"realtime_priority {self.priority}: SCHED_FIFO is not available on this platform.")
            return
        try:
            self._set_fifo(threading.get_native_id(), self.priority)
        except OSError as err:
            self.warn(
                f"realtime_priority {self.priority}: SCHED_FIFO refused ({err.strerror or err}); the control loop runs "
                f"under the default scheduler. {RT_HINT}."
            )
            return
        self.fifo = True
        for thread in _threads_named(self.middleware_threads):
            try:
                self._set_fifo(thread, max(1, self.priority - 1))
                self.fifo_middleware += 1
            except OSError:
                pass  # exited meanwhile

    def _set_fifo(self, thread: int, priority: int) -> None:
        previous = (os.sched_getscheduler(thread), os.sched_getparam(thread).sched_priority)
        os.sched_setscheduler(thread, os.SCHED_FIFO, os.sched_param(priority))
        self._previous.setdefault(thread, previous)

    def collect(self) -> None:
        """The collection automatic collection would have run by now, if any (call it after the command is out)."""
        if not self._gc_active:
            return
        count0, count1, count2 = gc.get_count()
        threshold0, threshold1, threshold2 = self._thresholds
        if threshold0 <= 0 or count0 < threshold0:
            return
        generation = 2 if count1 >= threshold1 and count2 >= threshold2 else 1 if count1 >= threshold1 else 0
        gc.collect(generation)
        self.collections += 1

    def summary(self) -> dict[str, object]:
        """What is in force (for the diagnostics)."""
        return {
            "realtime_priority": self.priority if self.fifo else 0,
            "realtime_middleware_threads": self.fifo_middleware,
            "memory_locked": self.locked,
            "gc_managed": self._gc_active,
            "gc_collections": self.collections,
        }


class _GcHold:
    """The process-wide collector state under :class:`RealtimeLoop` (several loops in one process share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = True

    def acquire(self) -> None:
        """First holder: collect, freeze what is alive, stop automatic collections."""
        with self._lock:
            self._holders += 1
            if self._holders == 1:
                self._was_enabled = gc.isenabled()
                gc.collect()
                gc.freeze()
                gc.disable()

    def release(self) -> None:
        """Last holder: unfreeze, automatic collections back as they were."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0:
                gc.unfreeze()
                if self._was_enabled:
                    gc.enable()


_GC = _GcHold()


def _threads_named(prefixes: tuple[str, ...]) -> list[int]:
    """Ids of this process's threads whose name starts with one of ``prefixes`` (Linux ``/proc``)."""
    if not prefixes:
        return []
    found = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return []
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as file:
                name = file.read().strip()
        except OSError:
            continue  # exited meanwhile
        if name.startswith(prefixes):
            found.append(int(task))
    return found


def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _mlockall() -> str:
    """``mlockall(MCL_CURRENT | MCL_FUTURE)``; '' when done, else why not."""
    if not sys.platform.startswith("linux"):
        return "not available on this platform"
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY and os.geteuid() != 0:
        # With a finite limit, MCL_FUTURE makes every allocation past it fail: refuse rather than crash later.
        return f"RLIMIT_MEMLOCK is {soft} bytes, not unlimited"
    try:
        libc = _libc()
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
            return os.strerror(ctypes.get_errno())
    except (OSError, AttributeError) as err:
        return str(err)
    return ""
