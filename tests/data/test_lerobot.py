"""LeRobotDataset v3.0 export and import: the round trip bit for bit, the layout LeRobot reads, and the refusals.

All but the last class run without lerobot (pyarrow alone). ``TestLeRobotReadsIt`` runs LeRobot's own
``LeRobotDataset`` and a few training steps through bench/lerobot_check.py in the LeRobot venv
(docs/interop.md), and is skipped where that venv is absent.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from robot_rl.cli.main import main  # noqa: E402
from robot_rl.data import lerobot_format as fmt  # noqa: E402
from robot_rl.data import split  # noqa: E402
from robot_rl.data.dataset import DemoDataset  # noqa: E402
from robot_rl.data.integrity import CHECKSUM_ATTR, checksum_value, digest  # noqa: E402
from robot_rl.data.lerobot import export_lerobot, import_lerobot  # noqa: E402
from robot_rl.data.lerobot_import import write_demo_file  # noqa: E402
from robot_rl.data.schema import DatasetError  # noqa: E402

from .conftest import HOVER, PUSH, edit_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GL = os.environ.get("MUJOCO_GL") in ("osmesa", "egl")


def contents(path: Path) -> tuple[dict, dict, dict]:
    """Per demo: the sha256 of every dataset (dtype, shape and bytes) and its labels; the file's metadata; masks."""
    with DemoDataset(path) as ds:
        demos = {}
        for name in ds.demo_names:
            demo, digests, problems = ds.inspect(name, want_digests=True)
            assert not problems, problems
            labels = (demo.seed, demo.success, demo.env_success, demo.source, demo.randomization)
            demos[name] = (digests, labels)
        meta = dataclasses.asdict(ds.meta)
        for volatile in ("created", "updated"):
            meta.pop(volatile)
        return demos, meta, ds.masks()


def tiny(src: Path, out: Path, steps: int, demos: int = 2) -> Path:
    """A demo file of the first ``steps`` steps of ``src``'s first ``demos`` demos (real states, quick to render)."""
    with DemoDataset(src) as ds:
        meta = ds.meta
        cut = []
        for i in range(demos):
            d = ds[i]
            cut.append(
                dataclasses.replace(
                    d,
                    obs={k: v[:steps] for k, v in d.obs.items()},
                    next_obs={k: v[:steps] for k, v in d.next_obs.items()},
                    actions=d.actions[:steps],
                    rewards=d.rewards[:steps],
                    dones=d.dones[:steps],
                    states=d.states[:steps],
                )
            )
    write_demo_file(out, meta, cut, {}, origin="test")
    return out


def replace_dataset(path: Path, key: str, values: np.ndarray) -> None:
    """Put ``values`` (any shape) at ``key`` with its checksum, as if recorded so."""
    with h5py.File(path, "r+") as f:
        if key in f:
            del f[key]
        f.create_dataset(key, data=values).attrs[CHECKSUM_ATTR] = checksum_value(digest(values))


