"""Checks every parsed `robot-rl` command passes before it does any work: number ranges and output paths.

The configs check their own options (``__post_init__``); these are the rules common to all of them, so
that a bad value fails in one line before a run starts rather than deep inside (a gymnasium assertion,
a tqdm overflow) or after it (a report that cannot be written once every episode has run).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from robot_rl.limits import MAX_COUNT, check_seed

OutputKind = Literal["file", "folder"]


def check_numbers(config: object, prefix: str = "") -> None:
    """Refuse a negative or huge integer, a seed out of range or a float that is not finite, in any field.

    Seeds are the fields named ``seed`` or ``*_seed``: ``[0, MAX_SEED]``. Every other integer is a count
    (no option of the CLI takes a negative one): ``[0, MAX_COUNT]``; the configs check their own lower
    bounds (>= 1 for most). Nested configs (``--policy.horizon``) and tuples (``--policy.hidden``) are
    checked element by element.

    Raises:
        ValueError: the first offending field, named as the config names it.
    """
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, field.name)
        name = prefix + field.name
        if dataclasses.is_dataclass(value):
            check_numbers(value, name + ".")
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, bool):
                continue
            if isinstance(item, int):
                if field.name == "seed" or field.name.endswith("_seed"):
                    check_seed(name, item)
                elif item < 0:
                    raise ValueError(f"`{name}` must not be negative (a count). Got {item}.")
                elif item > MAX_COUNT:
                    raise ValueError(f"`{name}` must be at most {MAX_COUNT} (a count). Got {item}.")
            elif isinstance(item, float) and not math.isfinite(item):
                raise ValueError(f"`{name}` must be a finite number. Got {item}.")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output(option: str, path: Path, kind: OutputKind) -> None:
    """Refuse an output path the command could not write, before any work is done.

    Args:
        option: How the user gave it (``--json``), for the message.
        path: The file or folder the command will write (its missing parents are created).
        kind: ``file`` (a report, a video, a demo file) or ``folder`` (a run, a policy, results).

    Raises:
        ValueError: a file path names a folder or the reverse, a parent is a file, or the user may not
            write there.
    """
    where = f"{option} {path}"
    if path.exists():
        if kind == "file" and path.is_dir():
            raise ValueError(f"{where}: is a folder; give a file path.")
        if kind == "folder" and not path.is_dir():
            raise ValueError(f"{where}: is a file, not a folder; choose a folder path.")
        if not os.access(path, os.W_OK | (os.X_OK if kind == "folder" else 0)):
            raise ValueError(
                f"{where}: permission denied (not writable); check its permissions or choose another path."
            )
        return
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise ValueError(f"{where}: {ancestor} is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(
            f"{where}: permission denied (cannot create anything in {ancestor}); check its permissions or choose "
            "another path."
        )


def check_outputs(config: object, outputs: Mapping[str, OutputKind]) -> None:
    """:func:`check_output` on each of ``config``'s output fields that is set (``{"json": "file", ...}``)."""
    for name, kind in outputs.items():
        value = getattr(config, name, None)
        if value is not None:
            check_output(f"--{name.replace('_', '-')}", Path(value), kind)
