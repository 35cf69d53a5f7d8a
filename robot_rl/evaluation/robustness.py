"""The robustness suite: a policy nominal and under each family of perturbations, beside the scripted expert.

A suite is a YAML file (``robot_rl/evaluation/suites/<name>_<robot>.yaml``, or any path) naming a
first episode seed and a set of families, each a domain randomization (the keys of
:mod:`robot_rl.envs.randomization`) drawn once per episode. Every family runs on the same seeds, so
its drop from nominal is a paired comparison; the scripted expert runs on the same seeds under the
same family, which tells a policy's weakness apart from a condition no controller survives.

``robot-rl eval --policy P --suite robustness`` prints the table and, with ``--json`` / ``--plot``,
writes the report and a bar chart; ``--card`` puts the table on an exported policy's card.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robot_rl.envs.randomization import DomainRandomization
from robot_rl.envs.registry import robot_of
from robot_rl.export.card import points

SUITE_DIR = Path(__file__).parent / "suites"
"""Where the named suites live (one YAML per suite and robot family)."""


@dataclasses.dataclass(frozen=True)
class Family:
    """One condition of a suite."""

    name: str
    description: str
    randomize: DomainRandomization


@dataclasses.dataclass(frozen=True)
class Suite:
    """A named set of families for one robot family."""

    name: str
    robot: str
    seed: int
    """First episode seed of every family (episode k uses seed + k)."""
    families: tuple[Family, ...]
    path: Path

    def select(self, names: Sequence[str]) -> Suite:
        """The suite with only ``names`` (nominal always kept, first), refusing unknown names with the list."""
        known = [f.name for f in self.families]
        for name in names:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"the {self.name} suite for the {self.robot} has no family {name!r}.{hint} Its families: "
                    f"{', '.join(known)}."
                )
        if not names:
            return self
        keep = {"nominal", *names}
        return dataclasses.replace(self, families=tuple(f for f in self.families if f.name in keep))


def available_suites() -> list[str]:
    """Names of the suites shipped with robot_rl."""
    return sorted({p.stem.rsplit("_", 1)[0] for p in SUITE_DIR.glob("*_*.yaml")})


def load_suite(spec: str | Path, env_id: str) -> Suite:
    """The suite named ``spec`` (for ``env_id``'s robot) or the suite file at ``spec``.

    Raises:
        ValueError: an unknown name ("did you mean" and the list), a file that is not a suite, or a suite
            for another robot.
    """
    robot = robot_of(env_id).family
    spec_str = str(spec)
    if spec_str.endswith((".yaml", ".yml")) or Path(spec_str).is_file():
        path = Path(spec_str)
        if not path.is_file():
            raise ValueError(f"suite file {spec_str!r} does not exist.")
    else:
        names = available_suites()
        if spec_str not in names:
            close = difflib.get_close_matches(spec_str, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown suite {spec_str!r}.{hint} Suites: {', '.join(names)} (or a suite YAML path).")
        path = SUITE_DIR / f"{spec_str}_{robot}.yaml"
        if not path.is_file():
            raise ValueError(f"the {spec_str} suite has no version for the {robot} ({env_id}).")
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid YAML ({err}).") from None
    if not isinstance(raw, Mapping) or not isinstance(raw.get("families"), Mapping) or not raw["families"]:
        raise ValueError(
            f"{path}: expected a mapping with `suite`, `robot`, `seed` and a non-empty `families` mapping."
        )
    if raw.get("robot") != robot:
        raise ValueError(f"{path} is a suite for the {raw.get('robot')!r}; {env_id} is a {robot} task.")
    seed = raw.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"{path}: `seed` must be an integer >= 0. Got {seed!r}.")
    families = []
    for name, body in raw["families"].items():
        if not isinstance(body, Mapping):
            raise ValueError(f"{path}: family {name!r} must be a mapping with `description` and `randomize`.")
        randomize = DomainRandomization.from_dict(body.get("randomize") or {}, source=f"{path}: family {name!r}")
        families.append(Family(str(name), str(body.get("description", "")), randomize))
    if families[0].name != "nominal" or families[0].randomize.enabled:
        raise ValueError(f"{path}: the first family must be `nominal` with an empty `randomize`.")
    return Suite(str(raw.get("suite", path.stem)), robot, seed, tuple(families), path)


def _randomize_json(randomize: DomainRandomization) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(randomize).items()
            if k in randomize.changed_keys()}  # fmt: skip


def run_suite(config: Any, suite: Suite, expert: bool = True) -> dict[str, Any]:
    """Evaluate ``config.policy`` (an ``EvalConfig``) under every family of ``suite``, and the expert beside it.

    ``config.episodes`` episodes per family and policy, from ``suite.seed`` (``config.seed`` overrides it),
    with ``config``'s safety and monitor settings. Videos and per-run JSON are not written. With ``config.workers``
    or ``config.ray_address`` every run's episodes share one pool of workers (:func:`evaluate_runs`); the table is
    the one-process table.
    """
    from robot_rl.evaluation.evaluate import EvalRun, evaluate, evaluate_runs, policy_env_id, wilson_interval
    from robot_rl.parallel import is_parallel

    seed = suite.seed if config.seed is None else config.seed
    base = dataclasses.replace(
        config, seed=seed, json=None, video=None, plot=None, randomize="nominal", suite=None, families=(), card=False
    )
    env_id = policy_env_id(base)
    whos = ("policy", "expert") if expert and config.policy != "expert" else ("policy",)
    runs = []
    for family in suite.families:
        for who in whos:
            run_config = base
            if who == "expert":
                run_config = dataclasses.replace(base, policy="expert", monitor="off", env=env_id, threads=1)
            runs.append(EvalRun(run_config, family.randomize, family.name))
    if is_parallel(config.workers, config.ray_address):  # every family's episodes on the same workers, one bar
        reports = iter(evaluate_runs(runs, progress=f"{suite.name} suite {Path(str(config.policy)).name}"))
    else:
        reports = (evaluate(run.config, randomization=run.randomization, label=run.label) for run in runs)
    rows = []
    for family in suite.families:
        row: dict[str, Any] = {
            "family": family.name,
            "description": family.description,
            "randomize": _randomize_json(family.randomize),
        }
        for who in whos:
            report = next(reports)
            successes = sum(e["success"] for e in report["per_episode"])
            n = report["episodes"]
            row[who] = {
                "success_rate": report["success_rate"],
                "success_ci95": list(wilson_interval(successes, n)),
                "successes": successes,
                "mean_final_distance": report.get("mean_final_distance"),
                "safety_interventions": report.get("safety_interventions"),
                "safety_violations": report.get("safety_violations"),
            }
            if report.get("monitor_false_alarms"):  # a monitor that alarms on every perturbed success is no use
                row[who]["monitor_false_alarms"] = report["monitor_false_alarms"]
            env_id = report["env"]
        rows.append(row)
    nominal = rows[0]["policy"]["success_rate"]
    for row in rows:
        row["drop"] = nominal - row["policy"]["success_rate"]
        if "expert" in row:
            row["gap_to_expert"] = row["expert"]["success_rate"] - row["policy"]["success_rate"]
    return {
        "suite": suite.name,
        "suite_file": str(suite.path),
        "robot": suite.robot,
        "env": env_id,
        "policy": config.policy,
        "episodes": config.episodes,
        "seed": seed,
        "safety": config.safety,
        "families": rows,
    }


def _cell(result: Mapping[str, Any] | None) -> str:
    if result is None:
        return "-"
    low, high = result["success_ci95"]
    return f"{result['success_rate']:.2f} [{low:.2f}, {high:.2f}]"


def format_table(report: Mapping[str, Any]) -> str:
    """The suite report as a markdown table: success, 95% CI, drop from nominal, the expert under the same family."""
    lines = [
        "| family | perturbation | policy success [95% CI] | drop from nominal | expert success [95% CI] |",
        "|---|---|---|---:|---|",
    ]
    for row in report["families"]:
        drop = "-" if row["family"] == "nominal" else points(-row["drop"])
        lines.append(
            f"| {row['family']} | {row['description']} | {_cell(row['policy'])} | {drop} | {_cell(row.get('expert'))} |"
        )
    return "\n".join(lines)


def plot_suite(report: Mapping[str, Any], path: str | Path) -> Path:
    """A bar chart of success per family with 95% intervals, the policy beside the expert. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = report["families"]
    names = [r["family"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.3 * len(rows) + 2.5, 3.6))
    series = [("policy", "policy", -0.2, "tab:blue")]
    if all("expert" in r for r in rows):
        series.append(("expert", "scripted expert", 0.2, "tab:gray"))
    width = 0.4 if len(series) == 2 else 0.6
    for key, label, shift, color in series:
        rate = np.array([r[key]["success_rate"] for r in rows])
        low = np.array([r[key]["success_ci95"][0] for r in rows])
        high = np.array([r[key]["success_ci95"][1] for r in rows])
        offset = shift if len(series) == 2 else 0.0
        ax.bar(x + offset, rate, width, label=label, color=color, yerr=[rate - low, high - rate], capsize=3)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate (95% CI)")
    ax.set_title(f"{Path(str(report['policy'])).name}: {report['suite']} suite, {report['episodes']} episodes/family")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """The suite report as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