def run_cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["robot-rl", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("robot-rl: error: "), err
    assert "Traceback" not in err
    return lines[0]


class TestRoundTrip:
    @pytest.mark.parametrize("env_id", [PUSH, HOVER])
    def test_import_gives_back_every_dataset_bit_for_bit(self, env_id, demo_file, tmp_path):
        src = demo_file(env_id)
        split(src, 0.34, seed=1)
        export_lerobot(src, tmp_path / "ds")
        back = tmp_path / "back.hdf5"
        summary = import_lerobot(tmp_path / "ds", back)
        assert summary["env_id"] == env_id and summary["skipped"] == []
        assert contents(back) == contents(src)
        assert contents(back)[2]["valid"]  # the masks came back

    def test_the_cli_round_trip(self, demo_file, tmp_path, monkeypatch, capsys):
        code, out, _ = run_cli(
            ["data", "export-lerobot", str(demo_file(PUSH)), "--out", str(tmp_path / "ds")], monkeypatch, capsys
        )
        assert code == 0 and "3 episodes, 150 frames at 25 fps" in out, out
        code, out, _ = run_cli(
            ["data", "import-lerobot", str(tmp_path / "ds"), "--out", str(tmp_path / "b.hdf5")], monkeypatch, capsys
        )
        assert code == 0 and "3 demos (150 steps) of robot_rl/PandaPush-v0" in out, out
        assert contents(tmp_path / "b.hdf5") == contents(demo_file(PUSH))

    def test_interventions_and_missing_states_come_back(self, demo_file, tmp_path):
        src = demo_file(PUSH)
        for k in range(3):  # demos without simulator states but with interventions, as converted from a ROS bag
            replace_dataset(src, f"data/demo_{k}/states", np.zeros((50, 0)))
            replace_dataset(src, f"data/demo_{k}/interventions", np.arange(50) % (7 + k) == 0)
        export_lerobot(src, tmp_path / "ds")
        features = json.loads((tmp_path / "ds" / fmt.INFO_PATH).read_text())["features"]
        assert fmt.INTERVENTION in features and fmt.SIM_STATE not in features
        import_lerobot(tmp_path / "ds", tmp_path / "back.hdf5")
        assert contents(tmp_path / "back.hdf5") == contents(src)
        with DemoDataset(tmp_path / "back.hdf5") as ds:
            assert ds[1].interventions.sum() == 7 and ds[2].states.shape == (50, 0)

    def test_many_data_files_round_trip(self, demo_file, tmp_path, monkeypatch):
        monkeypatch.setattr(fmt, "DATA_FILE_MB", 1e-6)  # a new data file after every episode
        summary = export_lerobot(demo_file(PUSH), tmp_path / "ds")
        assert summary["data_files"] == 3
        episodes = pq.read_table(tmp_path / "ds" / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0))
        assert episodes.column("data/file_index").to_pylist() == [0, 1, 2]
        import_lerobot(tmp_path / "ds", tmp_path / "back.hdf5")
        assert contents(tmp_path / "back.hdf5") == contents(demo_file(PUSH))

    def test_a_dataset_without_the_robot_rl_block_imports_with_env(self, demo_file, tmp_path):
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        info_path = tmp_path / "ds" / fmt.INFO_PATH
        info = json.loads(info_path.read_text())
        del info["robot_rl"]
        info_path.write_text(json.dumps(info))
        with pytest.raises(DatasetError, match="pass --env ID"):
            import_lerobot(tmp_path / "ds", tmp_path / "a.hdf5")
        import_lerobot(tmp_path / "ds", tmp_path / "b.hdf5", env_id=PUSH)
        theirs, mine = contents(tmp_path / "b.hdf5"), contents(demo_file(PUSH))
        assert theirs[0] == mine[0]  # arrays and labels (from the episodes' columns)
        assert theirs[1]["env_id"] == PUSH and theirs[1]["ctrl_dt"] == pytest.approx(0.04)


