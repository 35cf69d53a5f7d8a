"""Residual and noise-space RL wrappers on a frozen base, and short training runs of each algorithm."""

import json

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robot_rl  # noqa: F401
from robot_rl.data import collect
from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.policies import ChunkedActor, load_policy
from robot_rl.policies.config import BCConfig, DiffusionConfig, TrainBC, TrainDiffusion
from robot_rl.policies.residual import apply_correction
from robot_rl.policies.train import train
from robot_rl.rl.config import TrainResidual
from robot_rl.rl.train import load_residual, rebuild_model, train_residual
from robot_rl.rl.wrappers import NoiseEnv, ResidualActor, ResidualEnv

REACH = "robot_rl/PandaReach-v0"


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    demos = root / "reach.hdf5"
    collect(REACH, "expert", 4, demos, seed=0, progress=False, fsync=False)
    common = dict(data=demos, steps=30, eval_every=30, eval_episodes=0, progress=False, warmup_steps=5)
    diffusion = root / "diffusion"
    train(
        TrainDiffusion(
            out=diffusion, policy=DiffusionConfig(mlp_hidden=64, embed_dim=32, horizon=8, n_action_steps=4), **common
        )
    )
    bc = root / "bc"
    train(TrainBC(out=bc, policy=BCConfig(hidden=(32,)), **common))
    return {"diffusion": diffusion, "bc": bc, "demos": demos}


def test_zero_correction_reproduces_the_base_exactly(bases):
    base = load_policy(bases["diffusion"])
    env = ResidualEnv(gym.make(REACH), base, scale=0.5)
    obs, _ = env.reset(seed=7)
    assert obs.shape == (base.layout.dim + 4,)
    applied = []
    for _ in range(10):
        obs, _, _, _, info = env.step(np.zeros(4))
        applied.append(info["applied_action"])
    reference_env = gym.make(REACH)
    actor = ChunkedActor(base)
    o, _ = reference_env.reset(seed=7)
    actor.reset(7)
    expected = []
    for _ in range(10):
        action = actor(o)
        expected.append(action)
        o, *_ = reference_env.step(action)
    np.testing.assert_array_equal(np.array(applied), np.clip(np.array(expected), -1, 1))


def test_feedback_observes_the_previous_applied_action(bases):
    base = load_policy(bases["diffusion"])
    env = ResidualEnv(gym.make(REACH), base, scale=0.5, feedback=True)
    plain = ResidualEnv(gym.make(REACH), base, scale=0.5)
    assert env.observation_space.shape == (base.layout.dim + 8,)
    obs, _ = env.reset(seed=7)
    plain_obs, _ = plain.reset(seed=7)
    np.testing.assert_array_equal(obs[:-4], plain_obs)
    np.testing.assert_array_equal(obs[-4:], obs[-8:-4])  # no correction yet: the base action
    rng = np.random.default_rng(0)
    for _ in range(10):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 4))
        np.testing.assert_array_equal(obs[-4:], info["applied_action"].astype(np.float32))
    # A zero correction still reproduces the base exactly (the feedback only adds inputs).
    obs, _ = env.reset(seed=7)
    plain.reset(seed=7)
    for _ in range(10):
        obs, _, _, _, info = env.step(np.zeros(4))
        _, _, _, _, plain_info = plain.step(np.zeros(4))
        np.testing.assert_array_equal(info["applied_action"], plain_info["applied_action"])
        np.testing.assert_array_equal(info["applied_action"], np.clip(info["base_action"], -1, 1))
        np.testing.assert_array_equal(obs[-4:], info["applied_action"].astype(np.float32))


def test_feedback_is_refused_with_dsrl(bases):
    with pytest.raises(ValueError, match="`feedback`.*dsrl"):
        TrainResidual(base=bases["diffusion"], out=bases["diffusion"] / "x", algo="dsrl", feedback=True)


