"""Episodes spread over worker processes or a Ray cluster, their results handed back in episode order.

The rollout-bound commands (``robot-rl eval`` and its robustness suite, ``robot-rl collect --source expert``,
``robot-rl monitor calibrate``) split their episodes over workers with :class:`EpisodePool`: each worker builds its
own context once (env, policy stack: ``setup(*args)``, single-threaded), then runs episode tasks
``run(context, index)``. Episode ``index`` is the same episode whichever worker runs it (its seed is
``first_seed + index``), and :meth:`EpisodePool.ordered` yields the results in index order, so a caller that merges
them in that order gets what one process gets.

Two backends:

- local processes (``--workers N``): a ``ProcessPoolExecutor`` on spawned processes (nothing inherited but the
  arguments), no extra package;
- Ray (``--ray-address auto|HOST:PORT``, the ``ray`` extra): one actor per worker (1 CPU each, spread over the
  cluster's nodes), on a cluster started with ``ray start`` (docs/scale.md).

A worker that dies (killed, out of memory, its node lost) loses only the episodes it was running: they are run again
on a fresh worker (at most :data:`MAX_ATTEMPTS` times each), and every episode's result is kept once. An exception
raised by the episode itself is an error, not a death: it propagates unchanged.

Utility module: it imports nothing from robot_rl (every layer may use it); the ``setup`` and ``run`` functions it is
given must be module-level (spawned processes and Ray import them by name).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

MAX_ATTEMPTS = 3
"""Runs of one episode before a worker death during it is an error (a crash that repeats is not bad luck)."""
CRASH_HOOK = "ROBOT_RL_TEST_WORKER_CRASH"
"""Tests only: ``INDEX:PATH`` makes the worker that runs episode INDEX kill itself (SIGKILL) the first time, PATH
marking that it did. Read by the parent and passed with each task, so it reaches local and Ray workers alike."""
RAY_START = (
    "start one with `ray start --head --port 6379` on the head machine (and `ray start --address HEAD:6379` on each "
    "other machine), then pass --ray-address HEAD:6379 (or auto on the head); docs/scale.md"
)
"""How to start a cluster, as the refusals say it."""
_FORWARDED_ENV = ("MUJOCO_GL", "PYOPENGL_PLATFORM")
"""Environment variables the parent's workers need as the parent has them (offscreen rendering)."""
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerDiedError(RuntimeError):
    """A worker process ended while it ran an episode (not an exception of the episode)."""


class RayConnectionError(RuntimeError):
    """``--ray-address`` names no reachable Ray cluster, or Ray is not installed."""


def check_workers(workers: int | None, name: str = "workers") -> None:
    """Refuse a worker count below 1 (None: the default) in the configs' message shape."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(
            f"`{name}` must be >= 1 (1: this process; N: N worker processes, the episodes split between them). "
            f"Got {workers}."
        )


def check_ray_address(address: str | None, name: str = "ray_address") -> None:
    """Refuse a Ray address that is neither ``auto``, ``HOST:PORT`` nor ``ray://HOST:PORT``."""
    if address is None or address == "auto":
        return
    body = address[len("ray://") :] if address.startswith("ray://") else address
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})", body)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ValueError(
            f"`{name}` must be `auto` (the cluster `ray start` started on this machine) or HOST:PORT of a Ray head "
            f"(e.g. 10.0.0.5:6379). Got {address!r}."
        )


def is_parallel(workers: int | None, ray_address: str | None) -> bool:
    """Whether the episodes leave this process (more than one worker, or a Ray cluster)."""
    return ray_address is not None or (workers is not None and workers > 1)


# ------------------------------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}
"""This worker process's ``setup``, ``args``, ``run`` and, once built, its ``context``."""


def _init_worker(setup: Callable[..., Any], args: tuple, run: Callable[[Any, int], Any], cwd: str, env: dict) -> None:
    """Store what this worker runs (built lazily by the first task, so a failing setup is that task's error)."""
    os.environ.update(env)
    os.environ.update(dict.fromkeys(_THREAD_ENV, "1"))  # before torch/onnxruntime start their pools
    if os.path.isdir(cwd):
        os.chdir(cwd)  # relative paths (policies/NAME, a YAML) mean what they mean in the parent
    _WORKER.clear()
    _WORKER.update(setup=setup, args=args, run=run)


