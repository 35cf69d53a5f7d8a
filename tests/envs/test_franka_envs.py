"""Contracts every Franka env keeps: Gymnasium API, determinism, rewards, control, input checks."""

from __future__ import annotations

import functools
import itertools
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robot_rl
from robot_rl.envs.franka.reach import PandaReachEnv
from tests.conftest import ENV_IDS, MUJOCO_GL_EXPLICIT, SPARSE_IDS, assert_rollouts_equal, rollout

REACH = "robot_rl/PandaReach-v0"
THRESHOLD = 0.05
"""Success distance of every task [m]."""


@functools.cache
def _reach(reward_type: str) -> gym.Env:
    """One Reach env per reward type, shared by the property test's many examples."""
    return robot_rl.make(REACH, reward_type=reward_type).unwrapped


CORNERS = list(itertools.product([-1.0, 1.0], repeat=3))
"""Directions towards the 8 corners of the workspace box."""


def corner_id(corner: tuple[float, ...]) -> str:
    return "".join("+-"[v < 0] for v in corner)


def state_bytes(env: gym.Env) -> dict[str, bytes]:
    """Everything a failed ``step`` must leave untouched, as raw bytes."""
    d = env.data
    return {
        "qpos": d.qpos.tobytes(),
        "qvel": d.qvel.tobytes(),
        "act": d.act.tobytes(),
        "ctrl": d.ctrl.tobytes(),
        "time": np.float64(d.time).tobytes(),
        "commanded_tcp": env.controller.commanded_tcp.tobytes(),
    }


