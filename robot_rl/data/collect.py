"""Collect demonstrations from an action source (scripted expert, teleop device, policy) into a file.

:func:`collect` runs the loop: reset with consecutive seeds, ask the source for actions, step the
env, record each step, and commit or discard each episode as the source and the env decide. Every
source implements the small :class:`ActionSource` protocol; the scripted experts are built in and
teleoperation devices plug in through :func:`register_source`.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from robot_rl.data.parallel_collect import collection_report
from robot_rl.data.recorder import DemoRecorder, StateReader
from robot_rl.parallel import check_workers, is_parallel


class EpisodeEvent(enum.Enum):
    """Episode control from a source (a teleop device's buttons; the expert sends none)."""

    START = "start"
    """Begin recording (the first action also starts it)."""
    SAVE = "save"
    """End the episode and keep it, labelled successful."""
    DISCARD = "discard"
    """End the episode and drop it."""
    RESET = "reset"
    """Drop the episode and reset the env."""
    QUIT = "quit"
    """Drop the episode in progress and stop collecting."""


@runtime_checkable
class ActionSource(Protocol):
    """Something that chooses actions for :func:`collect`.

    Attributes:
        name: Recorded as the demos' source device (``expert``, ``keyboard``...).
        realtime: Pace the loop at the env's control period (a human in the loop).
    """

    name: str
    realtime: bool

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """A new episode starts from ``obs``."""

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        """The action for ``obs``, or None for "no command yet".

        Before recording starts, None leaves the env paused (not stepped), so a demo always starts
        at its reset state and replays exactly. After it starts, None pauses the env too.
        """

    def episode_control(self) -> Sequence[EpisodeEvent]:
        """Events since the last call (non-blocking)."""


class PolicySource:
    """An :class:`ActionSource` from a function of the observation (a scripted expert, a policy).

    Args:
        policy: ``obs -> action``.
        name: Source name recorded in the file.
        reset: Called at each episode start (clears an expert's internal phase).
    """

    realtime = False
    intervention = None
    """Not tracked (no ``interventions`` dataset)."""

    def __init__(
        self,
        policy: Callable[[dict[str, np.ndarray]], np.ndarray],
        name: str,
        reset: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self._reset = reset or getattr(policy, "reset", None)

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        """Reset the policy's internal state."""
        if self._reset is not None:
            self._reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """The policy's action."""
        return self.policy(obs)

    def episode_control(self) -> Sequence[EpisodeEvent]:
        """No events: episodes end when the env ends them."""
        return ()


def expert_source(env: Any, env_id: str) -> PolicySource:
    """The scripted expert of ``env_id`` as an action source."""
    from robot_rl.envs.registry import scripted_expert

    expert = scripted_expert(env_id, env)
    return PolicySource(expert, "expert", expert.reset)


SourceFactory = Callable[[Any, str], ActionSource]
"""``factory(env, env_id) -> ActionSource``."""
SOURCES: dict[str, SourceFactory] = {"expert": expert_source}
"""Source names :func:`collect` accepts; teleop devices are added with :func:`register_source`."""


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``collect(source=name)`` build its source with ``factory(env, env_id)``."""
    SOURCES[name] = factory


@dataclasses.dataclass
class CollectStatus:
    """What :func:`collect` passes to ``on_step`` each control period (for a status line or viewer)."""

    episode: int
    """Attempt index (0-based), kept or not."""
    seed: int
    step: int
    """Steps recorded in this episode."""
    recording: bool
    saved: int
    discarded: int
    info: dict[str, Any]
    """The env's last step info (empty before the first step)."""


def file_env_kwargs(env: Any, env_kwargs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The env kwargs to store: as given, with ``randomize`` resolved to plain values.

    A preset name or YAML path becomes the DomainRandomization it stood for (as a dict), so the
    file rebuilds the same env anywhere; nominal (no randomization) is dropped. Rendering options
    are dropped (they do not change the dynamics).
    """
    kwargs = {k: v for k, v in (env_kwargs or {}).items() if k not in ("render_mode", "width", "height", "camera")}
    if "randomize" in kwargs:
        randomization = env.unwrapped.randomization
        if randomization.enabled:
            kwargs["randomize"] = {
                k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(randomization).items()
            }
        else:
            del kwargs["randomize"]
    return kwargs


def next_seed(path: str | os.PathLike[str]) -> int:
    """One past the largest episode seed in ``path`` (0 when it does not exist or holds no demos)."""
    if not Path(path).exists():
        return 0
    from robot_rl.data.dataset import DemoDataset

    with DemoDataset(path) as ds:
        return max((s for s in ds.seeds() if s is not None), default=-1) + 1


def collect(
    env_id: str,
    source: str | ActionSource,
    episodes: int,
    out: str | os.PathLike[str],
    seed: int | None = None,
    policy: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
    progress: bool = True,
    env_kwargs: Mapping[str, Any] | None = None,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    on_step: Callable[[CollectStatus], None] | None = None,
    fsync: bool = True,
    workers: int | None = None,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Record ``episodes`` demonstrations of ``env_id`` into ``out`` (appending if it exists).

    Attempt k resets with seed ``seed + k``; by default ``seed`` continues after the largest seed
    already in ``out`` (0 for a new file), so collecting twice into one file never repeats an
    episode. An episode ends when the env ends it (time limit or termination; kept if it
    succeeded, or always with ``keep_failed``), or on a SAVE (kept, labelled successful), DISCARD
    or RESET (dropped) or QUIT (dropped, collection stops) event. Each kept episode is committed
    to disk before the next one starts.

    Args:
        env_id: Registered env id (``robot-rl envs``).
        source: ``expert``, a name added with :func:`register_source`, or an :class:`ActionSource`.
        episodes: Demonstrations to keep.
        out: HDF5 file; created, or appended to when it holds demos of the same env and kwargs.
        seed: Seed of the first attempt (default: one past the largest seed in ``out``, or 0).
        policy: Record this ``obs -> action`` function's rollouts instead (``source`` is then the
            name recorded, e.g. ``policy``).
        progress: Show a progress bar.
        env_kwargs: Extra keyword arguments for the env (e.g. ``{"randomize": "train"}``).
        keep_failed: Keep episodes the env ends without success.
        max_attempts: Stop after this many attempts (default: ``2 * episodes + 10`` for sources
            that are not real-time, unlimited for a human).
        on_step: Called every control period with a :class:`CollectStatus`.
        fsync: fsync each commit (power-loss safety).
        workers: The scripted expert's attempts on this many worker processes (None or 1: this process); this
            process writes the file, in seed order: the same demos (:mod:`robot_rl.data.parallel_collect`).
        ray_address: The attempts on a Ray cluster instead (``auto`` or ``HOST:PORT``; docs/scale.md).

    Returns:
        ``out``, ``env_id``, ``source``, ``kept``, ``discarded``, ``attempts``, ``steps``,
        ``demos`` (names committed), ``attempt_success_rate`` (success among episodes the env
        ended), ``quit`` and ``wall_time_s`` (on workers also ``execution``: where each attempt ran).

    Raises:
        ValueError: unknown env id or source, or ``episodes < 1``.
        DatasetError: ``out`` holds another env's demos, or is not a demonstration file.
        RuntimeError: too many failed attempts (the demos kept so far are saved).
    """
    from robot_rl.envs.registry import check_env_id, make

    if episodes < 1:
        raise ValueError(f"`episodes` must be >= 1. Got {episodes}.")
    check_workers(workers)
    parallel = is_parallel(workers, ray_address)
    if parallel and (source != "expert" or policy is not None or on_step is not None):
        raise ValueError(
            "--workers and --ray-address split the scripted expert's attempts (--source expert); a teleop device "
            f"or a policy records in this process. Got source {source if isinstance(source, str) else 'object'!r}."
        )
    env_id = check_env_id(env_id)
    if seed is None:
        seed = next_seed(out)
    env = make(env_id, **dict(env_kwargs or {}))
    try:
        if policy is not None:
            if not isinstance(source, str):
                raise ValueError("with `policy`, `source` must be the name to record (e.g. 'policy').")
            action_source: ActionSource = PolicySource(policy, source)
        elif isinstance(source, str):
            if source not in SOURCES:
                raise ValueError(
                    f"unknown source {source!r}. Valid sources: {', '.join(SOURCES)} (teleop devices are "
                    "available once robot_rl.teleop registers them)."
                )
            action_source = SOURCES[source](env, env_id)
        else:
            action_source = source
        if max_attempts is None and not action_source.realtime:
            max_attempts = 2 * episodes + 10
        unwrapped = env.unwrapped
        recorder = DemoRecorder(
            out,
            env_id,
            file_env_kwargs(env, env_kwargs),
            unwrapped.ctrl_dt,
            action_source.name,
            seed=seed,
            randomization=unwrapped.randomization,
            fsync=fsync,
            action_bounds=(env.action_space.low, env.action_space.high),
        )
        with recorder:
            if parallel:
                from robot_rl.data.parallel_collect import collect_parallel

                assert max_attempts is not None
                return collect_parallel(
                    recorder, env_id, dict(env_kwargs or {}), episodes, seed, progress, keep_failed, max_attempts,
                    workers, ray_address,
                )  # fmt: skip
            return _loop(
                env, env_id, action_source, recorder, episodes, seed, progress, keep_failed, max_attempts, on_step
            )
    finally:
        env.close()


def _loop(
    env: Any,
    env_id: str,
    source: ActionSource,
    recorder: DemoRecorder,
    episodes: int,
    seed: int,
    progress: bool,
    keep_failed: bool,
    max_attempts: int | None,
    on_step: Callable[[CollectStatus], None] | None,
) -> dict[str, Any]:
    out = recorder.path
    read_state = StateReader(env)
    state_size = read_state.size
    # Bound once: the step loop below runs at up to a few kHz for a scripted expert.
    step_env, act, state_slot, add_step = env.step, source.act, recorder.state_slot, recorder.add_step
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=episodes, desc=f"collect {env_id.split('/')[-1]} ({source.name})", unit="demo")
    start = time.perf_counter()
    kept = discarded = attempts = steps_total = ended = ended_success = 0
    quit_requested = False
    try:
        while len(recorder.committed) < episodes and not quit_requested:
            if max_attempts is not None and attempts >= max_attempts:
                raise RuntimeError(
                    f"only {kept} of {episodes} episodes were kept after {attempts} attempts (the source failed the "
                    f"rest); the {kept} kept demos are saved in {out}. Use keep_failed=True to keep failures."
                )
            episode_seed = seed + attempts
            attempts += 1
            obs, reset_info = env.reset(seed=episode_seed)
            source.reset(obs)
            recorder.start_episode(episode_seed, reset_info.get("randomization"))
            recording = False
            info: dict[str, Any] = {}
            next_tick = time.monotonic()
            outcome: tuple[bool, bool] | None = None  # (keep, success)
            while outcome is None:
                for event in source.episode_control():
                    if event is EpisodeEvent.START:
                        recording = True
                    elif event is EpisodeEvent.SAVE:
                        outcome = (recorder.num_steps > 0, True)
                    elif event in (EpisodeEvent.DISCARD, EpisodeEvent.RESET, EpisodeEvent.QUIT):
                        quit_requested = quit_requested or event is EpisodeEvent.QUIT
                        outcome = (False, False)
                    if outcome is not None:
                        break
                if outcome is not None:
                    break
                action = act(obs)
                if action is not None:
                    recording = True
                    # The state before the step, read straight into the recorder's buffer.
                    state = read_state(state_slot(state_size))
                    next_obs, reward, terminated, truncated, info = step_env(action)
                    done = bool(terminated or truncated)
                    add_step(obs, action, reward, done, next_obs, state, getattr(source, "intervention", None))
                    obs = next_obs
                    if done:
                        success = bool(info.get("is_success", 0.0))
                        ended += 1
                        ended_success += success
                        outcome = (success or keep_failed, success)
                if on_step is not None:
                    on_step(
                        CollectStatus(attempts - 1, episode_seed, recorder.num_steps, recording, kept, discarded, info)
                    )
                if source.realtime and outcome is None:
                    next_tick += ctrl_dt
                    delay = next_tick - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    else:
                        next_tick = time.monotonic()
            keep, success = outcome
            if keep:
                env_success = bool(info.get("is_success", 0.0))
                steps_total += recorder.num_steps
                # Durable before the next episode's first env.step. Not overlapped with the next
                # reset on purpose: reset and first action take about 0.2 ms, and h5py holds the
                # GIL, so a background commit would save at most that.
                recorder.commit(success=success, env_success=env_success)
                kept += 1
                if bar is not None:
                    bar.update(1)
            else:
                recorder.discard()
                discarded += 1
    finally:
        if bar is not None:
            bar.close()
    counts = {"kept": kept, "discarded": discarded, "attempts": attempts, "steps": steps_total}
    return collection_report(out, env_id, source.name, recorder, counts, ended, ended_success, quit_requested, start)
