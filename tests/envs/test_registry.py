"""The env registry: ids, Gymnasium registration, and "did you mean" for unknown ids."""

from __future__ import annotations

import gymnasium as gym
import pytest

import robot_rl
from robot_rl.envs.registry import ENV_SPECS, NAMESPACE, RETIRED_IDS, check_env_id, register_all

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
        # The quadrotor ids are at v1 (the crash penalty changed the reward); the Franka ids have v0 (the
        # simulation's servo) and v1 (the FR3's joint limits).
        versions = {task: (1,) if task.startswith("Quadrotor") else (0, 1) for task in TASKS}
        expected = {
            f"{NAMESPACE}/{task}{dense}-v{v}" for task in TASKS for dense in ("", "Dense") for v in versions[task]
        }
        assert set(ENV_SPECS) == expected

    @pytest.mark.parametrize("env_id", list(ENV_SPECS))
    def test_reward_type_and_description_follow_the_id(self, env_id):
        spec = ENV_SPECS[env_id]
        dense = "Dense-" in env_id
        assert spec.kwargs["reward_type"] == ("dense" if dense else "sparse")
        assert ("dense reward" if dense else "sparse reward") in spec.description
        # The arm at 25 Hz: 2 s at v0, 4 s at v1 (FR3 limits; Reach 2 s); 5 s (Track 10 s) for the quadrotor at 50 Hz.
        if "/Panda" in env_id:
            expected_steps = 100 if env_id.endswith("-v1") and "Reach" not in env_id else 50
            assert spec.kwargs.get("motion", "servo") == ("fr3" if env_id.endswith("-v1") else "servo")
        else:
            expected_steps = 500 if "Track" in env_id else 250
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
            ("PandaPush-v7", "robot_rl/PandaPush-v1"),
            ("pandapush-v0", "robot_rl/PandaPush-v0"),
            ("robot_rl/PandaPush", "robot_rl/PandaPush-v1"),
            ("PandaReachDens-v0", "robot_rl/PandaReachDense-v0"),
            ("PandaPickPlace-v0", "robot_rl/PandaPickAndPlace-v0"),
            ("robot_rl/PandaSlideDens-v1", "robot_rl/PandaSlideDense-v1"),
        ],
    )
    def test_unknown_id_suggests_the_closest_registered_one(self, typo, suggestion):
        with pytest.raises(ValueError, match=f"Did you mean '{suggestion}'") as err:
            check_env_id(typo)
        assert repr(typo) in str(err.value)

    @pytest.mark.parametrize("retired", sorted(RETIRED_IDS))
    def test_a_retired_id_raises_naming_its_successor(self, retired):
        successor = retired.replace("-v0", "-v1")
        assert successor in ENV_SPECS
        for env_id in (retired, retired.split("/", 1)[1]):
            with pytest.raises(ValueError, match=f"{env_id!r} is retired: use {successor!r}"):
                check_env_id(env_id)
            with pytest.raises(ValueError, match=successor):
                robot_rl.make(env_id)

    def test_gymnasium_make_of_a_retired_id_names_its_successor(self):
        with pytest.raises(gym.error.DeprecatedEnv, match="robot_rl/QuadrotorHover-v1"):
            gym.make("robot_rl/QuadrotorHover-v0")

    def test_every_quadrotor_id_is_retired_at_v0(self):
        quadrotor = {k for k in ENV_SPECS if "/Quadrotor" in k}
        assert {RETIRED_IDS[k][0] for k in RETIRED_IDS} == quadrotor
        assert not set(RETIRED_IDS) & set(ENV_SPECS)

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
        with pytest.raises(ValueError, match="Did you mean 'robot_rl/PandaPush-v1'"):
            robot_rl.make("robot_rl/PandaPsh-v1")


@pytest.mark.parametrize("env_id", ["robot_rl/PandaPush-v0", "robot_rl/QuadrotorHover-v1"])
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