class TestSchema:
    @pytest.fixture
    def exported(self, demo_file, tmp_path) -> Path:
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        return tmp_path / "ds"

    def test_info_json_is_lerobots_v3_layout(self, exported):
        info = json.loads((exported / fmt.INFO_PATH).read_text())
        assert info["codebase_version"] == "v3.0" and info["fps"] == 25 and info["robot_type"] == "fr3"
        assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (3, 150, 1)
        assert info["splits"] == {"train": "0:3"} and info["video_path"] is None
        assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        features = info["features"]
        expected = {
            "observation.state": ("float64", [25]),
            "observation.environment_state": ("float64", [6]),
            "action": ("float64", [4]),
            "next.reward": ("float64", [1]),
            "next.done": ("bool", [1]),
            "next.success": ("bool", [1]),
            "next.observation.state": ("float64", [25]),
            "next.observation.environment_state": ("float64", [6]),
            "complementary_info.mujoco_state": ("float64", [features["complementary_info.mujoco_state"]["shape"][0]]),
            "timestamp": ("float32", [1]),
            "frame_index": ("int64", [1]),
            "episode_index": ("int64", [1]),
            "index": ("int64", [1]),
            "task_index": ("int64", [1]),
        }
        assert {k: (v["dtype"], v["shape"]) for k, v in features.items()} == expected
        assert features["observation.environment_state"]["names"][:2] == ["achieved_goal.x", "achieved_goal.y"]
        assert info["robot_rl"]["env_id"] == PUSH and info["robot_rl"]["ctrl_dt"] == 0.04

    def test_frames_are_typed_columns_with_lerobots_indices(self, exported, demo_file):
        table = pq.read_table(exported / fmt.DATA_PATH.format(chunk_index=0, file_index=0))
        assert table.schema.field("observation.state").type == pa.list_(pa.float64(), 25)
        assert table.schema.field("next.done").type == pa.bool_()
        assert table.schema.field("timestamp").type == pa.float32()
        assert b"huggingface" in table.schema.metadata
        frame_index = table.column("frame_index").to_numpy()
        assert table.column("index").to_pylist() == list(range(150))
        assert (frame_index == np.tile(np.arange(50), 3)).all()
        assert table.column("episode_index").to_pylist() == [0] * 50 + [1] * 50 + [2] * 50
        assert np.array_equal(table.column("timestamp").to_numpy(), (frame_index / 25).astype(np.float32))
        success = table.column("next.success").to_numpy(zero_copy_only=False).reshape(3, 50)
        with DemoDataset(demo_file(PUSH)) as ds:
            actions = np.concatenate([d.actions for d in ds])
            labels = [d.env_success for d in ds]
        assert np.array_equal(fmt.column_values(table, "action", 4), actions)
        assert success[:, -1].tolist() == labels and not success[:, :-1].any()

    def test_episodes_tasks_and_stats(self, exported, demo_file):
        episodes = pq.read_table(exported / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)).to_pydict()
        assert episodes["episode_index"] == [0, 1, 2] and episodes["length"] == [50, 50, 50]
        assert episodes["dataset_from_index"] == [0, 50, 100] and episodes["dataset_to_index"] == [50, 100, 150]
        assert episodes["tasks"] == [["Franka Panda: push a cube to a goal on the table (sparse reward)"]] * 3
        with DemoDataset(demo_file(PUSH)) as ds:
            assert episodes["success"] == [d.success for d in ds] and episodes["seed"] == ds.seeds()
            actions = np.concatenate([d.actions for d in ds])
        assert episodes["stats/action/count"][1] == [50]
        tasks = pq.read_table(exported / fmt.TASKS_PATH)
        pandas_meta = json.loads(tasks.schema.metadata[b"pandas"])
        assert pandas_meta["index_columns"] == ["__index_level_0__"]
        assert tasks.column("task_index").to_pylist() == [0]
        stats = json.loads((exported / fmt.STATS_PATH).read_text())
        assert set(stats) == set(json.loads((exported / fmt.INFO_PATH).read_text())["features"])
        assert set(stats["action"]) == set(fmt.STAT_KEYS)
        assert np.allclose(stats["action"]["mean"], actions.mean(axis=0))
        assert np.allclose(stats["action"]["q50"], np.median(actions, axis=0))
        assert stats["action"]["count"] == [150] and stats["next.done"]["max"] == [True]

    def test_image_stats_match_the_pixels(self):
        frames = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
        stats = fmt.image_stats(fmt.pixel_histogram(frames), 4)
        per_channel = frames.reshape(-1, 3) / 255.0
        assert np.allclose(np.asarray(stats["mean"]).reshape(3), per_channel.mean(axis=0))
        assert np.allclose(np.asarray(stats["std"]).reshape(3), per_channel.std(axis=0))
        assert np.asarray(stats["max"]).shape == (3, 1, 1) and stats["count"] == [4]
        assert np.allclose(
            np.asarray(stats["q50"]).reshape(3), np.quantile(per_channel, 0.5, axis=0, method="inverted_cdf")
        )

    @pytest.mark.skipif(not GL, reason="needs offscreen GL (MUJOCO_GL)")
    def test_video_is_one_mp4_of_every_episode_in_order(self, demo_file, tmp_path):
        import imageio.v2 as imageio

        src = tiny(demo_file(PUSH), tmp_path / "tiny.hdf5", steps=5)
        summary = export_lerobot(src, tmp_path / "ds", video=True, width=64, height=48)
        assert summary["video_files"] == 1
        info = json.loads((tmp_path / "ds" / fmt.INFO_PATH).read_text())
        camera = info["features"]["observation.images.front"]
        assert camera["dtype"] == "video" and camera["shape"] == [48, 64, 3] and camera["info"]["video.fps"] == 25
        assert info["video_path"] == fmt.VIDEO_PATH
        episodes = pq.read_table(tmp_path / "ds" / fmt.EPISODES_PATH.format(chunk_index=0, file_index=0)).to_pydict()
        key = "videos/observation.images.front"
        assert episodes[f"{key}/from_timestamp"] == [0.0, 0.2] and episodes[f"{key}/to_timestamp"] == [0.2, 0.4]
        video = (
            tmp_path / "ds" / fmt.VIDEO_PATH.format(video_key="observation.images.front", chunk_index=0, file_index=0)
        )
        reader = imageio.get_reader(video)
        frames = [reader.get_data(i) for i in range(reader.count_frames())]
        reader.close()
        assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
        stats = json.loads((tmp_path / "ds" / fmt.STATS_PATH).read_text())["observation.images.front"]
        assert np.asarray(stats["mean"]).shape == (3, 1, 1) and stats["count"] == [10]
        # H.264 is lossy; the decoded video's mean colour stays within a few levels of the rendered frames'.
        decoded = np.mean(np.stack(frames).reshape(-1, 3), axis=0) / 255.0
        assert np.allclose(decoded, np.asarray(stats["mean"]).reshape(3), atol=0.02)
        summary = import_lerobot(tmp_path / "ds", tmp_path / "back.hdf5")
        assert summary["skipped"] == ["observation.images.front"]
        assert contents(tmp_path / "back.hdf5")[0] == contents(src)[0]


