"""The env registry: ids, Gymnasium registration, and "did you mean" for unknown ids."""

from __future__ import annotations

import gymnasium as gym
import pytest

import robot_rl
from robot_rl.envs.registry import ENV_SPECS, NAMESPACE, check_env_id, register_all

TASKS = [
    "PandaReach",
    "PandaPush",
    "PandaSlide",
    "PandaPickAndPlace",
    "QuadrotorHover",
    "QuadrotorWaypoint",
    "QuadrotorTrack",
]


class TestEnvSpecs:
    def test_every_task_has_a_sparse_and_a_dense_id(self):
        expected = {f"{NAMESPACE}/{task}{dense}-v0" for task in TASKS for dense in ("", "Dense")}
        assert set(ENV_SPECS) == expected

    @pytest.mark.parametrize("env_id", list(ENV_SPECS))
    def test_reward_type_and_description_follow_the_id(self, env_id):
        spec = ENV_SPECS[env_id]
        dense = "Dense-" in env_id
        assert spec.kwargs["reward_type"] == ("dense" if dense else "sparse")
        assert ("dense reward" if dense else "sparse reward") in spec.description
        # 2 s for the arm at 25 Hz; 5 s (Track 10 s) for the quadrotor at 50 Hz.
        expected_steps = 50 if "/Panda" in env_id else (500 if "Track" in env_id else 250)
        assert spec.max_episode_steps == expected_steps

    def test_importing_the_package_registers_every_id_with_gymnasium(self):
        for env_id, spec in ENV_SPECS.items():
            assert env_id in gym.registry
            assert gym.spec(env_id).max_episode_steps == spec.max_episode_steps

    def test_register_all_twice_is_harmless(self):
        register_all()
        register_all()
        assert all(env_id in gym.registry for env_id in ENV_SPECS)


class TestCheckEnvId:
    @pytest.mark.parametrize("env_id", list(ENV_SPECS))
    def test_registered_id_is_returned_unchanged(self, env_id):
        assert check_env_id(env_id) == env_id

    @pytest.mark.parametrize("env_id", list(ENV_SPECS))
    def test_bare_name_without_namespace_is_accepted(self, env_id):
        assert check_env_id(env_id.split("/", 1)[1]) == env_id

    @pytest.mark.parametrize(
        ("typo", "suggestion"),
        [
            ("robot_rl/PandaPsh-v0", "robot_rl/PandaPush-v0"),
            ("PandaPush-v1", "robot_rl/PandaPush-v0"),
            ("pandapush-v0", "robot_rl/PandaPush-v0"),
            ("robot_rl/PandaPush", "robot_rl/PandaPush-v0"),
            ("PandaReachDens-v0", "robot_rl/PandaReachDense-v0"),
            ("PandaPickPlace-v0", "robot_rl/PandaPickAndPlace-v0"),
            ("robot_rl/PandaSlideDense-v1", "robot_rl/PandaSlideDense-v0"),
        ],
    )
    def test_unknown_id_suggests_the_closest_registered_one(self, typo, suggestion):
        with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'") as err:
            check_env_id(typo)
        assert repr(typo) in str(err.value)

    @pytest.mark.parametrize("env_id", ["CartPole-v1", "xyz", ""])
    def test_unrelated_id_lists_the_registered_ids_without_a_guess(self, env_id):
        with pytest.raises(ValueError, match="unknown environment") as err:
            check_env_id(env_id)
        assert "Did you mean" not in str(err.value)
        assert all(known in str(err.value) for known in ENV_SPECS)


class TestMake:
    def test_make_accepts_a_bare_name(self):
        env = robot_rl.make("PandaPush-v0")
        assert env.spec.id == "robot_rl/PandaPush-v0"
        assert env.unwrapped.reward_type == "sparse"
        env.close()

    def test_make_passes_keyword_arguments_to_the_env(self):
        env = robot_rl.make("robot_rl/PandaPush-v0", reward_type="dense", distance_threshold=0.02)
        assert env.unwrapped.reward_type == "dense"
        assert env.unwrapped.distance_threshold == 0.02
        env.close()

    def test_make_with_an_unknown_id_raises_value_error_with_a_hint(self):
        with pytest.raises(ValueError, match="Did you mean 'robot_rl/PandaPush-v0'"):
            robot_rl.make("robot_rl/PandaPsh-v0")


@pytest.mark.parametrize("env_id", ["robot_rl/PandaPush-v0", "robot_rl/QuadrotorHover-v0"])
def test_dt_is_the_control_period_as_gymnasium_defines_it(env_id):
    import robot_rl

    env = robot_rl.make(env_id)
    try:
        assert env.unwrapped.dt == env.unwrapped.ctrl_dt > 0
        env.reset(seed=0)
        before = env.unwrapped.data.time
        env.step(env.action_space.sample() * 0)
        assert env.unwrapped.data.time - before == pytest.approx(env.unwrapped.dt)
    finally:
        env.close()
