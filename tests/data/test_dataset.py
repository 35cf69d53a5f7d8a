"""Reading and checking files: bad files refused readably, info numbers, merge, split, replay, render."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from robot_rl.data import DatasetError, DemoDataset, info, merge, render, replay, split
from robot_rl.data.dataset import format_info
from robot_rl.data.replay import format_replay

from .conftest import HOVER, PUSH, edit_dataset


def _refusal(path: Path) -> str:
    with pytest.raises(DatasetError) as err:
        DemoDataset(path)
    message = str(err.value)
    assert str(path) in message
    # Our words, not a raw h5py traceback.
    assert "synchronously" not in message and "Traceback" not in message
    return message


class TestBadFilesAreRefused:
    @pytest.mark.parametrize("cut", [1, 4096, 0.5])
    def test_truncated_file(self, demo_file, cut: float) -> None:
        path = demo_file(PUSH)
        size = path.stat().st_size
        keep = size - cut if isinstance(cut, int) else int(size * cut)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        message = _refusal(path)
        assert "truncated" in message and f"{keep:,} bytes" in message and f"{size:,} bytes" in message
        assert "Copy it again" in message

    def test_not_hdf5(self, tmp_path: Path) -> None:
        path = tmp_path / "demos.hdf5"
        path.write_text("episode,action\n0,0.1\n")
        message = _refusal(path)
        assert "not an HDF5 file" in message and "robot-rl collect" in message

    def test_empty_missing_and_directory(self, tmp_path: Path) -> None:
        empty = tmp_path / "empty.hdf5"
        empty.touch()
        assert "empty" in _refusal(empty)
        assert "no such file" in _refusal(tmp_path / "missing.hdf5")
        assert "directory" in _refusal(tmp_path)

    def test_foreign_hdf5(self, tmp_path: Path) -> None:
        path = tmp_path / "other.h5"
        with h5py.File(path, "w") as f:
            f["images"] = np.zeros((2, 3))
        message = _refusal(path)
        assert "not a robot_rl demonstration file" in message and "images" in message

    def test_robomimic_file_without_our_attributes(self, tmp_path: Path) -> None:
        path = tmp_path / "robomimic.hdf5"
        with h5py.File(path, "w") as f:
            f.create_group("data/demo_0").attrs["num_samples"] = 0
        message = _refusal(path)
        assert "env_id" in message and "robot-rl collect" in message

    def test_missing_key(self, demo_file) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r+") as f:
            del f["data/demo_1/states"]
            del f["data/demo_1/next_obs/achieved_goal"]
        message = _refusal(path)
        assert "data/demo_1 lacks next_obs/achieved_goal, states" in message

    def test_mismatched_lengths(self, demo_file) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r+") as f:
            actions = f["data/demo_2/actions"][()]
            del f["data/demo_2/actions"]
            f["data/demo_2/actions"] = actions[:-1]
        message = _refusal(path)
        assert "data/demo_2/actions has shape (49, 4), expected (50, ...)" in message

    def test_recorder_refuses_to_append_to_a_bad_file(self, tmp_path: Path) -> None:
        from robot_rl.data import collect

        path = tmp_path / "notes.hdf5"
        path.write_text("not a dataset")
        with pytest.raises(DatasetError, match="not an HDF5 file"):
            collect(PUSH, "expert", 1, path, progress=False)
        assert path.read_text() == "not a dataset"


class TestInfo:
    def test_numbers_match_the_arrays(self, demo_file) -> None:
        path = demo_file(PUSH)
        summary = info(path)
        with DemoDataset(path) as ds:
            demos = list(ds)
        assert summary["env_id"] == PUSH
        assert summary["episodes"] == 3
        assert summary["steps"] == 150
        assert summary["success_rate"] == np.mean([d.success for d in demos]) == 1.0
        assert summary["mean_length"] == 50.0
        assert summary["interventions"] is None
        actions = np.concatenate([d.actions for d in demos])
        assert summary["keys"]["actions"]["shape"] == [4]
        assert summary["keys"]["actions"]["min"] == actions.min(axis=0).tolist()
        assert summary["keys"]["actions"]["max"] == actions.max(axis=0).tolist()
        observation = np.concatenate([d.obs["observation"] for d in demos])
        assert summary["keys"]["obs/observation"]["shape"] == [25]
        assert summary["keys"]["obs/observation"]["max"] == observation.max(axis=0).tolist()
        assert summary["keys"]["rewards"]["shape"] == []
        assert summary["keys"]["states"]["shape"] == [demos[0].states.shape[1]]
        text = format_info(summary)
        assert "episodes 3  steps 150  success rate 1.000" in text and "| obs/observation | (25,) |" in text


class TestMergeAndSplit:
    def test_merge_renumbers_and_records_origins(self, demo_file, tmp_path: Path) -> None:
        from robot_rl.data import collect

        a = demo_file(PUSH)
        b = tmp_path / "b.hdf5"
        collect(PUSH, "expert", 2, b, seed=100, progress=False)
        out = tmp_path / "merged.hdf5"
        summary = merge(a, b, out)
        assert summary["episodes"] == 5 and summary["steps"] == 250
        with DemoDataset(out) as ds, DemoDataset(b) as src:
            assert ds.demo_names == [f"demo_{k}" for k in range(5)]
            assert ds.meta.total == 250
            np.testing.assert_array_equal(ds[4].actions, src[1].actions)
            f = ds._require_open()
            assert f["data/demo_4"].attrs["origin"] == f"{b}:demo_1"

    def test_merge_refuses_different_envs_and_existing_outputs(self, demo_file, tmp_path: Path) -> None:
        push, hover = demo_file(PUSH), demo_file(HOVER)
        with pytest.raises(DatasetError, match="QuadrotorHover.*Only demonstrations of the same env"):
            merge(push, hover, tmp_path / "mixed.hdf5")
        assert not (tmp_path / "mixed.hdf5").exists()
        with pytest.raises(DatasetError, match="already exists"):
            merge(push, push, hover)

    def test_split_stores_robomimic_masks(self, demo_file) -> None:
        path = demo_file(PUSH)
        train, valid = split(path, val_fraction=0.34, seed=1)
        assert len(valid) == 1 and len(train) == 2
        assert sorted(train + valid, key=lambda n: int(n[5:])) == ["demo_0", "demo_1", "demo_2"]
        assert split(path, val_fraction=0.34, seed=1) == (train, valid)  # deterministic, replaces
        with h5py.File(path, "r") as f:  # as robomimic reads filter keys
            assert [e.decode("utf-8") for e in np.array(f["mask/train"][:])] == train
            assert [e.decode("utf-8") for e in np.array(f["mask/valid"][:])] == valid
        assert info(path)["masks"] == {"train": 2, "valid": 1}
        with pytest.raises(ValueError, match="val_fraction"):
            split(path, val_fraction=1.0)


class TestReplay:
    @pytest.mark.parametrize("env_id", [PUSH, HOVER])
    def test_expert_demos_replay_exactly(self, demo_file, env_id: str) -> None:
        report = replay(demo_file(env_id))
        assert report["episodes"] >= 2
        # Target <= 1e-6; the simulation is deterministic, so the replay is bit for bit.
        assert report["max_state_deviation"] <= 1e-6
        assert report["max_state_deviation"] == 0.0
        assert report["max_obs_deviation"] == 0.0
        assert report["reset_state_deviation"] == 0.0
        assert report["success_mismatches"] == 0
        assert "max state deviation 0" in format_replay(report)

    def test_a_changed_action_shows_up_as_a_deviation(self, demo_file) -> None:
        path = demo_file(PUSH)

        def negate_step_10(actions: np.ndarray) -> None:
            actions[10] = -actions[10]

        edit_dataset(path, "data/demo_0/actions", negate_step_10)  # a file written with that action
        report = replay(path, episodes=[0])
        assert report["max_state_deviation"] > 1e-4
        assert report["per_episode"][0]["worst_step"] > 10


@pytest.mark.skipif(os.environ.get("MUJOCO_GL") not in ("osmesa", "egl"), reason="needs offscreen GL (MUJOCO_GL)")
def test_render_writes_a_frame_per_saved_state(demo_file, tmp_path: Path) -> None:
    import imageio.v2 as imageio

    out = tmp_path / "demo.mp4"
    # OSMesa renders about 10 frames/s here: every 10th of the 50 saved states.
    result = render(demo_file(PUSH), out, episodes=["demo_1"], width=160, height=120, stride=10)
    assert result["frames"] == 5 and result["fps"] == 2
    reader = imageio.get_reader(out)
    assert reader.count_frames() == 5
    assert reader.get_data(0).shape == (120, 160, 3)
    reader.close()
