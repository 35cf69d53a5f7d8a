"""The robustness suite: families, seeds, the expert beside the policy, the report, the plot and the card."""

import json
import shutil
from pathlib import Path

import pytest

from robot_rl.cli.main import run
from robot_rl.evaluation.evaluate import EvalConfig
from robot_rl.evaluation.robustness import available_suites, format_table, load_suite, run_suite
from robot_rl.export.metadata import read_metadata
from robot_rl.runtime import OnnxPolicy

ROOT = Path(__file__).resolve().parents[2]
QUADROTOR_POLICY = ROOT / "policies" / "quadrotor_waypoint_diffusion"
PUSH_POLICY = ROOT / "policies" / "panda_push_diffusion"


def test_the_shipped_suites_cover_the_issue_s_families_for_both_robots():
    assert "robustness" in available_suites()
    franka = load_suite("robustness", "robot_rl/PandaPush-v0")
    quad = load_suite("robustness", "robot_rl/QuadrotorWaypoint-v1")
    assert [f.name for f in franka.families] == ["nominal", "object", "servo", "sensing", "actuation", "combined"]
    assert [f.name for f in quad.families] == ["nominal", "payload", "motors", "wind", "sensing", "combined"]
    # The suite's seeds are nobody else's: demos from 0, training evaluations from 900000, cards from 1000000.
    for suite in (franka, quad):
        assert suite.seed >= 2_000_000
        assert not suite.families[0].randomize.enabled
        assert all(f.randomize.enabled for f in suite.families[1:])


def test_bad_suite_and_family_names_get_did_you_mean_and_the_list(tmp_path):
    with pytest.raises(ValueError, match=r"unknown suite 'robustnes'\. Did you mean 'robustness'\? Suites: robustness"):
        load_suite("robustnes", "robot_rl/PandaPush-v0")
    suite = load_suite("robustness", "robot_rl/PandaPush-v0")
    with pytest.raises(ValueError, match=r"no family 'payload'.*Its families: nominal, object, servo"):
        suite.select(["payload"])
    with pytest.raises(ValueError, match="Did you mean 'sensing'"):
        suite.select(["sensin"])
    with pytest.raises(ValueError, match="add --suite robustness"):
        EvalConfig(policy="expert", families=("object",))
    # A family with a key the robot cannot apply is refused with the robot's keys (the env's own check).
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "suite: mine\nrobot: franka\nseed: 5000000\nfamilies:\n  nominal: {randomize: {}}\n"
        "  heavy: {description: x, randomize: {mass_scale: [1.2, 1.3]}}\n"
    )
    config = EvalConfig(env="robot_rl/PandaReach-v0", policy="expert", episodes=1, suite=str(bad), progress=False)
    with pytest.raises(ValueError, match="does not randomize mass_scale.*Its randomization keys"):
        run_suite(config, load_suite(bad, "robot_rl/PandaReach-v0"))
    with pytest.raises(ValueError, match="is a suite for the 'franka'"):
        load_suite(bad, "robot_rl/QuadrotorHover-v1")


def test_a_quadrotor_policy_on_a_tiny_budget_writes_its_table_on_the_card(tmp_path, capsys):
    policy = tmp_path / "policy"
    shutil.copytree(QUADROTOR_POLICY, policy)
    report_path, plot = tmp_path / "suite.json", tmp_path / "suite.png"
    argv = ["eval", "--policy", str(policy), "--suite", "robustness", "--families", "payload", "wind"]
    argv += ["--episodes", "2", "--safety", "on", "--json", str(report_path), "--plot", str(plot), "--card"]
    assert run([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| payload | mass and rotational inertia" in out and "expert success" in out
    report = json.loads(report_path.read_text())
    assert [r["family"] for r in report["families"]] == ["nominal", "payload", "wind"]
    assert report["seed"] == 4_200_000 and report["episodes"] == 2 and report["safety"] == "on"
    for row in report["families"]:
        assert row["policy"]["successes"] + 0 <= 2 and row["expert"]["success_rate"] is not None
        assert row["drop"] == pytest.approx(
            report["families"][0]["policy"]["success_rate"] - row["policy"]["success_rate"]
        )
    assert plot.stat().st_size > 10_000
    # The card: metadata.json's robustness summary, README's table, the whole report beside them; the graph's
    # integrity check still passes (the runtime fields are untouched).
    meta = read_metadata(policy)
    assert [r["family"] for r in meta.robustness["families"]] == ["nominal", "payload", "wind"]
    assert "## Robustness" in (policy / "README.md").read_text()
    assert json.loads((policy / "robustness.json").read_text()) == report
    OnnxPolicy(policy)


def test_a_franka_policy_runs_its_suite_with_the_expert_on_the_same_seeds():
    config = EvalConfig(policy=str(PUSH_POLICY), episodes=2, progress=False, suite="robustness")
    suite = load_suite("robustness", "robot_rl/PandaPush-v0").select(["sensing"])
    report = run_suite(config, suite)
    assert report["env"] == "robot_rl/PandaPush-v0"
    assert [r["family"] for r in report["families"]] == ["nominal", "sensing"]
    assert report["families"][1]["randomize"] == {"obs_noise_std": 0.004, "action_latency_steps": [1, 1]}
    table = format_table(report)
    assert table.count("\n") == 3 and "| sensing |" in table
