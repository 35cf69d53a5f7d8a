"""All-or-nothing updates of an HDF5 file that survive SIGKILL and power loss at any moment.

HDF5 is not transactional: while a file is open for writing its bytes on disk are not a valid file
(measured, h5py 3.16 / HDF5 2.0, ``libver="latest"``: a writer killed with SIGKILL after
``flush()`` + ``fsync`` leaves superblock flags that make every later open fail with "file is
already open for write ... use h5clear"), and a kill in the middle of a write leaves metadata half
updated. So HDF5 never opens the main file for writing. Instead (a redo log, as in databases):

1. HDF5 opens the file through :class:`~robot_rl.data.page_overlay.PageOverlay`, a Python file
   object (h5py's ``fileobj`` driver) that reads the main file but keeps every page HDF5 writes in
   memory.
2. When HDF5 has closed the file, the dirty pages are the complete new image. They are appended
   to ``<file>.journal`` as one record (header, runs of pages, CRC-32), and the journal
   is fsynced: from here on the update survives a crash.
3. The pages are written into the main file (no fsync: the journal holds them). Every
   ``CHECKPOINT_RECORDS`` updates, and on close, the main file is fsynced and the journal emptied.

A kill while a record is written leaves a torn record, which fails its checksum and is dropped
with everything after it; the main file has not been touched by that update. A kill (or power
loss) after it re-applies the complete records at the next open: writing the same bytes again is
harmless. Between updates the main file is an ordinary, closed HDF5 file that any HDF5 program
reads. One fsync per update (the journal's), instead of two, is what makes per-episode commits cheap.

The journal file doubles as the writer lock: a writer holds ``flock(LOCK_EX)`` on it for its
lifetime, so a second writer is refused and a reader knows not to recover a live writer's journal.
(``flock`` on the journal, not on the main file: HDF5 readers take their own ``flock`` on the main
file, and the two must not block each other.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
from h5py import h5f, h5fd, h5p

from robot_rl.data.page_overlay import PAGE, PageOverlay, Record
from robot_rl.data.schema import DatasetError

__all__ = ["PAGE", "JournaledFile", "PageOverlay", "journal_path", "recover"]

_Overlay = PageOverlay
"""The overlay under the name ``bench/bench_recording.py`` times (its ``record`` is wrapped there)."""

JOURNAL_SUFFIX = ".journal"
CHECKPOINT_RECORDS = 64
"""Updates between checkpoints (main file fsynced, journal emptied)."""
CHECKPOINT_BYTES = 64 << 20
"""Journal size that forces a checkpoint [bytes]."""
_MAGIC = b"RRLJRNL3"
# magic, inode of the main file, size before, size to cut to first, size after, runs, body bytes
_HEADER = struct.Struct("<8sQQQQIQ")
_RUN = struct.Struct("<QI")  # offset, length
_CRC = struct.Struct("<I")
_DIGEST = _CRC.size


LOCK_WAIT_S = 2.0
"""How long a writer waits for another process's brief recovery to release the lock [s]."""


def journal_path(path: Path) -> Path:
    """``<path>.journal``."""
    return path.with_name(path.name + JOURNAL_SUFFIX)


def _encode(record: Record, inode: int) -> list[bytes]:
    """The journal record as buffers for one ``pwritev``: header, runs, CRC-32 of everything before."""
    parts: list[bytes] = [b""]
    for offset, chunk in record.runs:
        parts.append(_RUN.pack(offset, len(chunk)))
        parts.append(chunk)
    body = sum(len(p) for p in parts)
    parts[0] = _HEADER.pack(_MAGIC, inode, record.before, record.cut, record.after, len(record.runs), body)
    crc = 0
    for part in parts:
        crc = zlib.crc32(part, crc)
    parts.append(_CRC.pack(crc))
    return parts