class TestGymnasiumApi:
    @pytest.mark.parametrize("env_id", ENV_IDS)
    def test_check_env_passes_with_no_warning_but_the_unbounded_observation_box(self, make_env, env_id):
        env = make_env(env_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
        unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
        assert unexpected == []

    @pytest.mark.parametrize("env_id", ENV_IDS)
    def test_gym_make_truncates_at_its_episode_length_and_never_terminates(self, env_id):
        # v0: 50 periods (2 s); v1 (FR3 limits): 100 (4 s), Reach 50.
        steps = 100 if env_id.endswith("-v1") and "Reach" not in env_id else 50
        env = gym.make(env_id)
        env.reset(seed=0)
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(np.zeros(4))
            assert not terminated
            assert truncated == (t == steps - 1)
        env.close()

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_observation_holds_the_documented_entries(self, make_env, env_id):
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        o = obs["observation"]
        np.testing.assert_array_equal(o[:3], env.tcp_position)
        if "PandaReach" in env_id:
            assert o.shape == (10,)
            np.testing.assert_array_equal(obs["achieved_goal"], env.tcp_position)
        else:
            assert o.shape == (25,)
            np.testing.assert_array_equal(o[3:6], obs["achieved_goal"])
            np.testing.assert_allclose(o[6:9], o[3:6] - o[:3], atol=1e-15)
        np.testing.assert_array_equal(env.model.site_pos[env.model.site("goal").id], obs["desired_goal"])

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_returned_observations_are_not_changed_by_later_steps(self, make_env, env_id):
        env = make_env(env_id)
        returned = [env.reset(seed=0)[0]]
        returned += [env.step(np.array([0.5, -0.5, 0.5, 0.0]))[0] for _ in range(3)]
        kept = [{key: value.copy() for key, value in obs.items()} for obs in returned]
        for _ in range(3):
            env.step(np.array([-0.5, 0.5, -0.5, 1.0]))
        for obs, copy in zip(returned, kept, strict=True):
            for key in copy:
                np.testing.assert_array_equal(obs[key], copy[key])
        assert not np.array_equal(kept[0]["observation"], kept[-1]["observation"])  # the arm did move

    def test_render_gives_an_rgb_frame_of_the_requested_size(self, make_env):
        env = make_env("robot_rl/PandaPush-v0", render_mode="rgb_array", width=160, height=120)
        env.reset(seed=0)
        try:
            frame = env.render()
        except Exception as err:  # no offscreen GL on this machine
            if MUJOCO_GL_EXPLICIT:
                raise
            pytest.skip(f"no offscreen OpenGL here (set MUJOCO_GL; .ci/run installs osmesa): {err}")
        assert frame.shape == (120, 160, 3)
        assert frame.dtype == np.uint8
        assert frame.std() > 10.0  # a scene, not a blank image

    def test_render_without_render_mode_returns_none(self, make_env):
        env = make_env(REACH)
        env.reset(seed=0)
        assert env.render() is None


class TestDeterminism:
    @pytest.mark.parametrize("env_id", ENV_IDS)
    def test_same_seed_gives_identical_rollouts_in_two_envs(self, make_env, env_id):
        a = rollout(make_env(env_id), seed=7)
        b = rollout(make_env(env_id), seed=7)
        assert_rollouts_equal(a, b)

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_reseeding_the_same_env_replays_the_episode(self, make_env, env_id):
        env = make_env(env_id)
        first = rollout(env, seed=3, action_seed=1)
        rollout(env, seed=4, action_seed=2)  # an unrelated episode in between
        assert_rollouts_equal(first, rollout(env, seed=3, action_seed=1))

    @pytest.mark.parametrize("env_id", ENV_IDS)
    def test_different_seeds_give_different_goals(self, make_env, env_id):
        env = make_env(env_id)
        goals = {tuple(env.reset(seed=seed)[0]["desired_goal"]) for seed in range(5)}
        assert len(goals) == 5


class TestTaskSampling:
    """Goals and objects fall where each task's parameters (class attributes) say."""

    def test_reach_goal_lies_in_a_cube_around_the_home_tcp(self, make_env):
        env = make_env(REACH)
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            assert np.all(np.abs(obs["desired_goal"] - env.initial_tcp) <= env.target_range)

    @pytest.mark.parametrize("env_id", ["robot_rl/PandaPush-v0", "robot_rl/PandaPickAndPlace-v0"])
    def test_cube_and_goal_start_apart_in_their_squares(self, make_env, env_id):
        env = make_env(env_id)
        heights = []
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            cube, goal, home = obs["achieved_goal"], obs["desired_goal"], env.initial_tcp
            assert np.all(np.abs(cube[:2] - env.sample_center) <= env.obj_range)
            assert np.linalg.norm(cube[:2] - home[:2]) >= env.min_object_distance
            assert cube[2] == env.object_z
            assert np.all(np.abs(goal[:2] - env.sample_center) <= env.target_range)
            assert np.linalg.norm(goal[:2] - cube[:2]) > THRESHOLD
            heights.append(goal[2] - cube[2])
        if env_id == "robot_rl/PandaPush-v0":
            np.testing.assert_array_equal(heights, 0.0)
        else:
            assert np.all((np.array(heights) >= 0.0) & (np.array(heights) <= env.goal_height))
            assert 0.2 < np.mean(np.array(heights) > 0.0) < 0.8  # half in the air, half on the table

    def test_slide_goal_lies_far_beyond_the_puck(self, make_env):
        env = make_env("robot_rl/PandaSlide-v0")
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            puck, goal = obs["achieved_goal"], obs["desired_goal"]
            assert np.all(np.abs(puck[:2] - env.object_center) <= env.obj_range)
            assert np.all(np.abs(goal[:2] - env.target_center) <= env.target_range)
            assert np.linalg.norm(goal[:2] - puck[:2]) >= 0.1
            assert goal[2] == puck[2] == env.object_z


class TestReward:
    @pytest.mark.parametrize("reward_type", ["sparse", "dense"])
    def test_compute_reward_matches_hand_computed_values(self, make_env, reward_type):
        env = make_env(REACH, reward_type=reward_type)
        achieved = np.zeros((4, 3))
        desired = np.array([[0.03, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, 0.0, 0.0501], [0.3, 0.4, 0.0]])
        expected = {"sparse": [0.0, 0.0, -1.0, -1.0], "dense": [-0.03, -0.05, -0.0501, -0.5]}[reward_type]
        np.testing.assert_allclose(env.compute_reward(achieved, desired, None), expected, rtol=1e-6)

    @pytest.mark.parametrize("env_id", ENV_IDS)
    @pytest.mark.parametrize("batch_shape", [(), (1,), (7,), (2, 5)])
    def test_compute_reward_is_vectorised_over_leading_axes(self, make_env, env_id, batch_shape):
        env = make_env(env_id)
        rng = np.random.default_rng(0)
        achieved, desired = rng.uniform(-0.1, 0.1, (2, *batch_shape, 3))
        rewards = env.compute_reward(achieved, desired, [{}] * int(np.prod(batch_shape)))
        assert np.shape(rewards) == batch_shape
        pairs = zip(achieved.reshape(-1, 3), desired.reshape(-1, 3), strict=True)
        flat = [env.compute_reward(a, d, {}) for a, d in pairs]
        np.testing.assert_array_equal(np.reshape(rewards, -1), flat)

    @settings(max_examples=50, deadline=None)
    @given(
        goals=hnp.arrays(np.float64, st.tuples(st.just(2), st.integers(1, 16), st.just(3)), elements=st.floats(-1, 1)),
        reward_type=st.sampled_from(["sparse", "dense"]),
    )
    def test_compute_reward_is_minus_distance_or_minus_one_beyond_the_threshold(self, goals, reward_type):
        env = _reach(reward_type)
        achieved, desired = goals
        distance = np.linalg.norm(achieved - desired, axis=-1)
        expected = -distance if reward_type == "dense" else -(distance > THRESHOLD).astype(float)
        np.testing.assert_allclose(env.compute_reward(achieved, desired, None), expected, rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize("env_id", ENV_IDS)
    def test_step_reward_and_is_success_agree_with_compute_reward(self, make_env, env_id):
        env = make_env(env_id)
        run = rollout(env, seed=0, n_steps=20)
        achieved = np.array([o["achieved_goal"] for o in run["obs"]])
        desired = np.array([o["desired_goal"] for o in run["obs"]])
        batch = env.compute_reward(achieved, desired, run["info"])
        np.testing.assert_allclose(run["reward"], batch, rtol=1e-6)
        distance = np.linalg.norm(achieved - desired, axis=-1)
        np.testing.assert_array_equal([i["is_success"] for i in run["info"]], (distance <= THRESHOLD).astype(float))
        if env.reward_type == "sparse":
            assert set(run["reward"]) <= {0.0, -1.0}
            np.testing.assert_array_equal(np.array(run["reward"]) == 0.0, distance <= THRESHOLD)
        else:
            np.testing.assert_allclose(run["reward"], -distance, rtol=1e-12)

    @pytest.mark.parametrize("reward_type", ["sparse", "dense"])
    def test_reaching_the_goal_gives_success_and_the_best_reward(self, make_env, reward_type):
        env = make_env(REACH, reward_type=reward_type)
        obs, info = env.reset(seed=0)
        assert info["is_success"] == 0.0
        for _ in range(30):
            action = np.clip((obs["desired_goal"] - obs["achieved_goal"]) / env.max_displacement, -1, 1)
            obs, reward, _, _, info = env.step(np.append(action, 0.0))
        assert info["is_success"] == 1.0
        if reward_type == "sparse":
            assert reward == 0.0
        else:
            assert -THRESHOLD < reward <= 0.0


class TestCartesianControl:
    """The controller is shared by every task; Reach has no object in the way."""

    @pytest.mark.parametrize("axis", [0, 1, 2], ids=["x", "y", "z"])
    @pytest.mark.parametrize("sign", [1.0, -1.0], ids=["plus", "minus"])
    def test_an_axis_action_moves_the_tcp_along_that_axis_only(self, make_env, axis, sign):
        env = make_env(REACH)
        env.reset(seed=0)
        start = env.tcp_position
        action = np.zeros(4)
        action[axis] = sign
        for _ in range(5):
            env.step(action)
        moved = env.tcp_position - start
        assert sign * moved[axis] > 0.05  # 5 periods at full speed: at least 1 cm per period
        assert np.all(np.abs(np.delete(moved, axis)) < 0.1 * abs(moved[axis]))

    def test_zero_action_holds_a_settled_tcp_still_away_from_home(self, make_env):
        env = make_env(REACH)
        env.reset(seed=2)
        for _ in range(8):
            env.step(np.array([1.0, 0.5, -0.3, 0.0]))
        for _ in range(25):  # come to rest
            env.step(np.zeros(4))
        held = env.tcp_position
        for _ in range(100):
            env.step(np.zeros(4))
        assert np.linalg.norm(env.tcp_position - held) < 0.002

    @pytest.mark.parametrize("corner", CORNERS, ids=corner_id)
    def test_driving_into_a_workspace_corner_ends_inside_the_box(self, make_env, corner):
        env = make_env(REACH)
        env.reset(seed=1)
        start = env.tcp_position
        for _ in range(50):
            env.step(np.array([*corner, 0.0]))
            assert env.tcp_position[2] >= env.workspace_low[2] - 0.005  # never into the table
        tcp = env.tcp_position
        assert np.all(tcp >= env.workspace_low - 0.002), tcp
        assert np.all(tcp <= env.workspace_high + 0.002), tcp
        # It went towards the corner in every axis (the far corners are out of the arm's reach).
        assert np.all(np.array(corner) * (tcp - start) > 0.02)

    @pytest.mark.parametrize("corner", CORNERS, ids=corner_id)
    def test_driving_into_a_workspace_corner_never_leaves_the_box_by_more_than_1_cm(self, make_env, corner):
        env = make_env(REACH)
        env.reset(seed=1)
        for _ in range(50):
            env.step(np.array([*corner, 0.0]))
            tcp = env.tcp_position
            assert np.all(tcp >= env.workspace_low - 0.01), tcp
            assert np.all(tcp <= env.workspace_high + 0.01), tcp

    def test_gripper_action_sets_the_finger_opening(self, make_env):
        env = make_env("robot_rl/PandaPickAndPlace-v0")
        env.reset(seed=0)
        for opening, width in ((1.0, 0.04), (-1.0, 0.0), (0.0, 0.02)):
            for _ in range(10):
                obs, *_ = env.step(np.array([0.0, 0.0, 0.0, opening]))
            np.testing.assert_allclose(obs["observation"][9:11], width, atol=2e-3)

    @pytest.mark.parametrize("env_id", ["robot_rl/PandaReach-v0", "robot_rl/PandaPush-v0"])
    def test_blocked_gripper_ignores_the_gripper_action(self, make_env, env_id):
        fingers = []
        for opening in (1.0, -1.0):
            env = make_env(env_id)
            env.reset(seed=0)
            for _ in range(10):
                obs, *_ = env.step(np.array([0.2, 0.0, 0.0, opening]))
            fingers.append(obs["observation"][3:5] if env_id == REACH else obs["observation"][9:11])
        np.testing.assert_array_equal(fingers[0], fingers[1])


class TestBadInputs:
    @pytest.mark.parametrize(
        ("action", "message"),
        [
            (np.zeros(3), r"shape \(4,\).*got shape \(3,\)"),
            (np.zeros(5), r"shape \(4,\).*got shape \(5,\)"),
            (np.zeros((1, 4)), r"shape \(4,\).*got shape \(1, 4\)"),
            (0.0, r"shape \(4,\).*got shape \(\)"),
            (None, r"shape \(4,\)"),
            ("left", r"numeric array of shape \(4,\)"),
            ([0.0, 0.0, "up", 0.0], r"numeric array of shape \(4,\)"),
            (np.array([0.0, np.nan, 0.0, 0.0]), r"entries \[1\] are NaN or inf"),
            (np.array([np.inf, 0.0, 0.0, -np.inf]), r"entries \[0, 3\] are NaN or inf"),
        ],
        ids=["3", "5", "1x4", "scalar", "None", "str", "str-entry", "nan", "inf"],
    )
    def test_bad_action_raises_and_leaves_the_state_untouched(self, make_env, action, message):
        env = make_env("robot_rl/PandaPickAndPlace-v0")
        twin = make_env("robot_rl/PandaPickAndPlace-v0")
        rollout(env, seed=0, n_steps=5)
        rollout(twin, seed=0, n_steps=5)
        before = state_bytes(env)
        with pytest.raises(ValueError, match=message):
            env.step(action)
        assert state_bytes(env) == before
        # Nothing else changed either: the env carries on exactly as one that never saw the bad call.
        action = np.array([0.3, -0.2, 0.1, 0.5])
        np.testing.assert_array_equal(env.step(action)[0]["observation"], twin.step(action)[0]["observation"])

    def test_bad_action_leaves_the_latency_queue_untouched(self, make_env):
        env = make_env(REACH, randomize={"action_latency_steps": [2, 2]})
        twin = make_env(REACH, randomize={"action_latency_steps": [2, 2]})
        rollout(env, seed=0, n_steps=3)
        rollout(twin, seed=0, n_steps=3)
        with pytest.raises(ValueError):
            env.step(np.full(4, np.nan))
        for action in np.random.default_rng(5).uniform(-1, 1, (4, 4)):
            np.testing.assert_array_equal(env.step(action)[0]["observation"], twin.step(action)[0]["observation"])

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_out_of_range_actions_are_clipped_without_error(self, make_env, env_id):
        big, unit = make_env(env_id), make_env(env_id)
        big.reset(seed=0)
        unit.reset(seed=0)
        for _ in range(5):
            obs_big, *_ = big.step(np.array([3.0, -1e300, 1.5, 7.0]))
            obs_unit, *_ = unit.step(np.array([1.0, -1.0, 1.0, 1.0]))
            np.testing.assert_array_equal(obs_big["observation"], obs_unit["observation"])

    def test_actions_as_lists_and_float32_are_accepted(self, make_env):
        as_list, as_f32 = make_env(REACH), make_env(REACH)
        as_list.reset(seed=0)
        as_f32.reset(seed=0)
        obs_list, *_ = as_list.step([0.5, 0.0, 0.0, 0.0])
        obs_f32, *_ = as_f32.step(np.array([0.5, 0.0, 0.0, 0.0], dtype=np.float32))
        np.testing.assert_array_equal(obs_list["observation"], obs_f32["observation"])

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"reward_type": "shaped"}, "reward_type"),
            ({"ctrl_dt": 0.003}, "ctrl_dt"),
            ({"ctrl_dt": 0.0}, "ctrl_dt"),
            ({"render_mode": "human"}, "render_mode"),
        ],
    )
    def test_bad_constructor_arguments_are_refused(self, kwargs, message):
        with pytest.raises(ValueError, match=message):
            PandaReachEnv(**kwargs)


class TestPhysics:
    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_a_random_episode_raises_no_mujoco_warning(self, make_env, env_id):
        env = make_env(env_id)
        rollout(env, seed=0, n_steps=50)
        counts = [env.data.warning[i].number for i in range(len(env.data.warning))]
        assert counts == [0] * len(counts)
