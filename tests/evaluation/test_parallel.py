"""``robot-rl eval --workers N`` and ``--ray-address``: the one-process report, from episodes run elsewhere.

Episode k runs seed ``seed + k`` whichever worker runs it, and the report is merged in episode order: it must equal
the one-process report field for field (all but ``wall_time_s`` and ``execution``, which say how the run went), with
the safety chain on, for the scripted expert under randomization and for an exported policy in the deployed stack; a
worker killed mid-evaluation costs nothing (every episode reported exactly once); the robustness suite on workers
gives the one-process table; a two-node Ray cluster on this machine spreads the episodes over both nodes and gives
the one-process report (skipped without the ``ray`` extra, which CI installs).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from robot_rl.cli.main import main
from robot_rl.evaluation.evaluate import EvalConfig, evaluate, policy_env_id
from robot_rl.parallel import CRASH_HOOK

REPO = Path(__file__).resolve().parents[2]
PUSH_POLICY = str(REPO / "policies" / "panda_push_diffusion")
RUN_FIELDS = ("wall_time_s", "execution")

CONFIGS = {
    "expert": EvalConfig(
        env="robot_rl/PandaPush-v0", policy="expert", episodes=4, safety="on", randomize="train", progress=False
    ),
    "exported": EvalConfig(policy=PUSH_POLICY, episodes=3, safety="on", progress=False),
}


def stripped(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if k not in RUN_FIELDS})


@pytest.fixture(scope="module")
def serial() -> dict[str, dict]:
    """The one-process reports of :data:`CONFIGS`."""
    return {name: evaluate(config) for name, config in CONFIGS.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parallel_eval_equals_serial_eval_on_the_same_seeds(name, serial):
    report = evaluate(dataclasses.replace(CONFIGS[name], workers=2))
    assert stripped(report) == stripped(serial[name])
    execution = report["execution"]
    assert execution["backend"] == "processes" and execution["workers"] == 2 and execution["rerun_episodes"] == []
    assert [w["episode"] for w in execution["where"]] == list(range(CONFIGS[name].episodes))
    assert len({w["pid"] for w in execution["where"]}) == 2  # both workers ran episodes


def test_a_killed_worker_leaves_every_episode_in_the_report_exactly_once(serial, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_HOOK, f"2:{tmp_path / 'killed'}")  # the worker of episode 2 SIGKILLs itself, once
    report = evaluate(dataclasses.replace(CONFIGS["expert"], workers=2))
    assert (tmp_path / "killed").exists()
    seeds = [e["seed"] for e in report["per_episode"]]
    assert seeds == [e["seed"] for e in serial["expert"]["per_episode"]] and len(set(seeds)) == 4
    assert 2 in report["execution"]["rerun_episodes"]
    assert stripped(report) == stripped(serial["expert"])


def test_the_robustness_suite_on_workers_gives_the_one_process_table():
    from robot_rl.evaluation.robustness import load_suite, run_suite

    config = EvalConfig(policy="expert", env="robot_rl/PandaPush-v0", episodes=2, safety="on", progress=False)
    suite = load_suite("robustness", policy_env_id(config))
    suite = suite.select([suite.families[1].name])
    one = run_suite(config, suite)
    two = run_suite(dataclasses.replace(config, workers=2), suite)
    assert json.dumps(one) == json.dumps(two) and len(two["families"]) == 2


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"policy": "random"}, "one stream seeded once"),
        ({"policy": PUSH_POLICY, "monitor": "on"}, "the failure monitor's samples"),
        ({"takeover": "keyboard"}, "need the operator's process"),
    ],
)
def test_what_depends_on_earlier_episodes_is_refused_on_workers(changes, reason):
    with pytest.raises(ValueError, match=reason):
        EvalConfig(episodes=2, workers=2, **changes)


def run_cli(args, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["robot-rl", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


class TestCommandLine:
    def test_workers_zero_is_refused(self, monkeypatch, capsys):
        code, _, err = run_cli(["eval", "--episodes", "2", "--workers", "0"], monkeypatch, capsys)
        assert code == 2 and err.startswith("robot-rl: error: `workers` must be >= 1") and err.count("\n") == 1

    def test_an_unreachable_ray_address_is_one_line_naming_it_and_how_to_start_a_cluster(self, monkeypatch, capsys):
        pytest.importorskip("ray")
        args = ["eval", "--episodes", "2", "--ray-address", "127.0.0.1:1", "--no-progress"]
        code, _, err = run_cli(args, monkeypatch, capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert "--ray-address 127.0.0.1:1" in err and "ray start --head" in err

    def test_more_workers_than_episodes_are_clamped_with_a_note(self, monkeypatch, capsys, tmp_path):
        args = ["eval", "--env", "PandaReach-v0", "--episodes", "2", "--workers", "3", "--no-progress"]
        code, out, err = run_cli([*args, "--json", str(tmp_path / "r.json")], monkeypatch, capsys)
        assert code == 0 and "note: 3 workers for 2 episodes: using 2" in err
        assert "ran on 2 worker processes" in out
        assert json.loads((tmp_path / "r.json").read_text())["execution"]["workers"] == 2


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-node Ray cluster on this machine (a head and a worker node, separate processes, 1 CPU each)."""
    pytest.importorskip("ray")
    sys.path.insert(0, str(REPO))
    from bench.bench_parallel import local_ray_cluster

    with local_ray_cluster(nodes=2, cpus=1) as address:
        yield address


def test_a_two_node_ray_cluster_spreads_the_episodes_and_gives_the_one_process_report(
    ray_cluster, serial, tmp_path, monkeypatch
):
    monkeypatch.setenv(CRASH_HOOK, f"1:{tmp_path / 'killed'}")  # and an actor killed mid-evaluation
    report = evaluate(dataclasses.replace(CONFIGS["expert"], ray_address=ray_cluster))
    execution = report["execution"]
    assert execution["backend"] == "ray" and execution["workers"] == 2  # the cluster's CPUs
    assert len({w["node"] for w in execution["where"]}) == 2
    assert (tmp_path / "killed").exists() and 1 in execution["rerun_episodes"]
    assert stripped(report) == stripped(serial["expert"])
