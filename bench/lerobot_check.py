"""Check a dataset written by `robot-rl data export-lerobot` with LeRobot itself: load it, compare, train a few steps.

Runs under the LeRobot venv's Python, not robot_rl's (docs/interop.md says how to make that venv)::

    .venv-lerobot/bin/python bench/lerobot_check.py DIR --expect EXPECT.npz [--steps 5] [--policy diffusion]

``EXPECT.npz`` holds what the demo file says (written by tests/data/test_lerobot.py or by hand): ``actions``,
``state``, ``env_state`` (all frames in order, float64) and ``lengths`` (frames per episode). The script
prints one JSON object: LeRobot's frame and episode counts, whether the values LeRobot's dataset holds equal
the file's bit for bit (and its float32 items equal them as float32), a decoded camera frame's shape if the
dataset has video, and the loss of each training step of a small LeRobot policy on the dataset (CPU).
It exits 1 when a comparison fails. It imports nothing from robot_rl.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
import time

import numpy as np
import torch


def _torchvision_without_ops() -> None:
    """Let torchvision import where its compiled ops cannot load (PyPI's CUDA torchvision beside a CPU torch).

    torchvision 0.28 registers fake kernels for ``nms`` and ``qnms`` at import even when its ``_C`` library failed
    to load, and that raises; defining the two schemas first lets the import finish. LeRobot's datasets and its
    diffusion and ACT policies use none of these detection ops.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    library = glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so"))
    try:
        torch.ops.load_library(library[0])
    except (OSError, IndexError):
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


def _load(root: str, expect: dict[str, np.ndarray]) -> tuple[object, dict]:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    start = time.perf_counter()
    dataset = LeRobotDataset("robot_rl/check", root=root)
    seconds = time.perf_counter() - start
    table = dataset.hf_dataset.with_format("arrow")[:]  # the values LeRobot's dataset holds, as stored
    result = {
        "load_s": round(seconds, 3),
        "frames": len(dataset),
        "episodes": dataset.num_episodes,
        "fps": dataset.fps,
        "features": sorted(dataset.features),
    }
    ok = result["frames"] == len(expect["actions"]) and result["episodes"] == len(expect["lengths"])
    for key, name in (
        ("actions", "action"),
        ("state", "observation.state"),
        ("env_state", "observation.environment_state"),
    ):
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy().reshape(len(column), -1)
        result[f"{key}_equal_bits"] = bool(values.dtype == expect[key].dtype and np.array_equal(values, expect[key]))
        ok &= result[f"{key}_equal_bits"]
    lengths = [int(ep["length"]) for ep in dataset.meta.episodes]
    result["lengths_equal"] = lengths == expect["lengths"].tolist()
    ok &= result["lengths_equal"]
    starts = np.concatenate([[0], np.cumsum(expect["lengths"])[:-1]])
    picks = sorted({0, int(starts[-1]), len(dataset) - 1, int(starts[len(starts) // 2]) + 1})
    items_equal = True
    for i in picks:
        item = dataset[i]
        items_equal &= bool(torch.equal(item["action"], torch.from_numpy(expect["actions"][i].astype(np.float32))))
        for key in dataset.meta.video_keys:
            result.setdefault("video", {})[key] = {"shape": list(item[key].shape), "dtype": str(item[key].dtype)}
    result["items_checked"], result["items_equal_float32"] = picks, items_equal
    result["task"] = dataset[0]["task"]
    return dataset, {**result, "ok": bool(ok and items_equal)}


def _train(root: str, policy_type: str, steps: int, batch_size: int) -> dict:
    from lerobot.datasets.factory import resolve_delta_timestamps
    from lerobot.datasets.lerobot_dataset import LeRobotDataset, LeRobotDatasetMetadata
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    torch.manual_seed(0)
    meta = LeRobotDatasetMetadata("robot_rl/check", root=root)
    if policy_type == "diffusion":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        # A small U-Net for a CPU check (the default's down_dims are 512, 1024, 2048).
        cfg = DiffusionConfig(device="cpu", n_obs_steps=2, horizon=16, n_action_steps=8, down_dims=(64, 128, 256))
    else:
        from lerobot.policies.act.configuration_act import ACTConfig

        cfg = ACTConfig(device="cpu", chunk_size=10, n_action_steps=10, dim_model=128, dim_feedforward=256)
    cfg.push_to_hub = False
    dataset = LeRobotDataset("robot_rl/check", root=root, delta_timestamps=resolve_delta_timestamps(cfg, meta))
    policy = make_policy(cfg, ds_meta=meta)
    preprocess, _ = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    optimizer_config = cfg.get_optimizer_preset()
    optimizer = optimizer_config.build(policy.parameters())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0, drop_last=True)
    losses, start = [], time.perf_counter()
    policy.train()
    while len(losses) < steps:
        for batch in loader:
            loss, _ = policy.forward(preprocess(batch))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), optimizer_config.grad_clip_norm)
            optimizer.step()
            optimizer.zero_grad()
            losses.append(round(float(loss.detach()), 5))
            if len(losses) == steps:
                break
    parameters = sum(p.numel() for p in policy.parameters())
    return {
        "policy": policy_type,
        "parameters": parameters,
        "input_features": sorted(cfg.input_features),
        "steps": steps,
        "batch_size": batch_size,
        "losses": losses,
        "train_s": round(time.perf_counter() - start, 2),
        "finite": bool(np.isfinite(losses).all()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="the dataset folder (export-lerobot --out)")
    parser.add_argument("--expect", required=True, help=".npz with actions, state, env_state, lengths")
    parser.add_argument("--steps", type=int, default=5, help="training steps (0: no training)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--policy", choices=("diffusion", "act"), default="diffusion")
    args = parser.parse_args()
    _torchvision_without_ops()
    import lerobot

    with np.load(args.expect) as npz:
        expect = {key: npz[key] for key in npz.files}
    _, result = _load(args.root, expect)
    result = {"lerobot": lerobot.__version__, "torch": torch.__version__, **result}
    if args.steps:
        result["train"] = _train(args.root, args.policy, args.steps, args.batch_size)
        result["ok"] &= result["train"]["finite"]
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
