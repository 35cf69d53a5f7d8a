"""``robot-rl monitor calibrate --workers N`` (or ``--ray-address``): the calibration rollouts on workers.

Each worker builds the policy (onnxruntime, one thread), the failure monitor with the RND just trained (read from
the file the calibration writes first) and the env once, then runs one rollout per task through
:func:`robot_rl.monitor.rollouts.run_monitored`, which reseeds the controller and the monitor from the rollout's
seed: a rollout's trace does not depend on the worker, and the traces come back in seed order
(:class:`robot_rl.parallel.EpisodePool`), so the calibration is the one-process calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from robot_rl.monitor.rollouts import EpisodeTrace
from robot_rl.parallel import EpisodePool


def _setup(policy_dir: str, rnd_path: str, settings: dict[str, Any], env_id: str) -> tuple[Any, Any, Any]:
    """One worker's env, failure monitor (with its policy) and plain monitors."""
    from robot_rl.envs.registry import make
    from robot_rl.monitor.embedding import ObsEmbedding
    from robot_rl.monitor.failure_monitor import FailureMonitor, MonitorSettings
    from robot_rl.monitor.plain import plain_monitors
    from robot_rl.monitor.rnd import RND
    from robot_rl.runtime import OnnxPolicy

    policy = OnnxPolicy(policy_dir, threads=1)
    settings = dict(settings)
    dims = settings.pop("entropy_dims")
    monitor_settings = MonitorSettings(**settings, entropy_dims=None if dims is None else tuple(dims))
    monitor = FailureMonitor(policy, RND.load(rnd_path), ObsEmbedding.from_metadata(policy.metadata), monitor_settings)
    return make(env_id), monitor, plain_monitors(policy.metadata)


def _rollout(context: tuple[Any, Any, Any], seed: int) -> dict[str, Any]:
    """The monitored rollout of ``seed`` (its trace, in plain form)."""
    from robot_rl.monitor.rollouts import run_monitored

    env, monitor, plain = context
    return run_monitored(env, monitor, [seed], plain)[0].to_json()


class RolloutPool:
    """Calibration rollouts on workers: :meth:`run` is :func:`robot_rl.monitor.budget.collect`'s ``parallel``.

    Args:
        policy_dir: The exported policy folder.
        rnd_path: The RND trained for this calibration (saved before the workers start).
        settings: The monitor settings (``Calibration.settings_json``).
        env_id: The policy's env.
        workers: Worker processes (None: 1 locally, the cluster's CPUs on Ray).
        ray_address: A Ray cluster (``auto`` or ``HOST:PORT``), or None for local processes.
        most: At most this many rollouts will run (more workers are clamped, with a note).
        progress: Show one progress bar over all rollouts.
    """

    def __init__(
        self,
        policy_dir: str | os.PathLike[str],
        rnd_path: Path,
        settings: dict[str, Any],
        env_id: str,
        workers: int | None,
        ray_address: str | None,
        most: int,
        progress: bool,
    ) -> None:
        self._bar: Any = None
        options: dict[str, Any] = {}
        if progress:
            from tqdm import tqdm

            options["log"] = tqdm.write
        args = (str(policy_dir), str(rnd_path), settings, env_id)
        self.pool = EpisodePool(_setup, args, _rollout, workers, ray_address, most=most, **options)
        if progress:
            self._bar = tqdm(desc=f"calibration rollouts {env_id.split('/')[-1]}", unit="rollout", leave=False)

    @property
    def workers(self) -> int:
        """The number of workers (after clamping)."""
        return self.pool.workers

    def run(self, lists: Sequence[list[int]]) -> list[list[EpisodeTrace]]:
        """The traces of each seed list, in order (all lists' rollouts share the workers)."""
        done = (lambda _: self._bar.update(1)) if self._bar is not None else None
        traces = {seed: trace for seed, trace in self.pool.ordered([s for seeds in lists for s in seeds], done=done)}
        return [[EpisodeTrace.from_json(traces[s]) for s in seeds] for seeds in lists]

    def close(self) -> None:
        """Stop the workers and the progress bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self.pool.close()
