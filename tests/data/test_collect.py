"""collect(): the loop every source goes through, driven by a scripted stand-in for a teleop device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from robot_rl.data import DemoDataset, EpisodeEvent, collect, register_source, replay
from robot_rl.data.collect import SOURCES, ActionSource, CollectStatus

from .conftest import PUSH


class ScriptedDevice:
    """Per episode, a script of ``(events, action or None)`` per control period; then idle."""

    realtime = False

    def __init__(self, scripts: list[list[tuple[list[EpisodeEvent], np.ndarray | None]]], name: str = "keyboard"):
        self.name = name
        self.scripts = scripts
        self.episode = -1
        self.tick = 0
        self.intervention: bool | None = None

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        self.episode += 1
        self.tick = 0

    def _now(self) -> tuple[list[EpisodeEvent], np.ndarray | None]:
        script = self.scripts[self.episode] if self.episode < len(self.scripts) else []
        return script[self.tick] if self.tick < len(script) else ([EpisodeEvent.QUIT], None)

    def episode_control(self) -> Sequence[EpisodeEvent]:
        return self._now()[0]

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray | None:
        action = self._now()[1]
        self.intervention = action is not None and self.tick % 2 == 1
        self.tick += 1
        return action


MOVE = np.array([0.2, 0.0, 0.0, 1.0])


def test_the_scripted_device_is_an_action_source() -> None:
    assert isinstance(ScriptedDevice([]), ActionSource)


def test_events_save_discard_and_quit(tmp_path: Path) -> None:
    out = tmp_path / "teleop.hdf5"
    idle = ([], None)
    device = ScriptedDevice(
        [
            [idle, idle, ([], MOVE), ([], MOVE), ([EpisodeEvent.SAVE], None)],  # saved: 2 steps
            [([], MOVE), ([EpisodeEvent.DISCARD], None)],  # dropped
            [([EpisodeEvent.START], None), ([EpisodeEvent.SAVE], None)],  # saved with no steps: dropped
            [([], MOVE), ([], -MOVE), ([], MOVE), ([EpisodeEvent.QUIT], None)],  # quit: dropped, stop
        ]
    )
    statuses: list[CollectStatus] = []
    report = collect(PUSH, device, 10, out, seed=5, progress=False, on_step=statuses.append)
    assert report["kept"] == 1 and report["discarded"] == 3 and report["quit"]
    assert report["attempts"] == 4
    with DemoDataset(out) as ds:
        assert ds.demo_names == ["demo_0"]
        demo = ds[0]
        assert demo.seed == 5 and demo.num_samples == 2 and demo.success and demo.source == "keyboard"
        np.testing.assert_array_equal(demo.actions, [MOVE, MOVE])
        np.testing.assert_array_equal(demo.interventions, [False, True])
    # Idle periods before the first action leave the env paused: the demo starts at the reset
    # state, so it replays exactly.
    assert replay(out)["max_state_deviation"] == 0.0
    assert [s.recording for s in statuses[:3]] == [False, False, True]
    assert statuses[0].info == {} and statuses[2].step == 1


def test_failed_episodes_are_dropped_unless_kept(tmp_path: Path) -> None:
    # Holding still never reaches the goal: every episode times out unsuccessful.
    hold = [[([], np.zeros(4))] * 60 for _ in range(4)]
    out = tmp_path / "fail.hdf5"
    with pytest.raises(RuntimeError, match="only 0 of 1 episodes were kept after 2 attempts"):
        collect(PUSH, ScriptedDevice(hold), 1, out, progress=False, max_attempts=2)
    report = collect(PUSH, ScriptedDevice(hold), 2, tmp_path / "kept.hdf5", progress=False, keep_failed=True)
    assert report["kept"] == 2 and report["attempt_success_rate"] == 0.0
    with DemoDataset(tmp_path / "kept.hdf5") as ds:
        assert [d.num_samples for d in ds] == [50, 50]
        assert not any(d.success for d in ds)


def test_sources_by_name_and_policies(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source 'joystick'. Valid sources: expert"):
        collect(PUSH, "joystick", 1, tmp_path / "x.hdf5", progress=False)
    register_source("scripted", lambda env, env_id: ScriptedDevice([[([], MOVE), ([EpisodeEvent.SAVE], None)]]))
    try:
        report = collect(PUSH, "scripted", 1, tmp_path / "s.hdf5", progress=False)
        assert report["demos"] == ["demo_0"] and report["source"] == "keyboard"
    finally:
        del SOURCES["scripted"]
    report = collect(
        PUSH, "policy", 1, tmp_path / "p.hdf5", progress=False, keep_failed=True, policy=lambda obs: np.zeros(4)
    )
    with DemoDataset(tmp_path / "p.hdf5") as ds:
        assert ds.meta.source == "policy" and ds[0].num_samples == 50
    with pytest.raises(ValueError, match="episodes"):
        collect(PUSH, "expert", 0, tmp_path / "z.hdf5", progress=False)
    with pytest.raises(ValueError, match="Did you mean"):
        collect("PandaPsh-v0", "expert", 1, tmp_path / "z.hdf5", progress=False)


class FirstStepProbe:
    """The PandaPush expert; before each episode's first action, counts the demos a reader finds on disk."""

    realtime = False
    name = "expert"
    intervention = None

    def __init__(self, path: Path) -> None:
        from robot_rl.envs.franka.experts import make_expert

        self.expert = make_expert(PUSH)
        self.path = path
        self.on_disk: list[int] = []
        self._first = False

    def reset(self, obs: dict[str, np.ndarray]) -> None:
        self.expert.reset()
        self._first = True

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self._first:
            self._first = False
            with h5py.File(self.path, "r") as f:  # another reader, while the recorder holds the file
                self.on_disk.append(len(f["data"]))
        return self.expert(obs)

    def episode_control(self) -> Sequence[EpisodeEvent]:
        return ()


def test_each_episode_is_on_disk_before_the_next_one_takes_its_first_step(tmp_path: Path) -> None:
    # The pages reach the file only after the journal record is fsynced, so a demo a reader sees is durable.
    out = tmp_path / "durable.hdf5"
    probe = FirstStepProbe(out)
    report = collect(PUSH, probe, 3, out, seed=0, progress=False, keep_failed=True)
    assert report["kept"] == 3
    assert probe.on_disk == [0, 1, 2]


def test_the_output_folder_is_made_when_missing(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "new" / "demos.hdf5"  # `--out runs/demos.hdf5` on a fresh checkout
    report = collect(PUSH, "expert", 1, out, seed=0, progress=False, fsync=False)
    assert report["kept"] == 1
    with DemoDataset(out) as ds:
        assert len(ds) == 1
