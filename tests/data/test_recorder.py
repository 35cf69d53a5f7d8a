"""Recorder: what a committed demo holds, appending, refusing another env, the episode lifecycle."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import mujoco
import numpy as np
import pytest

from robot_rl.data import DatasetError, DemoDataset, DemoRecorder, collect, journal, mujoco_state
from robot_rl.data.collect import expert_source
from robot_rl.envs.registry import make

from .conftest import HOVER, PUSH


class TestRoundTrip:
    @pytest.mark.parametrize("env_id", [PUSH, HOVER])
    def test_expert_episodes_are_stored_step_by_step(self, demo_file, env_id: str) -> None:
        path = demo_file(env_id)
        env = make(env_id)
        source = expert_source(env, env_id)
        state_size = mujoco.mj_stateSize(env.unwrapped.model, mujoco.mjtState.mjSTATE_INTEGRATION)
        with DemoDataset(path) as ds:
            assert ds.demo_names == [f"demo_{k}" for k in range(len(ds))]
            for k, demo in enumerate(ds):
                # Re-run the expert from the same seed: the file holds exactly that rollout.
                obs, info = env.reset(seed=k)
                source.reset(obs)
                assert demo.seed == k
                for t in range(demo.num_samples):
                    np.testing.assert_array_equal(demo.states[t], mujoco_state(env))
                    for key in ("observation", "achieved_goal", "desired_goal"):
                        np.testing.assert_array_equal(demo.obs[key][t], obs[key])
                    action = source.act(obs)
                    np.testing.assert_array_equal(demo.actions[t], np.clip(action, -1.0, 1.0))
                    obs, reward, terminated, truncated, info = env.step(action)
                    for key in obs:
                        np.testing.assert_array_equal(demo.next_obs[key][t], obs[key])
                    assert demo.rewards[t] == reward
                    assert demo.dones[t] == (terminated or truncated)
                assert demo.dones[-1] and not demo.dones[:-1].any()
                assert demo.states.shape == (demo.num_samples, state_size)
                assert demo.success == demo.env_success == bool(info["is_success"])
                assert demo.source == "expert"
                assert demo.interventions is None
                assert demo.randomization is not None and demo.randomization["object_mass_scale"] == 1.0
        env.close()

    def test_file_attributes_describe_the_recording(self, demo_file) -> None:
        path = demo_file(PUSH)
        with h5py.File(path, "r") as f:
            attrs = f["data"].attrs
            assert attrs["env_id"] == PUSH
            assert json.loads(attrs["env_kwargs"]) == {}
            env_args = json.loads(attrs["env_args"])  # robomimic's form
            assert env_args == {"env_name": PUSH, "type": 2, "env_kwargs": {}}
            assert attrs["ctrl_dt"] == pytest.approx(0.04)
            assert attrs["source"] == "expert"
            assert attrs["seed"] == 0
            assert attrs["total"] == 150
            assert attrs["state_spec"] == "mjSTATE_INTEGRATION"
            assert attrs["mujoco_version"] == mujoco.__version__
            assert attrs["robot_rl_version"]
            assert attrs["created"] <= attrs["updated"]
            assert json.loads(attrs["randomization"])["object_mass_scale"] == [1.0, 1.0]
            demo = f["data/demo_1"]
            assert demo.attrs["num_samples"] == 50
            assert demo.attrs["seed"] == 1
            assert set(demo["obs"]) == set(demo["next_obs"]) == {"observation", "achieved_goal", "desired_goal"}

    def test_randomized_env_kwargs_are_stored_as_values(self, tmp_path: Path) -> None:
        out = tmp_path / "rand.hdf5"
        collect(PUSH, "expert", 1, out, seed=3, progress=False, env_kwargs={"randomize": "train"})
        with DemoDataset(out) as ds:
            randomize = ds.meta.env_kwargs["randomize"]
            assert randomize["object_mass_scale"] == [0.5, 2.0]
            assert ds[0].randomization["object_mass_scale"] != 1.0  # this episode's draw


class TestAppend:
    def test_appending_continues_the_numbering(self, demo_file) -> None:
        path = demo_file(PUSH)
        report = collect(PUSH, "expert", 2, path, seed=10, progress=False)
        assert report["demos"] == ["demo_3", "demo_4"]
        collect(PUSH, "expert", 1, path, progress=False)  # default seed: after the largest one
        with DemoDataset(path) as ds:
            assert ds.demo_names == [f"demo_{k}" for k in range(6)]
            assert ds.seeds() == [d.seed for d in ds] == [0, 1, 2, 10, 11, 12]
            assert ds.meta.total == 300

    def test_another_env_is_refused_naming_both(self, demo_file) -> None:
        path = demo_file(PUSH)
        before = path.read_bytes()
        with pytest.raises(DatasetError) as err:
            collect("robot_rl/PandaReach-v0", "expert", 1, path, progress=False)
        message = str(err.value)
        assert PUSH in message and "robot_rl/PandaReach-v0" in message and "new file" in message
        assert path.read_bytes() == before

    def test_other_env_kwargs_are_refused(self, demo_file) -> None:
        path = demo_file(PUSH)
        with pytest.raises(DatasetError, match="kwargs"):
            collect(PUSH, "expert", 1, path, progress=False, env_kwargs={"randomize": "train"})

    def test_a_second_writer_is_refused(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(journal, "LOCK_WAIT_S", 0.05)
        path = tmp_path / "busy.hdf5"
        with DemoRecorder(path, PUSH, {}, 0.04, "expert"):
            with pytest.raises(DatasetError, match="another process"):
                DemoRecorder(path, PUSH, {}, 0.04, "expert")


def _steps(env_id: str, n: int, seed: int = 0) -> list[tuple]:
    env = make(env_id)
    obs, _ = env.reset(seed=seed)
    out = []
    for _ in range(n):
        state = mujoco_state(env)
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, action, reward, terminated or truncated, next_obs, state))
        obs = next_obs
    env.close()
    return out


class TestEpisodeLifecycle:
    def test_discard_drops_the_episode_and_numbering_does_not_skip(self, tmp_path: Path) -> None:
        path = tmp_path / "d.hdf5"
        steps = _steps(PUSH, 4)
        with DemoRecorder(path, PUSH, {}, 0.04, "keyboard", seed=0) as rec:
            rec.start_episode(0)
            for step in steps:
                rec.add_step(*step)
            assert rec.discard() == 4
            rec.start_episode(1)
            for step in steps[:2]:
                rec.add_step(*step, intervention=False)
            rec.add_step(*steps[2], intervention=True)
            assert rec.commit(success=True) == "demo_0"
        with DemoDataset(path) as ds:
            assert ds.demo_names == ["demo_0"]
            demo = ds[0]
            assert demo.seed == 1 and demo.num_samples == 3 and demo.source == "keyboard"
            np.testing.assert_array_equal(demo.interventions, [False, False, True])

    def test_misuse_raises_with_the_fix(self, tmp_path: Path) -> None:
        steps = _steps(PUSH, 2)
        with DemoRecorder(tmp_path / "m.hdf5", PUSH, {}, 0.04, "expert") as rec:
            with pytest.raises(RuntimeError, match="start_episode"):
                rec.add_step(*steps[0])
            rec.start_episode(0)
            with pytest.raises(RuntimeError, match="nothing to commit"):
                rec.commit(success=False)
            rec.add_step(*steps[0])
            with pytest.raises(RuntimeError, match=r"commit\(\) or discard\(\)"):
                rec.start_episode(1)
            rec.add_step(*steps[1])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rec.close()
            assert any("uncommitted episode of 2 steps" in str(w.message) for w in caught)
        with pytest.raises(ValueError, match="ctrl_dt"):
            DemoRecorder(tmp_path / "x.hdf5", PUSH, {}, 0.0, "expert")

    def test_an_error_inside_the_with_block_discards_the_partial_episode(self, tmp_path: Path) -> None:
        path = tmp_path / "e.hdf5"
        steps = _steps(PUSH, 3)
        with pytest.raises(KeyError), DemoRecorder(path, PUSH, {}, 0.04, "expert") as rec:
            rec.start_episode(0)
            rec.add_step(*steps[0])
            rec.commit(success=False)
            rec.start_episode(1)
            rec.add_step(*steps[1])
            raise KeyError("device unplugged")
        with DemoDataset(path) as ds:
            assert ds.demo_names == ["demo_0"]
        assert not path.with_name(path.name + ".journal").exists()

    def test_inconsistent_steps_are_refused_at_commit(self, tmp_path: Path) -> None:
        steps = _steps(PUSH, 2)
        obs, action, reward, done, next_obs, state = steps[1]
        with DemoRecorder(tmp_path / "i.hdf5", PUSH, {}, 0.04, "expert") as rec:
            rec.start_episode(0)
            rec.add_step(*steps[0])
            rec.add_step(obs, action[:2], reward, done, next_obs, state)
            with pytest.raises(ValueError, match="inconsistent"):
                rec.commit(success=False)
            rec.discard()
