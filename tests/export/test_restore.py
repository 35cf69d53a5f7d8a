"""A base's training run rebuilt from its exported folder; a residual on an exported base exports without it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import robot_rl  # noqa: F401
from robot_rl.data import collect
from robot_rl.export import export_run
from robot_rl.export.restore import RestoreError, restore_base_run
from robot_rl.policies.config import DiffusionConfig, TrainDiffusion
from robot_rl.policies.train import train
from robot_rl.rl.config import TrainResidual
from robot_rl.rl.residual_export import export_training_run
from robot_rl.rl.train import train_residual
from robot_rl.runtime.onnx_policy import OnnxPolicy

REPO = Path(__file__).resolve().parents[2]

SHIPPED = REPO / "policies" / "panda_push_diffusion"


def test_the_shipped_push_base_is_rebuilt_byte_for_byte(tmp_path):
    out = restore_base_run(SHIPPED, tmp_path / "run")
    restored = json.loads((out / "config.json").read_text())["restored_from"]
    card = json.loads((SHIPPED / "metadata.json").read_text())
    assert restored["identical_weights_file"] is True and restored["weights_sha256"] == card["base"]["weights_sha256"]
    assert restored["max_abs_diff"] <= 1e-4
    assert restore_base_run(SHIPPED, out) == out  # the same graph again: reused
    with pytest.raises(RestoreError, match="holds a sac residual stack"):
        restore_base_run(REPO / "policies" / "panda_push_diffusion_residual_sac", tmp_path / "stack")


def test_a_tampered_graph_or_card_is_refused(tmp_path):
    folder = tmp_path / "policy"
    shutil.copytree(SHIPPED, folder)
    card = json.loads((folder / "metadata.json").read_text())
    card["normalization"]["obs_std"] = [2 * v for v in card["normalization"]["obs_std"]]
    (folder / "metadata.json").write_text(json.dumps(card))
    with pytest.raises(RestoreError, match="differs from the graph by"):
        restore_base_run(folder, tmp_path / "run")
    (folder / "policy.onnx").write_bytes(b"x" + (SHIPPED / "policy.onnx").read_bytes()[1:])
    with pytest.raises(RestoreError, match="sha256"):
        restore_base_run(folder, tmp_path / "run2")


def test_a_residual_on_an_exported_base_exports_without_the_base_run(tmp_path):
    demos = tmp_path / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 3, demos, seed=0, progress=False, fsync=False)
    base_run = tmp_path / "base"
    train(
        TrainDiffusion(
            data=demos, out=base_run, steps=20, eval_every=20, eval_episodes=0, progress=False, warmup_steps=5,
            policy=DiffusionConfig(mlp_hidden=32, embed_dim=16, horizon=8, n_action_steps=4),
        )
    )  # fmt: skip
    base_policy = tmp_path / "base_policy"
    export_run(base_run, base_policy)
    residual = tmp_path / "residual"
    train_residual(
        TrainResidual(
            base=base_policy, out=residual, steps=60, eval_every=60, eval_episodes=1, learning_starts=30,
            batch_size=16, net=(16, 16), progress=False, threads=1, actor_warmup=0,
        )
    )  # fmt: skip
    shutil.rmtree(base_run)  # the exported base is all a user who was handed it has
    stack = tmp_path / "stack"
    card = export_training_run(residual, stack)
    assert (residual / "base_restored" / "config.json").is_file()
    assert card.base.weights_sha256 == json.loads((base_policy / "metadata.json").read_text())["base"]["weights_sha256"]
    # The stack's chunk path is the base graph's: same chunk for the same history and noise.
    a, b = OnnxPolicy(base_policy), OnnxPolicy(stack)
    rng = np.random.default_rng(0)
    history = rng.normal(size=(2, a.n_obs_steps, a.obs_dim))
    noise = rng.normal(size=(2, a.horizon, a.action_dim))
    np.testing.assert_allclose(a.predict_batch(history, noise=noise), b.predict_batch(history, noise=noise), atol=1e-5)
