"""A residual run logs what its plot shows: episodes per evaluation, the base alone, the losses over training."""

import json

import pytest

from robot_rl.data import collect
from robot_rl.policies.config import DiffusionConfig, TrainDiffusion
from robot_rl.policies.plots import LOSSES_FILE, losses_from_tensorboard, plot_training, read_losses, read_metrics
from robot_rl.policies.train import train
from robot_rl.rl.config import TrainResidual
from robot_rl.rl.train import train_residual

REACH = "robot_rl/PandaReach-v0"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("base")
    demos = root / "reach.hdf5"
    collect(REACH, "expert", 4, demos, seed=0, progress=False, fsync=False)
    config = DiffusionConfig(mlp_hidden=32, embed_dim=16, horizon=8, n_action_steps=4, inference_steps=4)
    train(
        TrainDiffusion(
            data=demos, out=root / "diffusion", policy=config, steps=30, eval_every=30, eval_episodes=0,
            progress=False, warmup_steps=5,
        )
    )  # fmt: skip
    return root / "diffusion"


LOGGED = {
    "sac": ("train/critic_loss", "train/actor_loss", "train/ent_coef"),
    "ppo": ("train/value_loss", "train/policy_gradient_loss", "train/entropy_loss"),
}


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_a_short_residual_run_logs_its_losses_and_plots_both_panels(base, tmp_path, algo):
    out = tmp_path / algo
    train_residual(
        TrainResidual(
            base=base, out=out, algo=algo, steps=300, eval_every=150, eval_episodes=2, learning_starts=50,
            n_envs=2, n_steps=32, batch_size=32, net=(32, 32), progress=False, threads=1,
        )
    )  # fmt: skip
    metrics = read_metrics(out)
    assert [m["eval_episodes"] for m in metrics] == [2] * len(metrics) and metrics[0]["env_steps"] == 0
    assert 0.0 <= metrics[0]["base_success_rate"] <= 1.0 and "base_mean_return" in metrics[0]
    assert all("base_success_rate" not in m for m in metrics[1:])
    losses = read_losses(out)
    assert len(losses) >= 2, losses
    for key in LOGGED[algo]:
        values = [line[key] for line in losses if key in line]
        assert len(values) >= 2 and all(isinstance(v, float) for v in values), key
    steps = [line["env_steps"] for line in losses]
    assert steps == sorted(steps) and 0 < steps[0] and steps[-1] <= 300 + 64
    if algo == "sac":
        assert steps[0] > 50  # no update before learning_starts
    png = plot_training(out, tmp_path / "residual.png", title=f"{REACH} residual ({algo})")
    assert png.stat().st_size > 20_000

    # A second run into the folder is refused: the losses of two runs never mix.
    with pytest.raises(ValueError, match="already holds a run"):
        train_residual(TrainResidual(base=base, out=out, algo=algo, steps=300, progress=False))


def test_a_run_from_before_the_losses_were_logged_still_plots(base, tmp_path):
    out = tmp_path / "old"
    train_residual(
        TrainResidual(
            base=base, out=out, algo="sac", steps=100, eval_every=100, eval_episodes=2, learning_starts=50,
            batch_size=32, net=(32, 32), progress=False, threads=1,
        )
    )  # fmt: skip
    (out / LOSSES_FILE).unlink()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for key in ("eval_episodes", "base_success_rate", "base_mean_return"):
            line.pop(key, None)
    (out / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert read_losses(out) == []
    rebuilt = losses_from_tensorboard(out)  # the same scalars, from stable-baselines3's TensorBoard files
    assert rebuilt and all("train/critic_loss" in line for line in rebuilt) and rebuilt[0]["env_steps"] > 50
    assert plot_training(out, tmp_path / "old.png").stat().st_size > 10_000  # episodes from config.json
