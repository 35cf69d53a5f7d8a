"""Pieces of the eval report (ARCHITECTURE.md): the success interval, the final distance, where the policy came from."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from robot_rl.deploy import OpenedPolicy
    from robot_rl.evaluation.config import EvalConfig


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Rounded so that p = 0 or 1 gives exact interval ends (not 0.9999999999999999).
    return (round(max(0.0, centre - half), 12), round(min(1.0, centre + half), 12))


def mean_final_distance(episodes: list[dict[str, Any]]) -> float | None:
    """Mean over episodes of the env's ``info["distance"]`` at the last step [m].

    Quadrotor tasks report the vehicle's distance to its goal or reference; None when the env does not.
    """
    if not episodes or any("distance" not in e for e in episodes):
        return None
    return float(np.mean([e["distance"] for e in episodes]))


def base_alone_report(opened: OpenedPolicy, episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """``base_alone`` of a residual run's report: its base, without the residual, on the same seeds."""
    assert opened.config is not None
    successes = sum(e["success"] for e in episodes)
    return {
        "policy": opened.config["base"]["path"],
        "success_rate": successes / len(episodes),
        "success_ci95": list(wilson_interval(successes, len(episodes))),
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "mean_final_distance": mean_final_distance(episodes),
        "per_episode": [{k: e[k] for k in ("seed", "success", "return", "distance") if k in e} for e in episodes],
    }


def policy_run(opened: OpenedPolicy, config: EvalConfig) -> dict[str, Any]:
    """``policy_run`` of the report: the run's type, options and data, or the exported graph's provenance."""
    if opened.kind == "exported":
        meta = opened.card
        assert meta is not None
        options = dict(meta.base.options)
        options["blend"] = config.blend
        options["prefetch_lead"] = config.prefetch_lead
        if config.n_action_steps is not None:
            options["n_action_steps"] = config.n_action_steps
        return {
            "policy_type": meta.base.policy_type,
            "options": options,
            "train_steps": meta.base.train_steps,
            "deployed_step": meta.base.deployed_step,
            "data": {"path": meta.training_data.path, "sha256": meta.training_data.sha256},
            "demos": meta.training_data.demos,
            "exported": True,
            "run_dir": meta.base.run_dir,
            "weights_sha256": meta.base.weights_sha256,
            "onnx_sha256": meta.onnx_sha256,
            "residual": meta.residual,
        }
    run = opened.config
    assert run is not None
    if opened.kind == "residual":
        return {"policy_type": "residual", "algo": run["algo"], "options": run["options"], "base": run["base"]}
    from robot_rl.policies.checkpoint import deployed_step

    policy_options = dict(run.get("policy", {}))
    if config.inference_steps is not None:
        policy_options["inference_steps"] = config.inference_steps
    if config.n_action_steps is not None:
        policy_options["n_action_steps"] = config.n_action_steps
    return {
        "policy_type": run["policy_type"],
        "options": policy_options,
        "train_steps": run["train"]["steps"],
        "deployed_step": deployed_step(opened.path),
        "data": {k: run["data"][k] for k in ("path", "sha256")},
        "demos": len(run["data"]["train_demos"]) + len(run["data"]["valid_demos"]),
    }
