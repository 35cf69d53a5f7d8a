"""Observation features with memory: the quadrotor disturbance observer, in training and at deployment."""

import json
import subprocess
import sys

import numpy as np
import pytest

from robot_rl.cli.main import run
from robot_rl.data import collect
from robot_rl.data.dataset import DemoDataset
from robot_rl.envs.quadrotor.expert import QuadrotorExpert
from robot_rl.envs.registry import make
from robot_rl.policies import BCConfig, ChunkedActor, load_policy
from robot_rl.policies.features import (
    GRAVITY,
    FeatureState,
    QuadrotorDisturbance,
    feature_for_env,
    feature_from_json,
    feature_series,
)
from robot_rl.policies.layout import ObsLayout
from robot_rl.policies.train import TrainBC, train
from robot_rl.runtime import Controller, ControllerConfig, OnnxPolicy

WAYPOINT = "robot_rl/QuadrotorWaypoint-v1"


def fly(env, seed, steps=200):
    """The expert over one episode: observations and the actions it sent."""
    params = env.unwrapped.params
    expert = QuadrotorExpert(params, env.unwrapped.ctrl_dt)
    obs, _ = env.reset(seed=seed)
    observations, actions = [], []
    for _ in range(steps):
        action = expert(obs)
        observations.append(obs)
        actions.append(action)
        obs, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    return observations, np.array(actions)


@pytest.mark.parametrize(("mass", "motor"), [(1.3, 1.0), (0.7, 1.0), (1.0, 0.85)])
def test_the_observer_converges_to_the_missing_acceleration(mass, motor):
    env = make(WAYPOINT, randomize={"mass_scale": [mass, mass], "motor_constant_scale": [motor, motor]})
    try:
        feature = feature_for_env("quadrotor_disturbance", env)
        observations, actions = fly(env, seed=3)
    finally:
        env.close()
    series = feature_series([feature], np.array([o["observation"] for o in observations]), actions)
    # Holding the waypoint, the command's nominal-model thrust T = m g / k accelerates the nominal model by
    # g (m / k - 1) while the vehicle measures 0: the estimate is g (1 - m / k) (m, k as scales of nominal).
    expected = GRAVITY * (1.0 - mass / motor)
    measured = series[-50:, 2].mean()
    assert measured == pytest.approx(expected, abs=0.05 * abs(expected) + 0.1)
    assert np.abs(series[-50:, :2].mean(axis=0)).max() < 0.3  # no wind: no horizontal offset


def test_training_and_deployment_compute_the_same_features():
    env = make(WAYPOINT, randomize="wide")
    try:
        feature = feature_for_env("quadrotor_disturbance", env)
        observations, actions = fly(env, seed=11, steps=120)
    finally:
        env.close()
    series = feature_series([feature], np.array([o["observation"] for o in observations]), actions)
    state = FeatureState([feature])
    streamed = [state.update(obs, actions[t - 1] if t else None) for t, obs in enumerate(observations)]
    np.testing.assert_array_equal(series, np.array(streamed))
    assert np.abs(series).max() > 0.1  # it estimated something


def test_bad_features_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="Did you mean 'quadrotor_disturbance'.*computes: quadrotor_disturbance"):
        feature_from_json({"name": "quadrotor_disturbanse"})
    with pytest.raises(ValueError, match="`gain` must be in"):
        QuadrotorDisturbance(gain=0.0)
    env = make("robot_rl/PandaPush-v0")
    try:
        with pytest.raises(ValueError, match="not a quadrotor env"):
            feature_for_env("quadrotor_disturbance", env)
    finally:
        env.close()
    layout = ObsLayout(("observation",), ((21,),), False, (QuadrotorDisturbance(),))
    assert layout.dim == 24
    assert ObsLayout.from_json(json.loads(json.dumps(layout.to_json()))) == layout
    with pytest.raises(ValueError, match="ChunkedActor or the runtime Controller"):
        layout.flatten({"observation": np.zeros(21)})


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory):
    """A tiny BC run with the disturbance observer on 3 randomized waypoint demos, and its export."""
    root = tmp_path_factory.mktemp("features")
    demos = root / "waypoint.hdf5"
    collect(WAYPOINT, "expert", 3, demos, seed=0, progress=False, fsync=False, env_kwargs={"randomize": "wide"})
    config = BCConfig(hidden=(32, 32), features=("quadrotor_disturbance",), horizon=4, n_action_steps=2)
    common = {"data": demos, "steps": 30, "eval_every": 30, "eval_episodes": 0, "warmup_steps": 5}
    train(TrainBC(out=root / "bc", policy=config, batch_size=32, progress=False, threads=1, **common))
    assert run(["export", "--run", str(root / "bc"), "--out", str(root / "policy")]) == 0
    return {"demos": demos, "run": root / "bc", "policy": root / "policy"}


