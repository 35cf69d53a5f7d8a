"""Probe: does standardizing the monitor's scores per chunk index (time) raise detection?

Offline, on the per-chunk scores that ``robot-rl monitor eval`` writes (report.json) and the
calibration rollouts stored in the policy folder (``monitor/calibration.json``). For each signal,
each chunk's score is replaced by ``(score - mean_k) / std_k``, the mean and std over the
successful calibration rollouts at the same chunk index k; then the usual pipeline: mean over the
last ``window`` chunks, each rollout's maximum over time, split-conformal threshold at ``alpha`` on
the successful calibration rollouts (FIPER joint: the smaller of the two rank-transformed scores).

The standardization statistics come from the same calibration rollouts as the threshold, so the
conformal guarantee is only approximate here (the false-alarm rates are measured, not promised).

    robot-rl monitor eval --policy policies/panda_push_diffusion --episodes 300 --conditions nominal \
        --out /tmp/mon300
    python bench/probe_monitor_time_standardized.py --report /tmp/mon300/report.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np


def windowed(scores: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` chunk scores at every chunk (rows: rollouts)."""
    out = np.copy(scores)
    for k in range(1, scores.shape[1]):
        out[:, k] = scores[:, max(0, k - window + 1) : k + 1].mean(axis=1)
    return out


def conformal(statistics: np.ndarray, alpha: float) -> float:
    """The ceil((n + 1)(1 - alpha))-th smallest of n calibration statistics."""
    n = len(statistics)
    return float(np.sort(statistics)[min(math.ceil((n + 1) * (1 - alpha)), n) - 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, default=Path("policies/panda_push_diffusion"))
    parser.add_argument("--report", type=Path, required=True, help="report.json of `robot-rl monitor eval`")
    parser.add_argument("--alpha", type=float, default=None, help="default: the calibration's")
    args = parser.parse_args()
    calibration = json.loads((args.policy / "monitor" / "calibration.json").read_text())
    report = json.loads(args.report.read_text())
    window = int(calibration["settings"]["window"])
    alpha = float(args.alpha if args.alpha is not None else calibration["alpha"])
    chunks = len(calibration["episodes"][0]["rnd"])

    def scores(episodes: list[dict], key: str) -> np.ndarray:
        return np.array([e[key] for e in episodes if len(e[key]) == chunks], dtype=np.float64)

    cal = [e for e in calibration["episodes"] if e["success"]]
    rollouts = report["per_episode"]
    succ = [e for e in rollouts if e["success"]]
    fail = [e for e in rollouts if not e["success"]]
    print(f"calibration: {len(cal)} successful rollouts; evaluation: {len(succ)} successful, {len(fail)} failed "
          f"(full-length rollouts only); alpha {alpha}, window {window}")  # fmt: skip
    print("| detector | scores | false alarms | detection |")
    print("|---|---|---:|---:|")
    for mode in ("raw", "time-standardized"):
        transformed = {}
        for key in ("rnd", "entropy"):
            c = scores(cal, key)
            mean, std = c.mean(axis=0), c.std(axis=0) + 1e-6

            raw = mode == "raw"

            def t(x: np.ndarray, mean: np.ndarray = mean, std: np.ndarray = std, raw: bool = raw) -> np.ndarray:
                return x if raw else (x - mean) / std

            transformed[key] = (windowed(t(c), window), windowed(t(scores(succ, key)), window),
                                windowed(t(scores(fail, key)), window))  # fmt: skip
            cal_w, succ_w, fail_w = transformed[key]
            threshold = conformal(cal_w.max(axis=1), alpha)
            print(f"| {key} alone | {mode} | {(succ_w.max(axis=1) > threshold).mean():.2f} | "
                  f"{(fail_w.max(axis=1) > threshold).mean():.2f} |")  # fmt: skip
        ranks = {key: np.sort(transformed[key][0].ravel()) for key in transformed}

        def joint(r: np.ndarray, e: np.ndarray, ranks: dict[str, np.ndarray] = ranks) -> np.ndarray:
            return np.minimum(
                np.searchsorted(ranks["rnd"], r) / ranks["rnd"].size,
                np.searchsorted(ranks["entropy"], e) / ranks["entropy"].size,
            ).max(axis=1)

        threshold = conformal(joint(transformed["rnd"][0], transformed["entropy"][0]), alpha)
        fa = (joint(transformed["rnd"][1], transformed["entropy"][1]) > threshold).mean()
        det = (joint(transformed["rnd"][2], transformed["entropy"][2]) > threshold).mean()
        print(f"| FIPER (joint) | {mode} | {fa:.2f} | {det:.2f} |")


if __name__ == "__main__":
    main()
