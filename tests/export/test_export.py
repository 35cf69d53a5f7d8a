"""`robot-rl export` and the onnxruntime policy: parity with torch, the policy card, integrity checks."""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from robot_rl.cli.main import run
from robot_rl.data import collect
from robot_rl.envs.registry import make
from robot_rl.export import PolicyFormatError, export_run, read_metadata
from robot_rl.export.metadata import ONNX_METADATA_KEY, sha256_file
from robot_rl.export.onnx_export import OPSET, ExportError, as_onnx_graph, export_onnx, parity
from robot_rl.policies import BCConfig, ChunkedActor, DiffusionConfig, ObsLayout, RunError, load_policy
from robot_rl.policies.models import build_policy
from robot_rl.policies.train import TrainBC, TrainDiffusion, train
from robot_rl.runtime import OnnxPolicy, PolicyIntegrityError

REACH = "robot_rl/PandaReach-v0"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny BC and a tiny diffusion run on 4 PandaReach demos (40 steps, no evaluation rollouts)."""
    root = tmp_path_factory.mktemp("runs")
    demos = root / "reach.hdf5"
    collect(REACH, "expert", 4, demos, seed=0, progress=False, fsync=False)
    common = {"data": demos, "steps": 40, "eval_every": 40, "eval_episodes": 0, "warmup_steps": 5}
    common |= {"batch_size": 32, "progress": False, "threads": 1}
    train(TrainBC(out=root / "bc", policy=BCConfig(hidden=(32, 32)), **common))
    diffusion = DiffusionConfig(
        n_obs_steps=2, mlp_hidden=32, embed_dim=16, horizon=8, n_action_steps=4, inference_steps=4
    )
    train(TrainDiffusion(out=root / "diffusion", policy=diffusion, **common))
    return {"bc": root / "bc", "diffusion": root / "diffusion"}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """Both runs exported: the diffusion run through the CLI, the BC run through the function."""
    root = tmp_path_factory.mktemp("policies")
    assert run(["export", "--run", str(runs["diffusion"]), "--out", str(root / "diffusion")]) == 0
    export_run(runs["bc"], root / "bc")
    return {"bc": root / "bc", "diffusion": root / "diffusion"}


def random_inputs(policy, batch, seed=0):
    rng = np.random.default_rng(seed)
    mean, std = policy.normalizer.obs_mean.numpy(), policy.normalizer.obs_std.numpy()
    obs = (mean + std * rng.standard_normal((batch, policy.n_obs_steps, policy.obs_dim))).astype(np.float32)
    noise = rng.standard_normal((batch, policy.horizon, policy.action_dim)).astype(np.float32)
    return obs, noise


class TestParity:
    @pytest.mark.parametrize("kind", ["bc", "diffusion"])
    def test_onnxruntime_matches_torch_on_the_same_obs_and_noise(self, runs, exported, kind):
        torch_policy, onnx_policy = load_policy(runs[kind]), OnnxPolicy(exported[kind])
        obs, noise = random_inputs(torch_policy, 16)
        with torch.no_grad():
            args = (torch.from_numpy(obs), torch.from_numpy(noise))
            expected = torch_policy(*args[: 2 if kind == "diffusion" else 1]).numpy()
        actual = onnx_policy.predict_batch(obs, noise)
        assert actual.shape == (16, torch_policy.horizon, torch_policy.action_dim)
        assert np.abs(actual - expected).max() < 1e-5
        single = onnx_policy.predict(obs[0].astype(np.float64), np.random.default_rng(3))
        reference = torch_policy.predict(obs[0].astype(np.float64), np.random.default_rng(3))
        assert np.abs(single - reference).max() < 1e-5

    @pytest.mark.parametrize(
        ("kind", "config"),
        [
            (
                "diffusion",
                DiffusionConfig(denoiser="unet", n_obs_steps=2, unet_dims=(8, 16), horizon=8, prediction="epsilon"),
            ),
            ("bc", BCConfig(hidden=(16,), head="gaussian", dropout=0.1)),
        ],
    )
    def test_other_architectures_export_exactly(self, kind, config):
        torch.manual_seed(0)
        layout = ObsLayout(("observation", "desired_goal"), ((10,), (3,)), relative_goal=True)
        policy = build_policy(kind, config, layout, 4).eval()
        graph, names = as_onnx_graph(policy, 3 if kind == "diffusion" else None)
        inputs = tuple(torch.from_numpy(x) for x in random_inputs(policy, 5))[: len(names)]
        model_bytes = export_onnx(graph, inputs, names, OPSET)
        onnx.checker.check_model(onnx.load_from_string(model_bytes), full_check=True)
        assert parity(model_bytes, graph, inputs, names) < 1e-5

    def test_onnx_actor_reproduces_the_torch_actor_over_a_rollout(self, runs, exported):
        actions = {}
        for name, policy in (("torch", load_policy(runs["diffusion"])), ("onnx", OnnxPolicy(exported["diffusion"]))):
            env = make(REACH)
            actor = ChunkedActor(policy, seed=7)
            obs, _ = env.reset(seed=1_000_000)
            actions[name] = []
            for _ in range(20):
                action = actor(obs)
                actions[name].append(action)
                obs, *_ = env.step(action)
            env.close()
            assert actor.chunks == 5
        np.testing.assert_allclose(actions["onnx"], actions["torch"], atol=1e-5, rtol=0)


class TestGraphAndCard:
    def test_graph_passes_the_checker_with_fixed_names_and_a_dynamic_batch(self, exported):
        model = onnx.load(exported["diffusion"] / "policy.onnx")
        onnx.checker.check_model(model, full_check=True)
        assert [i.name for i in model.graph.input] == ["obs_history", "noise"]
        assert [o.name for o in model.graph.output] == ["actions"]
        assert [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [
            "batch", 2, 16
        ]  # fmt: skip
        assert {o.domain: o.version for o in model.opset_import}[""] == OPSET
        bc = onnx.load(exported["bc"] / "policy.onnx")
        assert [i.name for i in bc.graph.input] == ["obs_history"]

    def test_card_has_the_fields_and_the_file_hash(self, runs, exported):
        meta = read_metadata(exported["diffusion"])
        card = json.loads((exported["diffusion"] / "metadata.json").read_text())
        config = json.loads((runs["diffusion"] / "config.json").read_text())
        assert meta.onnx_sha256 == sha256_file(exported["diffusion"] / "policy.onnx")
        assert (meta.format_version, meta.env_id, meta.name) == (1, REACH, "diffusion")
        assert (meta.n_obs_steps, meta.horizon, meta.n_action_steps, meta.inference_steps) == (2, 8, 4, 4)
        assert meta.control_rate_hz == pytest.approx(25.0) and meta.ctrl_dt == pytest.approx(0.04)
        assert meta.observation.keys == ["observation", "desired_goal"] and meta.observation.dim == 16
        assert [s.offset for s in meta.observation.segments] == [0, 10, 13]  # Reach: 10 + goal 3 + relative goal 3
        assert meta.action.family == "franka" and meta.action.shape == [4] and len(meta.action.dims) == 4
        assert meta.action.low == [-1.0] * 4 and "0.05 m" in meta.action.dims[0].physical
        assert len(meta.normalization.obs_mean) == 16 and len(meta.normalization.action_high) == 4
        assert meta.base.policy_type == "diffusion" and meta.base.deployed_step == 40
        assert meta.base.weights_sha256 == sha256_file(runs["diffusion"] / "policy.safetensors")
        assert meta.training_data.seeds == config["data"]["seeds"] == [0, 1, 2, 3]
        assert meta.training_data.sha256 == config["data"]["sha256"] and meta.training_data.demos == 4
        assert meta.residual is None and meta.eval is None
        assert meta.onnx.opset == OPSET and [t.name for t in meta.onnx.inputs] == ["obs_history", "noise"]
        assert meta.export_check["max_abs_diff"] < 1e-5
        assert {"robot_rl", "torch", "onnx", "onnxruntime"} <= set(meta.versions) and meta.exported_at
        embedded = {p.key: p.value for p in onnx.load(exported["diffusion"] / "policy.onnx").metadata_props}
        inner = json.loads(embedded[ONNX_METADATA_KEY])
        assert inner == {k: v for k, v in card.items() if k != "onnx_sha256"}  # all but the file's own hash
        readme = (exported["diffusion"] / "README.md").read_text()
        assert f"robot-rl eval --policy {exported['diffusion']}" in readme and meta.onnx_sha256 in readme
        assert read_metadata(exported["bc"]).inference_steps is None

    def test_card_describes_every_tensor_the_observation_and_the_call_rule(self, exported):
        meta = read_metadata(exported["diffusion"])
        obs_history, noise = meta.onnx.inputs
        assert obs_history.axes == ["batch", "n_obs_steps", "obs_dim"] and "oldest first" in obs_history.meaning
        assert (
            noise.distribution.startswith("standard normal N(0, I)")
            and noise.distribution == meta.onnx.inputs[1].distribution
        )
        assert "a fresh draw each time, never reused" in noise.call and obs_history.distribution is None
        (actions,) = meta.onnx.outputs
        assert "rows 0..3" in actions.call and "Not clipped" in actions.call and "action.dims" in actions.units
        assert "default_rng(seed)" in meta.calling.noise and "(1, 8, 4)" in meta.calling.noise
        assert meta.calling.empty_batch is None and len(meta.calling.sequence) == 7
        assert "intra_op_num_threads 1" in meta.calling.reference_runtime
        # Reach: 10 entries of `observation`, the goal and the relative goal, each with its quantity and unit
        values = meta.observation.values
        assert [(v["start"], v["stop"]) for v in values][:2] == [(0, 3), (3, 5)]
        assert (values[0]["quantity"], values[0]["unit"]) == ("TCP position (world)", "m")
        assert values[-1]["source"] == "desired_goal - achieved_goal" and values[-1]["stop"] == 16
        bc = read_metadata(exported["bc"])
        assert bc.calling.noise is None and [t.name for t in bc.onnx.inputs] == ["obs_history"]
        readme = (exported["diffusion"] / "README.md").read_text()
        assert "## Calling the graph without robot_rl" in readme and "| `noise` | [batch, 8, 4]" in readme

    def test_refreshing_an_old_card_adds_the_descriptions_and_keeps_the_graph(self, exported, tmp_path):
        from robot_rl.export.card import refresh_descriptions
        from robot_rl.export.metadata import dumps, sha256_bytes

        copy = shutil.copytree(exported["diffusion"], tmp_path / "old")
        described = json.loads((copy / "metadata.json").read_text())
        model = onnx.load(copy / "policy.onnx")
        # The card as exported before the descriptions: no tensor texts, no observation.values, no calling.
        (entry,) = [p for p in model.metadata_props if p.key == ONNX_METADATA_KEY]
        inner = json.loads(entry.value)
        outer = json.loads((copy / "metadata.json").read_text())
        for card in (inner, outer):
            for spec in [*card["onnx"]["inputs"], *card["onnx"]["outputs"]]:
                for key in ("axes", "meaning", "units", "call", "distribution"):
                    del spec[key]
            del card["observation"]["values"], card["calling"]
        inner["env_id"] = outer["env_id"] = "robot_rl/PandaReach-v0"  # kept as found
        entry.value = json.dumps(inner)
        (copy / "policy.onnx").write_bytes(model.SerializeToString())
        outer["onnx_sha256"] = sha256_bytes((copy / "policy.onnx").read_bytes())
        (copy / "metadata.json").write_text(dumps(outer))
        (copy / "eval.json").write_text(json.dumps({"policy_run": {"onnx_sha256": outer["onnx_sha256"]}}))
        old = OnnxPolicy(copy)
        assert old.metadata.calling is None

        sha = refresh_descriptions(copy)
        new = OnnxPolicy(copy)  # the sha256 and the embedded card agree again
        assert sha == new.onnx_sha256 == read_metadata(copy).onnx_sha256 != old.onnx_sha256
        assert json.loads((copy / "eval.json").read_text())["policy_run"]["onnx_sha256"] == sha
        card = json.loads((copy / "metadata.json").read_text())
        assert {k: v for k, v in card.items() if k != "onnx_sha256"} == {
            k: v for k, v in described.items() if k != "onnx_sha256"
        }
        before = onnx.load(exported["diffusion"] / "policy.onnx").graph.SerializeToString()
        assert onnx.load(copy / "policy.onnx").graph.SerializeToString() == before
        obs, noise = np.zeros((3, 2, 16)), np.random.default_rng(0).standard_normal((3, 8, 4))
        assert np.array_equal(
            new.predict_batch(obs, noise), OnnxPolicy(exported["diffusion"]).predict_batch(obs, noise)
        )
        assert refresh_descriptions(copy) == sha  # again: nothing changes


class TestRefusals:
    def test_a_tampered_graph_is_refused_naming_both_hashes(self, exported, tmp_path):
        copy = shutil.copytree(exported["bc"], tmp_path / "bc")
        data = bytearray((copy / "policy.onnx").read_bytes())
        data[-1] ^= 0xFF
        (copy / "policy.onnx").write_bytes(bytes(data))
        expected = read_metadata(copy).onnx_sha256
        with pytest.raises(PolicyIntegrityError, match=f"sha256 {sha256_file(copy / 'policy.onnx')}.*{expected}"):
            OnnxPolicy(copy)

    def test_a_card_edited_against_its_graph_is_refused(self, exported, tmp_path):
        copy = shutil.copytree(exported["bc"], tmp_path / "bc")
        card = json.loads((copy / "metadata.json").read_text())
        card["observation"]["keys"].reverse()
        (copy / "metadata.json").write_text(json.dumps(card))
        with pytest.raises(PolicyIntegrityError, match="disagrees with the card embedded"):
            OnnxPolicy(copy)
        card["format_version"] = 99
        (copy / "metadata.json").write_text(json.dumps(card))
        with pytest.raises(PolicyFormatError, match="format_version 99"):
            OnnxPolicy(copy)

    def test_a_folder_that_is_not_a_run_is_refused(self, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(RunError, match="not a training run: it has no config.json"):
            export_run(tmp_path / "empty", tmp_path / "out")
        assert not (tmp_path / "out").exists()

    def test_another_policy_in_out_is_kept_unless_overwrite(self, runs, exported, tmp_path):
        out = shutil.copytree(exported["bc"], tmp_path / "policy")
        export_run(runs["bc"], out)  # the same weights again: refreshed
        with pytest.raises(ExportError, match="already holds another policy.*--overwrite"):
            export_run(runs["diffusion"], out)
        assert read_metadata(out).policy_type == "bc"
        assert export_run(runs["diffusion"], out, inference_steps=2, overwrite=True).inference_steps == 2
        OnnxPolicy(out)
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "notes.txt").write_text("mine")
        with pytest.raises(ExportError, match="not empty"):
            export_run(runs["bc"], tmp_path / "other")
        with pytest.raises(ExportError, match="is a training run"):
            export_run(runs["bc"], runs["bc"], overwrite=True)

    def test_bad_inference_steps_are_refused(self, runs, tmp_path):
        with pytest.raises(ExportError, match="applies to diffusion policies"):
            export_run(runs["bc"], tmp_path / "a", inference_steps=3)
        with pytest.raises(ExportError, match=r"must be in \[1, train_timesteps=100\]. Got 101"):
            export_run(runs["diffusion"], tmp_path / "b", inference_steps=101)


class TestEvalOfExportedPolicy:
    def test_cli_eval_runs_the_graph_on_held_out_seeds(self, exported, tmp_path):
        report_path = tmp_path / "report.json"
        argv = ["eval", "--policy", str(exported["diffusion"]), "--episodes", "2", "--json", str(report_path)]
        assert run([*argv, "--no-progress"]) == 0
        report = json.loads(report_path.read_text())
        meta = read_metadata(exported["diffusion"])
        assert report["env"] == REACH and report["seed"] == 1_000_000 and report["episodes"] == 2
        assert report["policy_run"]["onnx_sha256"] == meta.onnx_sha256
        assert report["policy_run"]["policy_type"] == "diffusion" and report["policy_run"]["demos"] == 4
        assert report["policy_run"]["options"]["inference_steps"] == 4

    def test_eval_refuses_demo_seeds_other_envs_and_other_step_counts(self, exported):
        policy = str(exported["diffusion"])
        with pytest.raises(ValueError, match="overlap the seeds of the demos"):
            run(["eval", "--policy", policy, "--episodes", "2", "--seed", "3", "--no-progress"])
        with pytest.raises(ValueError, match="trained on robot_rl/PandaReach-v0"):
            run(["eval", "--policy", policy, "--env", "robot_rl/PandaPush-v0", "--episodes", "1"])
        with pytest.raises(ValueError, match="4 denoising steps built into its graph"):
            run(["eval", "--policy", policy, "--episodes", "1", "--inference-steps", "2", "--no-progress"])


def test_the_runtime_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys; import robot_rl.runtime.onnx_policy; from robot_rl.policies import ChunkedActor; "
        "import robot_rl.envs; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_shipped_policies_match_their_cards():
    from pathlib import Path

    from robot_rl.export.metadata import read_metadata, sha256_file

    root = Path(__file__).resolve().parents[2] / "policies"
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    assert {p.name for p in folders} >= {
        "panda_push_diffusion",
        "panda_pick_and_place_diffusion",
        "quadrotor_waypoint_diffusion",
    }
    for folder in folders:
        meta = read_metadata(folder)
        assert sha256_file(folder / "policy.onnx") == meta.onnx_sha256
        assert meta.eval is not None and meta.eval["episodes"] == 100
        assert (folder / "eval.json").is_file() and (folder / "rollout.mp4").stat().st_size > 10_000


def test_a_shipped_policy_runs_a_held_out_episode():
    from pathlib import Path

    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    folder = Path(__file__).resolve().parents[2] / "policies" / "quadrotor_waypoint_diffusion"
    report = evaluate(EvalConfig(policy=str(folder), episodes=1, progress=False))
    assert report["seed"] == 1_000_000 and report["per_episode"][0]["success"]
