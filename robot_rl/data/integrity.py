"""What a demo file's numbers must satisfy: finite values, and bytes that match their checksums.

Two kinds of bad data reach a reader:

- Non-finite numbers (NaN, inf) in actions, observations, rewards or states: one NaN action trains
  a model with NaN weights. Every reader refuses them, naming file, demo, key and step
  (:func:`nonfinite`, :class:`Problem`).
- Bytes changed at rest (a disk, copy or transfer error): HDF5 checksums its metadata but not the
  data of contiguous datasets, so a flipped byte inside an array reads back as a plausible number.
  Every dataset therefore carries the sha256 of its values (attribute :data:`CHECKSUM_ATTR`),
  written when the recorder commits a demo and when merge copies one, and verified on every read.

Why sha256 rather than the CRC-32 the journal uses: the journal's CRC only has to tell a torn record
from a complete one; here the digest is the file's lasting fingerprint. sha256 lets a change through
with probability 2^-256 whatever its size (CRC-32: 2^-32 for random damage), is what robot_rl already
uses for files (the training data hash, ``policy.onnx``), and is cheap enough: about 1.5 GB/s with
the CPU's SHA instructions (measured here: CRC-32 2.2 GB/s, blake2b 0.9 GB/s), so a 50-step PandaPush
commit takes 0.3 ms longer (1.4 -> 1.7 ms before its fsync). The digest covers dtype and shape as
well as the bytes, so a damaged type header that makes the same bytes read as other numbers does
not pass.

What is not covered: HDF5 (``libver="latest"``) checksums object headers, which hold the layout,
the fixed-size attributes and these checksums, but not its global heap, which holds the
variable-length string attributes (``env_kwargs``, ``randomization`` JSON, timestamps). A byte
changed there reads back as another string (or fails to parse as JSON).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping

import h5py
import numpy as np
from h5py import h5a

from robot_rl.data.schema import DatasetError

CHECKSUM_ATTR = "sha256"
"""Attribute on every dataset of a demo (and on ``mask/*``): the hex :func:`digest` of its values."""


def digest(array: np.ndarray) -> str:
    """sha256 (hex) of an array's dtype, shape and bytes in C order, as stored in :data:`CHECKSUM_ATTR`."""
    array = np.ascontiguousarray(array)
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.reshape(-1).view(np.uint8))
    return hasher.hexdigest()


def checksum_value(hex_digest: str) -> np.bytes_:
    """The :data:`CHECKSUM_ATTR` value for a digest: a fixed-length ASCII string.

    Fixed-length, not h5py's default variable-length string: it is stored in the dataset's object
    header, which HDF5 itself checksums, rather than in the global heap, which it does not.
    """
    return np.bytes_(hex_digest.encode("ascii"))


@dataclasses.dataclass(frozen=True)
class NonFinite:
    """Where an array holds NaN or inf."""

    index: tuple[int, ...]
    """Index of the first non-finite value (row-major); ``index[0]`` is the step."""
    value: float
    """That value: nan, inf or -inf."""
    count: int
    """Non-finite values in the whole array."""

    def describe(self) -> str:
        """``step 17 (dimension 2) holds nan (and 3 more)``."""
        where = f"step {self.index[0]}" if self.index else "value"
        if len(self.index) > 1:
            where += f" (dimension {', '.join(str(i) for i in self.index[1:])})"
        more = f" (and {self.count - 1} more non-finite values)" if self.count > 1 else ""
        return f"{where} holds {self.value}{more}"


def nonfinite(array: np.ndarray) -> NonFinite | None:
    """The first NaN or inf in ``array``, or None when every value is finite (or it is not a float array).

    Vectorised: one sum over the array in the common case (a finite sum means every term is finite),
    the element-wise test only when the sum is not finite.
    """
    if array.dtype.kind not in "fc" or array.size == 0:
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(array.sum()):
            return None
    bad = ~np.isfinite(array)
    count = int(bad.sum())
    if count == 0:  # the sum overflowed; every value is finite
        return None
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    return NonFinite(index, float(np.real(array[index])), count)


def check_hint(path: str | os.PathLike[str]) -> str:
    """The command that lists every problem of ``path``."""
    return f"`robot-rl data check {path}`"


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a demo file."""

    kind: str
    """``checksum`` (bytes changed), ``nonfinite``, ``unreadable`` (HDF5 cannot read it), ``checksum_missing``
    (one dataset lacks the checksum its siblings have) or ``structure`` (layout)."""
    where: str
    """``demo_3/actions``, ``mask/train``, or the file for file-wide problems."""
    detail: str
    """What is wrong, e.g. ``step 17 holds nan``."""

    def line(self, path: str | os.PathLike[str]) -> str:
        """``demos.hdf5: demo_3/actions step 17 holds nan``."""
        return f"{path}: {self.where} {self.detail}" if self.where else f"{path}: {self.detail}"

    def refusal(self, path: str | os.PathLike[str]) -> str:
        """The one-line error a reader raises: the problem, what is valid and how to find the rest."""
        hint = check_hint(path)
        if self.kind == "nonfinite":
            return f"{self.line(path)}; demo files must hold finite numbers (check with {hint})"
        if self.kind in ("checksum", "checksum_missing"):
            return (
                f"{self.line(path)}: the file was damaged after it was written (disk, copy or transfer). Copy it "
                f"again from its source or re-collect it; {hint} lists every damaged dataset."
            )
        return f"{self.line(path)}. The file is damaged; copy it again from its source or re-collect it ({hint})."


def verify(
    demo: str,
    arrays: Mapping[str, np.ndarray],
    stored: Mapping[str, str | None],
    want_digests: bool = False,
) -> tuple[dict[str, str], list[Problem]]:
    """Check one demo's datasets against their stored checksums and for non-finite numbers.

    Args:
        demo: The demo's name, ``demo_K`` (used in the problems' ``where``).
        arrays: Relative dataset path (``actions``, ``obs/observation``) -> values as read.
        stored: The same paths -> the :data:`CHECKSUM_ATTR` attribute (None where absent).
        want_digests: Compute the digest of every dataset, not only of those with a stored checksum.

    Returns:
        (path -> computed digest, for the datasets checked or all with ``want_digests``; the problems,
        checksum problems first). A demo whose datasets all lack checksums (written before robot_rl
        stored them) is not a problem: it is only checked for finite numbers.
    """
    problems: list[Problem] = []
    digests: dict[str, str] = {}
    sealed = any(stored.get(key) for key in arrays)
    for key, array in arrays.items():
        expected = stored.get(key)
        if expected or want_digests:
            digests[key] = digest(array)
        if expected and digests[key] != expected:
            problems.append(
                Problem(
                    "checksum",
                    f"{demo}/{key}",
                    f"does not match its {CHECKSUM_ATTR} checksum (stored {expected[:12]}..., "
                    f"read {digests[key][:12]}...)",
                )
            )
        elif sealed and not expected:
            problems.append(
                Problem(
                    "checksum_missing",
                    f"{demo}/{key}",
                    f"lacks the {CHECKSUM_ATTR} checksum its demo's other datasets have",
                )
            )
    for key, array in arrays.items():
        found = nonfinite(array)
        if found is not None:
            problems.append(Problem("nonfinite", f"{demo}/{key}", found.describe()))
    return digests, problems


H5_ERRORS = (OSError, RuntimeError, KeyError)
"""What h5py raises when HDF5 cannot read an object (damaged metadata fails HDF5's own checksums)."""


def h5_reason(err: BaseException) -> str:
    """HDF5's reason from an h5py error: ``incorrect metadata checksum after all read attempts``."""
    message = str(err.args[0] if isinstance(err, KeyError) and err.args else err).strip()
    found = re.search(r"\(([^()]*)\)\s*$", message)
    return found.group(1) if found else (message.splitlines()[0] if message else type(err).__name__)


def corrupt_error(path: str | os.PathLike[str], what: str, err: BaseException) -> DatasetError:
    """The error for an object HDF5 cannot read: the file is corrupt, not of another kind."""
    return DatasetError(
        f"{path} is corrupt: HDF5 cannot read {what} ({h5_reason(err)}). The file was damaged after it was "
        f"written (disk, copy or transfer); copy it again from its source or re-collect it "
        f"({check_hint(path)} lists what is damaged)."
    )


def stored_checksum(dset: h5py.Dataset) -> str | None:
    """A dataset's :data:`~robot_rl.data.integrity.CHECKSUM_ATTR` attribute, or None (written before checksums)."""
    if not h5a.exists(dset.id, _CHECKSUM_NAME):
        return None
    value = dset.attrs[CHECKSUM_ATTR]
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


_CHECKSUM_NAME = CHECKSUM_ATTR.encode()
