"""Crash-safe demonstration recorder: one committed HDF5 group per finished episode.

Usage::

    read_state = StateReader(env)
    with DemoRecorder("demos.hdf5", env_id, env_kwargs, ctrl_dt, source="expert", seed=0) as rec:
        obs, info = env.reset(seed=0)
        rec.start_episode(seed=0, randomization=info["randomization"])
        state = read_state(rec.state_slot(read_state.size))  # straight into the episode's buffer
        next_obs, reward, terminated, truncated, info = env.step(action)
        rec.add_step(obs, action, reward, terminated or truncated, next_obs, state)
        ...
        rec.commit(success=bool(info["is_success"]))  # or rec.discard()

Per step the recorder stores the MuJoCo state in a row of a buffer reused from episode to episode
(read straight into it through :meth:`DemoRecorder.state_slot`, or copied there) and keeps
references to the observation dicts and the action; ``commit`` stacks them, each observation once
when, as in a plain step loop, each step's ``obs`` is the previous step's ``next_obs``.

Every dataset carries the sha256 of its values (:mod:`robot_rl.data.integrity`), computed from the
arrays in memory at commit, so a byte changed on disk later is found by every reader.

Crash safety: the episode in progress lives only in memory. ``commit`` writes it as a complete
``data/demo_K`` group in one all-or-nothing update (:mod:`robot_rl.data.journal`: a journal
record, fsynced, then the pages written into the file) before it returns, so a process killed at
any moment, SIGKILL included (or a power loss), loses at most the episode in progress, and the
file opens cleanly afterwards. A committed episode is visible to any HDF5 reader at once.

Why memory rather than a temporary HDF5 group renamed at commit: HDF5 has no atomic rename on disk
(``H5Lmove`` rewrites metadata in place like any other change) and, more importantly, a file held
open for writing is not a valid file on disk: a writer killed mid-episode leaves it unopenable
(HDF5 2.0 with ``libver="latest"``: "file is already open for write", until ``h5clear``). Keeping
the file closed between commits avoids both, and an episode is small (a 50-step PandaPush episode
is about 90 KB).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import mujoco
import numpy as np
from h5py import h5g

from robot_rl.data import schema
from robot_rl.data.h5_writer import H5Writer
from robot_rl.data.journal import JournaledFile
from robot_rl.data.schema import DatasetError, DatasetMeta, DemoAttrs, FileAttrs, utc_now
from robot_rl.data.sim_state import StateReader, mujoco_state

__all__ = ["DemoRecorder", "StateReader", "mujoco_state"]
"""The state reader lives in :mod:`robot_rl.data.sim_state`; importing it from here works too."""

_Writer = H5Writer
"""The commit's writer under the name ``bench/bench_recording.py`` times (its methods are wrapped there)."""


def _as_jsonable(randomization: Any) -> dict[str, Any] | None:
    if randomization is None:
        return None
    if dataclasses.is_dataclass(randomization) and not isinstance(randomization, type):
        return dataclasses.asdict(randomization)
    if isinstance(randomization, Mapping):
        return dict(randomization)
    raise TypeError(f"`randomization` must be a dataclass, a mapping or None. Got {type(randomization).__name__}.")


_NO_SLOT = object()
"""``DemoRecorder._slot`` when no state row is handed out (never ``is`` a state passed in)."""