def test_correction_is_scaled_and_clipped(bases):
    env = ResidualEnv(gym.make(REACH), load_policy(bases["bc"]), scale=0.25)
    env.reset(seed=1)
    _, _, _, _, info = env.step(np.array([1.0, -1.0, 0.0, 5.0]))
    delta = info["applied_action"] - info["base_action"]
    unclipped = np.abs(info["applied_action"]) < 1.0
    np.testing.assert_allclose(delta[:3][unclipped[:3]], np.array([0.25, -0.25, 0.0])[unclipped[:3]], atol=1e-12)
    assert np.all(np.abs(info["applied_action"]) <= 1.0)


ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True, width=64)
"""Any agent output: NaN, +-inf, huge and tiny values included."""


@settings(max_examples=2000, deadline=None)
@given(
    correction=hnp.arrays(np.float64, 4, elements=ANY_FLOAT),
    base_action=hnp.arrays(np.float64, 4, elements=st.floats(-1.0, 1.0)),
    scale=hnp.arrays(np.float64, 4, elements=st.floats(0.0, 2.0)),
)
def test_the_correction_bound_holds_for_any_residual_output(correction, base_action, scale):
    low, high = -np.ones(4), np.ones(4)
    applied = apply_correction(base_action, correction, scale, low, high)
    assert np.all(np.isfinite(applied))
    assert np.all((low <= applied) & (applied <= high))
    assert np.all(np.abs(applied - base_action) <= scale + 1e-12)
    with np.errstate(over="ignore", invalid="ignore"):  # the raw output may be huge or inf
        unclipped = base_action + scale * correction
    inside = np.isfinite(correction) & (np.abs(correction) <= 1.0) & (np.abs(unclipped) < 1.0)
    np.testing.assert_allclose(applied[inside], unclipped[inside], rtol=0, atol=1e-12)  # exact where nothing clips


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outputs=hnp.arrays(np.float64, (6, 4), elements=ANY_FLOAT), seed=st.integers(0, 10_000))
def test_the_residual_env_applies_a_bounded_correction_for_any_output(bases, outputs, seed):
    scale = np.array([0.5, 0.0, 0.25, 2.0])
    env = ResidualEnv(gym.make(REACH), load_policy(bases["bc"]), scale=tuple(scale))
    env.reset(seed=seed)
    for output in outputs:
        _, _, _, _, info = env.step(output)
        applied, base = info["applied_action"], info["base_action"]
        assert np.all(np.isfinite(applied)) and np.all(np.abs(applied) <= 1.0)
        assert np.all(np.abs(applied - np.clip(base, -1.0, 1.0)) <= scale + 1e-12)


def test_a_per_dimension_scale_leaves_zero_dimensions_to_the_base(bases):
    env = ResidualEnv(gym.make(REACH), load_policy(bases["bc"]), scale=(0.5, 0.0, 0.25, 0.0))
    env.reset(seed=1)
    for _ in range(5):
        _, _, _, _, info = env.step(np.ones(4))
        base = np.clip(info["base_action"], -1, 1)
        np.testing.assert_allclose(info["applied_action"], np.clip(base + np.array([0.5, 0.0, 0.25, 0.0]), -1, 1))
        np.testing.assert_array_equal(info["applied_action"][[1, 3]], base[[1, 3]])


@pytest.mark.parametrize(
    ("scale", "message"),
    [
        ((0.1, 0.2), r"takes 1 value \(every action dimension\) or 4"),
        ((0.5, -0.1, 0.0, 0.0), r"entries must be in \[0.0, 2.0\]"),
        ((0.0, 0.0, 0.0, 0.0), "at least one above 0"),
        ((0.0,), r"`scale` must be in \(0.0, 2.0\]"),
    ],
)
def test_bad_per_dimension_scales_are_refused(bases, scale, message):
    with pytest.raises(ValueError, match=message):
        ResidualEnv(gym.make(REACH), load_policy(bases["bc"]), scale=scale)
    if len(scale) != 2:  # the count is checked against the env once the base is known
        with pytest.raises(ValueError, match=message):
            TrainResidual(base=bases["bc"], out=bases["bc"] / "x", scale=scale)
    else:
        with pytest.raises(ValueError, match=message):
            train_residual(TrainResidual(base=bases["bc"], out=bases["bc"] / "x", scale=scale, progress=False))
        assert not (bases["bc"] / "x").exists()


