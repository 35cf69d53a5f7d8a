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
    PolicyFormatError,
    PolicyMetadata,
    dumps,
    sha256_bytes,
)
from robot_rl.export.tensors import DESCRIBED_TENSOR_FIELDS, describe, observation_doc


def _shape(shape: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _cell(text: str) -> str:
    """Text for a markdown table cell."""
    return text.replace("|", "\\|")


def _calling(meta: PolicyMetadata) -> list[str]:
    """The card's ``calling`` section: how to run the graph without robot_rl."""
    rule = meta.calling
    assert rule is not None
    lines = [
        "",
        "## Calling the graph without robot_rl",
        "",
        "What robot_rl's runtime Controller does each control period (metadata.json `calling`; a Node example "
        "that runs a policy from metadata.json alone is in robot_rl's docs/runtime.md):",
        "",
    ]
    lines += [f"{i}. {step}" for i, step in enumerate(rule.sequence, start=1)]
    lines.append("")
    for name, text in (
        ("Chunking", rule.chunking),
        ("History", rule.history),
        ("Noise", rule.noise),
        ("Empty batch", rule.empty_batch),
        ("Normalization", rule.normalization),
        ("Action limits", rule.action_limits),
        ("Invalid input", rule.invalid_input),
        ("Reference runtime", rule.reference_runtime),
    ):
        if text:
            lines.append(f"- {name}: {text}")
    return lines


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
        "| tensor | shape | dtype | units | meaning | call rule |",
        "|---|---|---|---|---|---|",
    ]
    described = meta if meta.calling is not None else describe(meta)  # cards exported before the descriptions
    for spec in [*described.onnx.inputs, *described.onnx.outputs]:
        meaning = spec.meaning + (f"; distribution: {spec.distribution}" if spec.distribution else "")
        lines.append(
            f"| `{spec.name}` | {_shape(spec.shape)} ({', '.join(spec.axes)}) | {spec.dtype} | {_cell(spec.units)} | "
            f"{_cell(meaning)} | {_cell(spec.call)} |"
        )
    lines += ["", f"One observation ({obs.dim} values) is the concatenation of:", ""]
    if obs.values:
        lines += ["| index | values | from | quantity | unit |", "|---:|---:|---|---|---|"]
        for row in obs.values:
            lines.append(
                f"| {row['start']} | {row['stop'] - row['start']} | `{row['source']}` | {_cell(row['quantity'])} | "
                f"{row['unit']} |"
            )
    else:
        lines += ["| offset | values | from |", "|---:|---:|---|"]
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
    lines += _calling(described)
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
    lines += _monitor_promises(out_dir)
    lines.append("")
    return "\n".join(lines)


def _monitor_promises(out_dir: Path) -> list[str]:
    """The card's failure-monitor section: what each calibrated detector promises about false alarms.

    Read from ``monitor/calibration.json`` (written by ``robot-rl monitor calibrate``; plain JSON, so that this
    layer does not import the monitor); nothing when the folder has no calibration with promises.
    """
    try:
        value = json.loads((Path(out_dir) / "monitor" / "calibration.json").read_text())
        promises = value["promises"]
        n, fit = len(value["seeds"]), len(value["fit_seeds"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
    lines = [
        "",
        "## Failure monitor",
        "",
        f"Calibrated at alpha = {value.get('alpha')} on {n} rollouts (`monitor/`; {fit} of them fit the transforms, "
        "the others' successes set the thresholds). What each detector (`--monitor-detector`) promises about false "
        "alarms on successful episodes under the calibration's conditions (nominal task, no safety chain):",
        "",
        "| detector | promise |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {_cell(str(p.get('text', '')))} |" for name, p in promises.items() if isinstance(p, dict)]
    return lines


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


SHA_RECORDS = (EVAL_FILE, "monitor/calibration.json")
"""Files beside a card that record policy.onnx's sha256 (the graph evaluated, the graph calibrated)."""


def refresh_descriptions(policy_dir: str | os.PathLike[str]) -> str:
    """Write :func:`~robot_rl.export.tensors.describe`'s fields into an exported policy's card, graph untouched.

    Both copies of the card, metadata.json and the one embedded in policy.onnx, gain (or get anew) the described
    fields: each tensor's ``axes``, ``meaning``, ``units``, ``call`` and ``distribution``, ``observation.values``
    and ``calling`` (and ``observation.features``, empty, where a card from before features left it out). Every
    other field of either copy stays as it is (``env_id`` included), and the graph (nodes,
    weights) stays byte for byte the same, so the policy's actions do not change. policy.onnx's sha256 changes with
    its embedded card: metadata.json's ``onnx_sha256`` and the records of the old sha256 beside it
    (:data:`SHA_RECORDS`) follow; README.md is rendered again.

    Returns:
        The new sha256 of policy.onnx.

    Raises:
        PolicyFormatError: policy.onnx is not the file its card was written for, or it has no embedded card.
    """
    import onnx

    from robot_rl.envs.registry import make

    policy_dir = Path(policy_dir)
    value = json.loads((policy_dir / METADATA_FILE).read_text())
    meta = PolicyMetadata.from_json(value, str(policy_dir / METADATA_FILE))
    old_bytes = (policy_dir / ONNX_FILE).read_bytes()
    old_sha = sha256_bytes(old_bytes)
    if old_sha != meta.onnx_sha256:
        raise PolicyFormatError(f"{policy_dir / ONNX_FILE} has sha256 {old_sha}; its card says {meta.onnx_sha256}.")
    model = onnx.load_from_string(old_bytes)
    entries = [p for p in model.metadata_props if p.key == ONNX_METADATA_KEY]
    if len(entries) != 1:
        raise PolicyFormatError(f"{policy_dir / ONNX_FILE} has {len(entries)} embedded '{ONNX_METADATA_KEY}' cards.")
    inner = json.loads(entries[0].value)
    env = make(meta.env_id, **meta.env_kwargs)
    env.close()
    described = describe(meta, observation_doc(env)).to_json()
    for card in (value, inner):
        card["observation"].setdefault("features", [])  # the schema's default, written out for other runtimes
        card["observation"]["values"] = described["observation"]["values"]
        for side in ("inputs", "outputs"):
            specs = {spec["name"]: spec for spec in described["onnx"][side]}
            for spec in card["onnx"][side]:
                spec.update({key: specs[spec["name"]][key] for key in DESCRIBED_TENSOR_FIELDS})
        card["calling"] = described["calling"]
    entries[0].value = json.dumps(inner, sort_keys=False)
    new_bytes = model.SerializeToString()
    before, after = onnx.load_from_string(old_bytes), onnx.load_from_string(new_bytes)
    if before.graph.SerializeToString() != after.graph.SerializeToString():  # nodes and weights untouched
        raise AssertionError(f"{policy_dir / ONNX_FILE}: rewriting its embedded card changed the graph.")
    new_sha = sha256_bytes(new_bytes)
    value["onnx_sha256"] = new_sha
    for name, data in (
        (ONNX_FILE, new_bytes),
        (METADATA_FILE, (dumps(value, indent=2) + "\n").encode()),
        *[
            (n, (policy_dir / n).read_text().replace(old_sha, new_sha).encode())
            for n in SHA_RECORDS
            if (policy_dir / n).is_file()
        ],
    ):
        tmp = policy_dir / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, policy_dir / name)
    (policy_dir / README_FILE).write_text(render_readme(PolicyMetadata.from_json(value), policy_dir))
    return new_sha