class DemoRecorder:
    """Records episodes into a robomimic-layout HDF5 file, committing each one atomically.

    Args:
        path: The HDF5 file. Created if missing; appended to if it exists (numbering continues).
        env_id: Registered env id the demonstrations come from.
        env_kwargs: Keyword arguments that rebuild the env, ``make(env_id, **env_kwargs)``; stored as
            JSON, so plain values only (see :func:`robot_rl.data.collect.file_env_kwargs`).
        ctrl_dt: Control period [s].
        source: Source device: ``expert``, ``keyboard``, ``gamepad``, ``spacemouse``, ``policy``...
        seed: First seed of this collection (file attribute; each demo stores its own seed).
        randomization: The env's DomainRandomization (ranges), stored as JSON.
        fsync: fsync at each commit (power-loss safety; a killed process is safe either way).
        action_bounds: (low, high) of the action space: recorded actions are clipped to it (the
            action the env applied), once per episode at commit rather than every step.

    Raises:
        DatasetError: ``path`` exists but is not a robot_rl demonstration file, was recorded from
            another env or other env kwargs, or another process is writing it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        env_id: str,
        env_kwargs: Mapping[str, Any] | None,
        ctrl_dt: float,
        source: str,
        seed: int | None = None,
        randomization: Any = None,
        fsync: bool = True,
        action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if not (isinstance(ctrl_dt, int | float) and ctrl_dt > 0.0):
            raise ValueError(f"`ctrl_dt` must be a positive number of seconds. Got {ctrl_dt!r}.")
        if not source:
            raise ValueError("`source` must name the device, e.g. 'expert' or 'keyboard'. Got ''.")
        from robot_rl import __version__

        self.path = Path(path)
        self.source = source
        self.action_bounds = action_bounds
        now = utc_now()
        env_kwargs = dict(env_kwargs or {})
        schema.canonical_json(env_kwargs)  # fail here, not at the first commit
        self.meta = DatasetMeta(
            env_id=env_id,
            env_kwargs=env_kwargs,
            ctrl_dt=float(ctrl_dt),
            source=source,
            seed=seed,
            randomization=_as_jsonable(randomization),
            created=now,
            updated=now,
            robot_rl_version=__version__,
            mujoco_version=mujoco.__version__,
        )
        journaled = JournaledFile(self.path, create=self._create, fsync=fsync)
        try:
            self._next_index, self._sources = self._check_existing()
        except BaseException:
            journaled.close()
            raise
        self._file: JournaledFile | None = journaled
        self._writer = H5Writer()
        self._steps: list[tuple[Any, ...]] = []
        """(obs, action, reward, done, next_obs, intervention) per step, by reference."""
        self._states = np.empty((0, 0))
        """(capacity, S) state buffer; row t is step t's state. Kept across episodes, grown by doubling."""
        self._capacity = 0
        self._state_size = -1
        self._slot: Any = _NO_SLOT
        """The row :meth:`state_slot` handed out for the next step."""
        self._episode: dict[str, Any] | None = None
        self.committed: list[str] = []
        """Demo names committed by this recorder, in order."""

    # ------------------------------------------------------------------ file setup
    def _create(self, f: h5py.File) -> None:
        data = f.create_group(schema.DATA_GROUP)
        for key, value in self.meta.to_attrs().items():
            data.attrs[key] = value

    def _check_existing(self) -> tuple[int, list[str]]:
        from robot_rl.data.dataset import open_h5

        with open_h5(self.path) as f:
            if schema.DATA_GROUP not in f:
                raise DatasetError(
                    f"{self.path}: not a robot_rl demonstration file (no group 'data'). Choose a new "
                    "file name; demonstrations are never added to other HDF5 files."
                )
            data = f[schema.DATA_GROUP]
            existing = DatasetMeta.from_attrs(data.attrs, str(self.path))
            difference = existing.same_env(self.meta)
            if difference is not None:
                raise DatasetError(
                    f"{self.path} holds demonstrations of {existing.env_id} with kwargs "
                    f"{schema.canonical_json(existing.env_kwargs)} (ctrl_dt {existing.ctrl_dt} s); this "
                    f"recording is {self.meta.env_id} with kwargs {schema.canonical_json(self.meta.env_kwargs)} "
                    f"(ctrl_dt {self.meta.ctrl_dt} s): they differ in {difference}. Record into a new file."
                )
            indices = [schema.demo_index(name) for name in data]
            next_index = max((i for i in indices if i is not None), default=-1) + 1
            sources = [s for s in existing.source.split(",") if s]
        self._total = existing.total  # no other writer can change it while the lock is held
        return next_index, sources

    # ------------------------------------------------------------------ episodes
    @property
    def next_demo(self) -> str:
        """Name the next committed episode will get."""
        return schema.demo_name(self._next_index)

    @property
    def in_progress(self) -> bool:
        """True between :meth:`start_episode` and :meth:`commit` / :meth:`discard`."""
        return self._episode is not None

    @property
    def num_steps(self) -> int:
        """Steps recorded in the episode in progress."""
        return len(self._steps)

    def start_episode(self, seed: int | None, randomization: Any = None) -> None:
        """Begin an episode that started from ``env.reset(seed=seed)``.

        Args:
            seed: The reset seed (replay resets with it). None only for unseeded resets, which
                cannot be replayed exactly.
            randomization: This episode's draw, ``info["randomization"]`` from the reset.

        Raises:
            RuntimeError: an episode with recorded steps is in progress.
        """
        self._require_open()
        if self._episode is not None and self._steps:
            raise RuntimeError(
                f"an episode with {len(self._steps)} steps is in progress; call commit() or discard() first."
            )
        self._new_steps()
        self._episode = {"seed": seed, "randomization": schema.canonical_json(_as_jsonable(randomization))}

    def _new_steps(self) -> None:
        self._steps = []
        self._slot = _NO_SLOT

    def state_slot(self, size: int) -> np.ndarray:
        """The buffer row for the next step's state: read the state into it, then pass it to :meth:`add_step`.

        ``read_state(rec.state_slot(read_state.size))`` (a :class:`StateReader`) writes the state
        straight into the episode's state buffer: no array per step and no copy.

        Args:
            size: The state size S (``StateReader.size``).

        Returns:
            A float64 view of shape (S,), valid until the next :meth:`add_step`.

        Raises:
            ValueError: ``size`` differs from the state size of the steps already recorded.
        """
        t = len(self._steps)
        if t < self._capacity and size == self._state_size:
            slot = self._states[t]
        else:
            slot = self._grow_states(t, size)[t]
        self._slot = slot
        return slot

    def _grow_states(self, t: int, size: int) -> np.ndarray:
        """A state buffer with room for row ``t``, rows 0..t-1 kept."""
        old = self._states
        if size != self._state_size and t:
            raise ValueError(
                f"the state size changed within the episode: {self._state_size} in the first {t} steps, now {size}."
            )
        capacity = max(64, len(old) if size == self._state_size else 0)
        while capacity <= t:
            capacity *= 2
        states = np.empty((capacity, size))
        if t:
            states[:t] = old[:t]
        self._states = states
        self._capacity = capacity
        self._state_size = size
        return states

    def add_step(
        self,
        obs: Mapping[str, np.ndarray],
        action: np.ndarray,
        reward: float,
        done: bool,
        next_obs: Mapping[str, np.ndarray],
        state: np.ndarray,
        intervention: bool | None = None,
    ) -> None:
        """Record one step. Observations and the action are kept by reference (envs return new arrays each step).

        Args:
            obs: Observation the action was chosen on (dict of arrays).
            action: The action sent to the env (clipped to ``action_bounds`` at commit). Shape: (A,).
            reward: Reward of the step.
            done: The episode ended after this step (terminated or truncated).
            next_obs: Observation after the step.
            state: MuJoCo state before the action. Shape: (S,). Either the row from
                :meth:`state_slot` (already in place) or any array (copied), e.g. :func:`mujoco_state`.
            intervention: True when a human took over at this step (HIL); None when not tracked.

        Raises:
            RuntimeError: no episode is in progress.
            ValueError: ``state`` is not of the episode's state size.
        """
        if self._episode is None:
            raise RuntimeError("no episode in progress; call start_episode(seed) after env.reset first.")
        if state is not self._slot:
            self._copy_state(state)
        self._slot = _NO_SLOT
        self._steps.append((obs, action, reward, done, next_obs, intervention))

    def _copy_state(self, state: np.ndarray) -> None:
        state = np.asarray(state, dtype=np.float64)
        if state.ndim != 1:
            raise ValueError(f"`state` must be a 1-D MuJoCo state of shape (S,). Got shape {state.shape}.")
        self.state_slot(state.shape[0])[:] = state

    def discard(self) -> int:
        """Drop the episode in progress. Returns the number of steps dropped."""
        dropped = len(self._steps)
        self._new_steps()
        self._episode = None
        return dropped

    def commit(self, success: bool, env_success: bool | None = None) -> str:
        """Write the episode in progress as the next ``demo_K`` and make it durable.

        Args:
            success: The demo's success label.
            env_success: The env's ``is_success`` after the last step (defaults to ``success``).

        Returns:
            The demo's name, e.g. ``demo_3``.

        Raises:
            RuntimeError: no episode is in progress, or it has no steps.
            ValueError: the steps are inconsistent (shapes or keys change within the episode).
        """
        journaled = self._require_open()
        if self._episode is None or not self._steps:
            raise RuntimeError("nothing to commit: no episode with steps is in progress (start_episode, add_step).")
        arrays = self._stack()
        name = schema.demo_name(self._next_index)
        episode = self._episode
        sources = self._sources if self.source in self._sources else [*self._sources, self.source]
        num_samples = len(self._steps)
        write = self._writer
        total = self._total + num_samples
        with journaled.transaction() as f:
            data = h5g.open(f.id, schema.DATA_GROUP.encode())
            group = write.group(data, name)
            for sub in (schema.OBS, schema.NEXT_OBS):
                sub_id = write.group(group, sub)
                for key, value in arrays[sub].items():
                    write.dataset(sub_id, key, value)
            for key in (*schema.STEP_KEYS, schema.INTERVENTIONS):
                if key in arrays:
                    write.dataset(group, key, arrays[key])
            for key, value in (
                (DemoAttrs.NUM_SAMPLES, np.int64(num_samples)),
                (DemoAttrs.SEED, np.int64(-1 if episode["seed"] is None else episode["seed"])),
                (DemoAttrs.SUCCESS, np.bool_(success)),
                (DemoAttrs.ENV_SUCCESS, np.bool_(success if env_success is None else env_success)),
                (DemoAttrs.SOURCE, self.source),
                (DemoAttrs.RANDOMIZATION, episode["randomization"]),
            ):
                write.new_attr(group, key, value)
            write.set_attr(data, FileAttrs.TOTAL, total)
            write.set_attr(data, FileAttrs.UPDATED, utc_now())
            if sources != self._sources:
                write.set_attr(data, FileAttrs.SOURCE, ",".join(sources))
        self._total = total
        self._sources = sources
        self._next_index += 1
        self._new_steps()
        self._episode = None
        self.committed.append(name)
        return name

    def _stack(self) -> dict[str, Any]:
        steps = self._steps
        num = len(steps)
        obs_list, action_list, reward_list, done_list, next_list, flags = zip(*steps, strict=True)
        keys = list(obs_list[0])
        f64 = np.float64
        out: dict[str, Any] = {schema.OBS: {}, schema.NEXT_OBS: {}}
        # np.array over a list of arrays: four times faster than np.stack for 50 small arrays.
        try:
            if all(o is n for o, n in zip(obs_list[1:], next_list, strict=False)):
                # Each step's obs is the previous step's next_obs (a plain step loop): stack each once.
                first = obs_list[0]
                for key in keys:
                    both = np.array([first[key], *[o[key] for o in next_list]], dtype=f64)
                    out[schema.OBS][key], out[schema.NEXT_OBS][key] = both[:-1], both[1:]
            else:
                for key in keys:
                    out[schema.OBS][key] = np.array([o[key] for o in obs_list], dtype=f64)
                    out[schema.NEXT_OBS][key] = np.array([o[key] for o in next_list], dtype=f64)
            actions = np.array(action_list, dtype=f64)
            out[schema.REWARDS] = np.array(reward_list, dtype=f64)
            out[schema.DONES] = np.array(done_list, dtype=bool)
        except (KeyError, ValueError, TypeError) as err:
            raise ValueError(
                f"the episode's steps are inconsistent ({err}): every step must have the same observation "
                f"keys {keys}, action shape and state size."
            ) from None
        out[schema.STATES] = self._states[:num]
        if actions.ndim != 2 or out[schema.REWARDS].ndim != 1:
            raise ValueError(
                f"expected actions (T, A) and scalar rewards; got actions {actions.shape}, rewards "
                f"{out[schema.REWARDS].shape}."
            )
        if self.action_bounds is not None:
            actions = np.clip(actions, *self.action_bounds)
        out[schema.ACTIONS] = actions
        if any(flag is not None for flag in flags):
            out[schema.INTERVENTIONS] = np.array([bool(flag) for flag in flags])
        return out

    # ------------------------------------------------------------------ lifetime
    def _require_open(self) -> JournaledFile:
        if self._file is None:
            raise RuntimeError(f"the recorder for {self.path} is closed; create a new DemoRecorder.")
        return self._file

    def close(self) -> None:
        """Release the file. An episode still in progress is discarded (with a warning)."""
        if self._steps:
            warnings.warn(
                f"{self.path}: discarding an uncommitted episode of {len(self._steps)} steps on close.",
                stacklevel=2,
            )
        self.discard()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> DemoRecorder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self.discard()  # an error mid-episode: the partial episode is not a demonstration
        self.close()
