"""`robot-rl train` and `robot-rl eval --policy RUN_DIR` end to end on a tiny run."""

import json

import pytest

from robot_rl.cli.main import main, run
from robot_rl.data import collect
from robot_rl.evaluation.evaluate import EvalConfig, evaluate


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    demos = root / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 4, demos, seed=0, progress=False, fsync=False)
    out = root / "diffusion"
    argv = [
        "train", "diffusion", "--data", str(demos), "--out", str(out), "--steps", "40", "--eval-every", "20",
        "--eval-episodes", "2", "--warmup-steps", "5", "--no-progress", "--policy.mlp-hidden", "64",
        "--policy.embed-dim", "32", "--policy.horizon", "8", "--policy.n-action-steps", "4",
    ]  # fmt: skip
    assert run(argv) == 0
    return out


def test_eval_of_a_run_uses_held_out_seeds_and_reports_the_run(tiny_run, tmp_path):
    report = evaluate(EvalConfig(policy=str(tiny_run), episodes=2, progress=False, plot=tmp_path / "curves.png"))
    assert report["env"] == "robot_rl/PandaReach-v0"  # the run's env by default
    assert report["seed"] == 1_000_000
    assert [e["seed"] for e in report["per_episode"]] == [1_000_000, 1_000_001]
    assert report["policy_run"]["policy_type"] == "diffusion"
    assert report["policy_run"]["demos"] == 4
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert 0.0 <= report["success_rate"] <= 1.0


def test_eval_is_reproducible_and_inference_steps_apply(tiny_run):
    config = EvalConfig(policy=str(tiny_run), episodes=2, progress=False)
    first, second = evaluate(config), evaluate(config)
    assert [e["return"] for e in first["per_episode"]] == [e["return"] for e in second["per_episode"]]
    fast = evaluate(EvalConfig(policy=str(tiny_run), episodes=1, progress=False, inference_steps=1))
    assert fast["policy_run"]["options"]["inference_steps"] == 1


def test_demo_seeds_are_refused(tiny_run):
    with pytest.raises(ValueError, match="overlap the seeds of the demos"):
        evaluate(EvalConfig(policy=str(tiny_run), episodes=3, seed=2, progress=False))


def test_other_env_is_refused(tiny_run):
    with pytest.raises(ValueError, match="trained on robot_rl/PandaReach-v0"):
        evaluate(EvalConfig(policy=str(tiny_run), env="robot_rl/PandaPush-v0", episodes=1, progress=False))


def test_cli_errors_are_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    for argv in (
        ["robot-rl", "eval", "--policy", str(not_a_run), "--episodes", "1"],
        ["robot-rl", "eval", "--policy", "nonexistent_dir", "--episodes", "1"],
        ["robot-rl", "train", "bc", "--data", str(tmp_path / "missing.hdf5"), "--out", str(tmp_path / "r")],
    ):
        monkeypatch.setattr("sys.argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "error" in err.lower() and "Traceback" not in err
        assert any(word in err for word in ("config.json", "directory", "missing.hdf5"))
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["train"]["steps"] == 40
