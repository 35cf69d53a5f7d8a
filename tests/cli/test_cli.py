"""The `robot-rl` verbs, run as a user would (subprocesses) on a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from robot_rl.envs.registry import ENV_SPECS


def robot_rl(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "osmesa"))
    return subprocess.run(
        [sys.executable, "-m", "robot_rl.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


class TestEnvsVerb:
    def test_lists_every_env_with_a_description(self):
        out = robot_rl("envs")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.strip().splitlines()
        assert len(lines) == len(ENV_SPECS)
        for env_id in ENV_SPECS:
            line = next(line for line in lines if line.startswith(env_id + " "))
            assert len(line.split(None, 1)[1]) > 10


class TestEvalVerb:
    def test_expert_eval_writes_the_report(self, tmp_path: Path):
        report_path = tmp_path / "report.json"
        out = robot_rl(
            "eval",
            "--env",
            "robot_rl/PandaReach-v0",
            "--policy",
            "expert",
            "--episodes",
            "3",
            "--seed",
            "7",
            "--json",
            str(report_path),
            "--no-progress",
        )
        assert out.returncode == 0, out.stderr
        report = json.loads(report_path.read_text())
        for key in (
            "env",
            "policy",
            "episodes",
            "seed",
            "success_rate",
            "success_ci95",
            "mean_return",
            "mean_episode_length",
            "safety_interventions",
            "safety_violations",
            "monitor_alarms",
            "per_episode",
        ):
            assert key in report
        assert report["episodes"] == 3
        assert [e["seed"] for e in report["per_episode"]] == [7, 8, 9]
        assert report["success_rate"] == 1.0
        low, high = report["success_ci95"]
        assert 0.0 <= low <= 1.0 <= high + 1e-12
        assert "success rate" in out.stdout

    def test_random_eval_with_randomization_preset(self):
        out = robot_rl("eval", "--env", "PandaPush-v0", "--policy", "random", "--episodes", "2", "--randomize", "train")
        assert out.returncode == 0, out.stderr
        assert "robot_rl/PandaPush-v0" in out.stdout

    def test_video_is_written(self, tmp_path: Path):
        pytest.importorskip("imageio_ffmpeg")
        video = tmp_path / "rollout.mp4"
        out = robot_rl(
            "eval",
            "--env",
            "PandaReach-v0",
            "--episodes",
            "1",
            "--video",
            str(video),
            "--video-episodes",
            "1",
        )
        if out.returncode != 0 and ("GL" in out.stderr or "osmesa" in out.stderr.lower()):
            pytest.skip(f"no offscreen OpenGL here: {out.stderr.strip().splitlines()[-1]}")
        assert out.returncode == 0, out.stderr
        assert video.stat().st_size > 10_000


class TestBadInput:
    def test_unknown_env_is_one_line_with_a_suggestion(self):
        out = robot_rl("eval", "--env", "robot_rl/PandaPsh-v0", "--episodes", "1")
        assert out.returncode == 2
        assert "Did you mean 'robot_rl/PandaPush-v0'?" in out.stderr  # the version asked for
        assert "Traceback" not in out.stderr

    def test_bad_randomize_file_names_the_key(self, tmp_path: Path):
        bad = tmp_path / "bad.yaml"
        bad.write_text("object_mass: [0.5, 2.0]\n")
        out = robot_rl("eval", "--env", "PandaPush-v0", "--episodes", "1", "--randomize", str(bad))
        assert out.returncode == 2
        assert "object_mass" in out.stderr and "object_mass_scale" in out.stderr
        assert "Traceback" not in out.stderr

    def test_missing_randomize_file_is_refused(self, tmp_path: Path):
        out = robot_rl("eval", "--env", "PandaPush-v0", "--episodes", "1", "--randomize", str(tmp_path / "no.yaml"))
        assert out.returncode == 2
        assert "does not exist" in out.stderr

    def test_zero_episodes_is_refused_with_the_valid_range(self):
        out = robot_rl("eval", "--episodes", "0")
        assert out.returncode == 2
        assert "episodes" in out.stderr and "[1, " in out.stderr
        assert "Traceback" not in out.stderr

    def test_unknown_policy_is_refused(self):
        out = robot_rl("eval", "--policy", "runs/nothing", "--episodes", "1")
        assert out.returncode == 2
        assert "expert" in out.stderr and "random" in out.stderr


class TestQuadrotorEval:
    def test_train_preset_resolves_to_the_quadrotor_preset(self, tmp_path: Path):
        report_path = tmp_path / "quad.json"
        out = robot_rl(
            "eval", "--env", "QuadrotorWaypoint-v1", "--episodes", "2", "--randomize", "train",
            "--json", str(report_path), "--no-progress",
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        report = json.loads(report_path.read_text())
        assert report["success_rate"] == 1.0
        assert report["per_episode"][0]["crash"] is None
        distances = [e["distance"] for e in report["per_episode"]]
        assert report["mean_final_distance"] == pytest.approx(sum(distances) / len(distances))
        assert max(distances) <= 0.1  # the expert holds the waypoint
        assert "final distance to the goal" in out.stdout

    def test_a_franka_key_on_a_quadrotor_is_refused_with_its_keys(self, tmp_path: Path):
        bad = tmp_path / "franka.yaml"
        bad.write_text("object_mass_scale: [0.5, 2.0]\n")
        out = robot_rl("eval", "--env", "QuadrotorHover-v1", "--episodes", "1", "--randomize", str(bad))
        assert out.returncode == 2
        assert "object_mass_scale" in out.stderr and "mass_scale" in out.stderr
        assert "Traceback" not in out.stderr


class TestCollectAndData:
    def test_collect_then_info_replay_and_split(self, tmp_path: Path):
        demos = tmp_path / "push.hdf5"
        out = robot_rl("collect", "--env", "PandaPush-v0", "--episodes", "3", "--out", str(demos))
        assert out.returncode == 0, out.stderr
        info = robot_rl("data", "info", str(demos))
        assert info.returncode == 0, info.stderr
        assert "episodes 3" in info.stdout
        replay = robot_rl("data", "replay", str(demos))
        assert replay.returncode == 0, replay.stderr
        assert "max state deviation 0," in replay.stdout
        split = robot_rl("data", "split", str(demos), "--val-fraction", "0.34")
        assert split.returncode == 0 and "1 validation" in split.stdout

    def test_a_missing_device_is_one_line_naming_what_was_looked_for(self, tmp_path: Path):
        out = robot_rl("collect", "--env", "PandaPush-v0", "--source", "spacemouse", "--out", str(tmp_path / "d.hdf5"))
        assert out.returncode == 2
        assert "SpaceMouse" in out.stderr and "Traceback" not in out.stderr

    def test_a_foreign_file_is_refused(self, tmp_path: Path):
        bad = tmp_path / "not.hdf5"
        bad.write_bytes(b"not an hdf5 file at all")
        out = robot_rl("data", "info", str(bad))
        assert out.returncode == 2 and "Traceback" not in out.stderr
