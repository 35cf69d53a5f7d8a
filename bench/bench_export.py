"""Exported policies: chunk latency of onnxruntime against torch eager, and how far their outputs differ.

Each case (a diffusion run at 3 and at 10 DDIM steps, a BC run) is exported with
``robot_rl.export.export_run`` into a temporary folder, then, in ONE process on ONE thread
(``torch.set_num_threads(1)``; onnxruntime with one intra-op and one inter-op thread):

* latency: one action chunk at batch 1 through the Policy protocol, ``predict(history, rng)``:
  numpy history in, float64 chunk out, normalization included and, for diffusion, the initial
  noise drawn from the rng (what ``ChunkedActor`` calls every ``n_action_steps`` steps). All
  cases and both backends are interleaved call by call (which backend goes first alternates), so
  drift and frequency scaling hit every number alike; p50 and p99 over ``--reps`` calls each
  after a warm-up;
* parity: the largest |onnxruntime - torch| over ``--samples`` random histories (training-data
  mean + std x N(0, 1)) and noises, evaluated as one batch.

Usage::

    python bench/bench_export.py [--diffusion-run runs/push_diffusion] [--bc-run runs/push_bc] [--reps 2000]

Writes ``export.md`` and ``export.json`` to ``--out`` (default bench/results).
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_rl.export import export_run  # noqa: E402
from robot_rl.policies import load_policy, read_config  # noqa: E402
from robot_rl.provenance import machine_info  # noqa: E402
from robot_rl.runtime import OnnxPolicy  # noqa: E402


def make_cases(diffusion_run: Path, bc_run: Path, steps_list: list[int], folder: Path) -> list[dict[str, Any]]:
    """Export each case and load both backends."""
    specs = [(f"diffusion, {s} DDIM steps", diffusion_run, s) for s in steps_list] + [("BC-MLP", bc_run, None)]
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
                "onnx": OnnxPolicy(out, threads=1),
            }
        )
    return cases


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (results do not name the machine's folders)."""
    try:
        return str(path.resolve().relative_to(REPO))
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
            t = np.array(times[(i, backend)]) * 1e3
            case[f"{backend}_ms"] = {"p50": float(np.percentile(t, 50)), "p99": float(np.percentile(t, 99))}
        case["speedup_p50"] = case["torch_ms"]["p50"] / case["onnx_ms"]["p50"]
        case["speedup_p99"] = case["torch_ms"]["p99"] / case["onnx_ms"]["p99"]


def run(diffusion_run: Path, bc_run: Path, steps_list: list[int], reps: int, samples: int, out_dir: Path) -> dict:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    for run_dir in (diffusion_run, bc_run):
        read_config(run_dir)  # a clear error for a missing run before anything is measured
    started = time.perf_counter()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        cases = make_cases(diffusion_run, bc_run, steps_list, Path(folder))
        for case in cases:
            case["max_abs_diff"] = parity(case, samples)
        latency(cases, reps)
    keep = ("label", "run", "policy_type", "inference_steps", "export_s", "onnx_bytes", "max_abs_diff")
    keep += ("torch_ms", "onnx_ms", "speedup_p50", "speedup_p99")
    result = {
        "machine": machine_info(("torch", "onnx", "onnxruntime", "numpy")),
        "threads": 1,
        "batch": 1,
        "reps": reps,
        "parity_samples": samples,
        "opset": cases[0]["onnx"].metadata.onnx.opset,
        "exporter": cases[0]["onnx"].metadata.onnx.exporter,
        "policies": {c["label"]: c["options"] for c in cases},
        "cases": [{k: c[k] for k in keep} for c in cases],
        "wall_time_s": time.perf_counter() - started,
        "load_avg_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "export.json").write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / "export.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    v = m["versions"]
    first = next(iter(r["policies"].values()))
    lines = [
        "# Exported policies: onnxruntime against torch eager",
        "",
        f"Generated by `bench/bench_export.py` on {m['date']}.",
        "",
        f"- Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), ONE thread for both (torch.set_num_threads(1); "
        f"onnxruntime intra_op_num_threads = inter_op_num_threads = 1); torch {v.get('torch')}, onnx "
        f"{v.get('onnx')}, onnxruntime {v.get('onnxruntime')}; git {m['git']}",
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
    lines += ["", "Ratio: torch time / onnxruntime time (above 1: onnxruntime is faster).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--diffusion-run", type=Path, default=REPO / "runs" / "push_diffusion")
    parser.add_argument("--bc-run", type=Path, default=REPO / "runs" / "push_bc")
    parser.add_argument("--steps", default="3,10", help="comma-separated DDIM step counts")
    parser.add_argument("--reps", type=int, default=2000, help="latency samples per cell")
    parser.add_argument("--samples", type=int, default=1024, help="random inputs of the parity check")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    run(args.diffusion_run, args.bc_run, steps, args.reps, args.samples, args.out)


if __name__ == "__main__":
    main()
