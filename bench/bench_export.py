"""Exported policies: chunk latency of onnxruntime against torch eager, and how far their outputs differ.

Each case (a diffusion run at each of ``--ddim-steps`` and a BC run) is exported with
``robot_rl.export.export_run`` into a temporary folder, then, in ONE process on ``--threads`` threads (default one:
``torch.set_num_threads``; onnxruntime with that many intra-op threads and one inter-op thread):

* latency: one action chunk at batch 1 through the Policy protocol, ``predict(history, rng)``:
  numpy history in, float64 chunk out, normalization included and, for diffusion, the initial
  noise drawn from the rng (what ``ChunkedActor`` calls every ``n_action_steps`` steps). All
  cases and both backends are interleaved call by call (which backend goes first alternates), so
  drift and frequency scaling hit every number alike; p50 and p99 over ``--reps`` calls each
  after a warm-up; the ratio torch / onnxruntime side by side;
* parity: the largest |onnxruntime - torch| over ``--samples`` random histories (training-data
  mean + std x N(0, 1)) and noises, evaluated as one batch.

Usage::

    robot-rl bench export [--diffusion-run runs/push_diffusion] [--bc-run runs/push_bc] [--reps 2000]

Writes ``export.md`` and ``export.json`` to ``--out`` (default bench/results).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import harness
from robot_rl.export import export_run
from robot_rl.policies import load_policy, read_config
from robot_rl.runtime import OnnxPolicy


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExportOptions(harness.Options):
    """Options of ``robot-rl bench export``."""

    diffusion_run: Path = harness.REPO / "runs" / "push_diffusion"
    """The diffusion training run to export and compare."""
    bc_run: Path = harness.REPO / "runs" / "push_bc"
    """The BC training run to export and compare."""
    ddim_steps: tuple[int, ...] = (3, 10)
    """DDIM step counts the diffusion run is exported with (one case each)."""
    reps: int = 2000
    """Latency samples per case and backend."""
    samples: int = 1024
    """Random inputs of the parity check."""

    positive = ("ddim_steps", "reps", "samples")

    def __post_init__(self) -> None:
        super().__post_init__()
        for run_dir in (self.diffusion_run, self.bc_run):
            read_config(run_dir)  # a clear error for a missing run before anything is measured


def make_cases(options: ExportOptions, folder: Path) -> list[dict[str, Any]]:
    """Export each case and load both backends."""
    specs = [(f"diffusion, {s} DDIM steps", options.diffusion_run, s) for s in options.ddim_steps]
    specs += [("BC-MLP", options.bc_run, None)]
    cases = []
    for label, run_dir, steps in specs:
        out = folder / (f"{run_dir.name}_{steps}" if steps else run_dir.name)
        start = time.perf_counter()
        meta = export_run(run_dir, out, inference_steps=steps)
        export_s = time.perf_counter() - start
        torch_policy = load_policy(run_dir)
        if steps is not None:
            torch_policy.inference_steps = steps
        cases.append(
            {
                "label": label,
                "run": _shown(run_dir),
                "policy_type": meta.policy_type,
                "inference_steps": steps,
                "options": meta.base.options,
                "export_s": export_s,
                "onnx_bytes": (out / "policy.onnx").stat().st_size,
                "torch": torch_policy,
                "onnx": OnnxPolicy(out, threads=options.threads),
            }
        )
    return cases


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results do not name the machine's folders)."""
    try:
        return str(path.resolve().relative_to(harness.REPO))
    except ValueError:
        return str(path)


