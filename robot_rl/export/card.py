"""The README.md of an exported policy folder (the policy card for people), and reports recorded on the card.

:func:`render_readme` renders README.md from metadata.json; :func:`record_eval` and :func:`record_robustness`
put an eval or robustness report beside the card, summarize it in metadata.json and re-render README.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from robot_rl.export.metadata import (
    EVAL_FILE,
    METADATA_FILE,
    ONNX_FILE,
    ONNX_METADATA_KEY,
    README_FILE,
    ROBUSTNESS_FILE,
    PolicyMetadata,
    dumps,
)


def _shape(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render_readme(meta: PolicyMetadata, out_dir: Path) -> str:
    """Markdown card: what the policy is, its inputs and outputs, how to run it, where it came from."""
    base, data, obs = meta.base, meta.training_data, meta.observation
    sampler = (
        f", DDIM unrolled over {meta.inference_steps} steps" if meta.inference_steps is not None else " (deterministic)"
    )
    deployed = f"step {base.deployed_step} of {base.train_steps}" if base.deployed_step is not None else "unknown step"
    lines = [
        f"# {meta.name}",
        "",
        f"A {base.policy_type} policy for `{meta.env_id}`{sampler}, exported from the training run "
        f"`{base.run_dir}` ({deployed}). It acts at {meta.control_rate_hz:g} Hz (one action every "
        f"{meta.ctrl_dt:g} s): each call predicts {meta.horizon} actions from the last {meta.n_obs_steps} "
        f"observations, of which {meta.n_action_steps} are executed before the next call.",
        "",
        "## Files",
        "",
        f"- `{ONNX_FILE}`: the whole inference in one graph (opset {meta.onnx.opset}): normalization, the network"
        + (", the sampler" if meta.inference_steps is not None else "")
        + f", action unnormalization. sha256 `{meta.onnx_sha256}`.",
        f"- `{METADATA_FILE}`: the machine-readable card (format {meta.format_version}); the same JSON without the "
        f"hash is embedded in `{ONNX_FILE}` as the metadata property `{ONNX_METADATA_KEY}`.",
        "",
        "## Inputs and outputs",
        "",
        "| tensor | shape | dtype | meaning |",
        "|---|---|---|---|",
    ]
    meaning = {
        "obs_history": "raw flattened observations, oldest first",
        "noise": "initial DDIM noise, standard normal (draw it from a seeded rng for reproducible chunks)",
        "actions": "raw action chunk in the env's action units (not clipped)",
    }
    for spec in [*meta.onnx.inputs, *meta.onnx.outputs]:
        lines.append(f"| `{spec.name}` | {_shape(spec.shape)} | {spec.dtype} | {meaning.get(spec.name, '')} |")
    lines += [
        "",
        f"One observation ({obs.dim} values) is the concatenation of:",
        "",
        "| offset | values | from |",
        "|---:|---:|---|",
    ]
    sources = [*obs.keys, *(["desired_goal - achieved_goal"] if obs.relative_goal else [])]
    sources += [f"feature {f['name']}" for f in obs.features]  # features with memory come last
    for seg, source in zip(obs.segments, sources, strict=False):
        lines.append(f"| {seg.offset} | {seg.stop - seg.start} | `{source}` |")
    for feature in obs.features:
        params = ", ".join(f"{k} {v:g}" for k, v in feature.items() if isinstance(v, int | float) and k != "dim")
        lines += [
            "",
            f"`feature {feature['name']}` ({feature['dim']} values) has memory: the runtime computes it over the "
            f"episode from the observations and the commands sent ({params}): {feature['formula']}.",
        ]
    lines += [
        "",
        f"Actions ({meta.action.family}): {meta.action.description}",
        "",
        "| index | name | meaning | command |",
        "|---:|---|---|---|",
    ]
    for dim in meta.action.dims:
        lines.append(f"| {dim.index} | `{dim.name}` | {dim.meaning} | {dim.physical} |")
    lines += [
        "",
        "## Run it",
        "",
        "```bash",
        f"robot-rl eval --policy {out_dir} --episodes 100",
        "```",
        "",
        "```python",
        "from robot_rl.policies import ChunkedActor",
        "from robot_rl.runtime import OnnxPolicy",
        "",
        f'actor = ChunkedActor(OnnxPolicy("{out_dir}"), seed=0)  # obs dict -> action, chunk by chunk',
        "```",
        "",
        "## Provenance",
        "",
        f"- Base: {base.policy_type}, trained {base.train_steps} steps; exported weights from step "
        f"{base.deployed_step}; best success in training evaluations: "
        + (f"{base.best_train_eval_success:.2f}" if base.best_train_eval_success is not None else "n/a")
        + f"; weights sha256 `{base.weights_sha256[:16]}...`",
        f"- Residual: {'none' if meta.residual is None else meta.residual}",
        f"- Training data: `{data.path}` ({data.demos} demos, seeds {min(data.seeds, default='-')}.."
        f"{max(data.seeds, default='-')}), sha256 `{data.sha256[:16]}...`; evaluate on other seeds "
        "(`robot-rl eval` starts at 1000000)"
        + (
            "; collected under domain randomization ("
            + ", ".join(f"{k} {v}" for k, v in data.randomize.items() if v not in ([1.0, 1.0], [0, 0], [0.0, 0.0], 0.0))
            + ")."
            if data.randomize
            else "."
        ),
        f"- Export check: onnxruntime against torch, max abs difference {meta.export_check['max_abs_diff']:.2g} "
        f"over {meta.export_check['batch']} random inputs.",
        f"- Exported {meta.exported_at} with " + ", ".join(f"{k} {v}" for k, v in meta.versions.items()) + ".",
    ]
    if meta.eval is not None:
        rate = meta.eval.get("success_rate")
        lines.append(f"- Evaluation: success rate {rate} over {meta.eval.get('episodes')} episodes.")
    if meta.robustness is not None:
        rob = meta.robustness
        lines += [
            "",
            "## Robustness",
            "",
            f"The {rob.get('suite')} suite (`robot-rl eval --policy {out_dir} --suite {rob.get('suite')}"
            + (" --safety on" if rob.get("safety") == "on" else "")
            + f"`): {rob.get('episodes')} episodes per family on seeds from {rob.get('seed')}, safety chain "
            f"{rob.get('safety', 'off')}; the scripted expert on the same seeds (full report: `{rob.get('report')}`).",
            "",
            "| family | perturbation | success [95% CI] | drop from nominal | expert |",
            "|---|---|---|---:|---:|",
        ]
        for row in rob.get("families", []):
            low, high = row["success_ci95"]
            drop = "-" if row["family"] == "nominal" else points(-row["drop"])
            expert = row.get("expert_success_rate")
            lines.append(
                f"| {row['family']} | {row['description']} | {row['success_rate']:.2f} [{low:.2f}, {high:.2f}] | "
                f"{drop} | {'-' if expert is None else f'{expert:.2f}'} |"
            )
    lines.append("")
    return "\n".join(lines)


def points(change: float) -> str:
    """A change of success rate in percentage points: ``-3 pts``, ``0 pts``, ``+2 pts``."""
    value = round(100 * change)
    return f"{value:+d} pts" if value else "0 pts"


def record_eval(policy_dir: str | os.PathLike[str], report: dict[str, Any]) -> dict[str, Any]:
    """Put an eval report of the exported policy on its card.

    Writes ``eval.json`` (the whole report) and the ``eval`` summary of metadata.json (the card's
    other fields, and the copy embedded in policy.onnx, are untouched), and re-renders README.md.

    Returns:
        The summary written.
    """
    policy_dir = Path(policy_dir)
    path = policy_dir / METADATA_FILE
    value = json.loads(path.read_text())
    summary = {
        key: report.get(key)
        for key in ("env", "episodes", "seed", "randomize", "success_rate", "success_ci95", "mean_return")
    }
    summary["report"] = EVAL_FILE
    if "video" in report:
        summary["video"] = Path(report["video"]).name
    value["eval"] = summary
    _write_card(policy_dir, value, EVAL_FILE, report)
    return summary


def _write_card(policy_dir: Path, value: dict[str, Any], report_file: str, report: dict[str, Any]) -> None:
    """Write a report beside the card, the card (metadata.json, each atomically) and its README.md."""
    for name, text in (
        (report_file, json.dumps(report, indent=2) + "\n"),
        (METADATA_FILE, dumps(value, indent=2) + "\n"),
    ):
        tmp = policy_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, policy_dir / name)
    meta = PolicyMetadata.from_json(value, str(policy_dir / METADATA_FILE))
    (policy_dir / README_FILE).write_text(render_readme(meta, policy_dir))


def record_robustness(policy_dir: str | os.PathLike[str], report: dict[str, Any]) -> dict[str, Any]:
    """Put a robustness-suite report on the exported policy's card.

    Writes ``robustness.json`` (the whole report) and the ``robustness`` summary of metadata.json (one row per
    family; the graph's fields and the copy embedded in policy.onnx are untouched), and re-renders README.md.

    Returns:
        The summary written.
    """
    policy_dir = Path(policy_dir)
    path = policy_dir / METADATA_FILE
    value = json.loads(path.read_text())
    rows = []
    for row in report["families"]:
        entry = {
            "family": row["family"],
            "description": row["description"],
            "success_rate": row["policy"]["success_rate"],
            "success_ci95": row["policy"]["success_ci95"],
            "drop": row["drop"],
        }
        if "expert" in row:
            entry["expert_success_rate"] = row["expert"]["success_rate"]
        rows.append(entry)
    summary = {key: report[key] for key in ("suite", "episodes", "seed", "safety") if key in report} | {
        "report": ROBUSTNESS_FILE,
        "families": rows,
    }
    value["robustness"] = summary
    _write_card(policy_dir, value, ROBUSTNESS_FILE, report)
    return summary
