"""Bad numbers and damaged bytes: refused by every reader with their location, found by `data check`.

Files are the session's expert demos (3 PandaPush episodes of 50 steps, 2 QuadrotorHover ones),
edited in place: with :func:`edit_dataset`'s ``reseal`` the file looks as if it had been written
with the bad value (its checksum matches); without it, or with a byte flipped on disk, the file
changed after it was written.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from robot_rl.data import DatasetError, DemoDataset, check, format_check, format_info, info, merge, replay, split
from robot_rl.data.integrity import CHECKSUM_ATTR, digest, nonfinite
from robot_rl.data.merge import remove_stale_temps, temp_path

from .conftest import PUSH, edit_dataset

# (dataset, index of the bad value, the location the message must name)
BAD_VALUES = [
    ("actions", (17, 2), "demo_1/actions step 17 (dimension 2) holds nan"),
    ("obs/observation", (3, 5), "demo_1/obs/observation step 3 (dimension 5) holds nan"),
    ("next_obs/desired_goal", (0, 1), "demo_1/next_obs/desired_goal step 0 (dimension 1) holds nan"),
    ("states", (49, 10), "demo_1/states step 49 (dimension 10) holds nan"),
    ("rewards", (4,), "demo_1/rewards step 4 holds nan"),
]


def _poison(path: Path, key: str, index: tuple[int, ...], value: float = np.nan, demo: str = "demo_1") -> None:
    def put(values: np.ndarray) -> None:
        values[index] = value

    edit_dataset(path, f"data/{demo}/{key}", put)


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))


def _storage(path: Path) -> dict[str, tuple[int, int]]:
    """Dataset path -> (file offset of its data, bytes), for every dataset with contiguous storage."""
    found = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.id.get_offset() is not None:
                found[name] = (obj.id.get_offset(), obj.id.get_storage_size())

        f.visititems(visit)
    return found


def _datasets(f: h5py.File) -> list[tuple[str, h5py.Dataset]]:
    found: list[tuple[str, h5py.Dataset]] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            found.append((f"data/{name}", obj))

    f["data"].visititems(visit)
    return found


def _load_for_training(path: Path, tmp: Path) -> object:
    from robot_rl.policies.data import load_demo_data

    return load_demo_data(path, ("observation", "desired_goal"), 2, 4, successful_only=False)


READERS: dict[str, Callable[[Path, Path], object]] = {
    "iterate": lambda path, tmp: list(DemoDataset(path)),
    "merge": lambda path, tmp: merge(path, None, tmp / "merged.hdf5"),
    "split": lambda path, tmp: split(path),
    "replay": lambda path, tmp: replay(path),
    "training": _load_for_training,
}


class TestNonFiniteValuesAreRefused:
    @pytest.mark.parametrize(("key", "index", "location"), BAD_VALUES)
    def test_the_reader_names_file_demo_key_and_step(self, demo_file, key, index, location) -> None:
        path = demo_file(PUSH)
        _poison(path, key, index)
        with DemoDataset(path) as ds:
            ds[0]  # the other demos read
            with pytest.raises(DatasetError) as err:
                ds["demo_1"]
        message = str(err.value)
        assert message.startswith(f"{path}: {location}; demo files must hold finite numbers")
        assert f"`robot-rl data check {path}`" in message and "\n" not in message

    @pytest.mark.parametrize("value", [np.inf, -np.inf])
    def test_inf_is_refused_like_nan(self, demo_file, value: float) -> None:
        path = demo_file(PUSH)
        _poison(path, "obs/achieved_goal", (8, 0), value)
        with pytest.raises(DatasetError, match=rf"demo_1/obs/achieved_goal step 8 \(dimension 0\) holds {value}"):
            list(DemoDataset(path))

    @pytest.mark.parametrize("reader", list(READERS))
    def test_every_reader_path_refuses_with_the_location(self, demo_file, tmp_path: Path, reader: str) -> None:
        path = demo_file(PUSH)
        _poison(path, "actions", (17, 2))
        with pytest.raises(DatasetError, match=r"demo_1/actions step 17 \(dimension 2\) holds nan"):
            READERS[reader](path, tmp_path)
        assert not (tmp_path / "merged.hdf5").exists()
        assert not list(tmp_path.glob(".merged.hdf5.*"))  # no temporary file left behind
        with h5py.File(path, "r") as f:
            assert "mask" not in f  # split wrote nothing

    def test_info_reports_them_instead_of_failing(self, demo_file) -> None:
        path = demo_file(PUSH)
        _poison(path, "actions", (17, 2))
        _poison(path, "states", (3, 0), np.inf, demo="demo_2")
        summary = info(path)
        assert summary["problems"] == [
            f"{path}: demo_1/actions step 17 (dimension 2) holds nan",
            f"{path}: demo_2/states step 3 (dimension 0) holds inf",
        ]
        assert summary["keys"]["actions"]["nonfinite"] == 1 and summary["keys"]["obs/observation"]["nonfinite"] == 0
        # min/max over the finite values
        with h5py.File(path, "r") as f:
            actions = np.concatenate([f[f"data/demo_{k}/actions"][()] for k in range(3)])
        assert summary["keys"]["actions"]["max"] == np.nanmax(actions, axis=0).tolist()
        text = format_info(summary)
        assert "non-finite |" in text and "problems: 2; training, merge and split refuse this file" in text
        assert f"  {path}: demo_1/actions step 17 (dimension 2) holds nan" in text

    def test_train_bc_refuses_before_writing_a_run(self, demo_file, tmp_path: Path) -> None:
        from robot_rl.policies.train import TrainBC, train

        path = demo_file(PUSH)
        _poison(path, "actions", (17, 2))
        out = tmp_path / "run"
        with pytest.raises(DatasetError, match=r"demo_1/actions step 17 \(dimension 2\) holds nan"):
            train(TrainBC(data=path, out=out, steps=2, eval_episodes=0, progress=False))
        assert not out.exists()

    def test_train_diffusion_refuses_one_inf_observation_per_demo(self, demo_file, tmp_path: Path) -> None:
        from robot_rl.policies.train import TrainDiffusion, train

        path = demo_file(PUSH)
        for k in range(3):
            _poison(path, "obs/observation", (10 + k, 0), np.inf, demo=f"demo_{k}")
        out = tmp_path / "run"
        with pytest.raises(DatasetError, match=r"demo_0/obs/observation step 10 \(dimension 0\) holds inf"):
            train(TrainDiffusion(data=path, out=out, steps=2, eval_episodes=0, progress=False))
        assert not out.exists()

    def test_the_cli_prints_one_line_and_exits_2(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        _poison(path, "actions", (17, 2))
        out = subprocess.run(
            [sys.executable, "-m", "robot_rl.cli.main", "train", "bc", "--data", str(path), "--out", f"{tmp_path}/r"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 2
        assert out.stderr.strip() == (
            f"robot-rl: error: {path}: demo_1/actions step 17 (dimension 2) holds nan; demo files must hold finite "
            f"numbers (check with `robot-rl data check {path}`)"
        )
        assert not (tmp_path / "r").exists()

    def test_nonfinite_finds_the_first_bad_value_and_counts_them(self) -> None:
        values = np.zeros((4, 3))
        assert nonfinite(values) is None
        assert nonfinite(np.full((2, 2), 1e308)) is None  # the sum overflows; the values are finite
        assert nonfinite(np.ones(3, dtype=bool)) is None
        values[2, 1], values[3, 0] = np.nan, -np.inf
        found = nonfinite(values)
        assert found is not None and found.index == (2, 1) and np.isnan(found.value) and found.count == 2
        assert found.describe() == "step 2 (dimension 1) holds nan (and 1 more non-finite values)"


class TestChecksums:
    def test_collect_stores_the_digest_of_every_dataset(self, demo_file) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r") as f:
            datasets = [obj for _, obj in _datasets(f)]
            assert len(datasets) == 3 * 10  # 3 demos: obs and next_obs of 3 keys, actions, rewards, dones, states
            for dset in datasets:
                assert dset.attrs[CHECKSUM_ATTR] == digest(dset[()]).encode(), dset.name
                assert dset.attrs.get_id(CHECKSUM_ATTR).dtype == "S64"  # fixed length: in the object header
        report = check(path)
        assert report["ok"] and report["verified"] == 30 and report["without_checksums"] == []
        assert format_check(report) == (
            f"{path}: ok: 3 demos, 150 steps, 30 datasets; 30 match their sha256 checksums; every number is finite"
        )

    def test_the_digest_covers_dtype_and_shape(self) -> None:
        values = np.arange(6, dtype=np.float64)
        assert digest(values) != digest(values.reshape(2, 3))
        assert digest(values) != digest(values.view(np.int64))
        assert digest(values) == digest(values.copy()) and len(digest(values)) == 64

    def test_an_old_file_is_reported_unverified_and_merge_adds_them(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r+") as f:  # as written before checksums existed
            for name in [n for n, obj in _datasets(f) if CHECKSUM_ATTR in obj.attrs]:
                del f[name].attrs[CHECKSUM_ATTR]
        report = check(path)
        assert report["ok"] and report["verified"] == 0
        assert report["without_checksums"] == ["demo_0", "demo_1", "demo_2"]
        text = format_check(report)
        assert "no checksums on 3 of 3 demos" in text and f"`robot-rl data merge {path} --out NEW.hdf5`" in text
        assert info(path)["checksums"] == {"verified_datasets": 0, "demos_without": 3}
        new = tmp_path / "new.hdf5"
        summary = merge(path, None, new)
        assert summary["episodes"] == 3
        assert check(new)["verified"] == 30
        with DemoDataset(path) as old, DemoDataset(new) as ds:
            np.testing.assert_array_equal(ds[2].states, old[2].states)

    def test_a_dataset_without_its_checksum_beside_sealed_ones_is_a_problem(self, demo_file) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r+") as f:
            del f["data/demo_0/rewards"].attrs[CHECKSUM_ATTR]
        report = check(path)
        assert report["problems"] == [
            f"{path}: demo_0/rewards lacks the sha256 checksum its demo's other datasets have"
        ]

    def test_split_masks_carry_checksums(self, demo_file) -> None:
        path = demo_file(PUSH)
        split(path, val_fraction=0.34)
        with h5py.File(path, "r") as f:
            for key in ("train", "valid"):
                assert f[f"mask/{key}"].attrs[CHECKSUM_ATTR] == digest(f[f"mask/{key}"][()]).encode()
        assert check(path)["verified"] == 32


class TestDamagedBytes:
    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    def test_a_flipped_byte_in_any_dataset_is_found(self, demo_file, tmp_path: Path, where: str) -> None:
        clean = demo_file(PUSH)
        storage = _storage(clean)
        assert len(storage) == 30
        for name, (offset, size) in storage.items():
            path = tmp_path / "flipped.hdf5"
            shutil.copy(clean, path)
            _flip(path, offset + {"first": 0, "middle": size // 2, "last": size - 1}[where])
            report = check(path)
            where_in_file = name.removeprefix("data/")
            assert not report["ok"], name
            assert report["problems"][0].startswith(f"{path}: {where_in_file} does not match its sha256 checksum")
            assert "1 checksum mismatch" in format_check(report).splitlines()[-1]
            demo = where_in_file.split("/")[0]
            with DemoDataset(path) as ds, pytest.raises(DatasetError) as err:
                ds[demo]
            assert f"{where_in_file} does not match its sha256 checksum" in str(err.value)
            assert "damaged after it was written" in str(err.value)

    def test_a_flipped_byte_that_makes_a_nan_is_reported_with_both(self, demo_file) -> None:
        path = demo_file(PUSH)
        offset, _ = _storage(path)["data/demo_2/actions"]
        with open(path, "r+b") as fh:  # step 0, dimension 0 becomes a NaN (exponent bits all set)
            fh.seek(offset + 6)
            fh.write(b"\xf8\x7f")
        report = check(path)
        assert report["problems"] == [
            f"{path}: demo_2/actions does not match its sha256 checksum (stored "
            + report["problems"][0].split("(stored ")[1],
            f"{path}: demo_2/actions step 0 (dimension 0) holds nan",
        ]
        assert report["counts"] == {"checksum": 1, "nonfinite": 1}

    def test_damaged_metadata_is_called_corrupt_not_another_kind_of_file(self, demo_file, tmp_path: Path) -> None:
        clean = demo_file(PUSH)
        first_data = min(offset for offset, _ in _storage(clean).values())
        corrupt = 0
        for offset in range(0, first_data, 29):
            path = tmp_path / "flipped.hdf5"
            shutil.copy(clean, path)
            _flip(path, offset)
            try:
                list(DemoDataset(path))
            except DatasetError as err:
                message = str(err)
                assert str(path) in message and "Traceback" not in message and "synchronously" not in message
                assert "no group 'data'" not in message and "lacks obs" not in message, (offset, message)
                corrupt += "is corrupt" in message
        assert corrupt > 10  # most metadata damage fails HDF5's own checksums

    def test_the_check_cli_exits_2_on_damage_and_0_when_clean(self, demo_file) -> None:
        path = demo_file(PUSH)

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, "-m", "robot_rl.cli.main", "data", "check", str(path)],
                capture_output=True,
                text=True,
                timeout=120,
            )

        clean = run()
        assert clean.returncode == 0 and clean.stdout.startswith(f"{path}: ok: 3 demos"), clean.stderr
        offset, size = _storage(path)["data/demo_1/states"]
        _flip(path, offset + size // 2)
        damaged = run()
        assert damaged.returncode == 2
        lines = damaged.stdout.strip().splitlines()
        assert lines[0].startswith(f"{path}: demo_1/states does not match its sha256 checksum")
        assert lines[-1].startswith(f"{path}: 1 problem (1 checksum mismatch) in 3 demos, 150 steps")


class TestMerge:
    def test_the_same_file_twice_is_refused(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        with pytest.raises(DatasetError, match="is given twice: merging a file with itself would write every demo"):
            merge(path, path, tmp_path / "out.hdf5")
        copy = tmp_path / "copy.hdf5"
        shutil.copy(path, copy)
        with pytest.raises(DatasetError) as err:
            merge(path, copy, tmp_path / "out.hdf5")
        assert str(err.value).startswith(
            f"{copy}:demo_0 is the same demo as {path}:demo_0 (seed 0, identical states, actions and observations)"
        )
        assert "--drop-duplicates" in str(err.value)
        assert not (tmp_path / "out.hdf5").exists() and not list(tmp_path.glob(".out.hdf5.*"))

    def test_drop_duplicates_keeps_the_first_copy(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        copy = tmp_path / "copy.hdf5"
        shutil.copy(path, copy)
        summary = merge(path, copy, tmp_path / "out.hdf5", drop_duplicates=True)
        assert summary["episodes"] == 3 and summary["steps"] == 150
        assert summary["dropped_duplicates"] == [f"{copy}:demo_{k}" for k in range(3)]
        with DemoDataset(tmp_path / "out.hdf5") as ds:
            assert ds.meta.total == 150

    def test_a_stale_temporary_file_of_a_killed_merge_is_removed(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        out = tmp_path / "merged.hdf5"
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # a pid no process has any more
        stale = temp_path(out, dead.pid)
        stale.write_bytes(b"\0" * 4096)
        live = temp_path(out, os.getppid())  # a merge still running
        live.write_bytes(b"\0")
        other = tmp_path / ".other.hdf5.1.tmp"
        other.write_bytes(b"\0")
        summary = merge(path, None, out)
        assert summary["removed_stale"] == [str(stale)]
        assert not stale.exists() and live.exists() and other.exists()
        assert remove_stale_temps(out) == []

    def test_a_killed_merge_leaves_a_temporary_file_the_next_one_removes(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        out = tmp_path / "merged.hdf5"
        code = (
            "import os, signal, h5py\n"
            "from robot_rl.data import merge\n"
            "copy = h5py.Group.copy\n"
            "def copy_then_die(self, *a, **k):\n"
            "    copy(self, *a, **k)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "h5py.Group.copy = copy_then_die\n"
            f"merge({str(path)!r}, None, {str(out)!r})\n"
        )
        killed = subprocess.run([sys.executable, "-c", code], timeout=120)
        assert killed.returncode == -signal.SIGKILL
        left = list(tmp_path.glob(".merged.hdf5.*.tmp"))
        assert len(left) == 1 and not out.exists()
        summary = merge(path, None, out)
        assert summary["removed_stale"] == [str(left[0])] and not left[0].exists()
        assert check(out)["ok"]

    def test_a_failed_merge_removes_its_temporary_file(self, demo_file, tmp_path: Path) -> None:
        path = demo_file(PUSH)
        _poison(path, "actions", (5, 0), demo="demo_2")  # found after two demos are written
        with pytest.raises(DatasetError, match="cannot merge: .*demo_2/actions step 5"):
            merge(path, None, tmp_path / "out.hdf5")
        assert list(tmp_path.iterdir()) == [path]


def test_replay_names_file_demo_and_step_when_the_env_refuses_an_action(demo_file, monkeypatch) -> None:
    import gymnasium as gym

    from robot_rl.envs import registry

    class RefusesStep7(gym.Wrapper):
        def step(self, action: np.ndarray) -> tuple:
            if self.env.unwrapped.data.time > 0 and getattr(self, "steps", 0) == 7:
                raise ValueError("action must be finite; entries [0] are NaN or inf")
            self.steps = getattr(self, "steps", 0) + 1
            return self.env.step(action)

    real_make = registry.make
    monkeypatch.setattr(registry, "make", lambda *a, **k: RefusesStep7(real_make(*a, **k)))
    path = demo_file(PUSH)
    with pytest.raises(ValueError) as err:
        replay(path)
    assert str(err.value) == f"{path}: demo_0/actions step 7: action must be finite; entries [0] are NaN or inf"


def test_training_windows_refuse_a_policy_input_that_is_not_finite() -> None:
    from types import SimpleNamespace

    from robot_rl.policies.base import ObsLayout
    from robot_rl.policies.data import _windows

    # Finite in the file; a (hypothetical) feature makes a NaN out of it: the guard after flattening names it.
    obs = {"observation": np.zeros((5, 2)), "desired_goal": np.zeros((5, 3))}
    obs["observation"][3, 1] = np.nan
    demo = SimpleNamespace(name="demo_4", obs=obs, actions=np.zeros((5, 2)))
    layout = ObsLayout(("observation", "desired_goal"), ((2,), (3,)))
    with pytest.raises(DatasetError, match=r"demos.hdf5: demo_4 step 3: the policy input .* holds nan \(column 1\)"):
        _windows([demo], layout, 2, 4, ["demo_4"], [0], Path("demos.hdf5"))