@pytest.mark.parametrize(
    ("scale", "feedback"), [(0.5, False), ((0.5, 0.0, 0.25, 0.0), False), ((0.5, 0.0, 0.25, 0.0), True)]
)
def test_demo_transitions_hold_the_corrections_that_give_the_demo_actions(bases, scale, feedback):
    from robot_rl.data.dataset import DemoDataset
    from robot_rl.rl.demos import demo_transitions

    base = load_policy(bases["bc"])
    transitions = demo_transitions(bases["demos"], base, scale, feedback=feedback)
    with DemoDataset(bases["demos"]) as ds:
        demos = [demo for demo in ds if demo.success]
    assert len(transitions) == sum(demo.num_samples for demo in demos) > 0
    reach = np.broadcast_to(np.asarray(scale, dtype=np.float64), (4,))
    actions = np.concatenate([demo.actions for demo in demos])
    first = np.concatenate([np.arange(demo.num_samples) == 0 for demo in demos])
    extra = 4 if feedback else 0
    for i, ((obs, next_obs, correction, _, _), action) in enumerate(zip(transitions, actions, strict=True)):
        assert obs.shape == next_obs.shape == (base.layout.dim + 4 + extra,)
        base_action = obs[base.layout.dim : base.layout.dim + 4].astype(np.float64)
        assert np.all(np.abs(correction) <= 1.0) and np.all(correction[reach == 0] == 0)
        exact = (np.abs(correction) < 1.0) & (reach > 0)
        np.testing.assert_allclose((base_action + reach * correction)[exact], action[exact], atol=1e-5)
        if feedback:
            # The previous applied action: the previous demo action (the base action at a demo's first step).
            previous = base_action if first[i] else actions[i - 1]
            np.testing.assert_array_equal(obs[-4:], previous.astype(np.float32))
            np.testing.assert_array_equal(next_obs[-4:], action.astype(np.float32))


def test_bad_scale_and_mismatched_env_are_refused(bases):
    base = load_policy(bases["bc"])
    with pytest.raises(ValueError, match=r"`scale` must be in \(0.0, 2.0\]"):
        ResidualEnv(gym.make(REACH), base, scale=3.0)
    with pytest.raises(ValueError, match="'observation' shape"):
        ResidualEnv(gym.make("robot_rl/PandaPush-v0"), base)
    with pytest.raises(ValueError, match="steps"):
        TrainResidual(base=bases["bc"], out=bases["bc"] / "x", steps=0)


def test_noise_env_runs_a_chunk_per_step_and_needs_diffusion(bases):
    base = load_policy(bases["diffusion"])
    env = NoiseEnv(gym.make(REACH), base, noise_bound=1.0)
    assert env.action_space.shape == (8 * 4,)
    env.reset(seed=3)
    _, reward, _, _, info = env.step(np.zeros(32, dtype=np.float32))
    assert info["chunk"].shape == (8, 4)
    assert -4.0 <= reward <= 0.0  # four env steps of the sparse reward
    with pytest.raises(ValueError, match="diffusion"):
        NoiseEnv(gym.make(REACH), load_policy(bases["bc"]))


