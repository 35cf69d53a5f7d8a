"""Each device's real code path, driven by recorded events: keystrokes through a pseudo-terminal,
SDL joystick events through pygame's queue, raw HID reports through a fake hidapi device."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from robot_rl.envs.registry import make
from robot_rl.teleop import CommandMapper, DeviceNotFoundError, TeleopCommand, TeleopConfig, TeleopEvent
from robot_rl.teleop.base import apply_deadband
from robot_rl.teleop.keyboard import KeyboardTeleop
from robot_rl.teleop.spacemouse import SpaceMouseTeleop, parse_report


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pty_keyboard():
    master, slave = os.openpty()
    clock = FakeClock()
    keyboard = KeyboardTeleop(fd=slave, hold_time=0.1, clock=clock)
    keyboard.connect()
    yield keyboard, master, clock
    keyboard.close()
    os.close(master)
    os.close(slave)


class TestKeyboard:
    def test_a_key_press_moves_its_axis_until_the_hold_time_passes(self, pty_keyboard):
        keyboard, master, clock = pty_keyboard
        os.write(master, b"w")
        assert keyboard.read().twist.tolist() == [1, 0, 0, 0, 0, 0]
        clock.now = 0.05
        assert keyboard.read().twist[0] == 1.0  # still held
        clock.now = 0.2
        assert keyboard.read().twist[0] == 0.0  # released

    def test_auto_repeat_keeps_the_motion_going(self, pty_keyboard):
        keyboard, master, clock = pty_keyboard
        for t in (0.0, 0.08, 0.16, 0.24):
            clock.now = t
            os.write(master, b"f")
            assert keyboard.read().twist[2] == -1.0

    def test_space_toggles_the_gripper_and_keys_give_events(self, pty_keyboard):
        keyboard, master, _ = pty_keyboard
        assert keyboard.read().gripper == 1.0
        os.write(master, b" ")
        assert keyboard.read().gripper == -1.0
        os.write(master, b"\rx\x7ft")
        assert keyboard.read().events == [
            TeleopEvent.SAVE,
            TeleopEvent.DISCARD,
            TeleopEvent.RESET,
            TeleopEvent.TAKEOVER,
        ]

    def test_arrow_keys_are_not_read_as_escape(self, pty_keyboard):
        keyboard, master, _ = pty_keyboard
        os.write(master, b"\x1b[A\x1b[D")
        assert keyboard.read().events == []
        os.write(master, b"\x1b")
        assert keyboard.read().events == [TeleopEvent.QUIT]

    def test_without_a_terminal_the_error_says_what_to_do(self):
        read_end, write_end = os.pipe()
        try:
            with pytest.raises(DeviceNotFoundError, match="not a TTY.*terminal"):
                KeyboardTeleop(fd=read_end).connect()
        finally:
            os.close(read_end)
            os.close(write_end)


@pytest.fixture
def sdl():
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    pygame = pytest.importorskip("pygame")
    pygame.display.init()
    pygame.joystick.init()
    pygame.event.clear()
    yield pygame
    pygame.event.clear()


class TestGamepad:
    def post_axis(self, pygame, axis: int, value: float) -> None:
        pygame.event.post(pygame.event.Event(pygame.JOYAXISMOTION, joy=0, instance_id=0, axis=axis, value=value))

    def test_sticks_map_to_the_twist_with_forward_positive(self, sdl):
        from robot_rl.teleop.gamepad import GamepadTeleop

        pad = GamepadTeleop()
        pad.attach(sdl)
        self.post_axis(sdl, 1, -1.0)  # left stick pushed forward (SDL reports up as negative)
        self.post_axis(sdl, 0, 0.5)  # left stick right
        self.post_axis(sdl, 4, 1.0)  # right stick pulled back
        command = pad.read()
        assert command.twist.tolist() == [1.0, -0.5, -1.0, 0.0, 0.0, 0.0]

    def test_trigger_closes_the_gripper_and_buttons_give_events(self, sdl):
        from robot_rl.teleop.gamepad import GamepadTeleop

        pad = GamepadTeleop()
        pad.attach(sdl)
        assert pad.read().gripper == 1.0
        self.post_axis(sdl, 5, 0.9)
        for button in (7, 0, 1, 2, 3, 6):
            sdl.event.post(sdl.event.Event(sdl.JOYBUTTONDOWN, joy=0, instance_id=0, button=button))
        command = pad.read()
        assert command.gripper == -1.0
        assert command.events == [
            TeleopEvent.START,
            TeleopEvent.SAVE,
            TeleopEvent.DISCARD,
            TeleopEvent.RESET,
            TeleopEvent.TAKEOVER,
            TeleopEvent.QUIT,
        ]

    def test_a_missing_gamepad_is_named_with_how_to_connect_it(self, sdl):
        from robot_rl.teleop.gamepad import GamepadTeleop

        if sdl.joystick.get_count() > 0:
            pytest.skip("a real joystick is connected")
        with pytest.raises(DeviceNotFoundError, match=r"no gamepad at SDL joystick index 0.*Plug in"):
            GamepadTeleop().connect()


class RecordedHid:
    def __init__(self, reports: list[bytes]) -> None:
        self.reports = list(reports)
        self.closed = False

    def read(self, size: int, timeout_ms: int = 0) -> list[int]:
        return list(self.reports.pop(0)) if self.reports else []

    def close(self) -> None:
        self.closed = True


def report(kind: int, *values: int) -> bytes:
    return bytes([kind]) + struct.pack(f"<{len(values)}h", *values)


class TestSpaceMouse:
    def test_parses_the_short_and_the_long_report_formats(self):
        assert parse_report(report(1, 350, 0, -175)) == {"translation": (1.0, 0.0, -0.5)}
        assert parse_report(report(2, 0, 35, 0)) == {"rotation": (0.0, 0.1, 0.0)}
        long = parse_report(report(1, 0, -350, 0, 70, 0, 0))
        assert long == {"translation": (0.0, -1.0, 0.0), "rotation": (0.2, 0.0, 0.0)}
        assert parse_report(bytes([3, 0b10])) == {"buttons": 2}
        assert parse_report(b"") == {}

    def test_cap_motion_maps_to_the_world_frame_twist(self):
        # Push the cap away (device -y), to the right (device +x) and lift it (device -z).
        mouse = SpaceMouseTeleop(device=RecordedHid([report(1, 350, -350, -350, 0, 0, 175)]))
        mouse.connect()
        np.testing.assert_allclose(mouse.read().twist, [1.0, -1.0, 1.0, 0.0, 0.0, -0.5])

    def test_buttons_toggle_the_gripper_save_and_discard(self):
        mouse = SpaceMouseTeleop(
            device=RecordedHid([bytes([3, 1]), bytes([3, 0]), bytes([3, 2]), bytes([3, 0]), bytes([3, 3])])
        )
        command = mouse.read()
        assert command.gripper == -1.0
        assert command.events == [TeleopEvent.SAVE, TeleopEvent.DISCARD]

    def test_a_missing_spacemouse_names_the_ids_it_looked_for(self, monkeypatch):
        hid = pytest.importorskip("hid")
        monkeypatch.setattr(hid, "enumerate", lambda *args: [])
        with pytest.raises(DeviceNotFoundError, match=r"256f:c635 \(SpaceMouse Compact\).*udev"):
            SpaceMouseTeleop().connect()


class TestCommandMapper:
    def test_deadband_zeroes_drift_and_keeps_full_range(self):
        out = apply_deadband(np.array([0.05, -0.05, 1.0, -1.0, 0.54, 0.0]), 0.08)
        np.testing.assert_allclose(out, [0, 0, 1, -1, 0.5, 0], atol=1e-12)

    def test_franka_action_is_scaled_displacement_and_gripper(self):
        env = make("robot_rl/PandaPickAndPlace-v0")
        obs, _ = env.reset(seed=0)
        mapper = CommandMapper(env, TeleopConfig(linear_scale=0.5))
        action = mapper(TeleopCommand(twist=np.array([1.0, -1.0, 0.0, 0, 0, 0]), gripper=-1.0), obs)
        np.testing.assert_allclose(action, [0.5, -0.5, 0.0, -1.0])
        assert env.action_space.contains(action)

    def test_quadrotor_velocity_command_moves_the_vehicle_and_release_stops_it(self):
        env = make("robot_rl/QuadrotorHover-v1")
        obs, _ = env.reset(seed=0)
        mapper = CommandMapper(env)
        for _ in range(100):  # settle at the start point
            obs, *_ = env.step(mapper(TeleopCommand(), obs))
        start = obs["observation"][:3].copy()
        for _ in range(50):  # 1 s forward at full deflection (0.6 m/s)
            obs, *_ = env.step(mapper(TeleopCommand(twist=np.array([1.0, 0, 0, 0, 0, 0])), obs))
        for _ in range(100):
            obs, _, terminated, _, _ = env.step(mapper(TeleopCommand(), obs))
            assert not terminated
        moved = obs["observation"][:3] - start
        assert 0.3 < moved[0] < 1.0
        assert abs(moved[1]) < 0.05 and abs(moved[2]) < 0.05
        assert np.linalg.norm(obs["observation"][3:6]) < 0.05  # stopped


class ScriptedDevice:
    """A device that replays a list of commands, one per read."""

    name = "scripted"

    def __init__(self, commands: list[TeleopCommand]) -> None:
        self.commands = list(commands)

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def read(self) -> TeleopCommand:
        return self.commands.pop(0) if self.commands else TeleopCommand()


class TestSession:
    def run(self, commands: list[TeleopCommand]):
        import io

        from robot_rl.teleop.session import TeleopSession

        env = make("robot_rl/PandaReach-v0")
        steps = []
        session = TeleopSession(env, ScriptedDevice(commands), realtime=False, view=False, status=io.StringIO())
        outcome = session.episode(seed=0, index=0, on_step=lambda *step: steps.append(step))
        return outcome, steps, session

    def test_recording_starts_at_the_first_motion_and_save_keeps_it(self):
        move = TeleopCommand(twist=np.array([1.0, 0, 0, 0, 0, 0]))
        outcome, steps, session = self.run(
            [TeleopCommand(), TeleopCommand(), move, move, TeleopCommand(events=[TeleopEvent.SAVE])]
        )
        assert (outcome.keep, outcome.reason, outcome.steps) == (True, "save", 2)
        assert len(steps) == 2 and session.saved == 1
        obs, action, reward, done, info, state = steps[0]
        assert action[0] > 0 and state.ndim == 1 and not done

    def test_discard_drops_the_episode_and_the_time_limit_keeps_only_successes(self):
        outcome, _, session = self.run(
            [TeleopCommand(events=[TeleopEvent.START]), TeleopCommand(events=[TeleopEvent.DISCARD])]
        )
        assert (outcome.keep, outcome.reason, session.discarded) == (False, "discard", 1)
        outcome, steps, _ = self.run([TeleopCommand(events=[TeleopEvent.START])])  # idle until the time limit
        assert outcome.reason == "timeout" and outcome.steps == 50 and len(steps) == 50
        assert outcome.keep == outcome.success