def test_the_controller_gives_the_training_actor_s_actions_on_a_recorded_stream(feature_run):
    """The ONNX policy in the runtime Controller and the torch policy in ChunkedActor, fed the same recorded
    observations (and told the same commands), give the same actions: the feature state is carried alike."""
    policy = load_policy(feature_run["run"])
    assert [f.name for f in policy.layout.features] == ["quadrotor_disturbance"]
    with DemoDataset(feature_run["demos"]) as ds:
        demo = ds[ds.demo_names[0]]
    observations = [{k: v[t] for k, v in demo.obs.items()} for t in range(len(demo.actions))]
    actor = ChunkedActor(policy)
    controller = Controller(OnnxPolicy(feature_run["policy"]), ControllerConfig(ctrl_dt=0.02))
    # The training windows hold the same features: flatten_batch over the recorded episode.
    flat = policy.layout.flatten_batch(demo.obs, demo.actions)
    for t, obs in enumerate(observations[:80]):
        expected = actor(obs)
        got = controller.step(obs, t * 0.02).action
        np.testing.assert_allclose(got, expected, atol=1e-4)
        actor.sent(demo.actions[t])  # what the demo sent, for both
        controller._last_command = np.asarray(demo.actions[t], dtype=np.float64)
    np.testing.assert_allclose(actor._history[-1], flat[79], atol=1e-12)


def test_the_card_describes_the_feature(feature_run):
    meta = json.loads((feature_run["policy"] / "metadata.json").read_text())
    (feature,) = meta["observation"]["features"]
    assert feature["name"] == "quadrotor_disturbance" and feature["dim"] == 3 and "formula" in feature
    assert meta["observation"]["dim"] == 30 and meta["observation"]["segments"][-1]["source"].startswith("feature")
    readme = (feature_run["policy"] / "README.md").read_text()
    assert "`feature quadrotor_disturbance`" in readme and "clip(command[0]" in readme


def test_a_run_with_a_feature_the_runtime_cannot_compute_is_refused_at_export(feature_run, tmp_path):
    import shutil

    folder = tmp_path / "run"
    shutil.copytree(feature_run["run"], folder)
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["obs_layout"]["features"][0]["name"] = "wind_estimator"
    path.write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "robot_rl.cli.main", "export", "--run", str(folder), "--out", str(tmp_path / "policy")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    err = out.stderr
    assert "'wind_estimator', which this robot_rl runtime cannot compute" in err
    assert "Features it computes: quadrotor_disturbance" in err
    assert not (tmp_path / "policy").exists()


def test_a_residual_on_a_feature_base_sees_the_base_s_features(feature_run):
    """ResidualEnv runs a base with features: zero correction reproduces the base, and the residual observes the
    flattened observation with the features (what the exported graph's residual input gets from the Controller)."""
    from robot_rl.rl.wrappers import ResidualEnv

    base = load_policy(feature_run["run"])
    env = ResidualEnv(make(WAYPOINT), base, scale=0.5)
    obs, _ = env.reset(seed=7)
    assert obs.shape == (base.layout.dim + 4,)
    applied = []
    for _ in range(30):
        obs, _, _, _, info = env.step(np.zeros(4))
        applied.append(info["applied_action"])
    reference = make(WAYPOINT)
    actor = ChunkedActor(base)
    o, _ = reference.reset(seed=7)
    actor.reset(7)
    expected = []
    for _ in range(30):
        action = np.clip(actor(o), -1, 1)
        actor.sent(action)
        expected.append(action)
        o, *_ = reference.step(action)
    np.testing.assert_array_equal(np.array(applied), np.array(expected))
    actor(o)  # the residual's observation after the last step is the base's input at the next one
    np.testing.assert_allclose(obs[: base.layout.dim], actor.current, atol=1e-5)