def _parse(journal: bytes, inode: int) -> list[Record]:
    """The complete, chained records of a journal, in order; parsing stops at the first bad one.

    A torn record (killed or powered off while writing it) fails its checksum and ends the list,
    as does a record from another file (inode) or one that does not continue the previous one.
    """
    records: list[Record] = []
    pos = 0
    while pos + _HEADER.size + _DIGEST <= len(journal):
        magic, ino, before, cut, after, count, body = _HEADER.unpack_from(journal, pos)
        end = pos + _HEADER.size + body
        if magic != _MAGIC or end + _DIGEST > len(journal):
            break
        if zlib.crc32(journal[pos:end]) != _CRC.unpack_from(journal, end)[0]:
            break
        if ino != inode or (records and records[-1].after != before):
            break
        runs, at = [], pos + _HEADER.size
        for _ in range(count):
            offset, length = _RUN.unpack_from(journal, at)
            at += _RUN.size
            runs.append((offset, journal[at : at + length]))
            at += length
        records.append(Record(before, cut, after, runs))
        pos = end + _DIGEST
    return records


def _apply(fd: int, record: Record) -> None:
    # Idempotent: applying a record again (recovery after a crash) gives the same bytes.
    if os.fstat(fd).st_size > record.cut:
        os.ftruncate(fd, record.cut)
    for offset, chunk in record.runs:
        os.pwrite(fd, chunk, offset)
    if os.fstat(fd).st_size != record.after:
        os.ftruncate(fd, record.after)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock(path: Path, wait_s: float) -> int | None:
    """Open and exclusively ``flock`` ``<path>.journal``; None if another process holds it."""
    jpath = journal_path(path)
    deadline = time.monotonic() + wait_s
    while True:
        fd = os.open(jpath, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.01)
            continue
        # A recovering reader unlinks the journal while holding its lock: make sure we locked the
        # file that is still at the path, not an unlinked one.
        try:
            if os.stat(jpath).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _recover_locked(path: Path, jfd: int) -> str:
    """With the lock held: apply the journal's complete records, drop the rest. Returns what was done."""
    size = os.fstat(jfd).st_size
    if size == 0:
        return "none"
    journal = os.pread(jfd, size, 0)
    if journal[: len(_MAGIC)] == _MAGIC and len(journal) >= _HEADER.size:
        ino = _HEADER.unpack_from(journal)[1]
        if ino != path.stat().st_ino:
            raise DatasetError(
                f"{path}: the pending journal {journal_path(path)} belongs to a file that was replaced after a "
                "crash (another inode). Delete the journal if this file is the one you want."
            )
    records = _parse(journal, path.stat().st_ino)
    if records:
        fd = os.open(path, os.O_RDWR)
        try:
            for record in records:
                _apply(fd, record)
            os.fsync(fd)
        finally:
            os.close(fd)
    os.ftruncate(jfd, 0)
    os.fsync(jfd)
    return "applied" if records else "dropped"


def recover(path: str | os.PathLike[str]) -> str:
    """Finish the updates a crash interrupted; a no-op while a live writer holds the file.

    Returns:
        ``none`` (nothing pending), ``applied`` (committed updates were re-applied), ``dropped``
        (only an incomplete update was pending; the file is as before it) or ``live`` (another
        process is writing the file; it is left alone).
    """
    path = Path(path)
    jpath = journal_path(path)
    if not jpath.exists() or not path.exists():
        return "none"
    fd = _lock(path, wait_s=0.0)
    if fd is None:
        return "live"
    try:
        try:
            outcome = _recover_locked(path, fd)
        except PermissionError as err:
            raise DatasetError(
                f"{path}: an interrupted write must be finished ({jpath} is pending) but the file is not "
                f"writable ({err}). Open it once with write permission."
            ) from None
        os.unlink(jpath)
        return outcome
    finally:
        os.close(fd)