@pytest.mark.parametrize(("algo", "feedback"), [("sac", False), ("ppo", False), ("dsrl", False), ("sac", True)])
def test_short_training_runs_write_a_loadable_run(bases, tmp_path, algo, feedback):
    out = tmp_path / algo
    metrics = train_residual(
        TrainResidual(
            base=bases["diffusion"], out=out, algo=algo, steps=200, eval_every=100, eval_episodes=2,
            learning_starts=50, n_envs=2, n_steps=32, batch_size=32, net=(32, 32), progress=False, threads=1,
            feedback=feedback, demos=bases["demos"] if feedback else None,
        )
    )  # fmt: skip
    assert 0.0 <= metrics["success_rate"] <= 1.0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["env_steps"] == 0 and lines[-1]["env_steps"] >= 200
    agent, base, config = load_residual(out)
    assert config["algo"] == algo and config["base"]["policy_type"] == "diffusion"
    assert config["options"]["feedback"] is feedback
    assert agent.action_space.shape[0] == (32 if algo == "dsrl" else 4)
    if algo != "dsrl":
        assert agent.observation_space.shape == (base.layout.dim + (8 if feedback else 4),)
        # ResidualActor (evaluation) repeats ResidualEnv's (training) arithmetic, feedback included.
        scale = config["options"]["scale"]
        env, plain = ResidualEnv(gym.make(REACH), base, scale, feedback=feedback), gym.make(REACH)
        actor = ResidualActor(agent, base, scale, env.action_space, feedback)
        features, _ = env.reset(seed=11)
        obs, _ = plain.reset(seed=11)
        actor.reset(11)
        for _ in range(6):
            features, _, _, _, info = env.step(agent.predict(features, deterministic=True)[0])
            action = actor(obs)
            np.testing.assert_allclose(action, info["applied_action"], atol=1e-6)
            obs, *_ = plain.step(action)
        with pytest.raises(ValueError, match="another --feedback setting"):
            ResidualActor(agent, base, scale, env.action_space, not feedback)
    report = evaluate(EvalConfig(policy=str(out), episodes=2, progress=False))
    assert report["env"] == REACH and report["policy_run"]["algo"] == algo
    assert [e["seed"] for e in report["base_alone"]["per_episode"]] == [e["seed"] for e in report["per_episode"]]
    assert 0.0 <= report["base_alone"]["success_rate"] <= 1.0