def random_batch(policy: Any, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean, std = policy.normalizer.obs_mean.numpy(), policy.normalizer.obs_std.numpy()
    obs = (mean + std * rng.standard_normal((n, policy.n_obs_steps, policy.obs_dim))).astype(np.float32)
    noise = rng.standard_normal((n, policy.horizon, policy.action_dim)).astype(np.float32)
    return obs, noise


def parity(case: dict[str, Any], samples: int) -> float:
    obs, noise = random_batch(case["torch"], samples, seed=1)
    with torch.no_grad():
        args = (torch.from_numpy(obs), torch.from_numpy(noise))
        expected = case["torch"](*args[: 2 if case["policy_type"] == "diffusion" else 1]).numpy()
    return float(np.abs(case["onnx"].predict_batch(obs, noise) - expected).max())


def latency(cases: list[dict[str, Any]], reps: int, warmup: int = 50) -> None:
    histories = [random_batch(c["torch"], 1, seed=2)[0][0].astype(np.float64) for c in cases]
    rngs = {(i, b): np.random.default_rng(0) for i in range(len(cases)) for b in ("torch", "onnx")}
    times: dict[tuple[int, str], list[float]] = {key: [] for key in rngs}
    for rep in range(warmup + reps):
        for i, case in enumerate(cases):
            order = ("torch", "onnx") if rep % 2 == 0 else ("onnx", "torch")
            for backend in order:
                start = time.perf_counter()
                case[backend].predict(histories[i], rngs[(i, backend)])
                elapsed = time.perf_counter() - start
                if rep >= warmup:
                    times[(i, backend)].append(elapsed)
    for i, case in enumerate(cases):
        for backend in ("torch", "onnx"):
            case[f"{backend}_ms"] = harness.percentiles(times[(i, backend)], count=False)
        case["speedup_p50"] = harness.ratio(case["torch_ms"]["p50"], case["onnx_ms"]["p50"])
        case["speedup_p99"] = harness.ratio(case["torch_ms"]["p99"], case["onnx_ms"]["p99"])


def measure(options: ExportOptions, run: harness.Run) -> dict[str, Any]:
    """Export, parity, then interleaved latency; the results of ``export.json``."""
    with contextlib.suppress(RuntimeError):  # settable once per process, before any inter-op work
        torch.set_num_interop_threads(1)
    load_before = os.getloadavg()
    machine = run.machine()
    with tempfile.TemporaryDirectory() as folder:
        cases = make_cases(options, Path(folder))
        for case in cases:
            case["max_abs_diff"] = parity(case, options.samples)
        latency(cases, options.reps)
    keep = ("label", "run", "policy_type", "inference_steps", "export_s", "onnx_bytes", "max_abs_diff")
    keep += ("torch_ms", "onnx_ms", "speedup_p50", "speedup_p99")
    result = {
        "machine": machine,
        "threads": options.threads,
        "batch": 1,
        "reps": options.reps,
        "parity_samples": options.samples,
        "opset": cases[0]["onnx"].metadata.onnx.opset,
        "exporter": cases[0]["onnx"].metadata.onnx.exporter,
        "policies": {c["label"]: c["options"] for c in cases},
        "cases": [{k: c[k] for k in keep} for c in cases],
        "wall_time_s": run.elapsed(),
        "load_avg_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    print("\n".join(_table(harness.as_json(result))))
    return result


def _table(r: dict[str, Any]) -> list[str]:
    lines = [
        "| policy | torch p50 [ms] | onnxruntime p50 [ms] | p50 ratio | torch p99 [ms] | onnxruntime p99 [ms] | "
        "p99 ratio | max abs diff | policy.onnx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in r["cases"]:
        lines.append(
            f"| {c['label']} ({Path(c['run']).name}) | {c['torch_ms']['p50']:.3f} | {c['onnx_ms']['p50']:.3f} | "
            f"{c['speedup_p50']:.1f}x | {c['torch_ms']['p99']:.3f} | {c['onnx_ms']['p99']:.3f} | "
            f"{c['speedup_p99']:.1f}x | {c['max_abs_diff']:.1e} | {c['onnx_bytes'] / 1e6:.1f} MB |"
        )
    return lines


def markdown(r: dict[str, Any]) -> str:
    threads = r["threads"]
    first = next(iter(r["policies"].values()))
    lines = [
        *harness.header("Exported policies: onnxruntime against torch eager", r),
        f"- Threads: {threads} for both (torch.set_num_threads({threads}); onnxruntime intra_op_num_threads = "
        f"{threads}, inter_op_num_threads = 1)",
        f"- Graph: {r['exporter']}, opset {r['opset']}; one graph per policy with normalization, the network "
        "(the DDIM sampler unrolled) and action unnormalization.",
        f"- Latency: one chunk at batch 1 through `predict(history, rng)` (numpy in, float64 chunk out, noise "
        f"drawn from the rng): p50 and p99 over {r['reps']} calls per cell after a warm-up, all cells interleaved "
        "call by call.",
        f"- Parity: max |onnxruntime - torch| over {r['parity_samples']} random histories (training mean + std x "
        "N(0, 1)) and noises.",
        f"- Diffusion policy: {first.get('denoiser')} denoiser, horizon {first['horizon']}, observation history "
        f"{first['n_obs_steps']}. Wall time {r['wall_time_s']:.0f} s; 1-min load average "
        f"{r['load_avg_1min']['before']:.1f} before, {r['load_avg_1min']['after']:.1f} after (other jobs on the "
        "machine slow both backends alike; the ratios are the robust numbers).",
        "",
        *_table(r),
        "",
        "Ratio: torch time / onnxruntime time (above 1: onnxruntime is faster).",
        "",
    ]
    return "\n".join(lines)


BENCHMARK = harness.Benchmark(
    name="export",
    options=ExportOptions,
    measure=measure,
    markdown=markdown,
    stem="export",
    packages=("torch", "onnx", "onnxruntime", "numpy"),
)
