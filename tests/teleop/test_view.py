"""The live view: the status line without a display, the viewer path, and where it is shown."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from robot_rl.envs.registry import make
from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.teleop import TeleopCommand, TeleopEvent
from robot_rl.teleop.view import LiveView, status_line

from .test_intervention import ScriptedDevice


@pytest.fixture
def reach_env():
    env = make("robot_rl/PandaReach-v0")
    env.reset(seed=0)
    yield env
    env.close()


class FakeViewerHandle:
    def __init__(self) -> None:
        self.syncs = 0
        self.running = True
        self.closed = False

    def is_running(self) -> bool:
        return self.running

    def sync(self) -> None:
        self.syncs += 1

    def close(self) -> None:
        self.closed = True


class TestStatusLine:
    def test_without_a_display_the_status_line_is_redrawn_in_place(self, reach_env, monkeypatch):
        monkeypatch.delenv("DISPLAY", raising=False)
        stream = io.StringIO()
        view = LiveView("keyboard", reach_env, stream=stream)
        assert not view.viewer_open
        view.show(2, 37, "REC", {"distance": 0.0412, "is_success": 0.0}, saved=1, discarded=1)
        view.show(2, 38, "REC", {"distance": 0.0301, "is_success": 1.0}, saved=1, discarded=1)
        view.close()
        first, second = (line.rstrip() for line in stream.getvalue().split("\r")[1:])
        assert first == "[keyboard] episode 2 | step 37 | REC | dist 0.041 m | saved 1 discarded 1 | success False"
        assert second == "[keyboard] episode 2 | step 38 | REC | dist 0.030 m | saved 1 discarded 1 | success True"
        assert stream.getvalue().endswith("\n")  # the shell prompt starts on its own line

    def test_fields_the_rollout_lacks_are_left_out(self):
        line = status_line("expert+spacemouse", 0, 3, "HUMAN", {"is_success": 0.0})
        assert line.strip() == "[expert+spacemouse] episode 0 | step 3 | HUMAN | success False"
        assert "saved 4 |" in status_line("x", 0, 3, "POLICY", {}, saved=4)


class TestViewer:
    def test_a_display_opens_the_passive_viewer_and_steps_sync_it(self, reach_env, monkeypatch):
        import mujoco.viewer

        handle = FakeViewerHandle()
        opened = []
        monkeypatch.setenv("DISPLAY", ":99")
        monkeypatch.setattr(mujoco.viewer, "launch_passive", lambda m, d: opened.append((m, d)) or handle)
        stream = io.StringIO()
        view = LiveView("gamepad", reach_env, stream=stream)
        assert view.viewer_open and opened == [(reach_env.unwrapped.model, reach_env.unwrapped.data)]
        view.show(0, 1, "REC", {})
        assert handle.syncs == 1 and stream.getvalue() == ""
        handle.running = False  # the window was closed: the status line takes over
        view.show(0, 2, "REC", {})
        assert handle.closed and not view.viewer_open and "step 2 | REC" in stream.getvalue()

    def test_a_viewer_that_fails_to_open_falls_back_to_the_status_line(self, reach_env, monkeypatch):
        import mujoco.viewer

        def fail(model, data):
            raise RuntimeError("could not initialize GLFW")

        monkeypatch.setenv("DISPLAY", ":99")
        monkeypatch.setattr(mujoco.viewer, "launch_passive", fail)
        stream = io.StringIO()
        view = LiveView("keyboard", reach_env, stream=stream)
        assert not view.viewer_open
        assert "live view unavailable (could not initialize GLFW)" in stream.getvalue()

    def test_no_view_never_opens_the_viewer(self, reach_env, monkeypatch):
        import mujoco.viewer

        monkeypatch.setenv("DISPLAY", ":99")
        monkeypatch.setattr(mujoco.viewer, "launch_passive", lambda m, d: pytest.fail("viewer opened"))
        assert not LiveView("keyboard", reach_env, viewer=False, stream=io.StringIO()).viewer_open


class TestWhereTheViewShows:
    def test_the_teleop_session_shows_recording_state_and_counts(self, reach_env, monkeypatch):
        from robot_rl.teleop.session import TeleopSession

        monkeypatch.delenv("DISPLAY", raising=False)
        move = TeleopCommand(twist=np.array([1.0, 0, 0, 0, 0, 0]))
        script = [TeleopCommand(), move, TeleopCommand(events=[TeleopEvent.SAVE])]
        stream = io.StringIO()
        session = TeleopSession(reach_env, ScriptedDevice(lambda i: script[i]), realtime=False, status=stream)
        session.episode(seed=0, index=4, on_step=lambda *step: None)
        session.close()
        lines = [line.rstrip() for line in stream.getvalue().split("\r")[1:]]
        assert lines[0].startswith("[scripted] episode 4 | step 0 | idle (move or press start) | saved 0 discarded 0")
        assert lines[1].startswith("[scripted] episode 4 | step 1 | REC | saved 0 discarded 0")

    def test_eval_with_takeover_shows_who_acts(self, tmp_path: Path, monkeypatch, capsys):
        monkeypatch.delenv("DISPLAY", raising=False)

        def nudge(i: int) -> TeleopCommand:
            return TeleopCommand(twist=np.array([1.0, 0, 0, 0, 0, 0]) if i == 2 else np.zeros(6))

        config = EvalConfig(env="robot_rl/PandaReach-v0", episodes=1, takeover="gamepad", realtime=False)
        evaluate(config, device=ScriptedDevice(nudge))
        lines = [line.rstrip() for line in capsys.readouterr().err.split("\r")[1:]]
        assert len(lines) == 50
        assert lines[0] == "[expert+scripted] episode 0 | step 1 | POLICY | success False"
        assert lines[2] == "[expert+scripted] episode 0 | step 3 | HUMAN | success False"

    def test_collect_with_a_device_shows_the_status_line_instead_of_a_progress_bar(
        self, tmp_path: Path, monkeypatch, capsys
    ):
        import importlib

        import robot_rl.teleop
        from robot_rl.cli.main import run

        collect_module = importlib.import_module("robot_rl.data.collect")  # the package shadows it with collect()
        monkeypatch.setattr(collect_module, "SOURCES", dict(collect_module.SOURCES))  # the CLI registers sources
        monkeypatch.delenv("DISPLAY", raising=False)
        move = TeleopCommand(twist=np.array([1.0, 0, 0, 0, 0, 0]))
        script = [move, move, TeleopCommand(events=[TeleopEvent.SAVE])]
        device = ScriptedDevice(lambda i: script[min(i, 2)])
        monkeypatch.setattr(robot_rl.teleop, "make_teleoperator", lambda name: device)
        out = tmp_path / "demos.hdf5"
        argv = ["collect", "--env", "PandaReach-v0", "--source", "keyboard", "--episodes", "1", "--out", str(out)]
        assert run(argv) == 0
        err = capsys.readouterr().err
        assert "\r[keyboard] episode 0 | step 1 | REC | saved 0 discarded 0" in err
        assert "demo/s" not in err and "collect PandaReach" not in err  # no tqdm bar
        assert err.endswith("\n")
