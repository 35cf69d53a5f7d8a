"""A file object over a read-only file whose writes stay in memory, page by page; HDF5 writes through it.

:class:`PageOverlay` is step 1 of :mod:`robot_rl.data.journal`'s all-or-nothing update: HDF5
(h5py's ``fileobj`` driver) opens the main file through it and every page it writes stays in
memory; once HDF5 has closed the file, :meth:`PageOverlay.record` gives the complete new image as a
:class:`Record` (the dirty pages joined into runs), which the journal makes durable and then writes
into the main file.
"""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any

PAGE = 4096
"""Overlay page size [bytes]."""


@dataclasses.dataclass
class Record:
    """One update: the file size before and after, and the byte runs to write."""

    before: int
    cut: int
    """Size to truncate to before writing (below ``before`` only when HDF5 truncated the file)."""
    after: int
    runs: list[tuple[int, bytes]]


class PageOverlay(io.RawIOBase):
    """A file object over a read-only view of ``fd`` whose writes stay in memory, page by page.

    HDF5 calls it through h5py's ``fileobj`` driver: about 60 seeks, 20 reads and 40 writes per
    demo commit, most within one page, so those take a short path. One overlay serves every update
    of a :class:`~robot_rl.data.journal.JournaledFile` (:meth:`reset` between them), which lets the HDF5 file access
    property list that points at it be built once.
    """

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.reset()

    def reset(self) -> None:
        """Forget all writes: the overlay shows the main file as it is now."""
        self.base_size = os.fstat(self._fd).st_size
        self.size = self.base_size
        self.pages: dict[int, bytearray] = {}
        self._pos = 0
        self._base_limit = self.base_size
        """Bytes of the main file still visible (a truncation hides the rest, even if regrown)."""

    def _base(self, count: int, pos: int) -> bytes:
        """Up to ``count`` bytes of the main file at ``pos`` that are still visible."""
        count = min(count, self._base_limit - pos)
        return os.pread(self._fd, count, pos) if count > 0 else b""

    def _new_page(self, index: int) -> bytearray:
        start = index * PAGE
        if start >= self._base_limit:  # appended space: nothing to read
            page = bytearray(PAGE)
        else:
            page = bytearray(self._base(PAGE, start))
            if len(page) < PAGE:
                page.extend(bytes(PAGE - len(page)))
        self.pages[index] = page
        return page

    def readable(self) -> bool:  # noqa: D102
        return True

    def writable(self) -> bool:  # noqa: D102
        return True

    def seekable(self) -> bool:  # noqa: D102
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:  # noqa: D102
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self.size + offset
        else:
            raise ValueError(f"`whence` must be 0, 1 or 2. Got {whence}.")
        return self._pos

    def tell(self) -> int:  # noqa: D102
        return self._pos

    def readinto(self, buffer: Any) -> int:  # noqa: D102
        pos = self._pos
        view = memoryview(buffer).cast("B")
        n = min(len(view), max(0, self.size - pos))
        index, offset = divmod(pos, PAGE)
        if offset + n <= PAGE:  # within one page: most HDF5 metadata reads
            page = self.pages.get(index)
            if page is not None:
                view[:n] = page[offset : offset + n]
            else:
                data = self._base(n, pos)
                got = len(data)
                view[:got] = data
                if got < n:
                    view[got:n] = bytes(n - got)
            self._pos = pos + n
            return n
        done = 0
        while done < n:
            index, offset = divmod(pos, PAGE)
            count = min(PAGE - offset, n - done)
            page = self.pages.get(index)
            if page is not None:
                view[done : done + count] = page[offset : offset + count]
            else:
                data = self._base(count, pos)
                view[done : done + len(data)] = data
                view[done + len(data) : done + count] = bytes(count - len(data))
            done += count
            pos += count
        self._pos = pos
        return n

    def write(self, data: Any) -> int:  # noqa: D102
        pos = self._pos
        view = memoryview(data).cast("B")
        n = len(view)
        index, offset = divmod(pos, PAGE)
        if offset + n <= PAGE:  # within one page: most HDF5 metadata writes
            page = self.pages.get(index)
            if page is None:
                page = self._new_page(index)
            page[offset : offset + n] = view
        else:
            done = 0
            while done < n:
                index, offset = divmod(pos + done, PAGE)
                count = min(PAGE - offset, n - done)
                page = self.pages.get(index)
                if page is None:
                    page = self._new_page(index)
                page[offset : offset + count] = view[done : done + count]
                done += count
        self._pos = end = pos + n
        if end > self.size:
            self.size = end
        return n

    def truncate(self, size: int | None = None) -> int:  # noqa: D102
        size = self._pos if size is None else size
        self._base_limit = min(self._base_limit, size)
        if size < self.size:
            for index in [i for i in self.pages if i * PAGE >= size]:
                del self.pages[index]
            tail = self.pages.get(size // PAGE)
            if tail is not None:
                tail[size % PAGE :] = bytes(PAGE - size % PAGE)
        self.size = size
        return size

    def flush(self) -> None:  # noqa: D102
        pass

    def record(self) -> Record:
        """The update: dirty pages clipped to the new size, contiguous pages joined into runs."""
        runs: list[tuple[int, bytes]] = []
        size = self.size
        run_start, chunks = -1, []
        for index in sorted(self.pages):
            start = index * PAGE
            if start >= size:
                break
            if chunks and start != run_start + PAGE * len(chunks):
                runs.append((run_start, b"".join(chunks)))
                chunks = []
            if not chunks:
                run_start = start
            page = self.pages[index]
            chunks.append(page if start + PAGE <= size else memoryview(page)[: size - start])
        if chunks:
            runs.append((run_start, b"".join(chunks)))
        return Record(self.base_size, self._base_limit, size, runs)
