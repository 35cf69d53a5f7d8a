"""Training runs on disk: weights in safetensors, the resolved config as JSON.

A run directory::

    RUN_DIR/
      config.json              resolved config: policy type and options, training options, data
                               (path, sha256, env id and kwargs, demo seeds), observation layout
      policy.safetensors       the weights to deploy (EMA weights when EMA is on): the best
                               evaluation so far (keep_best), else the latest
      checkpoints/latest/      model, ema and optimizer .safetensors + trainer.json (resume)
      metrics.jsonl            one JSON line per evaluation during training
      tb/                      TensorBoard event files

Optimizer state goes into safetensors too (its tensors flattened by parameter index; the
scalars into trainer.json), so a run holds no pickles and loading one never executes code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from robot_rl.policies.base import ObsLayout
from robot_rl.policies.models import POLICY_TYPES, build_policy

CONFIG = "config.json"
WEIGHTS = "policy.safetensors"
LATEST = Path("checkpoints") / "latest"
BASE_RUN_KEYS = ("env_id", "policy", "train", "data")
"""Keys every bc|diffusion config.json holds (eval, export and residual training read them)."""


class RunError(ValueError):
    """A run directory is missing, incomplete or does not match what it is used with."""


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _atomic_json(value: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    os.replace(tmp, path)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state dict into flat tensors and JSON-able scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value
            else:
                scalars["state"].setdefault(str(index), {})[key] = value
    return tensors, scalars


def load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    for index, entry in scalars.get("state", {}).items():
        state.setdefault(int(index), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    ema: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer,
    trainer: dict[str, Any],
    deploy: bool = True,
) -> None:
    """Write checkpoints/latest and, with ``deploy``, policy.safetensors (each file replaced atomically)."""
    folder = run_dir / LATEST
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_save(model.state_dict(), folder / "model.safetensors")
    if ema is not None:
        _atomic_save(ema.state_dict(), folder / "ema.safetensors")
    tensors, scalars = optimizer_tensors(optimizer)
    _atomic_save(tensors, folder / "optimizer.safetensors")
    _atomic_json({**trainer, "optimizer": scalars}, folder / "trainer.json")
    if deploy:
        deployed = ema if ema is not None else model
        _atomic_save(deployed.state_dict(), run_dir / WEIGHTS, metadata={"step": str(trainer.get("step", 0))})


def read_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's config.json.

    Raises:
        RunError: not a run directory.
    """
    path = Path(run_dir) / CONFIG
    if not path.is_file() and (Path(run_dir) / "policy.onnx").is_file():
        raise RunError(
            f"{run_dir} holds policy.onnx but no metadata.json: an exported policy folder needs its card (written by "
            "`robot-rl export` beside the graph, with the graph's sha256); copy the whole folder, or export it again "
            "from its training run."
        )
    if not path.is_file():
        if not Path(run_dir).is_dir():
            raise RunError(f"{run_dir} does not exist: expected a training run or an exported policy folder.")
        raise RunError(
            f"{run_dir} is not a training run: it has no {CONFIG}. Train one with `robot-rl train bc|diffusion "
            f"--data FILE.hdf5 --out {run_dir}`."
        )
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # text that is not JSON, bytes that are not text
        raise RunError(f"{path} is not valid JSON ({err}).") from None
    if not isinstance(config, dict) or not isinstance(config.get("policy_type"), str):
        raise RunError(f"{path} is not a training run's config: expected a JSON object with a `policy_type`.")
    base = config["policy_type"] in ("bc", "diffusion")
    missing = [key for key in BASE_RUN_KEYS if key not in config] if base else []
    if missing:
        raise RunError(f"{path} lacks {missing}: it is damaged, or was not written by `robot-rl train bc|diffusion`.")
    return config


def load_policy(run_dir: str | os.PathLike[str], weights: str = WEIGHTS) -> torch.nn.Module:
    """The trained policy of a run, in eval mode.

    Raises:
        RunError: the run is incomplete, or its weights do not fit its config (the message says
            which tensors differ).
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    kind = config.get("policy_type")
    if kind not in POLICY_TYPES:
        raise RunError(f"{run_dir}: unknown policy_type {kind!r} in {CONFIG}; valid: {', '.join(POLICY_TYPES)}.")
    path = run_dir / weights
    if not path.is_file():
        raise RunError(f"{run_dir} has no {weights} yet (training has not saved a checkpoint).")
    model = build_policy(kind, config["policy"], ObsLayout.from_json(config["obs_layout"]), int(config["action_dim"]))
    load_weights(model, load_file(str(path)), str(path))
    return model.eval()


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load ``tensors`` into ``model``, refusing any mismatch with a list of what differs."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{k}: {tuple(tensors[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if shapes:
            parts.append(f"shapes (file vs config) {shapes[:5]}")
        raise RunError(
            f"{where} does not fit the policy its config describes: {'; '.join(parts)}. The weights come from "
            "another policy type or observation layout."
        )
    model.load_state_dict(tensors)


def best_success(run_dir: str | os.PathLike[str]) -> float | None:
    """The best evaluation success rate in the run's metrics.jsonl (None before any evaluation)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return None
    rates = [json.loads(line).get("success_rate") for line in path.read_text().splitlines() if line.strip()]
    rates = [r for r in rates if r is not None]
    return max(rates) if rates else None


def deployed_step(run_dir: str | os.PathLike[str]) -> int | None:
    """The training step of the deployed weights (policy.safetensors), None when absent."""
    from safetensors import safe_open

    path = Path(run_dir) / WEIGHTS
    if not path.is_file():
        return None
    with safe_open(str(path), framework="pt") as f:
        step = (f.metadata() or {}).get("step")
    return int(step) if step is not None else None
