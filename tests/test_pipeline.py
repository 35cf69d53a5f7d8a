"""`robot-rl pipeline` end to end on a tiny budget, and its resumption."""

import json

from robot_rl.cli.main import run


def test_tiny_pipeline_writes_the_report_and_resumes(tmp_path):
    out = tmp_path / "pipe"
    argv = [
        "pipeline", "--env", "robot_rl/PandaReach-v0", "--out", str(out), "--demos", "4", "--base-steps", "40",
        "--residual-steps", "200", "--episodes", "3", "--video-episodes", "0", "--threads", "1",
    ]  # fmt: skip
    assert run(argv) == 0
    report = json.loads((out / "report.json").read_text())
    names = [r["policy"] for r in report["results"]]
    assert names == [
        "scripted expert",
        "diffusion base (ONNX)",
        "diffusion base (torch, same seeds)",
        "base + residual (sac)",
    ]
    assert report["results"][0]["success_rate"] == 1.0
    # The ONNX base and the torch base see the same seeds and the same noise: the same outcomes.
    assert report["results"][1]["success_rate"] == report["results"][2]["success_rate"]
    for name in ("report.md", "base.png", "residual.png", "policy/policy.onnx", "policy/eval.json", "demos.hdf5"):
        assert (out / name).is_file(), name
    assert set(report["timings_s"]) == {"demos", "base", "residual", "export_eval", "report"}
    assert run(argv) == 0  # everything done: only export, evaluation and the report run again
    again = json.loads((out / "report.json").read_text())
    assert set(again["timings_s"]) == {"export_eval", "report"}
    assert again["results"] == report["results"]
