"""Read, validate, summarize, merge and split demonstration files (the layout of :mod:`schema`).

Every function that opens a file checks it first and raises :class:`DatasetError` naming what is
wrong (missing file, not HDF5, truncated, not a robot_rl file, a demo lacking a key or with
mismatched lengths) and how to fix it, never a bare h5py error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robot_rl.data import schema
from robot_rl.data.journal import JournaledFile, recover
from robot_rl.data.schema import DatasetError, DatasetMeta, DemoAttrs, FileAttrs

_HINT = "Expected a demonstration file written by `robot-rl collect` (HDF5, robomimic layout)."


def open_h5(path: str | os.PathLike[str]) -> h5py.File:
    """Open an HDF5 file read-only, finishing an update a crash interrupted first.

    Raises:
        DatasetError: missing, a directory, empty, not HDF5, truncated or otherwise unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file. Check the path, or record one with `robot-rl collect --out {path}`.")
    if path.is_dir():
        raise DatasetError(f"{path} is a directory. {_HINT}")
    recover(path)
    size = path.stat().st_size
    if size == 0:
        raise DatasetError(f"{path} is empty (0 bytes). {_HINT} Re-collect or copy the file again.")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(16)
        raise DatasetError(f"{path} is not an HDF5 file (it starts with {head!r}). {_HINT}")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(_explain_open_error(path, size, str(err))) from None


def _explain_open_error(path: Path, size: int, message: str) -> str:
    if "truncated file" in message:
        match = re.search(r"stored_eof = (\d+)", message)
        expected = f"its header says {int(match.group(1)):,} bytes" if match else "its header says it is longer"
        return (
            f"{path} is truncated: it has {size:,} bytes but {expected}. The file was cut short (an "
            "interrupted copy or download, or a full disk); robot-rl collect never leaves one. Copy it "
            "again from its source or re-collect it."
        )
    if "already open for write" in message:
        return (
            f"{path} was left marked open-for-write by an HDF5 writer that crashed (not robot_rl's "
            "recorder, which never leaves a file open). Run `h5clear -s` on it, then check it with "
            "`robot-rl data info`."
        )
    if "unable to lock file" in message:
        return f"{path} is locked by another HDF5 program writing it. Wait for it to close the file."
    first = message.splitlines()[0] if message else "unknown error"
    return f"{path} cannot be read as HDF5 ({first}): the file is damaged. {_HINT} Re-collect or copy it again."


@dataclasses.dataclass
class Demo:
    """One episode, loaded into memory."""

    name: str
    """``demo_K``."""
    obs: dict[str, np.ndarray]
    """Observation before each action, per key. Shapes: (T, ...)."""
    next_obs: dict[str, np.ndarray]
    """Observation after each action. Shapes: (T, ...)."""
    actions: np.ndarray
    """Shape: (T, A)."""
    rewards: np.ndarray
    """Shape: (T,)."""
    dones: np.ndarray
    """Shape: (T,), bool."""
    states: np.ndarray
    """MuJoCo mjSTATE_INTEGRATION before each action. Shape: (T, S)."""
    interventions: np.ndarray | None
    """Shape: (T,), bool; None when the demo did not track interventions."""
    seed: int | None
    """Reset seed."""
    success: bool
    env_success: bool
    source: str
    randomization: dict[str, Any] | None
    """This episode's drawn randomization parameters."""

    @property
    def num_samples(self) -> int:
        """Steps T."""
        return len(self.actions)


