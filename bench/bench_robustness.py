"""Robustness suite on every shipped policy: success per perturbation family, the drop from nominal, the expert.

For every folder in ``policies/`` (or the ``--policies`` given), ``robot-rl eval --policy P --suite robustness``
as deployed: the runtime Controller on onnxruntime with the safety chain on, ``--episodes`` episodes per
family on the suite's seeds (robot_rl/evaluation/suites/robustness_<robot>.yaml; the same seeds for every
family and for the scripted expert beside the policy). One table per policy with each family's drop from the
policy's own nominal and its gap to the expert. With ``--margin M`` each family also gets a verdict: it passes when
the policy loses at most M from its own nominal where the expert holds at least ``--expert-holds``, or stays within
M of the expert where the expert falls below that.

Usage::

    robot-rl bench robustness [--episodes 100] [--policies NAME ...] [--margin 0.05] [--card] [--out bench/results]

Writes ``robustness.md``, ``robustness.json`` and one ``robustness_<policy>.png`` per policy to ``--out``;
with ``--card`` also each policy's card (metadata.json ``robustness``, README.md, robustness.json).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from pathlib import Path
from typing import Any

from bench import harness
from robot_rl.evaluation.evaluate import EvalConfig, policy_env_id
from robot_rl.evaluation.robustness import format_table, load_suite, plot_suite, run_suite
from robot_rl.export.card import record_robustness
from robot_rl.export.metadata import is_policy_dir


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobustnessOptions(harness.Options):
    """Options of ``robot-rl bench robustness``."""

    episodes: int = 100
    """Episodes per family and policy (and for the expert beside it)."""
    workers: int | None = None
    """Processes sharing each family's episodes (``robot-rl eval --workers``; the same report as one process)."""
    policies: tuple[str, ...] = ()
    """Policy folder names under policies/ (default: every shipped policy); the other policies' entries of an
    existing robustness.json in --out are kept when measured with the same --episodes."""
    families: tuple[str, ...] = ()
    """Only these families of the suite (nominal is always run; default: all)."""
    card: bool = False
    """Write each policy's card (metadata.json ``robustness``, README.md, robustness.json)."""
    margin: float | None = None
    """Give each family a verdict: pass when the policy loses at most this (a fraction, 0.05 = 5 points) from its
    own nominal where the expert holds, or stays within it of the expert where the expert does not."""
    expert_holds: float = 0.95
    """With --margin: the expert success from which a family is judged against the policy's own nominal."""

    def __post_init__(self) -> None:
        super().__post_init__()
        missing = [p for p in self.policies if not is_policy_dir(harness.REPO / "policies" / p)]
        if missing:
            shipped = sorted(p.name for p in (harness.REPO / "policies").iterdir() if is_policy_dir(p))
            raise ValueError(f"--policies: no policy folder policies/{missing[0]}; shipped: {', '.join(shipped)}.")
        for name, value in (("margin", self.margin), ("expert_holds", self.expert_holds)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1]. Got {value}.")


def verdict(row: dict[str, Any], nominal: float, margin: float, expert_holds: float) -> str:
    """``pass`` / ``FAIL`` for one family by the criterion of ``--margin`` (``-`` for nominal)."""
    if row["family"] == "nominal":
        return "-"
    policy = row["policy"]["success_rate"]
    expert = row.get("expert", {}).get("success_rate")
    if expert is None or expert >= expert_holds:
        return "pass" if policy >= nominal - margin - 1e-9 else "FAIL"
    return "pass" if policy >= expert - margin - 1e-9 else "FAIL"


