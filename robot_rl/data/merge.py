"""Write demo files from others: merge (renumbered, checked, checksummed, without duplicates) and split masks.

Both read every demo through :class:`~robot_rl.data.dataset.DemoDataset`, so a damaged dataset or a
NaN is refused before anything is written. Merge writes a hidden temporary file beside ``--out``
and renames it into place; one left behind by a killed merge is removed by the next merge to the
same ``--out``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robot_rl.data import schema
from robot_rl.data.dataset import DemoDataset
from robot_rl.data.integrity import CHECKSUM_ATTR, checksum_value, digest
from robot_rl.data.journal import JournaledFile
from robot_rl.data.schema import DatasetError, DemoAttrs, FileAttrs


def temp_path(out: Path, pid: int | None = None) -> Path:
    """The hidden file a merge writes before renaming it to ``out``: ``.<name>.<pid>.tmp`` beside it."""
    return out.with_name(f".{out.name}.{os.getpid() if pid is None else pid}.tmp")


@contextlib.contextmanager
def atomic_hdf5(out: Path) -> Iterator[h5py.File]:
    """A new HDF5 file that appears as ``out`` only once complete.

    Written to :func:`temp_path`, fsynced, renamed over ``out``; the temporary file is removed when writing fails.
    """
    tmp = temp_path(out)
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            yield f
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temps(out: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files of merges into ``out`` whose process is gone (killed, e.g. SIGKILL).

    A temporary file of a live process (another merge into the same ``out`` still running) is kept.

    Returns:
        The files removed.
    """
    out = Path(out)
    prefix, suffix = f".{out.name}.", ".tmp"
    removed = []
    for candidate in sorted(out.parent.glob(f"{glob.escape(prefix)}*{suffix}")):
        pid = candidate.name[len(prefix) : -len(suffix)]
        if not pid.isdigit() or (int(pid) != os.getpid() and _alive(int(pid))):
            continue
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
            removed.append(candidate)
    return removed


def merge(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    drop_duplicates: bool = False,
) -> dict[str, Any]:
    """Write the demos of ``a`` then ``b`` into a new file ``out`` (renumbered ``demo_0``...).

    Both inputs must come from the same env (id, kwargs, control period). Each copied demo records
    where it came from (``origin`` attribute) and carries the sha256 of each dataset. Train/valid
    masks are not carried over (demo names change); split the merged file again. With ``b`` None,
    ``a`` alone is re-written: checked, and given checksums if it was written before them.

    Returns:
        ``{"out", "episodes", "steps", "inputs": {path: episodes}, "dropped_duplicates", "removed_stale"}``.

    Raises:
        DatasetError: an input is invalid, damaged or holds NaN/inf, the envs differ, a demo is in
            the inputs twice (unless ``drop_duplicates``), or ``out`` exists or is an input.
    """
    return merge_files([a] if b is None else [a, b], out, drop_duplicates)


def merge_files(
    inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], drop_duplicates: bool = False
) -> dict[str, Any]:
    """:func:`merge` for any number of inputs, in order.

    Args:
        inputs: Demo files, merged in this order.
        out: The new file.
        drop_duplicates: Keep only the first copy of a demo found twice (same seed and identical
            datasets) instead of refusing; the copies dropped are listed in the result.
    """
    out = Path(out)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("merge needs at least one input file. Got 0.")
    if out.exists():
        raise DatasetError(f"{out} already exists; merge writes a new file. Choose another --out or delete it.")
    given: dict[Path, Path] = {}
    for p in paths:
        resolved = p.resolve()
        if resolved == out.resolve():
            raise DatasetError(f"{out} is also an input; merge writes a new file.")
        if resolved in given:
            also = "" if str(given[resolved]) == str(p) else f" (also as {given[resolved]})"
            raise DatasetError(
                f"{p} is given twice{also}: merging a file with itself would write every demo twice. Pass each file "
                "once."
            )
        given[resolved] = p
    out.parent.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temps(out)
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
        with atomic_hdf5(out) as f:
            index, total, dropped = _copy_demos(datasets, f.create_group(schema.DATA_GROUP), drop_duplicates)
            sources: list[str] = []
            for ds in datasets:
                sources += [s for s in ds.meta.source.split(",") if s and s not in sources]
            now = schema.utc_now()
            meta = dataclasses.replace(first, source=",".join(sources), created=now, updated=now, total=total)
            for key, value in meta.to_attrs().items():
                f[schema.DATA_GROUP].attrs[key] = value
        return {
            "out": str(out),
            "episodes": index,
            "steps": total,
            "inputs": {str(ds.path): len(ds) for ds in datasets},
            "dropped_duplicates": dropped,
            "removed_stale": [str(p) for p in removed],
        }
    finally:
        for ds in datasets:
            ds.close()


def _copy_demos(datasets: list[DemoDataset], data: h5py.Group, drop_duplicates: bool) -> tuple[int, int, list[str]]:
    """Copy every demo, checked, into ``data`` with its checksums. Returns (demos, steps, duplicates dropped)."""
    kept: dict[tuple[Any, ...], str] = {}
    dropped: list[str] = []
    index = total = 0
    for ds in datasets:
        src = ds.file[schema.DATA_GROUP]
        for name in ds.demo_names:
            demo, digests, problems = ds.inspect(name, want_digests=True)
            if problems:
                raise DatasetError(f"cannot merge: {problems[0].refusal(ds.path)}")
            origin = f"{ds.path}:{name}"
            # Same reset seed and the same bytes in every dataset: one recording, seen twice.
            key = (demo.seed, tuple(sorted(digests.items())))
            if key in kept:
                if not drop_duplicates:
                    raise DatasetError(
                        f"{origin} is the same demo as {kept[key]} (seed {demo.seed}, identical states, actions and "
                        "observations): merging would count it twice. Leave out the file that repeats it, or pass "
                        "--drop-duplicates to keep only the first copy."
                    )
                dropped.append(origin)
                continue
            kept[key] = origin
            new = schema.demo_name(index)
            src.file.copy(src[name], data, name=new)
            group = data[new]
            group.attrs[DemoAttrs.ORIGIN] = origin
            for path, value in digests.items():
                group[path].attrs[CHECKSUM_ATTR] = checksum_value(value)
            index += 1
            total += demo.num_samples
    return index, total, dropped


def split(path: str | os.PathLike[str], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Shuffle the demos with ``seed`` and store robomimic's ``mask/train`` and ``mask/valid``.

    ``round(val_fraction * N)`` demos (at least 1, at most N - 1) go to validation. Existing masks
    are replaced. The update is atomic (see :mod:`robot_rl.data.journal`). Every demo is read and
    checked first: a damaged file or one holding NaN/inf is refused.

    Returns:
        (train demo names, validation demo names), each in numeric order.

    Raises:
        ValueError: ``val_fraction`` is not in (0, 1).
        DatasetError: the file is invalid, damaged, holds NaN/inf or fewer than 2 demos.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1). Got {val_fraction}.")
    with DemoDataset(path) as ds:
        names = list(ds.demo_names)
        for name in names:
            ds[name]  # raises for a damaged demo or one with NaN/inf
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
            array = np.array(values, dtype="S")
            masks.create_dataset(key, data=array).attrs[CHECKSUM_ATTR] = checksum_value(digest(array))
        f[schema.DATA_GROUP].attrs[FileAttrs.UPDATED] = schema.utc_now()
    return train, valid
