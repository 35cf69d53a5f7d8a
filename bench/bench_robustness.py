"""The robustness suite on every shipped policy: success per perturbation family, the drop from nominal, the expert.

For every folder in ``policies/`` (or the ``--policies`` given), ``robot-rl eval --policy P --suite robustness``
as deployed: the runtime Controller on onnxruntime with the safety chain on, ``--episodes`` episodes per
family on the suite's seeds (robot_rl/evaluation/suites/robustness_<robot>.yaml; the same seeds for every
family and for the scripted expert beside the policy). One table per policy, and a summary of the issue's
criterion: a family passes when the policy loses at most 5 points from its own nominal success where the
expert holds at least 95%, or stays within 5 points of the expert where the expert falls below 95%.

Usage::

    python bench/bench_robustness.py [--episodes 100] [--policies NAME ...] [--card] [--out bench/results]

Writes ``robustness.md``, ``robustness.json`` and one ``robustness_<policy>.png`` per policy to ``--out``;
with ``--card`` also each policy's card (metadata.json ``robustness``, README.md, robustness.json).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_rl.evaluation.evaluate import EvalConfig, policy_env_id  # noqa: E402
from robot_rl.evaluation.robustness import format_table, load_suite, plot_suite, run_suite  # noqa: E402
from robot_rl.export.card import record_robustness  # noqa: E402
from robot_rl.export.metadata import is_policy_dir  # noqa: E402
from robot_rl.provenance import machine_info  # noqa: E402

MARGIN = 0.05
"""Points a family may cost: from the policy's nominal where the expert holds, else from the expert."""
EXPERT_HOLDS = 0.95
"""Expert success from which a family is judged against the policy's own nominal."""


def verdict(row: dict[str, Any], nominal: float) -> str:
    """``pass`` / ``FAIL`` for one family by the criterion above (``-`` for nominal)."""
    if row["family"] == "nominal":
        return "-"
    policy = row["policy"]["success_rate"]
    expert = row.get("expert", {}).get("success_rate")
    if expert is None or expert >= EXPERT_HOLDS:
        return "pass" if policy >= nominal - MARGIN - 1e-9 else "FAIL"
    return "pass" if policy >= expert - MARGIN - 1e-9 else "FAIL"


def run(
    episodes: int = 100, policies: list[str] | None = None, card: bool = False, out_dir: Path | None = None
) -> dict:
    """Run the suite on each policy; write the markdown and JSON reports; returns the JSON.

    With ``policies``, the other policies' entries of an existing robustness.json in ``out_dir`` are kept (when
    measured with the same number of episodes), so one policy can be re-measured without rerunning the rest.
    """
    out_dir = Path(out_dir or REPO / "bench" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    folders = [REPO / "policies" / p for p in policies] if policies else sorted((REPO / "policies").iterdir())
    folders = [f for f in folders if is_policy_dir(f)]
    previous: dict[str, Any] = {}
    saved = out_dir / "robustness.json"
    if policies and saved.is_file():
        old = json.loads(saved.read_text())
        previous = {r["policy"]: r for r in old.get("policies", []) if r.get("episodes") == episodes}
    payload: dict = {}
    for folder in folders:
        config = EvalConfig(policy=str(folder), episodes=episodes, safety="on", suite="robustness", progress=True)
        suite = load_suite("robustness", policy_env_id(config))
        t0 = time.perf_counter()
        report = run_suite(config, suite)
        report["wall_time_s"] = time.perf_counter() - t0
        report["policy"] = f"policies/{folder.name}"
        report["date"] = datetime.date.today().isoformat()
        nominal = report["families"][0]["policy"]["success_rate"]
        for row in report["families"]:
            row["verdict"] = verdict(row, nominal)
        previous[report["policy"]] = report
        plot_suite(report, out_dir / f"robustness_{folder.name}.png")
        if card:
            record_robustness(folder, report)
        print(format_table(report), flush=True)
        payload = _write(previous, episodes, out_dir)  # after each policy: a crash later keeps what is done
    return payload


def _write(reports: dict[str, Any], episodes: int, out_dir: Path) -> dict:
    results = [reports[k] for k in sorted(reports)]
    info = machine_info(("mujoco", "onnxruntime", "numpy"))
    (out_dir / "robustness.md").write_text(markdown(results, episodes, info))
    payload = {"episodes": episodes, "machine": info, "policies": results}
    (out_dir / "robustness.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def markdown(results: list[dict[str, Any]], episodes: int, info: dict[str, Any]) -> str:
    """The report: a summary line per policy, then each policy's table and plot."""
    summary, sections = [], []
    for report in results:
        name = Path(report["policy"]).name
        rows = report["families"]
        fails = [r["family"] for r in rows if r["verdict"] == "FAIL"]
        summary.append(
            f"| `{name}` | {rows[0]['policy']['success_rate']:.2f} | {len(rows) - 1 - len(fails)} of {len(rows) - 1} "
            f"| {', '.join(fails) or '-'} | {report['date']} |"
        )
        table = format_table(report).split("\n")
        table[0] += " verdict |"
        table[1] += "---|"
        table[2:] = [line + f" {row['verdict']} |" for line, row in zip(table[2:], rows, strict=True)]
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
            "# Robustness suite on the shipped policies",
            "",
            f"`python bench/bench_robustness.py --episodes {episodes} --card` ({info.get('cpu', 'this machine')}; "
            "one policy at a time: `--policies NAME`).",
            "",
            f"Each policy as deployed (runtime Controller, onnxruntime, safety chain on), {episodes} episodes per "
            "family on the suite's seeds (from 4200000: no demo, training evaluation or card figure uses them), the "
            "scripted expert on the same seeds and family. A family passes when the policy loses at most 5 points "
            "from its own nominal where the expert holds at least 95%, or stays within 5 points of the expert where "
            "it does not.",
            "",
            "| policy | nominal | families passed | failed | measured |",
            "|---|---:|---|---|---|",
            *summary,
            "",
            *sections,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=100, help="episodes per family and policy")
    parser.add_argument("--policies", nargs="*", default=None, help="policy folder names under policies/")
    parser.add_argument("--card", action="store_true", help="write each policy's card")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    run(args.episodes, args.policies, args.card, args.out)


if __name__ == "__main__":
    main()