class DemoDataset:
    """A validated demonstration file, open for reading. Iterating yields :class:`Demo` objects.

    Args:
        path: The HDF5 file.

    Raises:
        DatasetError: the file is missing, unreadable, or does not follow the layout.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._f: h5py.File | None = open_h5(self.path)
        try:
            self.meta, self.demo_names = self._validate(self._f)
        except BaseException:
            self.close()
            raise

    def _validate(self, f: h5py.File) -> tuple[DatasetMeta, list[str]]:
        where = str(self.path)
        data = f.get(schema.DATA_GROUP)
        if not isinstance(data, h5py.Group):
            top = ", ".join(sorted(f)) or "nothing"
            raise DatasetError(
                f"{where}: not a robot_rl demonstration file: no group 'data' (the file holds {top}). {_HINT}"
            )
        meta = DatasetMeta.from_attrs(data.attrs, where)
        names = []
        for name in data:
            if schema.demo_index(name) is None:
                raise DatasetError(f"{where}: unexpected member 'data/{name}'; 'data' holds only demo_K groups.")
            names.append(name)
        names = schema.sorted_demo_names(names)
        reference: dict[str, tuple[int, ...]] | None = None
        total = 0
        for name in names:
            shapes = self._check_demo(data, name, where)
            if reference is None:
                reference = shapes
            elif shapes != reference:
                diff = [k for k in reference if reference[k] != shapes.get(k)]
                raise DatasetError(
                    f"{where}: data/{name} has per-step shapes {', '.join(f'{k} {shapes.get(k)}' for k in diff)} "
                    f"but {names[0]} has {', '.join(f'{k} {reference[k]}' for k in diff)}; one file holds one env. "
                    "Re-collect the file."
                )
            total += int(data[name].attrs[DemoAttrs.NUM_SAMPLES])
        if total != meta.total:
            raise DatasetError(
                f"{where}: attribute data.total is {meta.total} but the demos hold {total} steps. The file was "
                "edited outside robot_rl; re-collect it."
            )
        return meta, names

    @staticmethod
    def _check_demo(data: h5py.Group, name: str, where: str) -> dict[str, tuple[int, ...]]:
        demo = data[name]
        if not isinstance(demo, h5py.Group):
            raise DatasetError(f"{where}: data/{name} is not a group.")
        if DemoAttrs.NUM_SAMPLES not in demo.attrs:
            raise DatasetError(f"{where}: data/{name} lacks the attribute num_samples (its step count).")
        steps = int(demo.attrs[DemoAttrs.NUM_SAMPLES])
        expected = [f"{sub}/{key}" for sub in (schema.OBS, schema.NEXT_OBS) for key in schema.OBS_KEYS]
        expected += list(schema.STEP_KEYS)
        missing = [key for key in expected if not isinstance(demo.get(key), h5py.Dataset)]
        if missing:
            raise DatasetError(
                f"{where}: data/{name} lacks {', '.join(missing)}. Every demo needs {', '.join(expected)}. "
                "The file is incomplete or not from robot_rl; re-collect it."
            )
        keys = list(expected)
        if schema.INTERVENTIONS in demo:
            keys.append(schema.INTERVENTIONS)
        ndim = {schema.REWARDS: 1, schema.DONES: 1, schema.INTERVENTIONS: 1, schema.ACTIONS: 2, schema.STATES: 2}
        shapes: dict[str, tuple[int, ...]] = {}
        for key in keys:
            shape = demo[key].shape
            if not shape or shape[0] != steps or (key in ndim and len(shape) != ndim[key]):
                want = f"({steps},)" if ndim.get(key) == 1 else f"({steps}, ...)"
                raise DatasetError(
                    f"{where}: data/{name}/{key} has shape {shape}, expected {want} (num_samples = {steps}). "
                    "The file is damaged or was edited; re-collect it."
                )
            shapes[key] = shape[1:]
        return shapes

    # ------------------------------------------------------------------ reading
    @property
    def env_id(self) -> str:
        """The env id the demos come from."""
        return self.meta.env_id

    def __len__(self) -> int:
        return len(self.demo_names)

    def resolve(self, which: int | str) -> str:
        """Demo name of ``which``: an index into :attr:`demo_names` or a name."""
        if isinstance(which, str) and which in self.demo_names:
            return which
        if isinstance(which, int | np.integer) and -len(self) <= int(which) < len(self):
            return self.demo_names[int(which)]
        valid = f"0..{len(self) - 1} or {self.demo_names[0]}..{self.demo_names[-1]}" if len(self) else "none"
        raise DatasetError(f"{self.path}: no demo {which!r}. Valid: {valid}.")

    def __getitem__(self, which: int | str) -> Demo:
        name = self.resolve(which)
        f = self._require_open()
        demo = f[schema.DATA_GROUP][name]
        try:
            attrs = demo.attrs
            seed = int(attrs.get(DemoAttrs.SEED, -1))
            success = bool(attrs.get(DemoAttrs.SUCCESS, False))
            return Demo(
                name=name,
                obs={k: demo[schema.OBS][k][()] for k in demo[schema.OBS]},
                next_obs={k: demo[schema.NEXT_OBS][k][()] for k in demo[schema.NEXT_OBS]},
                actions=demo[schema.ACTIONS][()],
                rewards=demo[schema.REWARDS][()],
                dones=demo[schema.DONES][()].astype(bool),
                states=demo[schema.STATES][()],
                interventions=demo[schema.INTERVENTIONS][()].astype(bool) if schema.INTERVENTIONS in demo else None,
                seed=None if seed < 0 else seed,
                success=success,
                env_success=bool(attrs.get(DemoAttrs.ENV_SUCCESS, success)),
                source=str(attrs.get(DemoAttrs.SOURCE, self.meta.source)),
                randomization=json.loads(str(attrs.get(DemoAttrs.RANDOMIZATION, "null"))),
            )
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise DatasetError(f"{self.path}: data/{name} cannot be read ({err}); the file is damaged.") from None

    def __iter__(self) -> Iterator[Demo]:
        for name in self.demo_names:
            yield self[name]

    def seeds(self) -> list[int | None]:
        """Each demo's reset seed, in :attr:`demo_names` order (None where not recorded)."""
        data = self._require_open()[schema.DATA_GROUP]
        seeds = [int(data[name].attrs.get(DemoAttrs.SEED, -1)) for name in self.demo_names]
        return [None if s < 0 else s for s in seeds]

    def masks(self) -> dict[str, list[str]]:
        """The robomimic filter keys: ``{"train": [...], "valid": [...]}`` (empty when never split)."""
        f = self._require_open()
        group = f.get(schema.MASK_GROUP)
        if not isinstance(group, h5py.Group):
            return {}
        return {key: [n.decode() if isinstance(n, bytes) else str(n) for n in group[key][()]] for key in group}

    def _require_open(self) -> h5py.File:
        if self._f is None:
            raise RuntimeError(f"{self.path} is closed.")
        return self._f

    def close(self) -> None:
        """Close the file."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> DemoDataset:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of a file: episodes, steps, success rate, and per key the shape and min/max per dimension.

    Returns:
        A JSON-serializable dict; :func:`format_info` prints it.
    """
    with DemoDataset(path) as ds:
        lengths, successes, interventions = [], [], 0
        tracked = False
        ranges: dict[str, dict[str, Any]] = {}
        for demo in ds:
            lengths.append(demo.num_samples)
            successes.append(demo.success)
            if demo.interventions is not None:
                tracked = True
                interventions += int(demo.interventions.sum())
            columns = {f"{schema.OBS}/{k}": v for k, v in demo.obs.items()}
            columns |= {f"{schema.NEXT_OBS}/{k}": v for k, v in demo.next_obs.items()}
            columns |= {schema.ACTIONS: demo.actions, schema.REWARDS: demo.rewards, schema.STATES: demo.states}
            for key, value in columns.items():
                low, high = value.min(axis=0), value.max(axis=0)
                entry = ranges.setdefault(
                    key, {"shape": list(value.shape[1:]), "dtype": str(value.dtype), "min": low, "max": high}
                )
                entry["min"] = np.minimum(entry["min"], low)
                entry["max"] = np.maximum(entry["max"], high)
        for entry in ranges.values():
            entry["min"] = np.atleast_1d(entry["min"]).tolist()
            entry["max"] = np.atleast_1d(entry["max"]).tolist()
        meta = ds.meta
        n = len(lengths)
        return {
            "path": str(ds.path),
            "env_id": meta.env_id,
            "env_kwargs": meta.env_kwargs,
            "ctrl_dt": meta.ctrl_dt,
            "source": meta.source,
            "episodes": n,
            "steps": int(sum(lengths)),
            "success_rate": float(np.mean(successes)) if n else None,
            "mean_length": float(np.mean(lengths)) if n else None,
            "min_length": int(min(lengths)) if n else None,
            "max_length": int(max(lengths)) if n else None,
            "interventions": interventions if tracked else None,
            "masks": {k: len(v) for k, v in ds.masks().items()},
            "randomization": meta.randomization,
            "created": meta.created,
            "updated": meta.updated,
            "robot_rl_version": meta.robot_rl_version,
            "mujoco_version": meta.mujoco_version,
            "size_bytes": ds.path.stat().st_size,
            "keys": ranges,
        }