def _run_one(index: int, crash: tuple[int, str] | None, node: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Run episode ``index`` in this worker; returns its result and where it ran (node, pid)."""
    if crash is not None and crash[0] == index and not os.path.exists(crash[1]):
        Path(crash[1]).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if "context" not in _WORKER:
        _WORKER["context"] = _WORKER["setup"](*_WORKER["args"])
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(1)
    result = _WORKER["run"](_WORKER["context"], index)
    return result, {"node": node or socket.gethostname(), "pid": os.getpid()}


class _RayWorker:
    """A Ray actor holding one worker's context (made remote at run time: Ray is optional)."""

    def __init__(
        self, setup: Callable[..., Any], args: tuple, run: Callable[[Any, int], Any], cwd: str, env: dict
    ) -> None:
        _init_worker(setup, args, run, cwd, env)

    def run(self, index: int, crash: tuple[int, str] | None) -> tuple[Any, dict[str, Any]]:
        import ray

        return _run_one(index, crash, ray.get_runtime_context().get_node_id())


# ------------------------------------------------------------------------------------------------ backends
class _Processes:
    """Local spawned processes; a death breaks the whole pool, which is replaced."""

    name = "processes"

    def __init__(self, workers: int, init: tuple) -> None:
        import multiprocessing

        self.workers = workers
        self.slots = 2 * workers  # one episode queued behind each running one: no worker waits for the next
        self._context = multiprocessing.get_context("spawn")
        self._init = init
        self._pool = self._new_pool()
        self._pool_of: dict[Any, concurrent.futures.ProcessPoolExecutor] = {}

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            self.workers, mp_context=self._context, initializer=_init_worker, initargs=self._init
        )

    def submit(self, index: int, crash: tuple[int, str] | None) -> Any:
        future = self._pool.submit(_run_one, index, crash)
        self._pool_of[future] = self._pool
        return future

    def wait(self, handles: list[Any]) -> list[Any]:
        done, _ = concurrent.futures.wait(handles, return_when=concurrent.futures.FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def result(self, handle: Any) -> tuple[Any, dict[str, Any]]:
        try:
            value = handle.result()
        except concurrent.futures.process.BrokenProcessPool as err:
            # (its pool stays noted for replace())
            raise WorkerDiedError(f"a worker process ended abruptly: {type(err).__name__}") from None
        except BaseException:
            self._pool_of.pop(handle, None)
            raise
        self._pool_of.pop(handle, None)
        return value

    def replace(self, handle: Any) -> None:
        # Every episode in flight on the broken pool reports the death: the first report replaces the pool.
        if self._pool_of.pop(handle, None) is self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Ray:
    """One Ray actor per worker; a dead actor is replaced by a new one."""

    name = "ray"

    def __init__(self, workers: int, init: tuple, ray: Any) -> None:
        self.ray = ray
        self.workers = workers
        self.slots = workers  # one episode per actor at a time: a free actor takes the next
        self._init = init
        self._remote = ray.remote(num_cpus=1, max_restarts=0)(_RayWorker).options(scheduling_strategy="SPREAD")
        self._idle = [self._remote.remote(*init) for _ in range(workers)]
        self._actor_of: dict[Any, Any] = {}
        self._dead: dict[Any, Any] = {}

    def submit(self, index: int, crash: tuple[int, str] | None) -> Any:
        actor = self._idle.pop()
        ref = actor.run.remote(index, crash)
        self._actor_of[ref] = actor
        return ref

    def wait(self, handles: list[Any]) -> list[Any]:
        ready, _ = self.ray.wait(handles, num_returns=1)
        return ready

    def result(self, handle: Any) -> tuple[Any, dict[str, Any]]:
        from ray import exceptions

        actor = self._actor_of.pop(handle)
        try:
            value = self.ray.get(handle)
        except (exceptions.RayActorError, exceptions.WorkerCrashedError, exceptions.NodeDiedError) as err:
            self._dead[handle] = actor
            first = str(err).strip().splitlines()
            raise WorkerDiedError(first[0] if first else type(err).__name__) from None
        except exceptions.RayTaskError as err:  # the episode raised: its own exception, as in one process
            self._idle.append(actor)
            cause = getattr(err, "cause", None)
            raise (cause if isinstance(cause, BaseException) else err.as_instanceof_cause()) from None
        self._idle.append(actor)
        return value

    def replace(self, handle: Any) -> None:
        dead = self._dead.pop(handle, None)
        if dead is not None:
            self.ray.kill(dead, no_restart=True)
        self._idle.append(self._remote.remote(*self._init))

    def close(self) -> None:
        for actor in [*self._idle, *self._actor_of.values(), *self._dead.values()]:
            self.ray.kill(actor, no_restart=True)
        self._idle, self._actor_of, self._dead = [], {}, {}


# ------------------------------------------------------------------------------------------------ Ray connection
def connect_ray(address: str) -> tuple[Any, bool]:
    """Ray connected to the cluster at ``address`` (``auto`` or ``HOST:PORT``); True when connected here.

    Raises:
        RayConnectionError: Ray is not installed, or no cluster answers at ``address`` (one line naming it and
            how to start one).
    """
    check_ray_address(address, "--ray-address")
    try:
        import ray
    except ImportError:
        raise RayConnectionError(
            f"--ray-address {address} needs Ray, which is not installed: pip install 'robot_rl[ray]' (ray==2.60.0) "
            "here and on every node of the cluster (or leave --ray-address out: --workers N runs local processes)."
        ) from None
    if ray.is_initialized():
        return ray, False
    target = address
    if not address.startswith("ray://"):
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            target = canonicalize_bootstrap_address_or_die(address)
        except ConnectionError:
            raise RayConnectionError(
                f"--ray-address {address}: no Ray cluster is running on this machine; {RAY_START}."
            ) from None
        except ImportError:  # pragma: no cover - the private helper moved (ray is pinned)
            target = address
        host, _, port = target.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5.0).close()
        except (OSError, ValueError) as err:
            if isinstance(err, TimeoutError):
                reason = "no answer within 5 s"
            elif isinstance(err, OSError):
                reason = (err.strerror or type(err).__name__).lower()
            else:
                reason = str(err)
            named = address if target == address else f"{address} ({target})"
            raise RayConnectionError(
                f"--ray-address {named}: no Ray cluster answers ({reason}); {RAY_START}."
            ) from None
    try:
        ray.init(address=target, logging_level=logging.ERROR, log_to_driver=True)
    except ConnectionError as err:
        if _asks_for_token(err):
            raise RayConnectionError(
                f"--ray-address {address}: the cluster asks for a token (Ray token authentication, on for `ray start` "
                "where ~/.ray/auth_token exists): export RAY_AUTH_MODE=token, with the cluster's token in "
                "RAY_AUTH_TOKEN or ~/.ray/auth_token, where robot-rl runs (docs/scale.md)."
            ) from None
        raise RayConnectionError(f"--ray-address {address}: {str(err).splitlines()[0]}; {RAY_START}.") from None
    return ray, True


