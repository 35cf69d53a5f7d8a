"""Domain randomization: config validation, what it does to the model, latency, noise, seeding."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_rl.envs.randomization import PRESETS, DomainRandomization, RandomizationSample, resolve_randomization
from tests.conftest import SPARSE_IDS, assert_rollouts_equal, rollout

REACH = "robot_rl/PandaReach-v0"
OBJECT_IDS = [env_id for env_id in SPARSE_IDS if "PandaReach" not in env_id]
VALID_KEYS = [
    "object_mass_scale",
    "object_friction_scale",
    "joint_damping_scale",
    "actuator_gain_scale",
    "obs_noise_std",
    "action_latency_steps",
]


def write_yaml(tmp_path, text: str):
    path = tmp_path / "randomization.yaml"
    path.write_text(text)
    return path


class TestConfigValidation:
    def test_unknown_yaml_key_is_named_with_a_suggestion_and_the_valid_keys(self, tmp_path):
        path = write_yaml(tmp_path, "object_mass_scale: [0.5, 2.0]\nobject_mas_scale: [1, 2]\n")
        with pytest.raises(ValueError) as err:
            DomainRandomization.from_yaml(path)
        message = str(err.value)
        assert str(path) in message
        assert "unknown key `object_mas_scale`" in message
        assert "Did you mean `object_mass_scale`?" in message
        assert all(key in message for key in VALID_KEYS)

    def test_unknown_key_far_from_any_valid_one_gets_no_guess(self):
        with pytest.raises(ValueError, match="unknown key `gravity`") as err:
            DomainRandomization.from_dict({"gravity": [9, 10]})
        assert "Did you mean" not in str(err.value)

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"object_mass_scale": [2.0, 1.0]}, r"`object_mass_scale` must be \[low, high\] with low <= high"),
            ({"action_latency_steps": [3, 1]}, r"`action_latency_steps` must be \[low, high\] with low <= high"),
            ({"object_mass_scale": ["heavy", 2.0]}, r"`object_mass_scale` must be a \[low, high\] pair of numbers"),
            ({"object_mass_scale": "heavy"}, r"`object_mass_scale` must be a \[low, high\] pair of numbers"),
            ({"object_mass_scale": 1.5}, r"`object_mass_scale` must be a \[low, high\] pair of numbers"),
            ({"object_mass_scale": [1.0, 2.0, 3.0]}, r"`object_mass_scale` must be a \[low, high\] pair of numbers"),
            ({"object_mass_scale": [True, 2.0]}, r"`object_mass_scale` must be a \[low, high\] pair of numbers"),
            ({"obs_noise_std": "0.01"}, r"`obs_noise_std` must be a number"),
            ({"obs_noise_std": True}, r"`obs_noise_std` must be a number"),
            ({"obs_noise_std": -0.1}, r"`obs_noise_std` must be a finite number >= 0"),
            ({"obs_noise_std": float("nan")}, r"`obs_noise_std` must be a finite number >= 0"),
            ({"object_mass_scale": [1.0, float("inf")]}, r"`object_mass_scale` must be finite numbers"),
            ({"object_mass_scale": [float("nan"), 1.0]}, r"`object_mass_scale` must be finite numbers"),
            ({"actuator_gain_scale": [0.0, 1.0]}, r"`actuator_gain_scale` must be positive scales"),
            ({"joint_damping_scale": [-1.0, 1.0]}, r"`joint_damping_scale` must be positive scales"),
            ({"action_latency_steps": [0.5, 1]}, r"`action_latency_steps` must be integers"),
            ({"action_latency_steps": [0, float("inf")]}, r"`action_latency_steps` must be integers"),
            ({"action_latency_steps": [float("nan"), 1]}, r"`action_latency_steps` must be integers"),
            ({"action_latency_steps": [-1, 1]}, r"`action_latency_steps` must be integers >= 0"),
        ],
    )
    def test_bad_value_is_refused_naming_the_key(self, values, message):
        with pytest.raises(ValueError, match=message):
            DomainRandomization.from_dict(values)

    def test_bad_value_in_a_yaml_file_names_the_file(self, tmp_path):
        path = write_yaml(tmp_path, "object_friction_scale: [1.3, 0.7]\n")
        with pytest.raises(ValueError, match=f"{path}: `object_friction_scale` must be"):
            DomainRandomization.from_yaml(path)

    def test_valid_yaml_gives_the_written_ranges(self, tmp_path):
        path = write_yaml(
            tmp_path,
            "object_mass_scale: [0.5, 2]\nobs_noise_std: 1e-3\naction_latency_steps: [0, 2]\n"
            "actuator_gain_scale: [8e-1, 1.2]\n",
        )
        config = DomainRandomization.from_yaml(path)
        assert config == DomainRandomization(
            object_mass_scale=(0.5, 2.0),
            obs_noise_std=0.001,
            action_latency_steps=(0, 2),
            actuator_gain_scale=(0.8, 1.2),
        )
        assert config.enabled

    def test_empty_yaml_is_nominal(self, tmp_path):
        config = DomainRandomization.from_yaml(write_yaml(tmp_path, "# nothing randomized\n"))
        assert config == DomainRandomization()
        assert not config.enabled

    @pytest.mark.parametrize("text", ["[0.5, 2.0]\n", "false\n", "0.5\n"])
    def test_yaml_that_is_not_a_mapping_is_refused(self, tmp_path, text):
        with pytest.raises(ValueError, match="expected a mapping of randomization keys"):
            DomainRandomization.from_yaml(write_yaml(tmp_path, text))

    def test_invalid_yaml_syntax_is_refused_naming_the_file(self, tmp_path):
        path = write_yaml(tmp_path, "object_mass_scale: [0.5, 2.0\n")
        with pytest.raises(ValueError, match=f"{path}: not valid YAML"):
            DomainRandomization.from_yaml(path)

    def test_missing_yaml_file_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="does not exist"):
            DomainRandomization.from_yaml(tmp_path / "missing.yaml")


class TestResolveRandomization:
    def test_none_and_nominal_are_off(self):
        assert not resolve_randomization(None).enabled
        assert not resolve_randomization("nominal").enabled

    def test_preset_name_gives_the_preset(self):
        assert resolve_randomization("train") is PRESETS["train"]
        assert PRESETS["train"].enabled

    def test_mapping_and_yaml_path_are_parsed(self, tmp_path):
        path = write_yaml(tmp_path, "object_mass_scale: [2, 2]\n")
        expected = DomainRandomization(object_mass_scale=(2.0, 2.0))
        assert resolve_randomization(str(path)) == expected
        assert resolve_randomization(path) == expected
        assert resolve_randomization({"object_mass_scale": [2, 2]}) == expected

    def test_misspelt_preset_suggests_the_close_one(self):
        with pytest.raises(ValueError, match=r"preset \(nominal, train, wide\).*Did you mean 'train'\?"):
            resolve_randomization("trian")

    def test_value_of_the_wrong_type_is_refused(self):
        with pytest.raises(ValueError, match="preset name or a YAML file path"):
            resolve_randomization(5)

    def test_env_refuses_a_bad_randomize_argument(self, make_env):
        with pytest.raises(ValueError, match="unknown key `mass`"):
            make_env(REACH, randomize={"mass": [1, 2]})


class TestSampling:
    def test_nominal_config_draws_nothing_from_the_generator(self):
        rng = np.random.default_rng(0)
        state = rng.bit_generator.state
        assert DomainRandomization().sample(rng) == RandomizationSample()
        assert rng.bit_generator.state == state

    def test_train_preset_draws_within_its_ranges_and_varies(self):
        config = PRESETS["train"]
        samples = [config.sample(np.random.default_rng(seed)) for seed in range(50)]
        for field in dataclasses.fields(RandomizationSample):
            if field.name == "wind_direction":  # drawn with wind_steady, not a key of its own
                continue
            values = [getattr(s, field.name) for s in samples]
            spec = getattr(config, field.name)
            low, high = (spec, spec) if isinstance(spec, float) else spec
            assert all(low <= v <= high for v in values), field.name
            if low != high:
                assert len(set(values)) > 1, field.name
        assert {s.action_latency_steps for s in samples} == {0, 1}


class TestAppliedToTheModel:
    @pytest.mark.parametrize("env_id", OBJECT_IDS)
    def test_object_mass_scale_two_doubles_the_object_mass_only(self, make_env, env_id):
        env = make_env(env_id, randomize={"object_mass_scale": [2, 2]})
        nominal_mass = env.model.body_mass.copy()
        nominal_inertia = env.model.body_inertia.copy()
        env.reset(seed=0)
        body = env.model.body("object").id
        assert env.model.body_mass[body] == 2 * nominal_mass[body]
        np.testing.assert_array_equal(env.model.body_inertia[body], 2 * nominal_inertia[body])
        others = np.arange(env.model.nbody) != body
        np.testing.assert_array_equal(env.model.body_mass[others], nominal_mass[others])

    def test_scales_do_not_compound_over_resets_and_nominal_returns_when_switched_off(self, make_env):
        env = make_env("robot_rl/PandaPush-v0", randomize={"object_mass_scale": [2, 2]})
        body = env.model.body("object").id
        nominal = env.model.body_mass[body]
        for seed in range(3):
            env.reset(seed=seed)
            assert env.model.body_mass[body] == 2 * nominal
        env.randomization = DomainRandomization()
        env.reset(seed=0)
        assert env.model.body_mass[body] == nominal
        fresh = make_env("robot_rl/PandaPush-v0")
        fresh.reset(seed=0)
        assert fresh.model.body_mass[body] == nominal

    def test_gain_and_damping_scales_scale_the_servos_and_joints(self, make_env):
        config = {"actuator_gain_scale": [1.5, 1.5], "joint_damping_scale": [2, 2]}
        env = make_env("robot_rl/PandaPush-v0", randomize=config)
        gain, bias = env.model.actuator_gainprm.copy(), env.model.actuator_biasprm.copy()
        damping = env.model.dof_damping.copy()
        env.reset(seed=0)
        np.testing.assert_allclose(env.model.actuator_gainprm[:, 0], 1.5 * gain[:, 0])
        np.testing.assert_allclose(env.model.actuator_biasprm[:, 1:3], 1.5 * bias[:, 1:3])  # -kp, -kv
        np.testing.assert_allclose(env.model.dof_damping, 2 * damping)

    @pytest.mark.parametrize("env_id", OBJECT_IDS)
    def test_train_preset_applies_the_drawn_sample(self, make_env, env_id):
        env = make_env(env_id, randomize="train")
        nominal_mass = env.model.body_mass.copy()
        nominal_gain = env.model.actuator_gainprm[:, 0].copy()
        body = env.model.body("object").id
        for seed in range(3):
            _, info = env.reset(seed=seed)
            sample = info["randomization"]
            assert sample != RandomizationSample()
            assert env.model.body_mass[body] == pytest.approx(nominal_mass[body] * sample.object_mass_scale)
            np.testing.assert_allclose(env.model.actuator_gainprm[:, 0], nominal_gain * sample.actuator_gain_scale)
            rollout(env, seed=seed, n_steps=10)  # and it runs

    @pytest.mark.parametrize("scale", [0.5, 2.0])
    @pytest.mark.parametrize(
        "env_id",
        [
            "robot_rl/PandaSlide-v0",
            "robot_rl/PandaPush-v0",
        ],
    )
    def test_object_friction_scale_scales_the_object_table_contact_friction(self, make_env, env_id, scale):
        def contact_friction(env) -> float:
            env.step(np.zeros(4))
            m, d = env.model, env.data
            table, obj = m.geom("table").id, m.geom("object").id
            values = {float(c.friction[0]) for c in d.contact[: d.ncon] if {c.geom1, c.geom2} == {table, obj}}
            assert len(values) == 1, values
            return values.pop()

        nominal = make_env(env_id)
        nominal.reset(seed=0)
        scaled = make_env(env_id, randomize={"object_friction_scale": [scale, scale]})
        scaled.reset(seed=0)
        assert contact_friction(scaled) == pytest.approx(scale * contact_friction(nominal))


class TestSeeding:
    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_same_seed_gives_identical_rollouts_with_randomization_on(self, make_env, env_id):
        a = rollout(make_env(env_id, randomize="train"), seed=11)
        b = rollout(make_env(env_id, randomize="train"), seed=11)
        assert_rollouts_equal(a, b)

    def test_different_seeds_draw_different_parameters(self, make_env):
        env = make_env("robot_rl/PandaPush-v0", randomize="train")
        samples = {env.reset(seed=seed)[1]["randomization"] for seed in range(5)}
        assert len(samples) == 5


class TestActionLatency:
    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_latency_of_k_steps_delays_every_action_by_k_steps(self, make_env, k):
        def tcp_path(env) -> np.ndarray:
            run = rollout(env, seed=3, n_steps=15, action_seed=4)
            return np.array([o["observation"][:3] for o in run["obs"]])

        prompt = tcp_path(make_env(REACH))
        late = tcp_path(make_env(REACH, randomize={"action_latency_steps": [k, k]}))
        # The first k periods hold still (start pose), then the same path k periods later.
        start = make_env(REACH).reset(seed=3)[0]["observation"][:3]
        np.testing.assert_allclose(late[:k], np.broadcast_to(start, (k, 3)), atol=1e-4)
        np.testing.assert_allclose(late[k:], prompt[:-k], atol=1e-4)
        assert np.abs(late[k:] - prompt[k:]).max() > 0.01  # not the same path undelayed

    def test_latency_holds_the_gripper_opening_while_the_queue_fills(self, make_env):
        env = make_env("robot_rl/PandaPickAndPlace-v0", randomize={"action_latency_steps": [3, 3]})
        obs, _ = env.reset(seed=0)
        fingers = obs["observation"][9:11].copy()
        for _ in range(3):
            obs, *_ = env.step(np.array([0.0, 0.0, 0.0, -1.0]))  # close: not applied yet
        np.testing.assert_allclose(obs["observation"][9:11], fingers, atol=1e-4)


class TestObservationNoise:
    @pytest.mark.parametrize("env_id", SPARSE_IDS)
    def test_noise_perturbs_the_observation_but_not_the_goals(self, make_env, env_id):
        clean = rollout(make_env(env_id), seed=5)
        noisy = rollout(make_env(env_id, randomize={"obs_noise_std": 0.01}), seed=5)
        for key in ("achieved_goal", "desired_goal"):
            np.testing.assert_array_equal([o[key] for o in noisy["obs"]], [o[key] for o in clean["obs"]])
        assert noisy["reward"] == clean["reward"]
        diff = np.array([n["observation"] - c["observation"] for n, c in zip(noisy["obs"], clean["obs"], strict=True)])
        assert 0.008 < diff.std() < 0.012
        assert abs(diff.mean()) < 0.002


class TestActionNoise:
    def test_noise_perturbs_the_applied_action_reproducibly(self, make_env):
        clean = rollout(make_env(REACH), seed=2, n_steps=12, action_seed=1)
        noisy = rollout(make_env(REACH, randomize={"action_noise_std": 0.3}), seed=2, n_steps=12, action_seed=1)
        again = rollout(make_env(REACH, randomize={"action_noise_std": 0.3}), seed=2, n_steps=12, action_seed=1)
        paths = [np.array([o["observation"][:3] for o in run["obs"]]) for run in (clean, noisy, again)]
        assert np.abs(paths[1] - paths[0]).max() > 0.005  # the applied motion differs
        np.testing.assert_array_equal(paths[1], paths[2])  # seeded: the same noise again

    def test_action_noise_is_refused_where_not_applied(self, make_env):
        with pytest.raises(ValueError, match="action_noise_std"):
            make_env("robot_rl/QuadrotorHover-v1", randomize={"action_noise_std": 0.1})

    def test_negative_action_noise_is_refused(self, make_env):
        with pytest.raises(ValueError, match="action_noise_std"):
            make_env(REACH, randomize={"action_noise_std": -0.1})


def test_steady_wind_pushes_the_quadrotor_sideways_with_the_drawn_force(make_env):
    """``wind_steady``: a constant horizontal force of the drawn magnitude, in the drawn direction."""
    env = make_env("robot_rl/QuadrotorHover-v1", randomize={"wind_steady": [0.02, 0.02]})
    env.reset(seed=5)
    sample = env.unwrapped._sample
    assert sample.wind_steady == 0.02 and 0.0 <= sample.wind_direction < 2 * np.pi
    env.unwrapped._simulate(env.unwrapped.hover_action)
    force = env.unwrapped.data.xfrc_applied[env.unwrapped._body][:3]
    assert np.hypot(force[0], force[1]) == pytest.approx(0.02, abs=1e-3)
    assert np.arctan2(force[1], force[0]) % (2 * np.pi) == pytest.approx(sample.wind_direction, abs=0.05)


@pytest.mark.parametrize(
    ("env_id", "settings", "body"),
    [
        ("robot_rl/QuadrotorHover-v1", {"mass_scale": (0.7, 0.7)}, "cf2"),
        ("robot_rl/QuadrotorWaypoint-v1", {"mass_scale": (1.35, 1.35), "inertia_scale": (1.2, 1.2)}, "cf2"),
        ("robot_rl/PandaPush-v0", {"object_mass_scale": (2.5, 2.5)}, "object"),
    ],
)
def test_a_randomized_mass_is_the_inertial_mass_too(env_id, settings, body):
    """The randomized body moves as its new mass: MuJoCo's mass-derived constants are refreshed after it."""
    import mujoco

    from robot_rl.envs.registry import make

    env = make(env_id, randomize=DomainRandomization(**settings))
    env.reset(seed=3)
    m, d = env.unwrapped.model, env.unwrapped.data
    b = m.body(body).id
    dof = m.jnt_dofadr[m.body_jntadr[b]]  # the body's free joint: x translation
    mujoco.mj_forward(m, d)
    inertia = np.zeros((m.nv, m.nv))
    mujoco.mj_fullM(m, d, inertia)
    # The joint-space inertia of the body's free translation is its mass (was: the compiled mass, while gravity
    # used the randomized one).
    assert inertia[dof, dof] == pytest.approx(m.body_mass[b], rel=1e-9)
    assert m.body_mass[b] != make(env_id).unwrapped.model.body_mass[b]  # it was randomized
