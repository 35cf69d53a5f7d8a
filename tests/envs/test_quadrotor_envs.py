"""Contracts of the quadrotor envs: Gymnasium API, determinism, hover, crashes, input checks, randomization."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robot_rl.envs.base import ASSETS_DIR
from robot_rl.envs.quadrotor.flight_controller import GRAVITY, quat_to_matrix
from robot_rl.envs.randomization import DomainRandomization
from robot_rl.envs.registry import ENV_SPECS
from tests.conftest import QUADROTOR_IDS, assert_rollouts_equal, rollout

HOVER = "robot_rl/QuadrotorHover-v1"
WAYPOINT = "robot_rl/QuadrotorWaypoint-v1"
TRACK = "robot_rl/QuadrotorTrack-v1"
SPARSE_IDS = [HOVER, WAYPOINT, TRACK]
"""One id per quadrotor task."""
LEVEL = np.array([1.0, 0.0, 0.0, 0.0])
"""Identity attitude quaternion (w, x, y, z)."""


def place_level_and_still(env: gym.Env, pos: tuple[float, float, float] = (0.0, 0.0, 1.0)) -> None:
    """Put the vehicle level and at rest at ``pos`` [m], the rotors at hover thrust."""
    env._set_state(np.array(pos, dtype=np.float64), np.zeros(3), LEVEL, np.zeros(3))
    mujoco.mj_forward(env.model, env.data)


def state_bytes(env: gym.Env) -> dict[str, bytes]:
    """Everything a failed ``step`` must leave untouched, as raw bytes."""
    d = env.data
    return {
        "qpos": d.qpos.tobytes(),
        "qvel": d.qvel.tobytes(),
        "act": d.act.tobytes(),
        "ctrl": d.ctrl.tobytes(),
        "time": np.float64(d.time).tobytes(),
        "clipped_commands": np.int64(env.clipped_commands).tobytes(),
        "motor_saturations": np.int64(env.mixer.saturations).tobytes(),
    }


def warning_counts(data: mujoco.MjData) -> list[int]:
    return [data.warning[i].number for i in range(len(data.warning))]


class TestGymnasiumApi:
    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_check_env_passes_with_no_warning_but_the_unbounded_observation_box(self, make_env, env_id):
        env = make_env(env_id)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            check_env(env, skip_render_check=True)
        unexpected = [str(w.message) for w in caught if "infinity" not in str(w.message)]
        assert unexpected == []

    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_observation_has_21_entries_and_track_51(self, make_env, env_id):
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        size = 51 if "Track" in env_id else 21
        assert obs["observation"].shape == (size,)
        assert env.observation_space["observation"].shape == (size,)
        assert obs["achieved_goal"].shape == obs["desired_goal"].shape == (3,)
        assert env.action_space.shape == (4,)

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_observation_holds_the_documented_entries(self, make_env, env_id):
        env = make_env(env_id)
        env.reset(seed=1)
        obs, *_ = env.step(env.hover_action)
        o, qpos, qvel = obs["observation"], env.data.qpos, env.data.qvel
        np.testing.assert_array_equal(o[0:3], qpos[0:3])
        np.testing.assert_array_equal(o[0:3], obs["achieved_goal"])
        np.testing.assert_array_equal(o[3:6], qvel[0:3])
        np.testing.assert_allclose(o[6:15], np.ravel(quat_to_matrix(tuple(qpos[3:7]))), atol=1e-15)
        np.testing.assert_array_equal(o[15:18], qvel[3:6])
        np.testing.assert_allclose(o[18:21], obs["desired_goal"] - qpos[0:3], atol=1e-15)
        np.testing.assert_array_equal(env.model.site_pos[env.model.site("goal").id], obs["desired_goal"])
        if env_id == TRACK:
            ahead = [env.reference(env.time + 0.1 * (k + 1)) - qpos[0:3] for k in range(10)]
            np.testing.assert_allclose(o[21:], np.concatenate(ahead), atol=1e-15)

    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_gym_make_truncates_after_250_steps_and_track_after_500(self, env_id):
        steps = 500 if "Track" in env_id else 250
        assert ENV_SPECS[env_id].max_episode_steps == steps
        env = gym.make(env_id)
        env.reset(seed=0)
        place_level_and_still(env.unwrapped, tuple(env.unwrapped._goal))
        for t in range(steps):
            _, _, terminated, truncated, _ = env.step(env.unwrapped.hover_action)
            assert not terminated
            assert truncated == (t == steps - 1)
        env.close()

    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_step_reward_agrees_with_compute_reward(self, make_env, env_id):
        env = make_env(env_id)
        run = rollout(env, seed=0, n_steps=20)
        achieved = np.array([o["achieved_goal"] for o in run["obs"]])
        desired = np.array([o["desired_goal"] for o in run["obs"]])
        np.testing.assert_allclose(run["reward"], env.compute_reward(achieved, desired, run["info"]), rtol=1e-6)
        np.testing.assert_allclose([i["distance"] for i in run["info"]], np.linalg.norm(achieved - desired, axis=-1))
        if env.reward_type == "sparse":
            assert set(run["reward"]) <= {0.0, -1.0}


class TestDeterminism:
    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_same_seed_gives_identical_rollouts_in_two_envs(self, make_env, env_id):
        a = rollout(make_env(env_id), seed=7, n_steps=30)
        b = rollout(make_env(env_id), seed=7, n_steps=30)
        assert_rollouts_equal(a, b)

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_same_seed_gives_identical_rollouts_with_train_randomization(self, make_env, env_id):
        a = rollout(make_env(env_id, randomize="train"), seed=7, n_steps=30)
        b = rollout(make_env(env_id, randomize="train"), seed=7, n_steps=30)
        assert_rollouts_equal(a, b)

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_reseeding_the_same_env_replays_the_episode(self, make_env, env_id):
        env = make_env(env_id)
        first = rollout(env, seed=3, n_steps=30, action_seed=1)
        rollout(env, seed=4, n_steps=30, action_seed=2)  # an unrelated episode in between
        assert_rollouts_equal(first, rollout(env, seed=3, n_steps=30, action_seed=1))

    @pytest.mark.parametrize("env_id", QUADROTOR_IDS)
    def test_different_seeds_give_different_starts_and_goals(self, make_env, env_id):
        env = make_env(env_id)
        resets = [env.reset(seed=seed)[0] for seed in range(5)]
        assert len({tuple(obs["observation"]) for obs in resets}) == 5
        assert len({tuple(obs["achieved_goal"]) for obs in resets}) == 5
        goals = {tuple(obs["desired_goal"]) for obs in resets}
        if "Hover" in env_id:
            assert goals == {(0.0, 0.0, 1.0)}  # one fixed hover point
        else:
            assert len(goals) == 5


class TestTaskSampling:
    """Starts and goals fall where each task's docstring says."""

    def test_hover_starts_near_the_hover_point_disturbed(self, make_env):
        env = make_env(HOVER)
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            o = obs["observation"]
            assert np.all(np.abs(obs["achieved_goal"] - [0.0, 0.0, 1.0]) <= 0.2)
            assert np.all(np.abs(o[3:6]) <= 0.3)
            assert math.acos(min(1.0, o[14])) <= 0.3 + 1e-9  # tilt: angle of body z from world z
            assert np.all(np.abs(o[15:18]) <= 1.0)
            np.testing.assert_allclose(env.data.act, env.params.hover_thrust / 4)

    def test_waypoint_start_and_goal_lie_in_the_box_at_least_0_3_m_apart(self, make_env):
        env = make_env(WAYPOINT)
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            for point in (obs["achieved_goal"], obs["desired_goal"]):
                assert np.all(point >= env.box_low) and np.all(point <= env.box_high)
            assert np.linalg.norm(obs["desired_goal"] - obs["achieved_goal"]) >= 0.3
            assert math.acos(min(1.0, obs["observation"][14])) <= 0.1 + 1e-9

    def test_track_starts_on_the_figure_eight(self, make_env):
        env = make_env(TRACK)
        for seed in range(30):
            obs, _ = env.reset(seed=seed)
            np.testing.assert_array_equal(obs["desired_goal"], env.reference(0.0))
            assert np.all(np.abs(obs["achieved_goal"] - env.reference(0.0)) <= 0.05)
            x, y, z = env.reference(0.0) - env.center
            assert abs(x) <= 0.6 and abs(y) <= 0.3 and z == 0.0

    def test_track_goal_follows_the_reference_and_reports_its_rmse(self, make_env):
        env = make_env(TRACK)
        env.reset(seed=0)
        errors = []
        for t in range(1, 11):
            obs, _, _, _, info = env.step(env.hover_action)
            np.testing.assert_array_equal(obs["desired_goal"], env.reference(t * env.ctrl_dt))
            errors.append(info["distance"])
            assert info["tracking_rmse"] == pytest.approx(math.sqrt(np.mean(np.square(errors))), rel=1e-12)


