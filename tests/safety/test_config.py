"""Hardware configs: hardware/fr3.yaml's values, and errors that name the file and the key path."""

import copy
import math

import numpy as np
import pytest
import yaml

from robot_rl.safety.config import HARDWARE_DIR, franka_config_from_mapping, load_franka_config

FR3 = HARDWARE_DIR / "fr3.yaml"
HOME = [0.0, -0.1848, 0.0, -2.4967, 0.0, 2.3119, 0.785]


@pytest.fixture
def document():
    return yaml.safe_load(FR3.read_text())


def write(tmp_path, document, name="fr3.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def error_of(tmp_path, document):
    path = write(tmp_path, document)
    with pytest.raises(ValueError) as info:
        load_franka_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


class TestFr3File:
    def test_fr3_published_joint_limits(self):
        limits = load_franka_config().joint_limits
        assert limits.names == tuple(f"fr3_joint{i}" for i in range(1, 8))
        assert limits.position_lower == (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159)
        assert limits.position_upper == (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159)
        assert limits.velocity == (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)
        assert limits.acceleration == (10.0,) * 7 and limits.jerk == (5000.0,) * 7

    def test_the_sims_home_posture_is_inside_the_fr3_limits(self):
        limits = load_franka_config().joint_limits
        margin = load_franka_config().margins.joint_position
        assert (np.array(limits.position_lower) + margin < HOME).all()
        assert (np.array(HOME) < np.array(limits.position_upper) - margin).all()

    def test_workspace_lies_within_the_envs_clip_box_except_the_table_face(self):
        from robot_rl.envs.franka.panda_env import PandaEnv

        config = load_franka_config()
        assert (np.array(config.workspace.low)[:2] >= PandaEnv.workspace_low[:2]).all()
        assert (np.array(config.workspace.high) <= PandaEnv.workspace_high).all()
        assert config.workspace.low[2] == 0.0  # the table top; the env clips the target at 0.01
        assert config.command.max_displacement == PandaEnv.max_displacement

    def test_the_rate_limit_allows_the_cbf_to_brake(self):
        config = load_franka_config()
        assert config.rate_limit == (0.4, 0.4, 0.4) and config.cbf_gamma <= min(config.rate_limit)

    def test_the_file_names_itself_relative_to_the_repository(self):
        assert load_franka_config().source == "hardware/fr3.yaml"

    def test_other_top_level_sections_are_ignored(self, tmp_path, document):
        document["ros"] = {"topics": {"command": "/fr3/command"}, "rate_hz": 25}
        config = load_franka_config(write(tmp_path, document))
        assert config == franka_config_from_mapping(yaml.safe_load(FR3.read_text()), str(tmp_path / "fr3.yaml"))


class TestErrors:
    def test_a_lower_limit_above_its_upper_limit_names_the_entry(self, tmp_path, document):
        document["safety"]["joint_limits"]["position"]["lower"][3] = -0.15
        document["safety"]["joint_limits"]["position"]["upper"][3] = -3.04
        message = error_of(tmp_path, document)
        assert message.endswith("safety.joint_limits.position.lower[3] (-0.15) is above upper (-3.04).")

    def test_a_missing_key_is_named(self, tmp_path, document):
        del document["safety"]["cbf"]["gamma"]
        assert error_of(tmp_path, document).endswith("safety.cbf.gamma is missing.")

    def test_a_missing_safety_section_is_named(self, tmp_path, document):
        del document["safety"]
        assert "safety is missing" in error_of(tmp_path, document)

    def test_a_negative_velocity_limit_is_refused(self, tmp_path, document):
        document["safety"]["joint_limits"]["velocity"][2] = -2.62
        assert "safety.joint_limits.velocity[2] must be > 0.0. Got -2.62." in error_of(tmp_path, document)

    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_a_nonfinite_value_is_refused(self, tmp_path, document, value):
        document["safety"]["workspace"]["high"][1] = value
        assert "safety.workspace.high[1] must be finite" in error_of(tmp_path, document)

    def test_an_unknown_key_inside_safety_lists_the_valid_ones(self, tmp_path, document):
        document["safety"]["cbf"]["gama"] = 0.5
        message = error_of(tmp_path, document)
        assert "safety.cbf.gama is not a valid key" in message
        assert "['floor_gamma', 'gamma', 'velocity_lead_s']" in message

    def test_an_unknown_top_level_key_inside_safety_is_refused(self, tmp_path, document):
        document["safety"]["geofence"] = {}
        assert "safety.geofence is not a valid key" in error_of(tmp_path, document)

    def test_a_wrong_length_is_refused(self, tmp_path, document):
        document["safety"]["joint_limits"]["jerk"] = [5000.0] * 6
        assert "safety.joint_limits.jerk must be a list of 7 numbers" in error_of(tmp_path, document)

    def test_a_gain_out_of_range_is_refused(self, tmp_path, document):
        document["safety"]["cbf"]["gamma"] = 1.5
        assert "safety.cbf.gamma must be <= 1.0. Got 1.5." in error_of(tmp_path, document)

    def test_margins_wider_than_the_box_are_refused(self, tmp_path, document):
        document["safety"]["margins"]["workspace_m"] = 0.3
        assert "safety.workspace.high[0] (0.85) leaves no room above low (0.3)" in error_of(tmp_path, document)

    def test_an_unknown_fallback_lists_the_choices(self, tmp_path, document):
        document["safety"]["fallback"] = "freeze"
        assert "safety.fallback must be one of ['hold']. Got 'freeze'." in error_of(tmp_path, document)

    def test_per_axis_and_per_joint_lists_are_accepted(self, tmp_path, document):
        document["safety"]["rate_limit"] = [0.4, 0.4, 0.6]
        document["safety"]["margins"]["joint_velocity_fraction"] = [0.1] * 4 + [0.3] * 3
        config = load_franka_config(write(tmp_path, document))
        assert config.rate_limit == (0.4, 0.4, 0.6) and config.margins.joint_velocity == (0.1,) * 4 + (0.3,) * 3
        document["safety"]["margins"]["joint_velocity_fraction"][5] = 1.5
        assert "safety.margins.joint_velocity_fraction[5] must be <= 0.99" in error_of(tmp_path, document)

    def test_a_gamma_above_the_rate_limit_is_refused(self, tmp_path, document):
        document["safety"]["rate_limit"] = 0.3
        assert "safety.cbf.gamma (0.4) must be <= the smallest rate_limit (0.3)." in error_of(tmp_path, document)

    def test_a_boolean_is_not_a_number(self, tmp_path, document):
        document["safety"]["cbf"]["gamma"] = True
        assert "safety.cbf.gamma must be a number" in error_of(tmp_path, document)

    def test_a_missing_file_and_a_non_mapping_are_refused(self, tmp_path):
        with pytest.raises(ValueError, match="no such hardware file"):
            load_franka_config(tmp_path / "nope.yaml")
        (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
        with pytest.raises(ValueError, match="expected a mapping"):
            load_franka_config(tmp_path / "list.yaml")

    def test_the_document_is_not_modified(self, document):
        before = copy.deepcopy(document)
        franka_config_from_mapping(document, "x.yaml")
        assert document == before
