import json

import numpy as np
import pytest
import torch

from robot_rl.data import collect
from robot_rl.data.schema import DatasetError
from robot_rl.policies import ChunkedActor, ObsLayout, RunError, load_policy
from robot_rl.policies.base import Normalizer, check_layout
from robot_rl.policies.data import load_demo_data
from robot_rl.policies.models import BCConfig, BCPolicy, DiffusionConfig, DiffusionPolicy, ddim_timesteps
from robot_rl.policies.train import TrainBC, TrainDiffusion, train

LAYOUT = ObsLayout(("observation", "desired_goal"), ((5,), (3,)))


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("demos") / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 6, path, seed=0, progress=False, fsync=False)
    return path


def test_layout_flatten_and_difference():
    obs = {"observation": np.arange(5.0), "desired_goal": np.array([7.0, 8.0, 9.0]), "extra": np.zeros(2)}
    np.testing.assert_array_equal(LAYOUT.flatten(obs), [0, 1, 2, 3, 4, 7, 8, 9])
    assert LAYOUT.dim == 8
    assert LAYOUT.difference(LAYOUT) is None
    other = ObsLayout(("observation", "desired_goal"), ((6,), (3,)))
    assert "'observation' shape (5,) vs (6,)" in LAYOUT.difference(other)
    with pytest.raises(KeyError, match="missing 'desired_goal'"):
        LAYOUT.flatten({"observation": np.zeros(5)})
    assert ObsLayout.from_json(json.loads(json.dumps(LAYOUT.to_json()))) == LAYOUT


def test_normalizer_round_trip_and_constant_dims():
    rng = np.random.default_rng(0)
    obs = rng.normal(3.0, 2.0, (500, 4))
    actions = np.column_stack([rng.uniform(-0.5, 0.25, 500), np.full(500, 1.0)])
    norm = Normalizer(4, 2)
    norm.fit(obs, actions)
    a = torch.as_tensor(actions, dtype=torch.float32)
    scaled = norm.normalize_action(a)
    assert float(scaled[:, 0].min()) == pytest.approx(-1.0, abs=1e-5)
    assert float(scaled[:, 0].max()) == pytest.approx(1.0, abs=1e-5)
    assert torch.all(scaled[:, 1].abs() < 1e-4)  # a constant action maps to 0, not to noise
    torch.testing.assert_close(norm.unnormalize_action(scaled), a)
    z = norm.normalize_obs(torch.as_tensor(obs, dtype=torch.float32))
    assert torch.allclose(z.mean(0), torch.zeros(4), atol=1e-4)


def test_ddim_trailing_timesteps():
    assert ddim_timesteps(100, 1) == [99]
    assert ddim_timesteps(100, 3) == [99, 66, 32]
    steps = ddim_timesteps(100, 10)
    assert steps[0] == 99 and steps[-1] == 9 and len(set(steps)) == 10


@pytest.mark.parametrize("denoiser", ["mlp", "unet"])
def test_diffusion_sample_is_deterministic_given_noise(denoiser):
    config = DiffusionConfig(
        denoiser=denoiser, n_obs_steps=2, horizon=8, n_action_steps=4, unet_dims=(16, 32), mlp_hidden=64
    )
    policy = DiffusionPolicy(config, LAYOUT, 4).eval()
    obs = torch.randn(3, 2, 8)
    noise = torch.randn(3, 8, 4)
    with torch.no_grad():
        a, b = policy(obs, noise), policy(obs, noise)
        c = policy(obs, torch.randn(3, 8, 4))
    assert a.shape == (3, 8, 4)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    # Clipped samples stay inside the normalized action range, i.e. the data range.
    assert torch.all(a <= policy.normalizer.action_high + 1e-5) and torch.all(a >= policy.normalizer.action_low - 1e-5)


def test_config_validation():
    with pytest.raises(ValueError, match="n_action_steps"):
        DiffusionConfig(horizon=4, n_action_steps=8)
    with pytest.raises(ValueError, match="divisible by 4"):
        DiffusionConfig(denoiser="unet", horizon=10, n_action_steps=2)
    with pytest.raises(ValueError, match="inference_steps"):
        DiffusionConfig(inference_steps=0)


def test_chunked_actor_executes_n_action_steps_then_replans():
    calls = []

    class Fixed:
        layout = LAYOUT
        n_obs_steps, horizon, n_action_steps, action_dim = 2, 4, 3, 1

        def predict(self, history, rng=None):
            calls.append(history.copy())
            return np.arange(4.0)[:, None] + 10 * len(calls)

    actor = ChunkedActor(Fixed())
    obs = [{"observation": np.full(5, float(i)), "desired_goal": np.zeros(3)} for i in range(5)]
    actions = [float(actor(o)[0]) for o in obs]
    assert actions == [10, 11, 12, 20, 21]
    np.testing.assert_array_equal(calls[0][:, 0], [0, 0])  # history padded with the first observation
    np.testing.assert_array_equal(calls[1][:, 0], [2, 3])
    actor.reset()
    actor(obs[4])
    np.testing.assert_array_equal(calls[2][:, 0], [4, 4])


def test_missing_obs_keys_lists_what_the_file_has(reach_demos):
    with pytest.raises(
        DatasetError, match=r"asks for observation keys \['observation', 'goal'\].*have \['achieved_goal'"
    ):
        load_demo_data(reach_demos, ("observation", "goal"), 2, 8)


