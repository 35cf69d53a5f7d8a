"""A base policy's training run rebuilt from its exported folder, so a residual on it can be exported.

``robot-rl train residual --base policies/NAME`` trains on an exported base (its ONNX graph), but the
exported stack is one graph traced from torch, which needs the base's torch weights: without its
training run at hand, such a residual could not be exported. The exported folder holds everything
the run would: the card has the policy's options, observation layout, normalization and provenance,
and the graph's initializers carry the weights under their torch names (``policy.<parameter>``).
:func:`restore_base_run` rebuilds the torch policy from them, fills the few tensors the exporter
folded into constants from a freshly built policy of the same options (the normalization from the
card), and keeps the result only when the rebuilt policy reproduces the ONNX graph within the
export tolerance on random inputs: a folder it cannot rebuild exactly is refused, never
approximated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robot_rl.export.metadata import ONNX_FILE, PolicyMetadata, read_metadata, sha256_bytes, sha256_file
from robot_rl.policies import checkpoint as ckpt

RESTORED_FROM = "restored_from"
"""config.json key of a rebuilt run: the policy folder and its graph's sha256."""


class RestoreError(ValueError):
    """The exported folder cannot be turned back into an exact training run."""


def restore_base_run(policy_dir: str | Path, out: str | Path, card: PolicyMetadata | None = None) -> Path:
    """Write a bc|diffusion training run in ``out`` equivalent to the exported base ``policy_dir``.

    Returns ``out``. An existing ``out`` rebuilt from the same graph (same sha256) is reused. ``card`` is the
    folder's card when the caller has already opened it (:func:`robot_rl.deploy.open_policy`); else it is read here.

    Raises:
        RestoreError: the folder holds a residual stack, its graph's sha256 does not match its card,
            or the rebuilt policy does not reproduce the graph.
    """
    import onnx
    from onnx import numpy_helper

    from robot_rl.export.onnx_export import PARITY_ATOL, _example_inputs, as_onnx_graph, parity
    from robot_rl.policies.features import feature_from_json
    from robot_rl.policies.layout import ObsLayout
    from robot_rl.policies.models import build_policy

    policy_dir, out = Path(policy_dir), Path(out)
    meta = card if card is not None else read_metadata(policy_dir)
    if meta.residual:
        raise RestoreError(f"{policy_dir} holds a {meta.residual['algo']} residual stack; only a base can be restored.")
    model_bytes = (policy_dir / ONNX_FILE).read_bytes()
    digest = sha256_bytes(model_bytes)
    if digest != meta.onnx_sha256:
        raise RestoreError(f"{policy_dir / ONNX_FILE} has sha256 {digest}; its card says {meta.onnx_sha256}.")
    if (out / ckpt.CONFIG).is_file():
        existing = json.loads((out / ckpt.CONFIG).read_text()).get(RESTORED_FROM, {})
        if existing.get("onnx_sha256") == digest and (out / ckpt.WEIGHTS).is_file():
            return out
        raise RestoreError(f"{out} already holds another run; remove it or choose another folder.")

    obs = meta.observation
    layout = ObsLayout(
        tuple(obs.keys),
        tuple(tuple(s) for s in obs.shapes),
        obs.relative_goal,
        tuple(feature_from_json(f, f"{policy_dir}: observation.features") for f in obs.features),
    )
    kind = meta.base.policy_type
    options = dict(meta.base.options)
    policy = build_policy(kind, options, layout, meta.action_dim).eval()
    state = policy.state_dict()
    graph = onnx.load_from_string(model_bytes).graph
    prefix = "policy."
    found = {
        init.name[len(prefix) :]: numpy_helper.to_array(init)
        for init in graph.initializer
        if init.name.startswith(prefix)
    }
    norm = meta.normalization
    found.update(
        {
            "normalizer.obs_mean": np.asarray(norm.obs_mean),
            "normalizer.obs_std": np.asarray(norm.obs_std),
            "normalizer.action_low": np.asarray(norm.action_low),
            "normalizer.action_high": np.asarray(norm.action_high),
        }
    )
    unknown = sorted(set(found) - set(state))
    if unknown:
        raise RestoreError(f"{policy_dir}: the graph has tensors the card's {kind} policy does not: {unknown[:5]}.")
    for key, value in found.items():
        if tuple(value.shape) != tuple(state[key].shape):
            expected = tuple(state[key].shape)
            raise RestoreError(f"{policy_dir}: {key} is {tuple(value.shape)} in the graph, {expected} in its policy.")
        state[key] = torch.as_tensor(np.array(value), dtype=state[key].dtype)
    policy.load_state_dict(state)
    module, names = as_onnx_graph(policy, meta.inference_steps)
    diff = parity(model_bytes, module, _example_inputs(policy, 8, seed=3), names)
    if not diff <= PARITY_ATOL:
        raise RestoreError(
            f"{policy_dir}: the policy rebuilt from its card and graph differs from the graph by {diff:.3g} "
            f"(tolerance {PARITY_ATOL}); export the residual from the base's own training run instead."
        )

    data = meta.training_data
    config: dict[str, Any] = {
        "policy_type": kind,
        "policy": options,
        "train": {"steps": meta.base.train_steps},
        "env_id": meta.env_id,
        "env_kwargs": dict(meta.env_kwargs),
        "obs_layout": layout.to_json(),
        "action_dim": meta.action_dim,
        "data": {
            "path": data.path,
            "sha256": data.sha256,
            "train_demos": list(range(data.demos)),
            "valid_demos": [],
            "seeds": list(data.seeds),
        },
        **meta.base.trained_with,
        RESTORED_FROM: {
            "policy_dir": str(policy_dir),
            "onnx_sha256": digest,
            "run_dir": meta.base.run_dir,
            "weights_sha256": meta.base.weights_sha256,
            "max_abs_diff": diff,
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    step = meta.base.deployed_step
    ckpt._atomic_save(
        {k: v.contiguous() for k, v in policy.state_dict().items()},
        out / ckpt.WEIGHTS,
        metadata={"step": str(step)} if step is not None else None,
    )
    # Byte-identical to the original run's weights file when the card recorded its step (the shipped bases are).
    config[RESTORED_FROM]["identical_weights_file"] = sha256_file(out / ckpt.WEIGHTS) == meta.base.weights_sha256
    (out / ckpt.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return out