@pytest.mark.parametrize(
    ("algo", "scale", "feedback"),
    [
        ("sac", (0.2,), False),
        ("sac", (0.5, 0.0, 0.25, 0.0), False),
        ("ppo", (0.2,), False),
        ("dsrl", (0.2,), False),
        ("sac", (0.5, 0.0, 0.25, 0.0), True),
    ],
)
def test_a_residual_run_exports_into_one_graph_that_matches_torch(bases, tmp_path, algo, scale, feedback):
    from robot_rl.export.metadata import BASE_ACTION_INPUT, PREVIOUS_ACTION_INPUT, RESIDUAL_OBS_INPUT
    from robot_rl.rl.residual_export import export_training_run
    from robot_rl.runtime import Controller, OnnxPolicy

    out = tmp_path / algo
    train_residual(
        TrainResidual(
            base=bases["diffusion"], out=out, algo=algo, steps=100, eval_every=100, eval_episodes=1, scale=scale,
            learning_starts=20, n_envs=2, n_steps=16, batch_size=16, net=(16, 16), progress=False, threads=1,
            feedback=feedback,
        )
    )  # fmt: skip
    meta = export_training_run(out, tmp_path / "policy")
    assert meta.residual["algo"] == algo and meta.residual["run_dir"] == str(out)
    assert meta.residual["feedback"] is feedback
    inputs = [spec.name for spec in meta.onnx.inputs]
    if algo != "dsrl":
        residual_inputs = [RESIDUAL_OBS_INPUT, BASE_ACTION_INPUT, *([PREVIOUS_ACTION_INPUT] if feedback else [])]
        assert inputs[-len(residual_inputs) :] == residual_inputs
    assert (PREVIOUS_ACTION_INPUT in inputs) is feedback
    policy = OnnxPolicy(tmp_path / "policy")
    assert policy.residual_feedback is feedback
    agent, base, config = load_residual(out)
    rng = np.random.default_rng(0)
    env = gym.make(REACH)
    obs, _ = env.reset(seed=3)
    flat = base.layout.flatten(obs)
    if algo == "dsrl":
        assert not policy.has_residual
        history = np.stack([flat] * base.n_obs_steps)
        noise = agent.predict(history.reshape(-1).astype(np.float32), deterministic=True)[0]
        expected = base.predict_batch(history[None], noise.reshape(1, base.horizon, base.action_dim))[0]
        np.testing.assert_allclose(policy.predict(history), expected, atol=1e-4)
    else:
        assert policy.has_residual
        scale = config["options"]["scale"]
        for _ in range(20):
            base_action = rng.uniform(-1, 1, 4)
            previous = [rng.uniform(-1, 1, 4)] if feedback else []
            features = np.concatenate([flat, base_action, *previous]).astype(np.float32)
            correction = np.clip(agent.predict(features, deterministic=True)[0], -1, 1)
            expected = np.clip(base_action + scale * correction, -1, 1)
            np.testing.assert_allclose(policy.correct(flat, base_action, *previous), expected, atol=1e-5)
        if feedback:
            with pytest.raises(ValueError, match="previous_action"):
                policy.correct(flat, base_action)
        # The controller applies the residual to each executed action (with feedback: from the previous
        # corrected action, the base action at the first step).
        controller = Controller(policy)
        controller.reset(0)
        output = controller.step(obs, 0.0)
        first_base = policy.predict(np.stack([flat] * base.n_obs_steps), np.random.default_rng(0))[0]
        first = policy.correct(flat, first_base, *([first_base] if feedback else []))
        np.testing.assert_allclose(output.policy_action, first, atol=1e-6)
        # A whole episode through the controller (a non-finite observation midway takes the fallback step); with
        # feedback each correction reads the previous corrected action, the base action at the episode's start.
        calls, correct = [], policy.correct

        def spy(observation, base_action, previous_action=None):
            result = correct(observation, base_action, previous_action)
            calls.append((np.array(base_action), previous_action is not None and np.array(previous_action), result))
            return result

        policy.correct = spy
        for episode in range(2):
            controller.reset(5 + episode)
            o, _ = env.reset(seed=5 + episode)
            calls.clear()
            done, steps, actions = False, 0, []
            while not done:
                if steps == 3:
                    bad = {k: np.full_like(v, np.nan) for k, v in o.items()}
                    assert controller.step(bad, steps * 0.04).status.fallback
                output = controller.step(o, steps * 0.04)
                actions.append(output.policy_action)
                o, _, terminated, truncated, _ = env.step(output.action)
                done, steps = terminated or truncated, steps + 1
            assert steps > 3 and len(calls) == steps
            for k, (base_action, previous, result) in enumerate(calls):
                np.testing.assert_array_equal(result, actions[k])
                if feedback:
                    np.testing.assert_array_equal(previous, base_action if k == 0 else calls[k - 1][2])
                else:
                    assert previous is False
        # ChunkedActor runs an exported residual the same way.
        calls.clear()
        actor = ChunkedActor(policy)
        for _ in range(2):
            actor.reset(0)
            for _ in range(3):
                actor(obs)
            if feedback:
                np.testing.assert_array_equal(calls[-3][1], calls[-3][0])
                np.testing.assert_array_equal(calls[-1][1], calls[-2][2])
    env.close()


def test_the_residual_learns_to_improve_a_weak_base(bases, tmp_path):
    """Does it learn: SAC residual on the dense Reach reward lifts a barely trained base's return."""
    out = tmp_path / "learn"
    train_residual(
        TrainResidual(
            base=bases["diffusion"], env="robot_rl/PandaReachDense-v0", out=out, algo="sac", steps=4000, scale=1.0,
            eval_every=4000, eval_episodes=10, learning_starts=300, batch_size=128, net=(64, 64), ent_coef="auto",
            learning_rate=1e-3,
            actor_warmup=0, gamma=0.9, progress=False, threads=1,
        )
    )  # fmt: skip
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = lines[0]["mean_return"], lines[-1]["mean_return"]
    assert last > first + 0.5 * abs(first), (first, last)  # measured: -16.5 -> -1.9
    assert lines[-1]["success_rate"] >= lines[0]["success_rate"] + 0.5  # measured: 0.0 -> 0.9


