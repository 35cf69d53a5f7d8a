"""``robot-rl data check FILE``: every dataset of a demo file against its checksum, and for finite numbers.

Readers stop at the first bad demo; the check reads everything it can and lists every problem, one
line each: a dataset whose bytes no longer match the sha256 stored when it was written, NaN or inf
(file, demo, key, step), an object HDF5 cannot read, a layout error. Demos written before robot_rl
stored checksums are reported as unverifiable, which is not a failure.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any

import h5py

from robot_rl.data import integrity, schema
from robot_rl.data.dataset import DemoDataset, open_h5
from robot_rl.data.integrity import H5_ERRORS, Problem, h5_reason, stored_checksum
from robot_rl.data.schema import DatasetError


def _datasets(group: h5py.Group, where: str, problems: list[Problem], prefix: str = "") -> dict[str, h5py.Dataset]:
    """Relative path -> dataset for everything under ``group``; what HDF5 cannot open goes to ``problems``."""
    found: dict[str, h5py.Dataset] = {}
    try:
        members = list(group)
    except H5_ERRORS as err:
        problems.append(Problem("unreadable", f"{where}/{prefix}".rstrip("/"), f"cannot be listed ({h5_reason(err)})"))
        return found
    for member in members:
        key = f"{prefix}{member}"
        try:
            obj = group[member]
        except H5_ERRORS as err:
            problems.append(Problem("unreadable", f"{where}/{key}", f"cannot be opened ({h5_reason(err)})"))
            continue
        if isinstance(obj, h5py.Group):
            found |= _datasets(obj, where, problems, f"{key}/")
        elif isinstance(obj, h5py.Dataset):
            found[key] = obj
    return found


def _read(datasets: dict[str, h5py.Dataset], where: str, problems: list[Problem]) -> tuple[dict, dict]:
    """(path -> values, path -> stored checksum) of the datasets HDF5 can read; the others go to ``problems``."""
    arrays, stored = {}, {}
    for key, dset in datasets.items():
        try:
            arrays[key] = dset[()]
            stored[key] = stored_checksum(dset)
        except H5_ERRORS as err:
            problems.append(Problem("unreadable", f"{where}/{key}", f"cannot be read ({h5_reason(err)})"))
    return arrays, stored


def check(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify every dataset of ``path`` against its checksum and for finite numbers; read everything readable.

    Returns:
        ``path``, ``ok`` (no problem found), ``demos``, ``steps``, ``datasets`` (read), ``verified``
        (datasets whose checksum matched), ``without_checksums`` (demos written before checksums),
        ``problems`` (one line each) and ``counts`` (problems per kind). :func:`format_check` prints it.

    Raises:
        DatasetError: the file cannot be opened at all (missing, not HDF5, truncated).
    """
    path = Path(path)
    problems: list[Problem] = []
    unsealed: list[str] = []
    demos = steps = read = verified = 0
    with open_h5(path) as f:
        names: list[str] = []
        try:
            if schema.DATA_GROUP in f:
                names = schema.sorted_demo_names(list(f[schema.DATA_GROUP]))
        except H5_ERRORS as err:
            problems.append(Problem("unreadable", schema.DATA_GROUP, f"cannot be read ({h5_reason(err)})"))
        for name in names:
            try:
                group = f[schema.DATA_GROUP][name]
                steps += int(group.attrs.get(schema.DemoAttrs.NUM_SAMPLES, 0))
            except H5_ERRORS as err:
                problems.append(Problem("unreadable", name, f"cannot be read ({h5_reason(err)})"))
                continue
            demos += 1
            arrays, stored = _read(_datasets(group, name, problems), name, problems)
            digests, found = integrity.verify(name, arrays, stored)
            problems += found
            read += len(arrays)
            verified += len(digests) - sum(p.kind == "checksum" for p in found)
            if arrays and not digests:
                unsealed.append(name)
        try:
            masks = f[schema.MASK_GROUP] if schema.MASK_GROUP in f else None
        except H5_ERRORS as err:
            problems.append(Problem("unreadable", schema.MASK_GROUP, f"cannot be read ({h5_reason(err)})"))
            masks = None
        if isinstance(masks, h5py.Group):
            where = schema.MASK_GROUP
            arrays, stored = _read(_datasets(masks, where, problems), where, problems)
            # Masks are written later than the demos (split): check the ones that carry a checksum.
            digests, found = integrity.verify(where, arrays, {k: v for k, v in stored.items() if v})
            problems += [p for p in found if p.kind != "checksum_missing"]
            read += len(arrays)
            verified += len(digests) - sum(1 for p in found if p.kind == "checksum")
    if not any(p.kind == "unreadable" for p in problems):
        try:  # the layout: keys, shapes, lengths, attributes
            DemoDataset(path).close()
        except DatasetError as err:
            problems.insert(0, Problem("structure", "", str(err)))
    return {
        "path": str(path),
        "ok": not problems,
        "demos": demos,
        "steps": steps,
        "datasets": read,
        "verified": verified,
        "without_checksums": unsealed,
        "problems": [p.detail if p.kind == "structure" else p.line(path) for p in problems],
        "counts": dict(collections.Counter(p.kind for p in problems)),
    }


_KINDS = {
    "checksum": "checksum mismatch",
    "checksum_missing": "missing checksum",
    "nonfinite": "non-finite values",
    "unreadable": "unreadable",
    "structure": "layout",
}


def format_check(report: dict[str, Any]) -> str:
    """One line per problem, a line for demos without checksums, and a one-line verdict."""
    path = report["path"]
    lines = list(report["problems"])
    unsealed = report["without_checksums"]
    if unsealed:
        shown = ", ".join(unsealed[:3]) + (", ..." if len(unsealed) > 3 else "")
        lines.append(
            f"{path}: no checksums on {len(unsealed)} of {report['demos']} demos ({shown}): written before robot_rl "
            f"stored them, so their bytes cannot be verified (their numbers were checked); re-write with "
            f"`robot-rl data merge {path} --out NEW.hdf5` to add them"
        )
    scope = f"{report['demos']} demos, {report['steps']} steps, {report['datasets']} datasets"
    if report["ok"]:
        verified = f"{report['verified']} match their sha256 checksums" if report["verified"] else "no checksums"
        lines.append(f"{path}: ok: {scope}; {verified}; every number is finite")
    else:
        kinds = ", ".join(f"{n} {_KINDS.get(k, k)}" for k, n in report["counts"].items())
        count = len(report["problems"])
        lines.append(
            f"{path}: {count} problem{'s' if count > 1 else ''} ({kinds}) in {scope}. Training, merge and split "
            "refuse this file: re-collect the demos named above, or where bytes were damaged copy the file again "
            "from its source."
        )
    return "\n".join(lines)
