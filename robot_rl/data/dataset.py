"""Read, validate and summarize demonstration files (the layout of :mod:`schema`).

Every function that opens a file checks it first and raises :class:`DatasetError` naming what is
wrong (missing file, not HDF5, truncated, corrupt, not a robot_rl file, a demo lacking a key or with
mismatched lengths) and how to fix it, never a bare h5py error. Every demo read is checked as in
:mod:`integrity`: its datasets must match their checksums and hold finite numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robot_rl.data import integrity, schema
from robot_rl.data.integrity import H5_ERRORS, Problem, corrupt_error, stored_checksum
from robot_rl.data.journal import recover
from robot_rl.data.schema import DatasetError, DatasetMeta, DemoAttrs

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
"""The first 8 bytes of every HDF5 file."""
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
        if b"HDF" in head[:8] or head[4:8] == _SIGNATURE[4:]:  # the 8-byte signature with a byte changed
            raise DatasetError(
                f"{path} is corrupt: its HDF5 signature is damaged (it starts with {head[:8]!r}, expected "
                f"{_SIGNATURE!r}). Copy it again from its source or re-collect it."
            )
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
    found = re.search(r"\(([^()]*)\)\s*$", first)
    return (
        f"{path} is corrupt: HDF5 cannot open it ({found.group(1) if found else first}). The file was damaged "
        f"after it was written (disk, copy or transfer). {_HINT} Re-collect or copy it again."
    )


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

    Each demo read is checked: a dataset that does not match its checksum or holds NaN or inf
    raises :class:`DatasetError` naming file, demo, key and step (:meth:`inspect` reports instead).

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
        try:
            return self._validate_layout(f)
        except H5_ERRORS as err:
            raise corrupt_error(self.path, "its layout (groups and attributes)", err) from None

    def _validate_layout(self, f: h5py.File) -> tuple[DatasetMeta, list[str]]:
        where = str(self.path)
        # Not f.get(): it returns None for a group whose header HDF5 cannot read (a corrupt file).
        data = f[schema.DATA_GROUP] if schema.DATA_GROUP in f else None
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
        missing = [key for key in expected if key not in demo or not isinstance(demo[key], h5py.Dataset)]
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
        """Demo ``which`` (index or name), checked.

        Raises:
            DatasetError: a dataset does not match its checksum (the file was damaged), holds NaN or
                inf (the message names file, demo, key and step), or cannot be read.
        """
        demo, _, problems = self.inspect(which)
        if problems:
            raise DatasetError(_refusal(self.path, problems))
        return demo

    def inspect(self, which: int | str, want_digests: bool = False) -> tuple[Demo, dict[str, str], list[Problem]]:
        """Demo ``which`` and what is wrong with it, without raising for bad values (``data info``, merge).

        Args:
            which: Index into :attr:`demo_names` or a name.
            want_digests: Also compute the digest of datasets without a stored checksum.

        Returns:
            (the demo as read; dataset path -> sha256 digest, of the datasets with a stored checksum or
            of all with ``want_digests``; the problems: checksum mismatches, then non-finite values).

        Raises:
            DatasetError: HDF5 cannot read the demo (damaged metadata).
        """
        name = self.resolve(which)
        f = self._require_open()
        try:
            group = f[schema.DATA_GROUP][name]
            arrays: dict[str, np.ndarray] = {}
            stored: dict[str, str | None] = {}
            keys = [f"{sub}/{k}" for sub in (schema.OBS, schema.NEXT_OBS) for k in group[sub]]
            keys += [k for k in (*schema.STEP_KEYS, schema.INTERVENTIONS) if k in group]
            for key in keys:
                dset = group[key]
                arrays[key] = dset[()]
                stored[key] = stored_checksum(dset)
            attrs = dict(group.attrs)
            digests, problems = integrity.verify(name, arrays, stored, want_digests)
            seed = int(attrs.get(DemoAttrs.SEED, -1))
            success = bool(attrs.get(DemoAttrs.SUCCESS, False))
            demo = Demo(
                name=name,
                obs={k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{schema.OBS}/")},
                next_obs={k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{schema.NEXT_OBS}/")},
                actions=arrays[schema.ACTIONS],
                rewards=arrays[schema.REWARDS],
                dones=arrays[schema.DONES].astype(bool),
                states=arrays[schema.STATES],
                interventions=arrays[schema.INTERVENTIONS].astype(bool) if schema.INTERVENTIONS in arrays else None,
                seed=None if seed < 0 else seed,
                success=success,
                env_success=bool(attrs.get(DemoAttrs.ENV_SUCCESS, success)),
                source=str(attrs.get(DemoAttrs.SOURCE, self.meta.source)),
                randomization=json.loads(str(attrs.get(DemoAttrs.RANDOMIZATION, "null"))),
            )
        except H5_ERRORS as err:
            raise corrupt_error(self.path, f"{name}", err) from None
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{self.path}: {name}'s randomization attribute is not JSON ({err}); the file is damaged."
            ) from None
        return demo, digests, problems

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

    @property
    def file(self) -> h5py.File:
        """The open HDF5 file (read-only)."""
        return self._require_open()

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


def _refusal(path: Path, problems: list[Problem]) -> str:
    more = f" ({len(problems) - 1} more problems in this demo)" if len(problems) > 1 else ""
    return problems[0].refusal(path) + more


def info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summary of a file: episodes, steps, success rate, and per key the shape and min/max per dimension.

    Bad values are reported, not raised: ``problems`` lists checksum mismatches and NaN/inf (one
    line each), each key's ``nonfinite`` counts them, and its min/max are over the finite values.

    Returns:
        A JSON-serializable dict; :func:`format_info` prints it.
    """
    with DemoDataset(path) as ds:
        lengths, successes, interventions = [], [], 0
        tracked = False
        ranges: dict[str, dict[str, Any]] = {}
        problems: list[str] = []
        verified = unsealed = 0
        for name in ds.demo_names:
            demo, digests, found = ds.inspect(name)
            problems += [p.line(ds.path) for p in found]
            verified += len(digests) - sum(p.kind == "checksum" for p in found)
            unsealed += not digests
            lengths.append(demo.num_samples)
            successes.append(demo.success)
            if demo.interventions is not None:
                tracked = True
                interventions += int(demo.interventions.sum())
            columns = {f"{schema.OBS}/{k}": v for k, v in demo.obs.items()}
            columns |= {f"{schema.NEXT_OBS}/{k}": v for k, v in demo.next_obs.items()}
            columns |= {schema.ACTIONS: demo.actions, schema.REWARDS: demo.rewards, schema.STATES: demo.states}
            bad_keys = {p.where.split("/", 1)[1] for p in found if p.kind == "nonfinite"}
            for key, value in columns.items():
                count = 0
                if key in bad_keys:
                    finite = np.isfinite(value)
                    count = int(value.size - finite.sum())
                    value = np.where(finite, value, np.nan)
                with np.errstate(invalid="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a column without a finite value
                    low, high = np.nanmin(value, axis=0), np.nanmax(value, axis=0)
                entry = ranges.setdefault(
                    key,
                    {
                        "shape": list(value.shape[1:]),
                        "dtype": str(value.dtype),
                        "min": low,
                        "max": high,
                        "nonfinite": 0,
                    },
                )
                entry["min"] = np.fmin(entry["min"], low)
                entry["max"] = np.fmax(entry["max"], high)
                entry["nonfinite"] += count
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
            "checksums": {"verified_datasets": verified, "demos_without": unsealed},
            "problems": problems,
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
    bad = any(entry["nonfinite"] for entry in summary["keys"].values())
    lines.append("| key | shape | min | max |" + (" non-finite |" if bad else ""))
    lines.append("|---|---|---|---|" + ("---|" if bad else ""))
    for key, entry in summary["keys"].items():
        low, high = entry["min"], entry["max"]
        row = f"| {key} | {tuple(entry['shape'])} | {_short(low)} | {_short(high)} |"
        lines.append(row + (f" {entry['nonfinite']} |" if bad else ""))
    lines.append(
        f"created {summary['created']}, updated {summary['updated']}, robot_rl {summary['robot_rl_version']}, "
        f"mujoco {summary['mujoco_version']}"
    )
    checksums = summary["checksums"]
    if checksums["demos_without"]:
        lines.append(
            f"checksums: {checksums['demos_without']} of {summary['episodes']} demos have none (written before "
            f"robot_rl stored them); re-write with `robot-rl data merge {summary['path']} --out NEW.hdf5` to add them"
        )
    problems = summary["problems"]
    if problems:
        lines.append(
            f"problems: {len(problems)}; training, merge and split refuse this file "
            f"(`robot-rl data check {summary['path']}` verifies it):"
        )
        lines += [f"  {line}" for line in problems]
    return "\n".join(lines)


def _short(values: list[float], limit: int = 6) -> str:
    shown = ", ".join(f"{v:.3g}" for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]" if len(values) > 1 else shown