class JournaledFile:
    """Exclusive writer for one HDF5 file; each :meth:`transaction` is applied all-or-nothing.

    Args:
        path: The HDF5 file.
        create: Called with a new, writable ``h5py.File`` when ``path`` does not exist yet; the file
            is written beside ``path`` and renamed into place (atomic); missing parent folders are made.
        fsync: fsync the journal at each commit (power-loss safety). Without it a commit still
            survives the process being killed, but not the machine losing power.

    Raises:
        DatasetError: another process is writing ``path``.
    """

    def __init__(
        self, path: str | os.PathLike[str], create: Callable[[h5py.File], None] | None = None, fsync: bool = True
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        if self.path.exists() and not self.path.is_file():
            raise DatasetError(f"{self.path} is a directory; pass a file path such as demos.hdf5.")
        if create is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # `--out runs/demos.hdf5` on a fresh checkout
        jfd = _lock(self.path, wait_s=LOCK_WAIT_S)
        if jfd is None:
            raise DatasetError(
                f"{self.path} is being written by another process (it holds {journal_path(self.path)}). "
                "Wait for it to finish, or write to another file and merge them with `robot-rl data merge`."
            )
        self._jfd: int | None = jfd
        try:
            if self.path.exists():
                _recover_locked(self.path, jfd)
            elif create is not None:
                self._create(create)
            else:
                raise DatasetError(f"{self.path} does not exist.")
            os.ftruncate(jfd, 0)
            self._fd = os.open(self.path, os.O_RDWR)
            self._inode = os.fstat(self._fd).st_ino
        except BaseException:
            self._release()  # a journal holding pending updates is kept
            raise
        self._journal_size = 0
        self._records = 0
        self._new_overlay()
        self._pending = False
        """True while an update is between its journal write and the end of its apply: if that is
        interrupted (KeyboardInterrupt, an I/O error), the journal must survive for recovery."""

    def _new_overlay(self) -> None:
        """The overlay every update goes through, and the HDF5 access property list for it.

        Built once, as ``h5py.File(overlay, "r+", libver="latest")`` would build them per update.
        """
        self._overlay = PageOverlay(self._fd)
        self._fapl = h5p.create(h5p.FILE_ACCESS)
        self._fapl.set_fileobj_driver(h5fd.fileobj_driver, self._overlay)
        self._fapl.set_libver_bounds(h5f.LIBVER_LATEST, h5f.LIBVER_LATEST)
        self._h5name = repr(self._overlay).encode("ascii", "replace")

    def _create(self, create: Callable[[h5py.File], None]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with h5py.File(tmp, "w", libver="latest") as f:
                create(f)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_dir(self.path)
        finally:
            if tmp.exists():
                tmp.unlink()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[h5py.File]:
        """The file, writable; the changes are committed when the block exits without an exception.

        An exception inside the block leaves the file exactly as it was.
        """
        if self._jfd is None:
            raise RuntimeError(f"{self.path} is closed; open a new JournaledFile.")
        if self._pending:
            raise RuntimeError(
                f"an earlier update of {self.path} was interrupted; close this writer and open the file again "
                "(the update is finished from its journal)."
            )
        overlay = self._overlay
        overlay.reset()
        f = h5py.File(h5f.open(self._h5name, h5f.ACC_RDWR, fapl=self._fapl))
        try:
            yield f
        except BaseException:
            with contextlib.suppress(Exception):
                f.close()
            self._new_overlay()  # in case HDF5 could not let go of the old one
            raise
        f.close()
        record = overlay.record()
        parts = _encode(record, self._inode)
        self._pending = True
        size = sum(len(p) for p in parts)
        # Durable journal first: only then may the main file change.
        if len(parts) <= 512:  # within IOV_MAX
            written = os.pwritev(self._jfd, parts, self._journal_size)
        else:
            written = os.pwrite(self._jfd, b"".join(parts), self._journal_size)
        if written != size:
            raise OSError(f"short write to {journal_path(self.path)} ({written} of {size} bytes); is the disk full?")
        if self.fsync:
            os.fsync(self._jfd)
        self._journal_size += size
        self._records += 1
        _apply(self._fd, record)
        self._pending = False
        if self._records >= CHECKPOINT_RECORDS or self._journal_size >= CHECKPOINT_BYTES:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Make the main file durable and empty the journal."""
        if self._jfd is None or self._records == 0 or self._pending:
            return
        os.fsync(self._fd)
        os.ftruncate(self._jfd, 0)
        if self.fsync:
            # Durable truncation: a stale record must not reappear ahead of the next ones.
            os.fsync(self._jfd)
        self._journal_size = 0
        self._records = 0

    def _release(self) -> None:
        if self._jfd is not None:
            if os.fstat(self._jfd).st_size == 0:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(journal_path(self.path))
            os.close(self._jfd)
            self._jfd = None

    def close(self) -> None:
        """Checkpoint, release the lock and remove the (empty) journal."""
        if self._jfd is None:
            return
        self.checkpoint()
        os.close(self._fd)
        self._release()

    def __enter__(self) -> JournaledFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