def format_info(summary: dict[str, Any]) -> str:
    """A human-readable table of :func:`info`'s result."""
    rate = summary["success_rate"]
    lines = [
        f"{summary['path']}: {summary['env_id']}  kwargs={json.dumps(summary['env_kwargs'], sort_keys=True)}  "
        f"ctrl_dt={summary['ctrl_dt']} s  source={summary['source']}",
        f"episodes {summary['episodes']}  steps {summary['steps']}  "
        f"success rate {'-' if rate is None else f'{rate:.3f}'}  "
        f"length {summary['min_length']}..{summary['max_length']} (mean {summary['mean_length'] or 0:.1f})  "
        f"size {summary['size_bytes'] / 1e6:.2f} MB",
    ]
    if summary["interventions"] is not None:
        lines.append(f"interventions: {summary['interventions']} steps")
    if summary["masks"]:
        lines.append("masks: " + ", ".join(f"{k} {v}" for k, v in summary["masks"].items()))
    lines.append("| key | shape | min | max |")
    lines.append("|---|---|---|---|")
    for key, entry in summary["keys"].items():
        low, high = entry["min"], entry["max"]
        lines.append(f"| {key} | {tuple(entry['shape'])} | {_short(low)} | {_short(high)} |")
    lines.append(
        f"created {summary['created']}, updated {summary['updated']}, robot_rl {summary['robot_rl_version']}, "
        f"mujoco {summary['mujoco_version']}"
    )
    return "\n".join(lines)


