"""Whole-chunk validation: values, finiteness, step-to-step jumps and jerk, flagged at the right step."""

from types import SimpleNamespace

import numpy as np
import pytest

from robot_rl.safety.chunk import ChunkValidator
from robot_rl.safety.config import load_franka_config


@pytest.fixture
def validator():
    return ChunkValidator(low=[-1.0] * 4, high=[1.0] * 4, max_jump=1.0, max_jerk=1.5)


def smooth_chunk(h=16):
    t = np.arange(h)[:, None] / h
    return 0.5 * np.sin(2 * np.pi * t + np.arange(4))


class TestValidate:
    def test_a_smooth_chunk_passes(self, validator):
        report = validator.validate(smooth_chunk())
        assert report.ok and report.steps == [] and report.summary() == "ok"

    def test_a_value_out_of_range_is_flagged_at_its_step(self, validator):
        chunk = smooth_chunk()
        chunk[9, 2] = 1.2
        report = validator.validate(chunk)
        assert [(i.step, i.kind, i.dims) for i in report.issues if i.kind == "above_high"] == [(9, "above_high", (2,))]
        assert report.issues[0].value == pytest.approx(0.2)

    def test_a_jump_is_flagged_at_the_step_it_lands_on(self, validator):
        chunk = np.zeros((8, 4))
        chunk[3:, 0] = 0.9
        chunk[5:, 0] = -0.3  # 1.2 jump into step 5
        report = validator.validate(chunk)
        jumps = [i for i in report.issues if i.kind == "jump"]
        assert [(i.step, i.dims) for i in jumps] == [(5, (0,))] and jumps[0].value == pytest.approx(1.2)

    def test_jerk_is_the_second_difference(self, validator):
        # 0, 0, 0.8, 0, 0: second differences 0.8, -1.6, 0.8 at steps 2, 3, 4; only step 3 is past 1.5.
        chunk = np.zeros((5, 4))
        chunk[2, 1] = 0.8
        report = validator.validate(chunk)
        assert [(i.step, i.kind) for i in report.issues] == [(3, "jerk")]
        assert report.issues[0].value == pytest.approx(1.6)

    def test_nonfinite_entries_are_flagged(self, validator):
        chunk = smooth_chunk()
        chunk[2, 3] = np.nan
        chunk[7, 0] = np.inf
        report = validator.validate(chunk)
        assert [i.step for i in report.issues if i.kind == "nonfinite"] == [2, 7]
        # A NaN makes no jump or jerk verdict; the inf also jumps into and out of step 7 (jerk up to step 9).
        assert report.steps == [2, 7, 8, 9]
        assert "step 2: nonfinite" in report.summary()

    def test_the_previous_command_checks_the_jump_into_step_0(self, validator):
        chunk = np.zeros((4, 4))
        assert validator.validate(chunk, previous=np.full(4, 0.5)).ok
        report = validator.validate(chunk, previous=np.array([1.0, 0.0, 0.0, -0.2]) * 1.2)
        assert [(i.step, i.kind) for i in report.issues] == [(0, "jump")]

    def test_wrong_shape_is_refused(self, validator):
        with pytest.raises(ValueError, match=r"\(H, 4\)"):
            validator.validate(np.zeros((4, 3)))

    def test_settings_are_validated(self):
        with pytest.raises(ValueError, match="low"):
            ChunkValidator(low=[1.0], high=[0.0], max_jump=1.0, max_jerk=1.0)
        with pytest.raises(ValueError, match="max_jump"):
            ChunkValidator(low=[0.0], high=[1.0], max_jump=0.0, max_jerk=1.0)


class TestMonitor:
    def test_as_a_controller_monitor_it_alarms_on_a_bad_new_chunk_only(self, validator):
        bad = smooth_chunk()
        bad[4, 0] = 5.0
        assert validator({}, smooth_chunk(), SimpleNamespace(new_chunk=True)) is False
        assert validator({}, bad, SimpleNamespace(new_chunk=True)) is True
        assert validator({}, bad, SimpleNamespace(new_chunk=False)) is True  # the verdict holds for the chunk
        assert validator.last_report.steps == [4, 5, 6]

    def test_fr3_thresholds_from_the_hardware_file(self):
        validator = ChunkValidator.from_config(load_franka_config().chunk)
        np.testing.assert_array_equal(validator.max_jump, [1.6, 1.6, 1.6, 2.0])
        np.testing.assert_array_equal(validator.max_jerk, [2.4, 2.4, 2.4, 3.0])
        assert validator.validate(smooth_chunk()).ok
        toggle = np.zeros((6, 4))
        toggle[:, 3] = [1.0, 1.0, -1.0, -1.0, -1.0, -1.0]  # the gripper closes: jump 2, second difference 2
        assert validator.validate(toggle).ok
        toggle[3, 3] = 1.0  # and opens again at once: chatter
        assert validator.validate(toggle).steps == [3, 4]

    def test_per_dimension_thresholds(self):
        validator = ChunkValidator([-1.0] * 2, [1.0] * 2, max_jump=[0.5, 2.0], max_jerk=[1.0, 4.0])
        chunk = np.array([[0.0, -1.0], [0.6, 1.0]])
        assert [(i.step, i.kind, i.dims) for i in validator.validate(chunk).issues] == [(1, "jump", (0,))]
