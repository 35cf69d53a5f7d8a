"""`robot-rl pipeline` end to end on a tiny budget, and its resumption."""

import json

import h5py
import pytest

from robot_rl.cli.main import run


def test_tiny_pipeline_writes_the_report_and_resumes(tmp_path):
    out = tmp_path / "pipe"
    argv = [
        "pipeline", "--env", "robot_rl/PandaReach-v0", "--out", str(out), "--demos", "4", "--base-steps", "40",
        "--residual-steps", "200", "--episodes", "3", "--video-episodes", "0", "--threads", "1",
        "--monitor-episodes", "12", "--suite-episodes", "1",
    ]  # fmt: skip
    assert run(argv) == 0
    report = json.loads((out / "report.json").read_text())
    names = [r["policy"] for r in report["results"]]
    assert names == ["scripted expert", "diffusion base (ONNX)", "base + residual sac (ONNX, one graph)"]
    assert report["results"][0]["success_rate"] == 1.0
    # Every row ran with the safety chain on: counted, and no constraint broken.
    assert all(r["safety_violations"] == 0 and r["safety_interventions"] is not None for r in report["results"])
    card = json.loads((out / "policy" / "metadata.json").read_text())
    assert card["residual"]["algo"] == "sac"  # the deployed graph holds the residual
    for name in ("report.md", "base.png", "residual.png", "policy/policy.onnx", "policy/eval.json", "demos.hdf5"):
        assert (out / name).is_file(), name
    stages = {"demos", "base", "residual", "export_calibrate", "robustness", "evaluate_report"}
    assert set(report["timings_s"]) == stages
    # Every learning stage ran under the train randomization; the suite's table is in the report and on the card.
    with h5py.File(out / "demos.hdf5") as f:
        assert "obs_noise_std" in json.loads(f["data"].attrs["env_kwargs"])["randomize"]
    assert json.loads((out / "base" / "config.json").read_text())["train"]["eval_randomize"] == "train"
    assert json.loads((out / "residual" / "config.json").read_text())["options"]["randomize"] == "train"
    assert [r["family"] for r in report["robustness"]["families"]][:2] == ["nominal", "object"]
    assert card["robustness"]["episodes"] == 1 and "## Robustness" in (out / "policy" / "README.md").read_text()
    assert run(argv) == 0  # everything done: only export, calibration, evaluation and the report run again
    again = json.loads((out / "report.json").read_text())
    assert set(again["timings_s"]) == {"export_calibrate", "robustness", "evaluate_report"}
    assert again["results"] == report["results"]
    # The same folder with another randomization is refused before anything runs.
    with pytest.raises(ValueError, match="with randomize 'train'; this one asks for .* with 'nominal'"):
        run([*argv, "--randomize", "nominal"])
