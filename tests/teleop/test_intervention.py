"""Human takeover during evaluation: the takeover rules, the recorded interventions, replay, quit."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data import DemoDataset, replay
from robot_rl.envs.franka.experts import make_expert
from robot_rl.envs.registry import make
from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.teleop import CommandMapper, DeviceNotFoundError, TeleopCommand, TeleopEvent
from robot_rl.teleop.intervention import HumanTakeover

PUSH = "robot_rl/PandaPush-v0"
STEPS = 50
"""PandaPush's time limit [control periods]."""
CTRL_DT = 0.04
"""PandaPush's control period [s]."""

MOVE = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
"""Full deflection along +x."""


class ScriptedDevice:
    """A device whose command at its i-th read is ``script(i)``; logs what it returned."""

    name = "scripted"

    def __init__(self, script: Callable[[int], TeleopCommand]) -> None:
        self.script = script
        self.reads: list[TeleopCommand] = []
        self.closed = False

    def connect(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def read(self) -> TeleopCommand:
        command = self.script(len(self.reads))
        self.reads.append(command)
        return command


def latched_then_nudged(i: int) -> TeleopCommand:
    """Episode 0: takeover button at step 5 (moving until 9, still until 14), handed back at 15.
    Episode 1: a nudge at steps 3-4 (motion takeover), nothing else."""
    episode, step = divmod(i, STEPS)
    command = TeleopCommand(gripper=-1.0)
    if episode == 0:
        if step in (5, 15):
            command.events = [TeleopEvent.TAKEOVER]
        if 5 <= step <= 9:
            command.twist = MOVE.copy()
    elif episode == 1 and step in (3, 4):
        command.twist = MOVE.copy()
    return command


def eval_config(tmp_path: Path, **overrides: object) -> EvalConfig:
    kwargs: dict = dict(
        env=PUSH,
        episodes=2,
        seed=3,
        takeover="keyboard",
        takeover_hold=2 * CTRL_DT,
        record=tmp_path / "hil.hdf5",
        realtime=False,
        view=False,
        progress=False,
    )
    kwargs.update(overrides)
    return EvalConfig(**kwargs)


@pytest.fixture
def push_env():
    env = make(PUSH)
    env.reset(seed=0)
    yield env
    env.close()


def takeover_flags(takeover: HumanTakeover, commands: list[TeleopCommand], obs: dict) -> list[bool]:
    scripted = iter(commands)
    takeover.device = ScriptedDevice(lambda i: next(scripted))
    policy_action = np.array([0.1, 0.2, 0.3, 1.0])
    return [takeover(obs, policy_action)[1] for _ in commands]


class TestTakeoverRules:
    def test_the_button_toggles_a_latched_takeover(self, push_env):
        takeover = HumanTakeover(ScriptedDevice(lambda i: TeleopCommand()), push_env, realtime=False)
        obs, _ = push_env.reset(seed=0)
        toggle = TeleopCommand(events=[TeleopEvent.TAKEOVER])
        commands = [TeleopCommand(), toggle, TeleopCommand(), TeleopCommand(), toggle, TeleopCommand()]
        assert takeover_flags(takeover, commands, obs) == [False, True, True, True, False, False]

    def test_motion_takes_over_while_moving_plus_the_hold(self, push_env):
        takeover = HumanTakeover(ScriptedDevice(lambda i: TeleopCommand()), push_env, hold_s=0.08, realtime=False)
        assert takeover.hold_steps == 2
        obs, _ = push_env.reset(seed=0)
        move, still = TeleopCommand(twist=MOVE), TeleopCommand()
        drift = TeleopCommand(twist=np.full(6, 0.05))  # inside the deadband
        commands = [drift, move, move, still, still, still, drift, move, still]
        assert takeover_flags(takeover, commands, obs) == [False, True, True, True, True, False, False, True, True]

    def test_the_default_hold_is_half_a_second_of_control_periods(self, push_env):
        assert HumanTakeover(ScriptedDevice(lambda i: TeleopCommand()), push_env).hold_steps == round(0.5 / CTRL_DT)

    def test_the_human_action_comes_from_the_device_gripper_included(self, push_env):
        device = ScriptedDevice(lambda i: TeleopCommand(twist=MOVE, gripper=-1.0))
        takeover = HumanTakeover(device, push_env, realtime=False)
        obs, _ = push_env.reset(seed=0)
        action, human = takeover(obs, np.array([0.0, 0.0, 0.0, 1.0]))
        assert human
        np.testing.assert_allclose(action, [0.5, 0.0, 0.0, -1.0])

    def test_reset_hands_back_to_the_policy_and_quit_is_reported(self, push_env):
        takeover = HumanTakeover(ScriptedDevice(lambda i: TeleopCommand()), push_env, realtime=False)
        obs, _ = push_env.reset(seed=0)
        assert takeover_flags(takeover, [TeleopCommand(events=[TeleopEvent.TAKEOVER])], obs) == [True]
        takeover.reset()
        assert takeover_flags(takeover, [TeleopCommand(events=[TeleopEvent.QUIT])], obs) == [False]
        assert takeover.quit

    def test_realtime_paces_at_the_control_period(self, push_env):
        takeover = HumanTakeover(ScriptedDevice(lambda i: TeleopCommand()), push_env)
        obs, _ = push_env.reset(seed=0)
        start = time.monotonic()
        for _ in range(4):
            takeover(obs, np.zeros(4))
        assert time.monotonic() - start >= 3 * CTRL_DT - 0.005


class TestEvalWithTakeover:
    def test_interventions_are_recorded_and_replay_exactly(self, tmp_path: Path):
        device = ScriptedDevice(latched_then_nudged)
        config = eval_config(tmp_path)
        report = evaluate(config, device=device)

        expected = {0: list(range(5, 15)), 1: [3, 4, 5, 6]}  # episode 1: the nudge plus a 2-step hold
        assert report["intervention_steps"] == 14
        assert [e["intervention_steps"] for e in report["per_episode"]] == [10, 4]
        assert report["episodes"] == 2 and not report["quit"] and report["record"] == str(config.record)
        for key in ("success_rate", "success_ci95", "mean_return", "safety_interventions", "per_episode"):
            assert key in report

        env = make(PUSH)
        with DemoDataset(config.record) as ds:
            assert ds.meta.source == "policy:expert+scripted"
            for k, demo in enumerate(ds):
                steps = np.flatnonzero(demo.interventions).tolist()
                assert steps == expected[k]
                assert demo.seed == 3 + k and demo.success == report["per_episode"][k]["success"]
                # Human steps: the device's command mapped for the env; the others: the expert's proposal.
                env.reset(seed=demo.seed)
                mapper, expert = CommandMapper(env), make_expert(PUSH)
                for t in range(demo.num_samples):
                    obs = {key: value[t] for key, value in demo.obs.items()}
                    proposed = np.clip(expert(obs), -1.0, 1.0)
                    if demo.interventions[t]:
                        human = mapper(device.reads[k * STEPS + t], obs)
                        np.testing.assert_allclose(demo.actions[t], human, atol=1e-12)
                        assert demo.actions[t][3] == -1.0  # the device's gripper
                    else:
                        np.testing.assert_array_equal(demo.actions[t], proposed)
        env.close()
        assert replay(config.record)["max_state_deviation"] < 1e-6

    def test_recording_without_takeover_appends_and_flags_nothing(self, tmp_path: Path):
        config = eval_config(tmp_path, episodes=1)
        evaluate(config, device=ScriptedDevice(latched_then_nudged))
        report = evaluate(eval_config(tmp_path, episodes=1, seed=10, takeover="none"))
        assert report["intervention_steps"] == 0 and report["per_episode"][0]["intervention_steps"] == 0
        with DemoDataset(config.record) as ds:
            assert len(ds) == 2
            assert ds[1].seed == 10 and not ds[1].interventions.any()
            assert ds[1].source == "policy:expert" and ds[1].success
            assert set(ds.meta.source.split(",")) == {"policy:expert+scripted", "policy:expert"}

    def test_quit_stops_early_and_reports_the_finished_episodes(self, tmp_path: Path):
        def quit_in_episode_1(i: int) -> TeleopCommand:
            return TeleopCommand(events=[TeleopEvent.QUIT] if i == STEPS + 10 else [])

        device = ScriptedDevice(quit_in_episode_1)
        config = eval_config(tmp_path, episodes=3)
        report = evaluate(config, device=device)
        assert report["quit"] and report["episodes"] == 1 and len(report["per_episode"]) == 1
        assert len(device.reads) == STEPS + 11 and not device.closed  # an injected device stays open
        with DemoDataset(config.record) as ds:
            assert len(ds) == 1  # the episode cut short is not recorded

    def test_quit_in_the_first_episode_gives_an_empty_report(self, tmp_path: Path):
        device = ScriptedDevice(lambda i: TeleopCommand(events=[TeleopEvent.QUIT]))
        report = evaluate(eval_config(tmp_path, record=None), device=device)
        assert report["episodes"] == 0 and report["success_rate"] is None and report["quit"]

    def test_a_device_without_takeover_is_refused(self, tmp_path: Path):
        with pytest.raises(ValueError, match="takeover"):
            evaluate(eval_config(tmp_path, takeover="none"), device=ScriptedDevice(lambda i: TeleopCommand()))

    def test_a_missing_device_gives_its_message_on_one_line(self, tmp_path, monkeypatch, capsys):
        import os

        import robot_rl.teleop
        from robot_rl.cli.main import main
        from robot_rl.teleop.keyboard import KeyboardTeleop

        read_end, write_end = os.pipe()  # not a terminal
        made: list[str] = []

        def make_teleoperator(name: str) -> KeyboardTeleop:
            made.append(name)
            return KeyboardTeleop(fd=read_end)

        monkeypatch.setattr(robot_rl.teleop, "make_teleoperator", make_teleoperator)
        monkeypatch.setattr("sys.argv", ["robot-rl", "eval", "--episodes", "1", "--takeover", "keyboard"])
        try:
            with pytest.raises(DeviceNotFoundError, match="not a TTY"):
                evaluate(eval_config(tmp_path))
            with pytest.raises(SystemExit) as exit_info:
                main()
        finally:
            os.close(read_end)
            os.close(write_end)
        assert exit_info.value.code == 2 and made == ["keyboard", "keyboard"]
        err = capsys.readouterr().err.strip()
        assert err.startswith("robot-rl: error: keyboard teleoperation needs an interactive terminal")
        assert "\n" not in err
        assert not (tmp_path / "hil.hdf5").exists()