def test_n_step_returns_use_sb3s_buffer_and_stop_at_each_demo_end(bases, tmp_path):
    """--n-step 3 with demos: SB3's NStepReplayBuffer; a demo's last step is done, so no return runs past it."""
    from stable_baselines3.common.buffers import NStepReplayBuffer

    from robot_rl.data.dataset import DemoDataset
    from robot_rl.rl.demos import add_demos_to_buffer, demo_transitions

    out = tmp_path / "nstep"
    train_residual(
        TrainResidual(
            base=bases["diffusion"], out=out, algo="sac", steps=120, eval_every=120, eval_episodes=1,
            learning_starts=50, batch_size=16, net=(16, 16), progress=False, threads=1, n_step=3,
            demos=bases["demos"],
        )
    )  # fmt: skip
    agent, base, _ = rebuild_model(out)
    assert agent.n_steps == 3
    agent.replay_buffer = NStepReplayBuffer(
        1000, agent.observation_space, agent.action_space, n_steps=3, gamma=0.98, handle_timeout_termination=True
    )
    count = add_demos_to_buffer(agent, bases["demos"], base, 0.5)
    with DemoDataset(bases["demos"]) as ds:
        lasts = np.concatenate([np.arange(d.num_samples) == d.num_samples - 1 for d in ds if d.success])
    buffer = agent.replay_buffer
    assert count == buffer.pos == lasts.size == len(demo_transitions(bases["demos"], base, 0.5))
    np.testing.assert_array_equal(buffer.dones[:count, 0].astype(bool), lasts)
    # The 3-step return of a demo's second-to-last step: its reward, then the last step's, then it stops.
    end = int(np.flatnonzero(lasts)[0])
    sample = buffer._get_samples(np.array([end - 1]))
    expected = buffer.rewards[end - 1, 0] + 0.98 * buffer.rewards[end, 0]
    assert sample.rewards.item() == pytest.approx(expected) and sample.dones.item() == 1.0
    with pytest.raises(ValueError, match="`n_step` must be >= 1"):
        TrainResidual(base=bases["diffusion"], out=out, n_step=0)


def test_critic_layer_norm_and_actor_lr_scale_survive_save_and_load(bases, tmp_path):
    """--critic-layer-norm: Linear -> LayerNorm -> ReLU in both Q-networks and their targets, the actor SB3's;
    --actor-lr-scale: the actor's Adam runs at that multiple of the critic's rate."""
    import torch
    from torch import nn

    plain, normed = tmp_path / "plain", tmp_path / "normed"
    for out, flag in ((plain, False), (normed, True)):
        train_residual(
            TrainResidual(
                base=bases["diffusion"], out=out, algo="sac", steps=80, eval_every=80, eval_episodes=1,
                learning_starts=40, batch_size=16, net=(16, 16), progress=False, threads=1, critic_layer_norm=flag,
                actor_lr_scale=0.1 if flag else 1.0,
            )
        )  # fmt: skip
    a, _, _ = rebuild_model(plain)
    b, _, config = rebuild_model(normed)
    assert config.critic_layer_norm is True and b.policy.critic_layer_norm is True
    deployed = load_residual(normed)[0].policy  # the deploy-side rebuild has the same critics
    assert [type(m) for m in deployed.critic.q_networks[0]] == [type(m) for m in b.critic.q_networks[0]]
    for critic in (b.critic, b.critic_target):
        for q in critic.q_networks:
            kinds = [type(m) for m in q]
            assert kinds == [nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear, nn.LayerNorm, nn.ReLU, nn.Linear]
    assert not any(isinstance(m, nn.LayerNorm) for m in a.critic.modules())
    assert not any(isinstance(m, nn.LayerNorm) for m in b.actor.modules())
    # The critic optimizer trains every critic parameter, the LayerNorm gains included.
    params = {id(p) for group in b.critic.optimizer.param_groups for p in group["params"]}
    assert params == {id(p) for p in b.critic.parameters()}
    assert [p.shape for p in a.actor.parameters()] == [p.shape for p in b.actor.parameters()]
    features = torch.zeros((3, *b.observation_space.shape))
    actions = torch.zeros((3, *b.action_space.shape))
    assert all(q.shape == (3, 1) for q in b.critic(features, actions))
    assert a.actor.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert b.actor.optimizer.param_groups[0]["lr"] == pytest.approx(3e-5)
    assert b.critic.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"`actor_lr_scale` must be in \(0, 1\]"):
            TrainResidual(base=bases["diffusion"], out=tmp_path / "bad", actor_lr_scale=bad)