def _asks_for_token(err: BaseException) -> bool:
    """Whether a failed connection (or what caused it) is the cluster's token authentication refusing us."""
    seen: BaseException | None = err
    while seen is not None:
        if "Authentication" in type(seen).__name__ or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def cluster_cpus(ray: Any) -> int:
    """The CPUs of the connected Ray cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


# ------------------------------------------------------------------------------------------------ the pool
@dataclasses.dataclass
class Execution:
    """How a parallel run went: the backend, its workers, where each episode ran and which were run again."""

    backend: str
    workers: int
    where: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    """Episode index -> ``{"node": ..., "pid": ...}`` of the worker whose result was kept."""
    rerun: list[int] = dataclasses.field(default_factory=list)
    """Episodes run again after their worker died, in the order it happened."""

    def to_json(self) -> dict[str, Any]:
        """Plain form (the eval report's ``execution``)."""
        return {
            "backend": self.backend,
            "workers": self.workers,
            "rerun_episodes": list(self.rerun),
            "where": [{"episode": k, **self.where[k]} for k in sorted(self.where)],
        }


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EpisodePool:
    """Episode tasks on worker processes or Ray actors, each worker building its context once.

    Args:
        setup: ``setup(*args) -> context``, run once per worker (module-level: workers import it by name).
        args: Its arguments (picklable).
        run: ``run(context, index) -> result`` for one episode (module-level; the result picklable).
        workers: Worker count; None is 1 locally and the cluster's CPUs on Ray.
        ray_address: A Ray cluster (``auto`` or ``HOST:PORT``), or None for local processes.
        most: At most this many workers are useful (the episodes): more are clamped, with a note.
        log: One-line notes (clamping, a worker death and its re-run); stderr by default.

    Raises:
        ValueError: ``workers`` below 1.
        RayConnectionError: ``ray_address`` names no reachable cluster, or Ray is not installed.
    """

    def __init__(
        self,
        setup: Callable[..., Any],
        args: tuple,
        run: Callable[[Any, int], Any],
        workers: int | None = None,
        ray_address: str | None = None,
        most: int | None = None,
        log: Callable[[str], None] = _stderr,
    ) -> None:
        check_workers(workers)
        self.log = log
        self._ray: Any = None
        self._owns_ray = False
        if ray_address is not None:
            self._ray, self._owns_ray = connect_ray(ray_address)
            count = workers if workers is not None else cluster_cpus(self._ray)
        else:
            count = workers or 1
        if most is not None and count > most:
            log(f"note: {count} workers for {most} episodes: using {most}")
            count = max(1, most)
        crash = os.environ.get(CRASH_HOOK)
        self._crash: tuple[int, str] | None = None
        if crash:
            index, _, path = crash.partition(":")
            self._crash = (int(index), path)
        env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
        init = (setup, args, run, os.getcwd(), env)
        try:
            self._backend: Any = _Ray(count, init, self._ray) if self._ray is not None else _Processes(count, init)
        except BaseException:
            self._disconnect()
            raise
        self.execution = Execution(self._backend.name, count)

    @property
    def workers(self) -> int:
        """The number of workers (after clamping)."""
        return self.execution.workers

    def ordered(
        self, indices: Iterable[int], done: Callable[[int], None] | None = None, window: int | None = None
    ) -> Iterator[tuple[int, Any]]:
        """Run every episode of ``indices`` and yield ``(index, result)`` in the order of ``indices``.

        ``indices`` may be lazy (taken as workers free up); stop iterating and the episodes in flight are let finish
        and dropped, the rest never started.

        Args:
            indices: Episode indices, each at most once.
            done: Called with an episode's index when its result arrives (a progress bar), in any order.
            window: At most this many episodes started ahead of the next one to yield (default 4 per worker):
                bounds the results held back while an earlier episode is still running.
        """
        window = window or 4 * self.workers
        source = iter(indices)
        exhausted = False
        order: collections.deque[int] = collections.deque()  # started or queued, not yet yielded
        retry: collections.deque[int] = collections.deque()
        results: dict[int, Any] = {}
        attempts: collections.Counter[int] = collections.Counter()
        inflight: dict[Any, int] = {}
        while True:
            while len(inflight) < self._backend.slots:
                if retry:
                    index = retry.popleft()
                elif not exhausted and len(order) < window:
                    index = next(source, None)
                    if index is None:
                        exhausted = True
                        break
                    order.append(index)
                else:
                    break
                attempts[index] += 1
                inflight[self._backend.submit(index, self._crash)] = index
            while order and order[0] in results:
                index = order.popleft()
                yield index, results.pop(index)
            if not inflight:
                if exhausted and not order and not retry:
                    return
                continue
            for handle in self._backend.wait(list(inflight)):
                index = inflight.pop(handle)
                try:
                    value, where = self._backend.result(handle)
                except WorkerDiedError as err:
                    if attempts[index] >= MAX_ATTEMPTS:
                        raise WorkerDiedError(
                            f"episode {index}: its worker died on each of {attempts[index]} runs ({err}); the crash "
                            "is not bad luck: run it alone (--workers 1) to see why."
                        ) from None
                    self.log(f"note: a worker died during episode {index} ({err}); running it again")
                    self.execution.rerun.append(index)
                    retry.append(index)
                    self._backend.replace(handle)
                    continue
                if index in self.execution.where:
                    continue  # a result already kept (an episode is kept once, whatever happens)
                results[index] = value
                self.execution.where[index] = where
                if done is not None:
                    done(index)
            retry = collections.deque(sorted(retry))

    def close(self) -> None:
        """Stop the workers (and disconnect from Ray when this pool connected)."""
        try:
            self._backend.close()
        finally:
            self._disconnect()

    def _disconnect(self) -> None:
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> EpisodePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