def measure(options: RobustnessOptions, run: harness.Run) -> dict[str, Any]:
    """The suite on each policy, written after each (a crash later keeps what is done); the results."""
    root = harness.REPO / "policies"
    folders = [root / p for p in options.policies] if options.policies else sorted(root.iterdir())
    folders = [f for f in folders if is_policy_dir(f)]
    previous: dict[str, Any] = {}
    if options.policies and run.json_path.is_file():
        old = json.loads(run.json_path.read_text())
        previous = {r["policy"]: r for r in old.get("policies", []) if r.get("episodes") == options.episodes}
    results: dict[str, Any] = {}
    for folder in folders:
        config = EvalConfig(
            policy=str(folder),
            episodes=options.episodes,
            safety="on",
            suite="robustness",
            progress=True,
            workers=options.workers,
        )
        suite = load_suite("robustness", policy_env_id(config)).select(options.families)
        t0 = time.perf_counter()
        report = run_suite(config, suite)
        report["wall_time_s"] = time.perf_counter() - t0
        report["policy"] = f"policies/{folder.name}"
        report["date"] = datetime.date.today().isoformat()
        if options.margin is not None:
            nominal = report["families"][0]["policy"]["success_rate"]
            report["criterion"] = {"margin": options.margin, "expert_holds": options.expert_holds}
            for row in report["families"]:
                row["verdict"] = verdict(row, nominal, options.margin, options.expert_holds)
        previous[report["policy"]] = report
        plot_suite(report, run.out_dir / f"robustness_{folder.name}.png")
        if options.card:
            record_robustness(folder, report)
        print(format_table(report), flush=True)
        results = {"episodes": options.episodes, "machine": run.machine(), "policies": _sorted(previous)}
        run.write(results)
    return results


def _sorted(reports: dict[str, Any]) -> list[dict[str, Any]]:
    return [reports[k] for k in sorted(reports)]


def markdown(results: dict[str, Any]) -> str:
    """The report: a summary line per policy, then each policy's table and plot."""
    summary, sections = [], []
    for report in results["policies"]:
        name = Path(report["policy"]).name
        rows = report["families"]
        table = format_table(report).split("\n")
        judged = all("verdict" in row for row in rows)
        if judged:
            fails = [r["family"] for r in rows if r["verdict"] == "FAIL"]
            criterion = report.get("criterion", {"margin": 0.05, "expert_holds": 0.95})
            passed = (
                f"{len(rows) - 1 - len(fails)} of {len(rows) - 1} (margin {criterion['margin']:g}, expert holds "
                f"{criterion['expert_holds']:g})"
            )
            table[0] += " verdict |"
            table[1] += "---|"
            table[2:] = [line + f" {row['verdict']} |" for line, row in zip(table[2:], rows, strict=True)]
        else:
            fails, passed = [], "no --margin given"
        summary.append(
            f"| `{name}` | {rows[0]['policy']['success_rate']:.2f} | {passed} | {', '.join(fails) or '-'} | "
            f"{report['date']} |"
        )
        sections += [
            f"## `{name}` ({report['env']})",
            "",
            *table,
            "",
            f"![{name}](robustness_{name}.png) ({report['wall_time_s'] / 60:.1f} min, {report['date']})",
            "",
        ]
    return "\n".join(
        [
            *harness.header("Robustness suite on the shipped policies", results),
            "",
            f"Each policy as deployed (runtime Controller, onnxruntime, safety chain on), {results['episodes']} "
            "episodes per family on the suite's seeds (from 4200000: no demo, training evaluation or card figure uses "
            "them), the scripted expert on the same seeds and family. With `--margin M` a family passes when the "
            "policy loses at most M from its own nominal where the expert holds at least `--expert-holds`, or stays "
            "within M of the expert where it does not. One policy at a time: `--policies NAME`.",
            "",
            "| policy | nominal | families passed | failed | measured |",
            "|---|---:|---|---|---|",
            *summary,
            "",
            *sections,
        ]
    )


BENCHMARK = harness.Benchmark(
    name="robustness",
    options=RobustnessOptions,
    measure=measure,
    markdown=markdown,
    stem="robustness",
    packages=("mujoco", "onnxruntime", "numpy"),
)