def _short(values: list[float], limit: int = 6) -> str:
    shown = ", ".join(f"{v:.3g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]" if len(values) > 1 else shown


def merge(a: str | os.PathLike[str], b: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the demos of ``a`` then ``b`` into a new file ``out`` (renumbered ``demo_0``...).

    Both inputs must come from the same env (id, kwargs, control period). Each copied demo records
    where it came from (``origin`` attribute). Train/valid masks are not carried over (demo names
    change); split the merged file again.

    Returns:
        ``{"out", "episodes", "steps", "inputs": {path: episodes}}``.

    Raises:
        DatasetError: an input is invalid, the envs differ, or ``out`` exists or is an input.
    """
    return merge_files([a, b], out)


def merge_files(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> dict[str, Any]:
    """:func:`merge` for any number of inputs, in order."""
    out = Path(out)
    paths = [Path(p) for p in inputs]
    if len(paths) < 2:
        raise ValueError(f"merge needs at least two input files. Got {len(paths)}.")
    if out.exists():
        raise DatasetError(f"{out} already exists; merge writes a new file. Choose another --out or delete it.")
    resolved = {p.resolve() for p in paths}
    if out.resolve() in resolved:
        raise DatasetError(f"{out} is also an input; merge writes a new file.")
    datasets: list[DemoDataset] = []
    try:
        for p in paths:
            datasets.append(DemoDataset(p))
        first = datasets[0].meta
        for ds in datasets[1:]:
            difference = first.same_env(ds.meta)
            if difference is not None:
                raise DatasetError(
                    f"cannot merge {datasets[0].path} ({first.env_id}) with {ds.path} ({ds.meta.env_id}): they "
                    f"differ in {difference}. Only demonstrations of the same env and kwargs can be merged."
                )
        sources: list[str] = []
        for ds in datasets:
            sources += [s for s in ds.meta.source.split(",") if s and s not in sources]
        now = schema.utc_now()
        meta = dataclasses.replace(
            first, source=",".join(sources), created=now, updated=now, total=sum(ds.meta.total for ds in datasets)
        )
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        index = 0
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                data = f.create_group(schema.DATA_GROUP)
                for key, value in meta.to_attrs().items():
                    data.attrs[key] = value
                for ds in datasets:
                    src = ds._require_open()[schema.DATA_GROUP]
                    for name in ds.demo_names:
                        new = schema.demo_name(index)
                        src.file.copy(src[name], data, name=new)
                        data[new].attrs[DemoAttrs.ORIGIN] = f"{ds.path}:{name}"
                        index += 1
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        return {
            "out": str(out),
            "episodes": index,
            "steps": meta.total,
            "inputs": {str(ds.path): len(ds) for ds in datasets},
        }
    finally:
        for ds in datasets:
            ds.close()


def split(path: str | os.PathLike[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle the demos with ``seed`` and store robomimic's ``mask/train`` and ``mask/valid``.

    ``round(val_fraction * N)`` demos (at least 1, at most N - 1) go to validation. Existing masks
    are replaced. The update is atomic (see :mod:`robot_rl.data.journal`).

    Returns:
        (train demo names, validation demo names), each in numeric order.

    Raises:
        ValueError: ``val_fraction`` is not in (0, 1).
        DatasetError: the file is invalid or holds fewer than 2 demos.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1). Got {val_fraction}.")
    with DemoDataset(path) as ds:
        names = list(ds.demo_names)
    if len(names) < 2:
        raise DatasetError(f"{path}: a split needs at least 2 demos; the file holds {len(names)}.")
    n_valid = min(max(1, round(val_fraction * len(names))), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    valid = schema.sorted_demo_names([names[i] for i in order[:n_valid]])
    train = schema.sorted_demo_names([names[i] for i in order[n_valid:]])
    with JournaledFile(path) as journaled, journaled.transaction() as f:
        masks = f.require_group(schema.MASK_GROUP)
        for key, values in ((schema.TRAIN_MASK, train), (schema.VALID_MASK, valid)):
            with contextlib.suppress(KeyError):
                del masks[key]
            masks.create_dataset(key, data=np.array(values, dtype="S"))
        f[schema.DATA_GROUP].attrs[FileAttrs.UPDATED] = schema.utc_now()
    return train, valid