class TestHoverEquilibrium:
    def test_hover_keyframe_holds_still_for_1_s_with_thrust_equal_to_weight(self):
        model = mujoco.MjModel.from_xml_path(str(ASSETS_DIR / "quadrotor/scene.xml"))
        data = mujoco.MjData(model)
        mujoco.mj_resetDataKeyframe(model, data, model.key("hover").id)
        mass = model.body_mass[model.body("cf2").id]
        assert mass == pytest.approx(0.027)
        assert data.ctrl.sum() == pytest.approx(mass * 9.81, abs=1e-6)
        assert data.act.sum() == pytest.approx(mass * 9.81, abs=1e-6)
        start = data.qpos.copy()
        mujoco.mj_step(model, data, nstep=round(1.0 / model.opt.timestep))
        assert data.time == pytest.approx(1.0)
        assert np.max(np.abs(data.qpos[0:3] - start[0:3])) < 1e-6
        assert np.max(np.abs(data.qvel)) < 1e-6
        assert warning_counts(data) == [0] * len(data.warning)

    @pytest.mark.parametrize("sim_dt", [0.002, 0.001])
    def test_hover_action_holds_a_level_still_vehicle_for_1_s(self, make_env, sim_dt):
        env = make_env(HOVER, sim_dt=sim_dt)
        assert env.n_substeps == round(env.ctrl_dt / sim_dt)
        env.reset(seed=0)
        place_level_and_still(env)
        np.testing.assert_allclose(0.5 * (env.hover_action[0] + 1.0) * env.params.max_thrust, 0.027 * GRAVITY)
        for _ in range(50):
            _, _, terminated, _, info = env.step(env.hover_action)
            assert not terminated
        assert np.linalg.norm(env.data.qpos[0:3] - [0.0, 0.0, 1.0]) < 1e-3
        assert info["motor_saturations"] == 0
        assert warning_counts(env.data) == [0] * len(env.data.warning)

    def test_sim_dt_of_1_ms_runs_20_substeps_at_1_khz(self, make_env):
        env = make_env(HOVER, sim_dt=0.001)
        assert env.n_substeps == 20
        assert env.model.opt.timestep == 0.001
        assert env.rate_controller.dt == 0.001
        env.reset(seed=0)
        env.step(env.hover_action)
        assert env.data.time == pytest.approx(0.02)

    def test_hovering_at_the_goal_succeeds_after_the_1_s_hold(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env)
        successes = [env.step(env.hover_action)[4]["is_success"] for _ in range(60)]
        assert successes == [0.0] * 49 + [1.0] * 11


