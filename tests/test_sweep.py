"""`robot-rl sweep` (robot_rl.sweep): trials, summary, failures, resuming, on local processes and on Ray."""

import importlib.util
import json
from pathlib import Path

import pytest

from robot_rl.cli.main import run
from robot_rl.sweep import Sweep, trials
from robot_rl.sweep.config import check_command, grid_axes
from robot_rl.sweep.runner import _error_line, _task, read_record
from robot_rl.sweep.summary import _stats

HAS_RAY = importlib.util.find_spec("ray") is not None


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory):
    from robot_rl.data import collect

    path = tmp_path_factory.mktemp("demos") / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 6, path, seed=0, progress=False, fsync=False)
    return path


def tiny_bc(demos: Path) -> list[str]:
    """A BC training of a few seconds: 20 steps, evaluations of one episode at 10 and 20."""
    return [
        "train",
        "bc",
        "--data",
        str(demos),
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--eval-episodes",
        "1",
        "--batch-size",
        "32",
        "--warmup-steps",
        "2",
        "--threads",
        "1",
        "--policy.hidden",
        "32",
        "32",
    ]


class TestTrials:
    def test_grid_times_seeds_with_names_and_command_lines(self, tmp_path):
        options = Sweep(out=tmp_path, seeds=(0, 1), grid=("lr=1e-3,3e-4", "policy.hidden=64 64,256"))
        got = trials(options, ["train", "bc", "--data", "d.hdf5"])
        assert [t.name for t in got] == [
            "lr=1e-3_policy.hidden=64-64_seed0",
            "lr=1e-3_policy.hidden=64-64_seed1",
            "lr=1e-3_policy.hidden=256_seed0",
            "lr=1e-3_policy.hidden=256_seed1",
            "lr=3e-4_policy.hidden=64-64_seed0",
            "lr=3e-4_policy.hidden=64-64_seed1",
            "lr=3e-4_policy.hidden=256_seed0",
            "lr=3e-4_policy.hidden=256_seed1",
        ]
        first = got[0]
        assert first.argv == (
            "train",
            "bc",
            "--data",
            "d.hdf5",
            "--lr",
            "1e-3",
            "--policy.hidden",
            "64",
            "64",
            "--seed",
            "0",
            "--out",
            str(tmp_path / first.name),
            "--no-progress",
        )
        assert dict(first.point) == {"lr": "1e-3", "policy.hidden": "64 64"}

    def test_grid_keys_are_spelled_as_the_cli_spells_them(self):
        assert grid_axes(["--eval_every=10,20"]) == [("eval-every", ["10", "20"])]

    @pytest.mark.parametrize(
        ("grid", "message"),
        [
            (["lr"], "KEY=V1,V2"),
            (["lr=1e-3,"], "KEY=V1,V2"),
            (["seed=1,2"], "use --seeds"),
            (["lr=1,2", "lr=3"], "twice"),
        ],
    )
    def test_bad_grid_axes_are_refused(self, grid, message):
        with pytest.raises(ValueError, match=message):
            grid_axes(grid)

    @pytest.mark.parametrize(
        ("command", "message"),
        [
            ([], "needs a training command after `--`"),
            (["eval", "--policy", "x"], "needs a training command"),
            (["train", "bc", "--data", "d", "--out", "x"], "must not give --out"),
            (["train", "bc", "--data", "d", "--seed=3"], "must not give --seed"),
            (["train", "bc", "--data", "d", "--lr", "1"], "--lr is both in the training command and a grid axis"),
        ],
    )
    def test_commands_the_sweep_cannot_run_are_refused(self, command, message):
        with pytest.raises(ValueError, match=message):
            check_command(command, ["lr=1,2"])

    def test_options_are_checked(self, tmp_path):
        with pytest.raises(ValueError, match="distinct"):
            Sweep(out=tmp_path, seeds=(1, 1))
        with pytest.raises(ValueError, match="needs the ray backend"):
            Sweep(out=tmp_path, backend="local", ray_address="10.0.0.1:6379")
        with pytest.raises(ValueError, match="at most 1000 trials"):
            Sweep(out=tmp_path, seeds=tuple(range(11)), grid=("lr=" + ",".join(str(i) for i in range(100)),))

    def test_error_line_is_the_cli_error_else_the_last_line(self):
        assert _error_line("x\nrobot-rl: error: bad --lr\n", 2) == "bad --lr"
        assert _error_line("Traceback...\nKeyError: 'a'\n", 1) == "KeyError: 'a'"
        assert _error_line("", -9) == "killed by signal 9"

    def test_stats_are_mean_sample_std_min_max(self):
        assert _stats([0.8, 1.0, 0.9]) == pytest.approx({"mean": 0.9, "std": 0.1, "min": 0.8, "max": 1.0})
        assert _stats([0.5]) == {"mean": 0.5, "std": 0.0, "min": 0.5, "max": 0.5}

    def test_a_trained_trial_only_reruns_its_evaluation_when_the_evaluation_changes(self, tmp_path):
        options = Sweep(out=tmp_path, seeds=(0,), eval_episodes=3)
        (trial,) = trials(options, ["train", "bc", "--data", "d"])
        (tmp_path / trial.name).mkdir()
        (tmp_path / "trials").mkdir()
        record = {"status": "ok", "trained": True, "eval": {"episodes": 2, "seed": 1_000_000}}
        (tmp_path / "trials" / f"{trial.name}.json").write_text(json.dumps(record))
        task = _task(options, trial)
        assert task.train is None and task.evaluate[:5] == (
            "eval",
            "--policy",
            str(tmp_path / trial.name),
            "--episodes",
            "3",
        )
        record["eval"] = {"episodes": 3, "seed": 1_000_000, "safety": "off"}
        (tmp_path / "trials" / f"{trial.name}.json").write_text(json.dumps(record))
        assert _task(options, trial).evaluate[-5:-3] == ("--safety", "on")  # evaluated without the chain: again
        record["eval"] = {"episodes": 3, "seed": 1_000_000, "safety": "on"}
        (tmp_path / "trials" / f"{trial.name}.json").write_text(json.dumps(record))
        assert _task(options, trial) is None  # complete: skipped


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_two_seeds_of_tiny_bc_write_the_summary_then_resume(reach_demos, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--seeds", "0", "1", "--out", str(out), "--backend", "local", "--max-concurrent", "2"]
    assert run([*argv, "--eval-episodes", "2", "--", *tiny_bc(reach_demos)]) == 0
    summary = _summary(out)
    assert [r["trial"] for r in summary["trials"]] == ["seed0", "seed1"]
    assert all(
        r["status"] == "ok" and r["final_from"] == "eval: 2 episodes from seed 1000000" for r in summary["trials"]
    )
    for row in summary["trials"]:  # each trial a normal run folder, its final success from its eval report
        run_dir = out / row["trial"]
        assert (run_dir / "config.json").is_file() and (run_dir / "policy.safetensors").is_file()
        assert json.loads((run_dir / "config.json").read_text())["train"]["seed"] == row["seed"]
        report = json.loads((out / "trials" / f"{row['trial']}.eval.json").read_text())
        assert (report["episodes"], report["seed"], report["success_rate"]) == (2, 1_000_000, row["success_rate"])
    (group,) = summary["groups"]
    finals = [r["success_rate"] for r in summary["trials"]]
    assert group["ok"] == 2 and group["mean"] == pytest.approx(sum(finals) / 2)
    assert (group["min"], group["max"]) == (min(finals), max(finals))
    assert summary["curves"] and (out / "curves.png").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "| seed0 | 0 | ok |" in text and "| seed1 | 1 | ok |" in text and "| all trials | 2/2 |" in text

    # Again: both complete, nothing runs.
    stamp = (out / "seed0" / "policy.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert run([*argv, "--eval-episodes", "2", "--", *tiny_bc(reach_demos)]) == 0
    printed = capsys.readouterr().out
    assert "seed0: complete, skipped" in printed and "seed1: complete, skipped" in printed
    assert (out / "seed0" / "policy.safetensors").stat().st_mtime_ns == stamp
    assert _summary(out)["trials"] == summary["trials"]

    # A trial cut short (no record, a half-written run folder) starts over in a clean folder; the other is kept.
    (out / "trials" / "seed1.json").unlink()
    (out / "seed1" / "metrics.jsonl").write_text("")
    assert run([*argv, "--eval-episodes", "2", "--", *tiny_bc(reach_demos)]) == 0
    assert "running 1 of 2 trials" in capsys.readouterr().out
    assert (out / "seed0" / "policy.safetensors").stat().st_mtime_ns == stamp
    assert len((out / "seed1" / "metrics.jsonl").read_text().splitlines()) == 2
    assert read_record(out, "seed1")["status"] == "ok"

    # Another training command in the same folder is refused.
    with pytest.raises(ValueError, match="holds a sweep of another training command"):
        run([*argv, "--", *tiny_bc(reach_demos), "--lr", "1e-2"])


def test_a_sweep_with_an_invalid_option_reports_each_trials_error(reach_demos, tmp_path, capsys):
    out = tmp_path / "sweep"
    command = ["sweep", "--seeds", "0", "1", "--out", str(out), "--grid", "lr=1e-3,-1", "--backend", "local"]
    assert run([*command, "--", *tiny_bc(reach_demos), "--bogus", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all("unknown option --bogus" in line for line in err)
    assert [line.split(" failed:")[0] for line in err] == [
        "robot-rl: trial lr=1e-3_seed0",
        "robot-rl: trial lr=1e-3_seed1",
        "robot-rl: trial lr=-1_seed0",
        "robot-rl: trial lr=-1_seed1",
    ]
    summary = _summary(out)
    assert len(summary["failed"]) == 4 and all(r["status"] == "failed" for r in summary["trials"])
    assert not any((out / r["trial"]).exists() for r in summary["trials"])  # nothing started

    # A value the training options refuse: each trial's line is that option's own message.
    out2 = tmp_path / "sweep2"
    command = ["sweep", "--seeds", "0", "--out", str(out2), "--grid", "lr=-1,0", "--backend", "local"]
    assert run([*command, "--", *tiny_bc(reach_demos)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "robot-rl: trial lr=-1_seed0 failed: `lr` must be a number > 0. Got -1.0.",
        "robot-rl: trial lr=0_seed0 failed: `lr` must be a number > 0. Got 0.0.",
    ]


def test_a_trial_that_fails_while_training_reports_its_error_line(reach_demos, tmp_path, capsys):
    out = tmp_path / "sweep"
    # Evaluation seeds 3.. overlap the demos' seeds 0..5: refused by the training itself, after it started.
    command = ["sweep", "--seeds", "0", "--out", str(out), "--backend", "local", "--grid", "eval-seed=3"]
    assert run([*command, "--", *tiny_bc(reach_demos)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("robot-rl: trial eval-seed=3_seed0 failed: evaluation seeds 3..3 overlap the demos' seeds")
    record = read_record(out, "eval-seed=3_seed0")
    assert record["status"] == "failed" and record["stage"] == "train" and record["trained"] is False
    assert "robot-rl train bc" in (out / "trials" / "eval-seed=3_seed0.log").read_text()


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'robot_rl[ray]')")
def test_trials_run_as_ray_tasks(reach_demos, tmp_path, capsys):
    out = tmp_path / "sweep"
    command = ["sweep", "--seeds", "0", "1", "--out", str(out), "--backend", "ray", "--max-concurrent", "2"]
    assert run([*command, "--", *tiny_bc(reach_demos)]) == 0
    assert "on local Ray, 2 at a time" in capsys.readouterr().out
    summary = _summary(out)
    assert [r["status"] for r in summary["trials"]] == ["ok", "ok"]
    assert all(r["final_from"] == "training eval at step 20 (1 episodes)" for r in summary["trials"])
    assert summary["groups"][0]["ok"] == 2


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'robot_rl[ray]')")
def test_an_unreachable_ray_address_is_one_line_naming_it(reach_demos, tmp_path):
    command = ["sweep", "--seeds", "0", "--out", str(tmp_path / "sweep"), "--ray-address", "127.0.0.1:1"]
    with pytest.raises(RuntimeError, match=r"--ray-address 127\.0\.0\.1:1.*no Ray cluster answers.*ray start --head"):
        run([*command, "--", *tiny_bc(reach_demos)])
