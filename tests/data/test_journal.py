"""The journal that makes each update of a demonstration file all-or-nothing."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from robot_rl.data import DatasetError, DemoDataset
from robot_rl.data import journal as journal_mod
from robot_rl.data.journal import JournaledFile, journal_path, recover

from .conftest import PUSH


def _new(path: Path) -> JournaledFile:
    return JournaledFile(path, create=lambda f: f.create_group("data"))


def test_an_exception_inside_a_transaction_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "t.h5"
    with _new(path) as jf:
        with jf.transaction() as f:
            f["data/x"] = np.arange(3)
        before = path.read_bytes()
        with pytest.raises(RuntimeError), jf.transaction() as f:
            f["data/y"] = np.arange(1000)
            raise RuntimeError("boom")
        assert path.read_bytes() == before
    with h5py.File(path, "r") as f:
        assert list(f["data"]) == ["x"]
    assert not journal_path(path).exists()


def test_recover_reports_what_it_did(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    assert recover(path) == "none"
    jf = _new(path)
    with jf.transaction() as f:
        f["data/a"] = np.ones(10)
    # A live writer's journal is left alone; the file is readable meanwhile.
    assert recover(path) == "live"
    with h5py.File(path, "r") as f:
        assert f["data/a"][3] == 1.0
    record = os.pread(jf._jfd, os.fstat(jf._jfd).st_size, 0)
    assert record  # the commit's record stays in the journal until a checkpoint
    os.close(jf._fd)
    os.close(jf._jfd)  # the writer dies without closing: its lock goes away
    jf._jfd = None
    assert recover(path) == "applied"
    assert not journal_path(path).exists()
    # A torn record (a crash while it was written) is dropped and the file is untouched.
    before = path.read_bytes()
    journal_path(path).write_bytes(record[: len(record) // 2])
    assert recover(path) == "dropped"
    assert path.read_bytes() == before


def test_a_journal_of_a_replaced_file_is_not_applied(tmp_path: Path) -> None:
    path = tmp_path / "p.h5"
    jf = _new(path)
    with jf.transaction() as f:
        f["data/a"] = np.ones(10)
    record = os.pread(jf._jfd, os.fstat(jf._jfd).st_size, 0)
    jf.close()
    replacement = tmp_path / "other.h5"
    with h5py.File(replacement, "w") as f:
        f.create_group("data")
    os.replace(replacement, path)
    journal_path(path).write_bytes(record)
    with pytest.raises(DatasetError, match="replaced"):
        recover(path)


def test_checkpoints_empty_the_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "CHECKPOINT_RECORDS", 3)
    path = tmp_path / "c.h5"
    with _new(path) as jf:
        sizes = []
        for k in range(4):
            with jf.transaction() as f:
                f[f"data/d{k}"] = np.arange(k + 1)
            sizes.append(os.fstat(jf._jfd).st_size)
        assert sizes[0] > 0 and sizes[1] > sizes[0]
        assert sizes[2] == 0 and sizes[3] > 0


def test_readers_see_each_committed_demo_while_recording(tmp_path: Path) -> None:
    from robot_rl.data import collect
    from robot_rl.data.collect import CollectStatus

    path = tmp_path / "live.hdf5"
    seen: list[int] = []

    def peek(status: CollectStatus) -> None:
        if status.step == 1 and path.exists():
            with DemoDataset(path) as ds:  # while the recorder holds the file
                seen.append(len(ds))

    collect(PUSH, "expert", 3, path, progress=False, on_step=peek)
    assert seen == [0, 1, 2]


def test_an_update_interrupted_after_its_journal_is_finished_at_the_next_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "i.h5"
    jf = _new(path)

    def interrupted(fd: int, record: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(journal_mod, "_apply", interrupted)
    with pytest.raises(KeyboardInterrupt), jf.transaction() as f:
        f["data/x"] = np.arange(5)
    with pytest.raises(RuntimeError, match="interrupted"), jf.transaction():
        pass
    jf.close()  # must not empty the journal: it holds the only copy of the update
    monkeypatch.undo()
    assert journal_path(path).stat().st_size > 0
    with h5py.File(path, "r") as f:
        assert "x" not in f["data"]
    assert recover(path) == "applied"
    with h5py.File(path, "r") as f:
        assert f["data/x"][4] == 4


def test_the_overlay_and_its_record_match_a_plain_file_byte_for_byte(tmp_path: Path) -> None:
    """Random writes, reads and truncations (shrinking, then growing again) against a bytearray model."""
    rng = np.random.default_rng(0)
    for trial in range(20):
        path = tmp_path / f"o{trial}.bin"
        base = rng.integers(0, 256, int(rng.integers(0, 20000)), dtype=np.uint8).tobytes()
        path.write_bytes(base)
        model = bytearray(base)
        fd = os.open(path, os.O_RDWR)
        overlay = journal_mod._Overlay(fd)
        for _ in range(30):
            op = rng.integers(0, 3)
            if op == 0:  # write
                pos = int(rng.integers(0, 25000))
                data = rng.integers(0, 256, int(rng.integers(1, 9000)), dtype=np.uint8).tobytes()
                overlay.seek(pos)
                overlay.write(data)
                if pos > len(model):
                    model.extend(bytes(pos - len(model)))
                model[pos : pos + len(data)] = data
            elif op == 1:  # truncate (shrink or grow)
                size = int(rng.integers(0, 25000))
                overlay.truncate(size)
                del model[size:]
                model.extend(bytes(size - len(model)))
            else:  # read
                pos, count = int(rng.integers(0, 26000)), int(rng.integers(0, 9000))
                overlay.seek(pos)
                buffer = bytearray(count)
                n = overlay.readinto(buffer)
                assert bytes(buffer[:n]) == bytes(model[pos : pos + count])
        record = overlay.record()
        journal_mod._apply(fd, record)
        assert path.read_bytes() == bytes(model)
        journal_mod._apply(fd, record)  # again, as recovery after a crash mid-apply does
        os.close(fd)
        assert path.read_bytes() == bytes(model)


def test_one_overlay_serves_many_updates_with_small_unaligned_reads_and_writes(tmp_path: Path) -> None:
    """HDF5's typical access (a few to a few hundred bytes, across page edges), reset between updates."""
    rng = np.random.default_rng(1)
    path = tmp_path / "small.bin"
    base = rng.integers(0, 256, 3 * journal_mod.PAGE + 123, dtype=np.uint8).tobytes()
    path.write_bytes(base)
    model = bytearray(base)
    fd = os.open(path, os.O_RDWR)
    overlay = journal_mod._Overlay(fd)
    for _update in range(5):
        overlay.reset()
        for _ in range(200):
            pos = int(rng.integers(0, len(model) + 2 * journal_mod.PAGE))
            count = int(rng.integers(0, 300))
            if rng.random() < 0.5:
                data = rng.integers(0, 256, count, dtype=np.uint8).tobytes()
                assert overlay.seek(pos) == pos
                assert overlay.write(memoryview(data)) == count
                if pos > len(model):
                    model.extend(bytes(pos - len(model)))
                model[pos : pos + count] = data
            else:
                overlay.seek(pos)
                buffer = memoryview(bytearray(count))
                n = overlay.readinto(buffer)
                assert bytes(buffer[:n]) == bytes(model[pos : pos + count])
        assert overlay.seek(0, 2) == len(model)
        journal_mod._apply(fd, overlay.record())
        assert path.read_bytes() == bytes(model)
    os.close(fd)
