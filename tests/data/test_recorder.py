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
from robot_rl.data.recorder import StateReader
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


def _synthetic(n: int, state_size: int = 7, seed: int = 0, chained: bool = True) -> tuple[list[tuple], np.ndarray]:
    """``n`` steps of random data (obs, action, reward, done, next_obs) and their states (n, S)."""
    rng = np.random.default_rng(seed)

    def obs() -> dict[str, np.ndarray]:
        return {
            "observation": rng.normal(size=5),
            "achieved_goal": rng.normal(size=3),
            "desired_goal": rng.normal(size=3),
        }

    steps, current = [], obs()
    for t in range(n):
        after = obs()
        steps.append((current, rng.uniform(-2, 2, size=4), float(rng.normal()), t == n - 1, after))
        # A plain step loop hands the same dict on (chained); a wrapper may pass an equal copy.
        current = after if chained else {k: v.copy() for k, v in after.items()}
    return steps, rng.normal(size=(n, state_size))


def _read_demo(path: Path, name: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        demo = f["data"][name]
        out = {f"{sub}/{k}": demo[sub][k][()] for sub in ("obs", "next_obs") for k in demo[sub]}
        out |= {k: demo[k][()] for k in ("actions", "rewards", "dones", "states")}
        out["num_samples"] = demo.attrs["num_samples"]
    return out


class TestStepBuffers:
    def test_states_read_into_slots_or_copied_are_stored_exactly_across_buffer_growth(self, tmp_path: Path) -> None:
        n = 150  # past the initial 64-row state buffer, twice
        steps, states = _synthetic(n)
        with DemoRecorder(
            tmp_path / "s.hdf5", PUSH, {}, 0.04, "expert", action_bounds=(-np.ones(4), np.ones(4))
        ) as rec:
            rec.start_episode(0)
            for t, step in enumerate(steps):
                if t % 3:
                    slot = rec.state_slot(states.shape[1])
                    slot[:] = states[t]  # what StateReader(out=slot) does
                    rec.add_step(*step, slot)
                else:
                    rec.add_step(*step, states[t].copy())
            rec.commit(success=True)
        demo = _read_demo(tmp_path / "s.hdf5", "demo_0")
        np.testing.assert_array_equal(demo["states"], states)
        for key in ("observation", "achieved_goal", "desired_goal"):
            np.testing.assert_array_equal(demo[f"obs/{key}"], [s[0][key] for s in steps])
            np.testing.assert_array_equal(demo[f"next_obs/{key}"], [s[4][key] for s in steps])
        np.testing.assert_array_equal(demo["actions"], np.clip([s[1] for s in steps], -1.0, 1.0))
        np.testing.assert_array_equal(demo["rewards"], [s[2] for s in steps])
        np.testing.assert_array_equal(demo["dones"], [s[3] for s in steps])
        assert demo["num_samples"] == n

    def test_observations_passed_as_copies_are_stored_as_when_chained(self, tmp_path: Path) -> None:
        files = {}
        for chained in (True, False):
            steps, states = _synthetic(20, seed=3, chained=chained)
            files[chained] = tmp_path / f"c{chained}.hdf5"
            with DemoRecorder(files[chained], PUSH, {}, 0.04, "expert") as rec:
                rec.start_episode(0)
                for step, state in zip(steps, states, strict=True):
                    rec.add_step(*step, state)
                rec.commit(success=True)
        chained_demo, copied_demo = (_read_demo(files[c], "demo_0") for c in (True, False))
        assert chained_demo.keys() == copied_demo.keys()
        for key, value in chained_demo.items():
            np.testing.assert_array_equal(value, copied_demo[key], err_msg=key)
        # obs[t + 1] is next_obs[t] (in both files)
        np.testing.assert_array_equal(chained_demo["obs/observation"][1:], chained_demo["next_obs/observation"][:-1])

    def test_the_reused_state_buffer_does_not_change_committed_episodes(self, tmp_path: Path) -> None:
        path = tmp_path / "r.hdf5"
        first, first_states = _synthetic(30, seed=1)
        second, second_states = _synthetic(10, seed=2)
        with DemoRecorder(path, PUSH, {}, 0.04, "expert") as rec:
            for seed, (steps, states) in enumerate(((first, first_states), (second, second_states))):
                rec.start_episode(seed)
                for step, state in zip(steps, states, strict=True):
                    rec.add_step(*step, state)
                rec.commit(success=True)
        np.testing.assert_array_equal(_read_demo(path, "demo_0")["states"], first_states)
        np.testing.assert_array_equal(_read_demo(path, "demo_1")["states"], second_states)

    def test_a_state_of_another_size_is_refused_within_an_episode_not_across(self, tmp_path: Path) -> None:
        steps, states = _synthetic(3)
        with DemoRecorder(tmp_path / "z.hdf5", PUSH, {}, 0.04, "expert") as rec:
            rec.start_episode(0)
            rec.add_step(*steps[0], states[0])
            with pytest.raises(
                ValueError, match="state size changed within the episode: 7 in the first 1 steps, now 6"
            ):
                rec.add_step(*steps[1], states[1][:6])
            with pytest.raises(ValueError, match="state size changed"):
                rec.state_slot(9)
            with pytest.raises(ValueError, match=r"1-D MuJoCo state of shape \(S,\)"):
                rec.add_step(*steps[1], states[:2])
            rec.discard()
            rec.start_episode(1)  # a new episode may have another size
            rec.add_step(*steps[0], states[0][:6])
            rec.commit(success=True)
        assert _read_demo(tmp_path / "z.hdf5", "demo_0")["states"].shape == (1, 6)

    def test_the_state_reader_fills_the_array_it_is_given(self) -> None:
        env = make(HOVER)
        env.reset(seed=4)
        read_state = StateReader(env)
        out = np.full(read_state.size, np.nan)
        assert read_state(out) is out
        np.testing.assert_array_equal(out, mujoco_state(env))
        env.close()
