"""The benchmark suite (bench/): its registry, `robot-rl bench NAME`, refusals, and one tiny real run.

Every benchmark is reachable by name and lists itself; an unknown name is one line with the closest match and the
list; a tiny quadrotor run through the CLI writes JSON with the keys of the committed results and markdown with
its exact command, re-rendered identically by ``--report-only``.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import sys
from pathlib import Path

import pytest

from bench import harness
from robot_rl.cli.main import main

REPO = Path(__file__).resolve().parents[2]
HARNESS_KEYS = {"command", "machine", "thresholds"}
"""Top-level keys the harness may add to a benchmark's results (the command and machine of every run; thresholds
only when the user passes one)."""


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int | str | None, str, str]:
    """``robot-rl ARGS`` in-process: the exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["robot-rl", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


class TestRegistry:
    def test_every_bench_module_is_registered(self):
        modules = {f"bench.{p.stem}" for p in (REPO / "bench").glob("bench_*.py")}
        assert modules == set(harness.REGISTRY.values())

    @pytest.mark.parametrize("name", list(harness.REGISTRY))
    def test_each_benchmark_loads_with_typed_options(self, name):
        benchmark = harness.load(name)
        assert benchmark.name == name
        assert issubclass(benchmark.options, harness.Options)
        fields = dataclasses.fields(benchmark.options)
        assert benchmark.options.__dataclass_params__.frozen and all(f.kw_only for f in fields)
        assert {"out", "threads", "report_only"} <= {f.name for f in fields}

    def test_list_names_every_benchmark_with_one_line(self, monkeypatch, capsys):
        code, out, _ = run_cli(["bench", "--list"], monkeypatch, capsys)
        assert code == 0
        lines = out.strip().splitlines()
        assert [line.split()[0] for line in lines] == list(harness.REGISTRY)
        assert all(len(line.split(maxsplit=1)[1]) > 20 for line in lines), out

    @pytest.mark.parametrize("name", list(harness.REGISTRY))
    def test_each_benchmark_has_help(self, name, monkeypatch, capsys):
        code, out, _ = run_cli(["bench", name, "--help"], monkeypatch, capsys)
        assert code == 0
        assert f"robot-rl bench {name}" in out and "--out" in out and "--threads" in out

    def test_no_benchmark_hard_codes_an_issue_target(self):
        for path in sorted((REPO / "bench").glob("*.py")):
            text = path.read_text()
            assert not re.search(r"\bissue\b|TARGET_|target: met|\bPASS\b", text), path.name


class TestRefusals:
    def test_unknown_name_is_one_line_with_the_closest_match_and_the_list(self, monkeypatch, capsys):
        code, _, err = run_cli(["bench", "envz"], monkeypatch, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1, err
        assert lines[0].startswith("robot-rl: error: unknown benchmark 'envz'")
        assert "Did you mean 'envs'?" in lines[0]
        assert all(name in lines[0] for name in harness.REGISTRY)

    def test_no_name_is_one_line(self, monkeypatch, capsys):
        code, _, err = run_cli(["bench"], monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "needs a benchmark name" in err

    def test_an_unknown_option_names_the_benchmark_and_the_closest_option(self, monkeypatch, capsys, tmp_path):
        code, _, err = run_cli(["bench", "quadrotor", "--episodez", "1", "--out", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "--episodez" in err and "did you mean --episodes?" in err and "`robot-rl bench quadrotor`" in err

    @pytest.mark.parametrize(
        "args",
        [
            ["quadrotor", "--reps", "0"],
            ["safety", "--tasks", "Nope"],
            ["runtime", "--policies", "nope"],
            ["monitor", "--pool", "10", "--calibration-episodes", "20"],
            ["adaptation", "--masses", "--winds"],
            ["policy", "--run", "/nonexistent/run"],
        ],
    )
    def test_bad_options_are_one_line_and_write_nothing(self, args, monkeypatch, capsys, tmp_path):
        out = tmp_path / "out"
        code, _, err = run_cli(["bench", *args, "--out", str(out)], monkeypatch, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not out.exists()

    def test_report_only_without_results_is_one_line(self, monkeypatch, capsys, tmp_path):
        code, _, err = run_cli(["bench", "envs", "--report-only", "--out", str(tmp_path)], monkeypatch, capsys)
        assert code == 2 and "--report-only" in err and len(err.strip().splitlines()) == 1


def test_a_tiny_run_writes_the_committed_keys_and_its_command(monkeypatch, capsys, tmp_path):
    """A real quadrotor run (a few seconds): the JSON keys of bench/results/quadrotor.json, the exact command."""
    args = ["bench", "quadrotor", "--steps", "20", "--reps", "1", "--episodes", "1", "--no-progress"]
    args += ["--out", str(tmp_path), "--min-waypoint-success", "2"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code in (0, None), err
    fresh = json.loads((tmp_path / "quadrotor.json").read_text())
    committed = json.loads((REPO / "bench" / "results" / "quadrotor.json").read_text())
    assert set(committed) - {"targets"} <= set(fresh)  # "targets" (issue thresholds) is gone
    assert set(fresh) - set(committed) <= HARNESS_KEYS
    assert fresh["command"] == "robot-rl " + " ".join(args)
    assert fresh["machine"]["date"] and fresh["machine"]["cpu"]
    assert [q["episodes"] for q in fresh["quality"]] == [1, 1, 1, 1, 1, 1]
    # The threshold the user passed, and only that one, judged against the measured value.
    assert [t["limit"] for t in fresh["thresholds"]] == [2, 2] and not any(t["met"] for t in fresh["thresholds"])
    markdown = (tmp_path / "quadrotor.md").read_text()
    assert f"Generated by `{fresh['command']}` on {fresh['machine']['date']}." in markdown
    assert "at least 2: not met" in markdown
    (tmp_path / "quadrotor.md").unlink()
    code, _, err = run_cli(["bench", "quadrotor", "--report-only", "--out", str(tmp_path)], monkeypatch, capsys)
    assert code in (0, None), err
    assert (tmp_path / "quadrotor.md").read_text() == markdown


class TestHarness:
    def test_percentiles_keys_and_scale(self):
        got = harness.percentiles([0.001, 0.002, 0.003], suffix="_ms", mean=True, largest=True)
        assert got == pytest.approx({"mean_ms": 2.0, "p50_ms": 2.0, "p99_ms": 2.98, "max_ms": 3.0, "n": 3})
        assert harness.percentiles([]) is None

    def test_thresholds_appear_only_when_given(self):
        assert harness.thresholds(harness.threshold("x", 1.0, None, at_most=True)) == {}
        given = harness.thresholds(harness.threshold("x", 1.0, 2.0, at_most=True))["thresholds"]
        assert given == [{"what": "x", "value": 1.0, "limit": 2.0, "at_most": True, "unit": "", "met": True}]
        assert harness.threshold_lines({"thresholds": given})[2] == "- x: 1 (at most 2: met)"

    def test_side_by_side_reports_the_ratio(self):
        lines = harness.side_by_side(("a", "b"), [("speed", 4.0, 2.0, ".1f", True)], "metric")
        assert lines[2] == "| speed | 4.0 | 2.0 | 2.00x |"

    def test_env_id_is_the_oldest_registered_version(self):
        from robot_rl.envs.registry import ENV_SPECS

        assert harness.env_id("PandaPush") == "robot_rl/PandaPush-v0"
        hover = harness.env_id("QuadrotorHover")  # its v0 is retired (no longer registered)
        assert hover in ENV_SPECS and hover.startswith("robot_rl/QuadrotorHover-v")
        assert not any(k.startswith("robot_rl/QuadrotorHover-v") and k < hover for k in ENV_SPECS)
        with pytest.raises(ValueError, match="no version of Nope"):
            harness.env_id("Nope")


class TestImports:
    """robot_rl imports bench only in the CLI's bench verb; bench never imports the CLI."""

    def test_robot_rl_imports_bench_only_inside_the_bench_verb(self):
        found = []
        for path in sorted((REPO / "robot_rl").rglob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                if any(n == "bench" or n.startswith("bench.") for n in names):
                    found.append((path.relative_to(REPO).as_posix(), node.col_offset))
        assert found and all(p == "robot_rl/cli/main.py" and col > 0 for p, col in found), found

    def test_bench_does_not_import_the_cli(self):
        for path in sorted((REPO / "bench").glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                assert not any(n.startswith("robot_rl.cli") for n in names), f"{path.name}:{node.lineno}"