class TestRefusals:
    def test_export_of_a_nan_names_demo_key_and_step(self, demo_file, tmp_path, monkeypatch, capsys):
        src = demo_file(PUSH)
        edit_dataset(src, "data/demo_1/actions", lambda a: a.__setitem__((7, 2), np.nan))
        code, _, err = run_cli(["data", "export-lerobot", str(src), "--out", str(tmp_path / "ds")], monkeypatch, capsys)
        line = one_line_error(code, err)
        assert "cannot export" in line and "demo_1/actions step 7 (dimension 2) holds nan" in line, line
        assert not (tmp_path / "ds").exists() and not list(tmp_path.glob(".ds.*"))

    def test_export_of_changed_bytes_is_refused(self, demo_file, tmp_path):
        src = demo_file(PUSH)
        edit_dataset(src, "data/demo_2/obs/observation", lambda a: a.__setitem__((3, 0), 9.0), reseal=False)
        with pytest.raises(DatasetError, match="demo_2/obs/observation does not match its sha256"):
            export_lerobot(src, tmp_path / "ds")

    def test_import_names_an_unknown_feature_and_the_valid_ones(self, demo_file, tmp_path, monkeypatch, capsys):
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        info_path = tmp_path / "ds" / fmt.INFO_PATH
        info = json.loads(info_path.read_text())
        info["features"]["observation.wrist_force"] = {"dtype": "float32", "shape": [6], "names": None}
        info_path.write_text(json.dumps(info))
        out = tmp_path / "b.hdf5"
        code, _, err = run_cli(["data", "import-lerobot", str(tmp_path / "ds"), "--out", str(out)], monkeypatch, capsys)
        line = one_line_error(code, err)
        assert "unknown LeRobot feature 'observation.wrist_force'" in line, line
        assert "a robot_rl demo needs observation.state, observation.environment_state, action" in line, line
        assert not out.exists()

    def test_import_names_a_missing_feature(self, demo_file, tmp_path):
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        info_path = tmp_path / "ds" / fmt.INFO_PATH
        info = json.loads(info_path.read_text())
        del info["features"]["next.reward"]
        info_path.write_text(json.dumps(info))
        with pytest.raises(DatasetError, match="missing feature next.reward; a robot_rl demo needs"):
            import_lerobot(tmp_path / "ds", tmp_path / "b.hdf5")

    def test_import_of_a_nan_names_episode_feature_and_frame(self, demo_file, tmp_path):
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        path = tmp_path / "ds" / fmt.DATA_PATH.format(chunk_index=0, file_index=0)
        table = pq.read_table(path)
        actions = fmt.column_values(table, "action", 4).copy()
        actions[57, 1] = np.inf  # episode 1, frame 7
        column = pa.FixedSizeListArray.from_arrays(pa.array(actions.reshape(-1)), 4)
        pq.write_table(table.set_column(table.schema.get_field_index("action"), "action", column), path)
        with pytest.raises(DatasetError, match=r"episode 1, feature action: frame 7 \(dimension 1\) holds inf"):
            import_lerobot(tmp_path / "ds", tmp_path / "b.hdf5")
        assert not (tmp_path / "b.hdf5").exists()

    def test_import_of_another_envs_dataset_is_refused(self, demo_file, tmp_path):
        export_lerobot(demo_file(PUSH), tmp_path / "ds")
        with pytest.raises(DatasetError, match="holds demos of robot_rl/PandaPush-v0 .* --env says"):
            import_lerobot(tmp_path / "ds", tmp_path / "b.hdf5", env_id=HOVER)
        info_path = tmp_path / "ds" / fmt.INFO_PATH
        info = json.loads(info_path.read_text())
        del info["robot_rl"]
        info_path.write_text(json.dumps(info))
        with pytest.raises(DatasetError, match="observation.state has 25 values per frame, but .* has 21"):
            import_lerobot(tmp_path / "ds", tmp_path / "b.hdf5", env_id=HOVER)

    @pytest.mark.parametrize(
        "case",
        ["not-a-dataset", "export-into-a-full-folder", "import-over-a-file", "size-without-video", "odd-size"],
    )
    def test_bad_paths_and_options_are_one_line(self, case, demo_file, tmp_path, monkeypatch, capsys):
        src = demo_file(PUSH)
        full = tmp_path / "full"
        full.mkdir()
        (full / "keep.txt").write_text("mine")
        args = {
            "not-a-dataset": ["data", "import-lerobot", str(full), "--out", str(tmp_path / "b.hdf5")],
            "export-into-a-full-folder": ["data", "export-lerobot", str(src), "--out", str(full)],
            "import-over-a-file": ["data", "import-lerobot", str(full), "--out", str(src)],
            "size-without-video": ["data", "export-lerobot", str(src), "--out", str(tmp_path / "d"), "--width", "64"],
            "odd-size": ["data", "export-lerobot", str(src), "--out", str(tmp_path / "d"), "--video", "--width", "63"],
        }[case]
        code, _, err = run_cli(args, monkeypatch, capsys)
        line = one_line_error(code, err)
        expected = {
            "not-a-dataset": "not a LeRobotDataset: it has no meta/info.json",
            "export-into-a-full-folder": "is a folder that is not empty",
            "import-over-a-file": "already exists; import-lerobot writes a new demo file",
            "size-without-video": "add --video",
            "odd-size": "`width` must be an even number of pixels",
        }[case]
        assert expected in line, line
        assert (full / "keep.txt").read_text() == "mine" and not (tmp_path / "d").exists()

    def test_without_pyarrow_the_error_says_how_to_install_it(self, demo_file, tmp_path, monkeypatch):
        monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
        with pytest.raises(RuntimeError, match=r"need pyarrow, which is not installed.*robot_rl\[lerobot\]"):
            export_lerobot(demo_file(PUSH), tmp_path / "ds")

    def test_a_control_rate_that_is_not_whole_hz_is_refused(self, demo_file, tmp_path):
        src = demo_file(PUSH)
        with h5py.File(src, "r+") as f:
            f["data"].attrs["ctrl_dt"] = 0.03
        with pytest.raises(DatasetError, match="33.3333 frames per second; a LeRobotDataset stores an integer fps"):
            export_lerobot(src, tmp_path / "ds")