def test_windows_pad_history_and_chunk(reach_demos):
    data = load_demo_data(reach_demos, ("observation", "desired_goal"), 2, 8, val_fraction=0.0)
    obs, actions = data.train.batch(torch.tensor([0]))
    torch.testing.assert_close(obs[0, 0], obs[0, 1])  # step 0: history padded with itself
    first_len = 50
    last = data.train.batch(torch.tensor([first_len - 1]))[1][0]
    torch.testing.assert_close(last[0], last[-1])  # past the end: the last action repeats


def _train(cls, demos, out, **kw):
    kw.setdefault("eval_episodes", 2)
    return train(cls(data=demos, out=out, steps=60, eval_every=30, progress=False, warmup_steps=5, **kw))


def test_bc_training_run_layout_and_reload(reach_demos, tmp_path):
    out = tmp_path / "bc"
    metrics = _train(TrainBC, reach_demos, out, policy=BCConfig(hidden=(64, 64), head="gaussian"))
    assert metrics["step"] == 60 and 0.0 <= metrics["success_rate"] <= 1.0 and "val_loss" in metrics
    config = json.loads((out / "config.json").read_text())
    assert config["policy_type"] == "bc" and config["policy"]["head"] == "gaussian"
    assert config["data"]["seeds"] == list(range(6)) and len(config["data"]["sha256"]) == 64
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert any((out / "tb").iterdir())
    policy = load_policy(out)
    assert isinstance(policy, BCPolicy)
    chunk = policy.predict(np.zeros((2, policy.obs_dim)))
    assert chunk.shape == (4, 4)


def test_training_reduces_loss_and_resume_continues(reach_demos, tmp_path):
    out = tmp_path / "diff"
    config = DiffusionConfig(n_obs_steps=2, mlp_hidden=64, embed_dim=32, horizon=8, n_action_steps=4)
    first = _train(TrainDiffusion, reach_demos, out, policy=config, eval_episodes=0)
    with pytest.raises(RunError, match="already holds a run"):
        _train(TrainDiffusion, reach_demos, out, policy=config, eval_episodes=0)
    resumed = train(
        TrainDiffusion(
            data=reach_demos,
            out=out,
            steps=120,
            eval_every=30,
            progress=False,
            warmup_steps=5,
            eval_episodes=0,
            resume=True,
            policy=config,
        )
    )
    assert resumed["step"] == 120
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [30, 60, 90, 120]
    assert lines[-1]["val_loss"] < lines[0]["val_loss"]
    assert first["step"] == 60


def test_checkpoint_from_another_layout_is_refused(reach_demos, tmp_path):
    out = tmp_path / "bc"
    _train(TrainBC, reach_demos, out, policy=BCConfig(hidden=(32,)), eval_episodes=0)
    config = json.loads((out / "config.json").read_text())
    config["obs_layout"]["shapes"][0] = [30]
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="does not fit the policy.*shapes"):
        load_policy(out)
    config["policy_type"] = "transformer"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="unknown policy_type 'transformer'"):
        load_policy(out)


def test_eval_seeds_overlapping_demo_seeds_are_refused(reach_demos, tmp_path):
    with pytest.raises(ValueError, match="overlap the demos' seeds"):
        _train(TrainBC, reach_demos, tmp_path / "x", eval_seed=3)


def test_env_layout_mismatch_is_refused():
    import gymnasium as gym

    import robot_rl  # noqa: F401

    env = gym.make("robot_rl/PandaPush-v0")
    with pytest.raises(ValueError, match="'observation' shape \\(5,\\) vs \\(25,\\)"):
        check_layout(LAYOUT, env.observation_space, 4, env.action_space)
    good = ObsLayout(("observation", "desired_goal"), ((25,), (3,)))
    with pytest.raises(ValueError, match="outputs 3-D actions"):
        check_layout(good, env.observation_space, 3, env.action_space)
    env.close()


def test_a_non_finite_loss_stops_training_before_the_update(reach_demos, tmp_path, monkeypatch):
    """A loss that turns NaN mid-run stops with a clear error; the weights on disk stay finite."""
    from safetensors.torch import load_file

    real = BCPolicy.loss
    calls = {"n": 0}

    def loss_turning_nan(self, obs, actions):
        calls["n"] += 1
        value = real(self, obs, actions)
        return value * float("nan") if calls["n"] > 40 else value

    monkeypatch.setattr(BCPolicy, "loss", loss_turning_nan)
    out = tmp_path / "nan"
    with pytest.raises(RuntimeError, match=r"training loss became nan at step \d+; stopped before the update"):
        _train(TrainBC, reach_demos, out, policy=BCConfig(hidden=(32,)), eval_episodes=0)
    weights = load_file(str(out / "policy.safetensors"))  # the step-30 evaluation's weights
    assert all(bool(torch.isfinite(t).all()) for t in weights.values())


def test_a_graph_without_its_card_is_called_that_not_a_missing_run(tmp_path):
    from robot_rl.policies.checkpoint import RunError, read_config

    (tmp_path / "policy.onnx").write_bytes(b"not checked")
    with pytest.raises(RunError, match="holds policy.onnx but no metadata.json"):
        read_config(tmp_path)