class TestCrashTermination:
    def test_zero_thrust_from_hover_falls_to_the_floor_within_2_s(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env)
        for _ in range(100):
            _, _, terminated, _, info = env.step(np.array([-1.0, 0.0, 0.0, 0.0]))
            if terminated:
                break
            assert info["crash"] is None
        assert terminated
        assert info["crash"] == "floor"
        assert env.time <= 0.6  # free fall from 1 m takes 0.45 s; measured 0.48 s with the rotor lag

    def test_spinning_at_full_roll_rate_tips_past_80_degrees(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env)
        action = env.hover_action
        action[1] = 1.0  # 6 rad/s
        for _ in range(50):
            _, _, terminated, _, info = env.step(action)
            if terminated:
                break
        assert terminated
        assert info["crash"] == "tilt"

    @pytest.mark.parametrize("pos", [(2.1, 0.0, 1.0), (0.0, -2.1, 1.0), (0.0, 0.0, 2.6)], ids=["x", "-y", "z"])
    def test_leaving_the_geofence_terminates(self, make_env, pos):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env, pos)
        _, _, terminated, _, info = env.step(env.hover_action)
        assert terminated
        assert info["crash"] == "geofence"
        assert info["is_success"] == 0.0

    def test_inside_the_geofence_near_its_corner_does_not_terminate(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env, (1.9, -1.9, 2.4))
        _, _, terminated, _, info = env.step(env.hover_action)
        assert not terminated
        assert info["crash"] is None

    @pytest.mark.parametrize("dense", [False, True], ids=["sparse", "dense"])
    def test_a_crash_costs_the_worst_reward_of_every_step_left(self, make_env, dense):
        env = make_env(HOVER.replace("Hover", "HoverDense") if dense else HOVER)
        env.reset(seed=0)
        place_level_and_still(env)
        steps = 0
        while True:
            _, reward, terminated, _, info = env.step(np.array([-1.0, 0.0, 0.0, 0.0]))
            steps += 1
            if terminated:
                break
        assert info["crash"] == "floor"
        worst = math.dist(env.geofence_low, env.geofence_high) if dense else 1.0
        step_reward = -info["distance"] if dense else -1.0
        # As if the vehicle flew on to the time limit at the worst per-step reward: staying in the air
        # never returns less than crashing.
        assert reward == pytest.approx(step_reward - worst * (250 - steps))

    def test_episode_steps_match_the_registered_time_limits(self, make_env):
        for env_id in QUADROTOR_IDS:
            assert make_env(env_id).episode_steps == ENV_SPECS[env_id].max_episode_steps

    def test_reset_clears_the_crash(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env, (2.5, 0.0, 1.0))
        assert env.step(env.hover_action)[4]["crash"] == "geofence"
        env.reset(seed=0)
        _, _, terminated, _, info = env.step(env.hover_action)
        assert not terminated
        assert info["crash"] is None


