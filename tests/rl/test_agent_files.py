"""Residual runs hold no pickles: agents in safetensors, a planted model.zip never opened, resume and convert."""

import base64
import json
import pickle
import shutil
import zipfile

import numpy as np
import pytest

import robot_rl  # noqa: F401
from robot_rl.data import collect
from robot_rl.evaluation.evaluate import EvalConfig, evaluate
from robot_rl.policies.config import DiffusionConfig, TrainDiffusion
from robot_rl.policies.train import train
from robot_rl.rl import agent_io
from robot_rl.rl.config import TrainResidual
from robot_rl.rl.train import finished, load_residual, rebuild_model, train_residual

REACH = "robot_rl/PandaReach-v0"
TINY = dict(
    algo="sac", eval_episodes=1, learning_starts=30, batch_size=16, net=(16, 16), progress=False, threads=1,
    actor_warmup=0,
)  # fmt: skip


class _Payload:
    """Unpickling this writes a marker file: what a crafted stable-baselines3 zip can do on load."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def plant_zip(folder, marker):
    """A stable-baselines3-shaped model.zip whose pickled ``data`` entry runs code when loaded."""
    blob = base64.b64encode(pickle.dumps(_Payload(str(marker)))).decode()
    data = {"policy_class": {":type:": "<class 'abc.ABCMeta'>", ":serialized:": blob}}
    for name in ("model.zip", "best.zip", "last.zip"):
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr("data", json.dumps(data))
            z.writestr("_stable_baselines3_version", "2.9.2")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("agent_files")
    demos = root / "reach.hdf5"
    collect(REACH, "expert", 3, demos, seed=0, progress=False, fsync=False)
    base = root / "base"
    train(
        TrainDiffusion(
            data=demos, out=base, steps=20, eval_every=20, eval_episodes=0, progress=False, warmup_steps=5,
            policy=DiffusionConfig(mlp_hidden=32, embed_dim=16, horizon=8, n_action_steps=4),
        )
    )  # fmt: skip
    out = root / "residual"
    train_residual(TrainResidual(base=base, out=out, steps=80, eval_every=40, **TINY))
    return {"root": root, "base": base, "residual": out, "demos": demos}


def test_a_run_holds_safetensors_and_json_only(run):
    names = sorted(p.name for p in run["residual"].iterdir() if p.is_file())
    assert names == [
        "agent.json", "agent.safetensors", "best.safetensors", "checkpoint.safetensors", "config.json",
        "losses.jsonl", "metrics.jsonl",
    ]  # fmt: skip
    assert finished(run["residual"])
    description = json.loads((run["residual"] / "agent.json").read_text())
    assert description["format"] == agent_io.FORMAT and description["net"] == [16, 16]


def test_the_deployed_agent_acts_as_the_training_agent(run):
    """The inference rebuild (policy network only) and the full training rebuild give the same actions."""
    agent, _, _ = load_residual(run["residual"])
    model, _, _ = rebuild_model(run["residual"])
    obs = np.random.default_rng(0).normal(size=(16, *agent.observation_space.shape)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs)[0], model.predict(obs, deterministic=True)[0])
    assert agent.num_timesteps == model.num_timesteps == 80


def test_a_planted_model_zip_runs_no_code_on_eval_export_training_or_calibration(run, tmp_path):
    from robot_rl.monitor.calibrate import calibrate
    from robot_rl.monitor.config import MonitorCalibrate
    from robot_rl.rl.residual_export import export_training_run

    marker = tmp_path / "ran"
    residual, base = tmp_path / "residual", tmp_path / "base"
    shutil.copytree(run["residual"], residual)
    shutil.copytree(run["base"], base)
    config = json.loads((residual / "config.json").read_text())
    config["base"]["path"] = str(base)
    (residual / "config.json").write_text(json.dumps(config))
    for folder in (residual, base):
        plant_zip(folder, marker)
    evaluate(EvalConfig(policy=str(residual), episodes=1))
    policy = tmp_path / "policy"
    export_training_run(residual, policy)
    plant_zip(policy, marker)
    evaluate(EvalConfig(policy=str(policy), episodes=1))
    train_residual(TrainResidual(base=base, out=tmp_path / "again", steps=40, eval_every=40, **TINY))
    try:
        calibrate(MonitorCalibrate(policy=policy, episodes=2, alpha=0.5, rnd_steps=5, data=run["demos"]))
    except ValueError:
        pass  # too few successes for thresholds: the folder's files were read either way
    assert not marker.exists()
    # The planted zip is live: stable-baselines3's own loader (behind convert's opt-in) runs it.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(residual / "config.json", legacy)
    plant_zip(legacy, marker)
    with pytest.raises(Exception):  # noqa: B017 - the payload runs, then SB3 fails on the fake class
        agent_io.convert_zip(legacy, trust_pickle=True)
    assert marker.read_text() == "ran"


def test_the_base_exporter_refuses_a_residual_run_and_names_the_entry_point_that_folds_it_in(run, tmp_path):
    from robot_rl.export.onnx_export import ExportError, export_run

    with pytest.raises(ExportError, match=r"residual run: export it with robot_rl\.rl\.residual_export"):
        export_run(run["residual"], tmp_path / "policy")
    assert not (tmp_path / "policy").exists()


def test_a_zip_only_run_is_refused_with_how_to_convert_and_converts_behind_the_opt_in(run, tmp_path):
    from robot_rl.rl.residual_export import export_training_run

    legacy = tmp_path / "legacy"
    shutil.copytree(run["residual"], legacy)
    model, _, _ = rebuild_model(legacy)
    for name in ("agent.json", "agent.safetensors", "best.safetensors", "checkpoint.safetensors"):
        (legacy / name).unlink()
    model.save(legacy / "model.zip")  # what runs held before
    with pytest.raises(agent_io.AgentFileError, match=r"robot-rl convert --run .* --trust-pickle"):
        load_residual(legacy)
    with pytest.raises(agent_io.AgentFileError, match="stable-baselines3 model.zip"):
        export_training_run(legacy, tmp_path / "policy")
    with pytest.raises(ValueError, match="runs any code its author put in it"):
        agent_io.convert_zip(legacy, trust_pickle=False)
    assert not (legacy / "agent.json").exists()
    written = agent_io.convert_zip(legacy, trust_pickle=True)
    assert [p.name for p in written] == ["agent.json", "agent.safetensors"]
    agent, _, _ = load_residual(legacy)
    obs = np.random.default_rng(1).normal(size=(8, *agent.observation_space.shape)).astype(np.float32)
    np.testing.assert_array_equal(agent.predict(obs)[0], model.predict(obs, deterministic=True)[0])


def test_damaged_agent_files_are_refused_in_one_line(run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(run["residual"], damaged)
    (damaged / "agent.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(agent_io.AgentFileError, match="not a readable safetensors file"):
        load_residual(damaged)
    shutil.copy(run["residual"] / "agent.safetensors", damaged)
    description = json.loads((damaged / "agent.json").read_text())
    (damaged / "agent.json").write_text(json.dumps({**description, "net": [8, 8]}))
    with pytest.raises(agent_io.AgentFileError, match="do not fit the networks agent.json describes"):
        load_residual(damaged)


def test_an_interrupted_run_resumes_from_its_checkpoint(run, tmp_path, monkeypatch):
    out = tmp_path / "interrupted"
    real = agent_io.save_weights
    checkpoints = []

    def save_then_die(model, path, **kwargs):
        real(model, path, **kwargs)
        if path.name == agent_io.CHECKPOINT:
            checkpoints.append(kwargs["num_timesteps"])
            if len(checkpoints) == 2:  # after the evaluation at step 40
                raise KeyboardInterrupt

    monkeypatch.setattr(agent_io, "save_weights", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_residual(TrainResidual(base=run["base"], out=out, steps=120, eval_every=40, **TINY))
    monkeypatch.setattr(agent_io, "save_weights", real)
    assert not finished(out)
    with pytest.raises(ValueError, match="pass --resume"):
        train_residual(TrainResidual(base=run["base"], out=out, steps=120, eval_every=40, **TINY))
    with pytest.raises(ValueError, match="was started on the base"):
        train_residual(TrainResidual(base=run["residual"], out=out, resume=True, progress=False))
    before, _, _ = rebuild_model(out)
    assert before.num_timesteps == 40
    train_residual(TrainResidual(out=out, resume=True, progress=False, threads=1))
    assert finished(out)
    steps = [json.loads(line)["env_steps"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 40, 80, 120]
    after, _, _ = rebuild_model(out)
    assert after.num_timesteps == 120
    moved = [
        not np.array_equal(a.detach().numpy(), b.detach().numpy())
        for a, b in zip(before.actor.parameters(), after.actor.parameters(), strict=True)
    ]
    assert any(moved)  # training went on from the checkpoint


def test_a_refused_configuration_leaves_no_run_folder(run, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match="use it with --algo sac"):
        train_residual(TrainResidual(base=run["base"], out=out, algo="ppo", demos=run["demos"], progress=False))
    with pytest.raises(ValueError):
        train_residual(TrainResidual(base=run["base"], out=out, randomize="no_such_preset", progress=False))
    assert not out.exists()
    with pytest.raises(ValueError, match="`base` is required"):
        TrainResidual(out=out)


def test_non_finite_weights_stop_training_before_an_agent_is_written(run, tmp_path, monkeypatch):
    import torch

    from robot_rl.rl import train as train_module

    def poisoned(model, algo):
        with torch.no_grad():
            model.actor.mu.weight.fill_(float("nan"))

    monkeypatch.setattr(train_module, "_near_zero_output", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(RuntimeError, match="became non-finite"):
        train_residual(TrainResidual(base=run["base"], out=out, steps=40, eval_every=40, **TINY))
    assert not (out / agent_io.DEPLOYED).exists() and not (out / agent_io.CHECKPOINT).exists()