def lerobot_python() -> Path | None:
    """The LeRobot venv's Python: ``$ROBOT_RL_LEROBOT_PYTHON``, else ``.venv-lerobot`` in the checkout."""
    given = os.environ.get("ROBOT_RL_LEROBOT_PYTHON")
    path = Path(given) if given else REPO / ".venv-lerobot" / "bin" / "python"
    return path if path.is_file() else None


@pytest.mark.skipif(lerobot_python() is None, reason="no LeRobot venv (docs/interop.md; ROBOT_RL_LEROBOT_PYTHON)")
class TestLeRobotReadsIt:
    def test_lerobot_loads_the_export_and_trains_on_it(self, demo_file, tmp_path):
        src = demo_file(PUSH)
        export_lerobot(src, tmp_path / "ds")
        with DemoDataset(src) as ds:
            demos = list(ds)
        np.savez(
            tmp_path / "expect.npz",
            actions=np.concatenate([d.actions for d in demos]),
            state=np.concatenate([d.obs["observation"] for d in demos]),
            env_state=np.concatenate([np.hstack([d.obs["achieved_goal"], d.obs["desired_goal"]]) for d in demos]),
            lengths=np.array([d.num_samples for d in demos]),
        )
        command = [str(lerobot_python()), str(REPO / "bench" / "lerobot_check.py"), str(tmp_path / "ds")]
        command += ["--expect", str(tmp_path / "expect.npz"), "--steps", "2", "--batch-size", "4"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["frames"] == 150 and result["episodes"] == 3 and result["ok"]
        assert result["actions_equal_bits"] and result["state_equal_bits"] and result["items_equal_float32"]
        assert result["train"]["steps"] == 2 and result["train"]["finite"]
        assert set(result["train"]["input_features"]) == {"observation.state", "observation.environment_state"}