class TestBadInputs:
    @pytest.mark.parametrize(
        ("action", "message"),
        [
            (np.zeros(3), r"shape \(4,\).*got shape \(3,\)"),
            (np.zeros((2, 4)), r"shape \(4,\).*got shape \(2, 4\)"),
            (0.0, r"shape \(4,\).*got shape \(\)"),
            ("up", r"numeric array of shape \(4,\)"),
            (np.array([0.0, np.nan, 0.0, 0.0]), r"entries \[1\] are NaN or inf"),
            (np.array([np.inf, 0.0, 0.0, -np.inf]), r"entries \[0, 3\] are NaN or inf"),
            (np.array([5.0, 0.0, np.nan, 0.0]), r"entries \[2\] are NaN or inf"),  # out of range and NaN
        ],
        ids=["3", "2x4", "scalar", "str", "nan", "inf", "big-and-nan"],
    )
    def test_bad_action_raises_and_leaves_the_state_untouched(self, make_env, action, message):
        env, twin = make_env(HOVER), make_env(HOVER)
        for e in (env, twin):
            e.reset(seed=0)
            for _ in range(3):
                e.step(np.array([2.0, 0.3, -0.2, 0.1]))  # clipped: the count is not zero
        assert env.clipped_commands == 3
        before = state_bytes(env)
        with pytest.raises(ValueError, match=message):
            env.step(action)
        assert state_bytes(env) == before
        # Nothing else changed either: the env carries on exactly as one that never saw the bad call.
        action = np.array([0.1, -0.2, 0.1, 0.5])
        a, b = env.step(action), twin.step(action)
        np.testing.assert_array_equal(a[0]["observation"], b[0]["observation"])
        assert a[4] == b[4]

    def test_bad_action_leaves_the_latency_queue_untouched(self, make_env):
        env = make_env(HOVER, randomize={"action_latency_steps": [2, 2]})
        twin = make_env(HOVER, randomize={"action_latency_steps": [2, 2]})
        rollout(env, seed=0, n_steps=3)
        rollout(twin, seed=0, n_steps=3)
        with pytest.raises(ValueError):
            env.step(np.full(4, np.nan))
        for action in np.random.default_rng(5).uniform(-1, 1, (4, 4)):
            np.testing.assert_array_equal(env.step(action)[0]["observation"], twin.step(action)[0]["observation"])

    def test_out_of_range_actions_are_clipped_and_counted(self, make_env):
        big, unit = make_env(HOVER), make_env(HOVER)
        big.reset(seed=0)
        unit.reset(seed=0)
        for action, clipped in [([2.0, 0.0, 0.0, 0.0], 1), ([0.0] * 4, 1), ([-1.5, 3.0, -1e300, 1.0], 2)]:
            obs_big, _, _, _, info = big.step(np.array(action))
            obs_unit, *_ = unit.step(np.clip(action, -1.0, 1.0))
            np.testing.assert_array_equal(obs_big["observation"], obs_unit["observation"])
            assert info["clipped_commands"] == big.clipped_commands == clipped
        big.reset(seed=0)
        assert big.step(np.zeros(4))[4]["clipped_commands"] == 0

    def test_commands_at_the_bounds_are_not_counted_as_clipped(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        _, _, _, _, info = env.step(np.array([1.0, -1.0, 1.0, -1.0]))
        assert info["clipped_commands"] == 0

    def test_mixer_saturations_are_counted_in_info_and_reset(self, make_env):
        env = make_env(HOVER)
        env.reset(seed=0)
        place_level_and_still(env)
        assert env.step(env.hover_action)[4]["motor_saturations"] == 0
        # Full thrust and a roll-rate command: the left rotors are asked for more than 0.149 N.
        saturations = env.step(np.array([1.0, 1.0, 0.0, 0.0]))[4]["motor_saturations"]
        assert 0 < saturations <= 4 * env.n_substeps
        assert env.step(np.array([1.0, 1.0, 0.0, 0.0]))[4]["motor_saturations"] > saturations  # cumulative
        env.reset(seed=0)
        assert env.mixer.saturations == 0

    def test_misspelt_randomization_key_suggests_the_right_one(self, make_env):
        with pytest.raises(ValueError, match=r"unknown key `mass_scael`.*Did you mean `mass_scale`"):
            make_env(HOVER, randomize={"mass_scael": [0.9, 1.1]})

    def test_franka_randomization_key_is_refused_naming_the_quadrotor_keys(self, make_env):
        with pytest.raises(ValueError, match="does not randomize object_mass_scale") as err:
            make_env(HOVER, randomize={"object_mass_scale": [0.5, 2.0]})
        for key in ("mass_scale", "motor_lag_scale", "wind_gust_std", "obs_latency_steps"):
            assert key in str(err.value)

    def test_quadrotor_randomization_key_is_refused_by_a_franka_env(self, make_env):
        with pytest.raises(ValueError, match="does not randomize wind_gust_std"):
            make_env("robot_rl/PandaReach-v0", randomize={"wind_gust_std": 0.01})


class TestRandomization:
    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_train_preset_draws_mass_within_30_percent(self, make_env, env_id):
        env = make_env(env_id, randomize="train")
        body = env.model.body("cf2").id
        scales = []
        for seed in range(20):
            _, info = env.reset(seed=seed)
            scale = env.model.body_mass[body] / 0.027
            assert 0.7 <= scale <= 1.3
            assert scale == pytest.approx(info["randomization"].mass_scale, rel=1e-12)
            scales.append(scale)
        assert np.ptp(scales) > 0.2  # spread over the range, not stuck at one value
        env.step(env.hover_action)  # and it steps

    def test_mass_scale_multiplies_the_mass_and_a_nominal_env_keeps_the_nominal_mass(self, make_env):
        env = make_env(HOVER, randomize={"mass_scale": [1.3, 1.3]})
        body = env.model.body("cf2").id
        env.reset(seed=0)
        assert env.model.body_mass[body] == pytest.approx(1.3 * 0.027, rel=1e-12)
        assert env.params.mass == 0.027  # the controllers keep the nominal parameters
        nominal = make_env(HOVER)
        nominal.reset(seed=0)
        assert nominal.model.body_mass[body] == 0.027
        env.randomization = DomainRandomization()  # the same env, randomization switched off
        env.reset(seed=0)
        assert env.model.body_mass[body] == 0.027

    def test_heavier_vehicle_sinks_on_the_nominal_hover_action(self, make_env):
        env = make_env(HOVER, randomize={"mass_scale": [1.3, 1.3]})
        env.reset(seed=0)
        place_level_and_still(env)
        for _ in range(25):
            env.step(env.hover_action)
        assert env.data.qpos[2] < 0.95  # 0.23 g down for 0.5 s: about 0.28 m

    def test_motor_lag_scale_multiplies_the_rotor_time_constant(self, make_env):
        env = make_env(HOVER, randomize={"motor_lag_scale": [2.0, 2.0]})
        env.reset(seed=0)
        np.testing.assert_allclose(env.model.actuator_dynprm[:, 0], 0.04)
        env.randomization = DomainRandomization()
        env.reset(seed=0)
        np.testing.assert_array_equal(env.model.actuator_dynprm[:, 0], 0.02)

    def test_motor_constant_and_inertia_scales_change_the_gears_and_inertia(self, make_env):
        env = make_env(HOVER, randomize={"motor_constant_scale": [1.1, 1.1], "inertia_scale": [0.8, 0.8]})
        env.reset(seed=0)
        np.testing.assert_allclose(env.model.actuator_gear[:, 2], 1.1)
        np.testing.assert_allclose(np.abs(env.model.actuator_gear[:, 5]), 1.1 * 0.0251)
        np.testing.assert_allclose(
            env.model.body_inertia[env.model.body("cf2").id], np.multiply(0.8, env.params.inertia)
        )

    def test_wind_gusts_push_a_hovering_vehicle_off_its_point(self, make_env):
        drift = {}
        for std in (0.0, 0.01):
            env = make_env(HOVER, randomize={"wind_gust_std": std})
            env.reset(seed=0)
            place_level_and_still(env)
            for _ in range(50):
                env.step(env.hover_action)
            drift[std] = np.linalg.norm(env.data.qpos[0:3] - [0.0, 0.0, 1.0])
        assert drift[0.0] < 1e-6
        assert drift[0.01] > 0.01  # measured 0.19 m after 1 s

    def test_drag_slows_a_moving_vehicle(self, make_env):
        speeds = {}
        for drag in (0.0, 0.02):
            env = make_env(HOVER, randomize={"drag_coefficient": [drag, drag]})
            env.reset(seed=0)
            env._set_state(np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), LEVEL, np.zeros(3))
            for _ in range(25):
                env.step(env.hover_action)
            speeds[drag] = env.data.qvel[0]
        assert speeds[0.0] == pytest.approx(1.0, abs=1e-9)
        # dv/dt = -(c/m) v: exp(-0.02 / 0.027 x 0.5 s) = 0.69.
        assert speeds[0.02] == pytest.approx(math.exp(-0.02 / 0.027 * 0.5), rel=0.01)

    @pytest.mark.parametrize("lag", [1, 3])
    def test_obs_latency_delays_the_observation_by_k_steps(self, make_env, lag):
        delayed = rollout(make_env(HOVER, randomize={"obs_latency_steps": [lag, lag]}), seed=0, n_steps=15)
        fresh = rollout(make_env(HOVER), seed=0, n_steps=15)
        true = [fresh["reset_obs"]["observation"]] + [o["observation"] for o in fresh["obs"]]
        seen = [delayed["reset_obs"]["observation"]] + [o["observation"] for o in delayed["obs"]]
        for t, obs in enumerate(seen):
            np.testing.assert_array_equal(obs, true[max(0, t - lag)])
        # Only ``observation`` is delayed; the goals (and the reward) are current.
        for a, b in zip(delayed["obs"], fresh["obs"], strict=True):
            np.testing.assert_array_equal(a["achieved_goal"], b["achieved_goal"])
        assert delayed["reward"] == fresh["reward"]

    def test_action_latency_applies_the_hover_action_while_the_queue_fills(self, make_env):
        late, now = make_env(HOVER, randomize={"action_latency_steps": [2, 2]}), make_env(HOVER)
        late.reset(seed=0)
        now.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1.0, 1.0, (6, 4))
        late_obs = [late.step(a)[0]["observation"] for a in actions]
        now_obs = [now.step(a)[0]["observation"] for a in [now.hover_action, now.hover_action, *actions[:4]]]
        np.testing.assert_array_equal(late_obs, now_obs)

    def test_obs_noise_changes_only_the_observation(self, make_env):
        noisy = rollout(make_env(HOVER, randomize={"obs_noise_std": 0.01}), seed=0, n_steps=5)
        clean = rollout(make_env(HOVER), seed=0, n_steps=5)
        diff = noisy["obs"][-1]["observation"] - clean["obs"][-1]["observation"]
        assert 0.001 < np.std(diff) < 0.03
        np.testing.assert_array_equal(noisy["obs"][-1]["achieved_goal"], clean["obs"][-1]["achieved_goal"])


class TestVersions:
    """The ids moved to v1 with the crash penalty; v0 is retired, and nothing shipped still names it."""

    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_the_docstring_records_the_version_history(self, env_id):
        doc = type(gym.make(env_id).unwrapped).__doc__
        history = doc.split("## Version History", 1)[1]
        assert "* v1:" in history and "crash_penalty" in history
        assert "* v0:" in history and "retired" in history

    def test_every_shipped_quadrotor_policy_names_a_registered_id(self):
        from robot_rl.envs.registry import check_env_id
        from robot_rl.export.metadata import read_metadata
        from robot_rl.provenance import REPO_ROOT

        cards = [read_metadata(d) for d in sorted((REPO_ROOT / "policies").glob("quadrotor_*"))]
        assert len(cards) >= 2
        for card in cards:
            assert check_env_id(card.env_id) == card.env_id
            assert card.eval is None or card.eval["env"] == card.env_id
