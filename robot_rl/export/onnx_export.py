"""Export a training run to a deployable policy folder: one ONNX graph for the whole inference.

``export_run(RUN_DIR, policies/NAME)`` writes ``policy.onnx``, ``metadata.json`` (the policy card,
:mod:`robot_rl.export.metadata`) and ``README.md``. The graph maps the raw flattened observation
history to the raw action chunk, normalization included; a diffusion policy's DDIM sampler is
unrolled for a fixed number of steps with the timesteps as constants, and the initial noise is a
graph input so that a chunk is reproducible given it (the runtime draws it from its seeded rng).

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The default dynamo
exporter of torch 2.13 needs ``onnxscript``, which is not a dependency; the traced graph of these
policies is static anyway (no data-dependent control flow: the sampler loop runs over Python
constants), which is what the TorchScript exporter handles well. Opset :data:`OPSET`.

Before anything is written, the exported graph runs under onnxruntime on a batch of random
inputs and must match torch (:data:`PARITY_ATOL`); the measured difference goes into the card.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from torch import nn

from robot_rl.export.metadata import (
    ACTIONS_OUTPUT,
    BASE_ACTION_INPUT,
    BATCH_AXIS,
    METADATA_FILE,
    NOISE_INPUT,
    OBS_INPUT,
    ONNX_FILE,
    ONNX_METADATA_KEY,
    PREVIOUS_ACTION_INPUT,
    README_FILE,
    RESIDUAL_ACTION_OUTPUT,
    RESIDUAL_OBS_INPUT,
    RESIDUAL_ROWS_AXIS,
    ActionDim,
    ActionSpec,
    BaseProvenance,
    Normalization,
    ObservationSpec,
    ObsSegment,
    OnnxSpec,
    PolicyMetadata,
    TensorSpec,
    TrainingData,
    dumps,
    sha256_bytes,
    sha256_file,
)
from robot_rl.export.tensors import describe, observation_doc
from robot_rl.policies import checkpoint as ckpt
from robot_rl.policies.base import ObsLayout, check_layout, parse_key

OPSET = 17
"""ONNX opset of exported graphs. 17 is the first with LayerNormalization as one op, is supported
by every onnxruntime since 1.11 and by TensorRT 8.6+, and is within the TorchScript exporter's
range (up to 20)."""

MAX_OPSET = 20
"""Newest opset the TorchScript-based exporter of torch 2.13 writes."""

PARITY_ATOL = 1e-4
"""Largest onnxruntime-vs-torch difference accepted at export (typically ~1e-6 in float32)."""

EXPORTER = "torch.onnx.export (TorchScript-based, dynamo=False)"


class ResidualStack(Protocol):
    """A residual run to fold into its base's graph (:class:`robot_rl.rl.residual_export.ResidualRun`)."""

    base_dir: Path  # the base's training run (torch weights)
    algo: str
    provenance: dict[str, Any]  # the card's ``residual`` entry (with ``agent_sha256``)

    def graph(
        self, policy: nn.Module, base_graph: nn.Module, base_names: tuple[str, ...], low: Any, high: Any
    ) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...]]:
        """The exported module on ``policy`` (whose own graph is ``base_graph``), its input and output names."""
        ...


class ExportError(ValueError):
    """The export cannot proceed (existing output, bad options, a graph that does not match torch)."""


class _BCGraph(nn.Module):
    """``obs_history (B, n_obs, D) -> actions (B, H, A)`` for a BC policy."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, obs_history: torch.Tensor) -> torch.Tensor:
        """Raw action chunk (the Gaussian head's mean)."""
        return self.policy(obs_history)


class _DiffusionGraph(nn.Module):
    """``obs_history (B, n_obs, D), noise (B, H, A) -> actions (B, H, A)``, DDIM over ``steps``."""

    def __init__(self, policy: nn.Module, steps: int) -> None:
        super().__init__()
        self.policy = policy
        self.steps = steps

    def forward(self, obs_history: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Raw action chunk sampled from ``noise``."""
        return self.policy.sample(obs_history, noise, self.steps)


def as_onnx_graph(policy: nn.Module, inference_steps: int | None = None) -> tuple[nn.Module, tuple[str, ...]]:
    """The module that is exported for ``policy``, and its input names.

    Args:
        policy: A loaded :class:`BCPolicy` or :class:`DiffusionPolicy` (eval mode).
        inference_steps: DDIM steps for a diffusion policy (default: the policy's).
    """
    if policy.kind == "diffusion":
        return _DiffusionGraph(policy, inference_steps or policy.inference_steps).eval(), (OBS_INPUT, NOISE_INPUT)
    return _BCGraph(policy).eval(), (OBS_INPUT,)


def export_onnx(
    graph: nn.Module,
    example: tuple[torch.Tensor, ...],
    names: tuple[str, ...],
    opset: int,
    outputs: tuple[str, ...] = (ACTIONS_OUTPUT,),
) -> bytes:
    """Trace ``graph`` on ``example`` inputs into a serialized ONNX model with a dynamic batch axis."""
    buffer = io.BytesIO()
    rows = {RESIDUAL_OBS_INPUT, BASE_ACTION_INPUT, PREVIOUS_ACTION_INPUT, RESIDUAL_ACTION_OUTPUT}
    axes = {name: {0: RESIDUAL_ROWS_AXIS if name in rows else BATCH_AXIS} for name in (*names, *outputs)}
    with warnings.catch_warnings(), torch.no_grad():
        # "You are using the legacy TorchScript-based ONNX export": chosen on purpose (module docstring).
        warnings.simplefilter("ignore", DeprecationWarning)
        # GroupNorm's training-mode batch check, folded to a constant; the parity check covers the graph.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"torch\.nn\.functional")
        torch.onnx.export(
            graph,
            example,
            buffer,
            dynamo=False,
            input_names=list(names),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=opset,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def _example_inputs(policy: Any, batch: int, seed: int) -> tuple[torch.Tensor, ...]:
    """Observations spread like the training data (mean + std * N(0, 1)) and standard normal noise."""
    gen = torch.Generator().manual_seed(seed)
    norm = policy.normalizer
    obs = norm.obs_mean + norm.obs_std * torch.randn(batch, policy.n_obs_steps, policy.obs_dim, generator=gen)
    if policy.kind != "diffusion":
        return (obs,)
    return obs, torch.randn(batch, policy.horizon, policy.action_dim, generator=gen)


def parity(
    model_bytes: bytes,
    graph: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    names: tuple[str, ...],
    outputs: tuple[str, ...] = (ACTIONS_OUTPUT,),
) -> float:
    """Largest |onnxruntime - torch| over the outputs for ``inputs`` (one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    got = session.run(list(outputs), {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    with torch.no_grad():
        ref = graph(*inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    return max(float(np.abs(o - r.numpy()).max()) for o, r in zip(got, ref, strict=True))


def observation_spec(layout: ObsLayout) -> ObservationSpec:
    """The card's observation block for ``layout``."""
    segments, offset = [], 0
    for key, shape in zip(layout.keys, layout.shapes, strict=True):
        name, part = parse_key(key)
        indices = range(math.prod(shape))
        if part is not None:
            indices = indices[part]
        segments.append(ObsSegment(name, indices.start, indices.stop, offset))
        offset += len(indices)
    if layout.relative_goal:
        segments.append(ObsSegment("desired_goal - achieved_goal", 0, 3, offset))
        offset += 3
    for feature in layout.features:
        segments.append(ObsSegment(f"feature {feature.name}", 0, feature.dim, offset))
        offset += feature.dim
    return ObservationSpec(
        keys=list(layout.keys),
        shapes=[list(s) for s in layout.shapes],
        relative_goal=layout.relative_goal,
        dim=layout.dim,
        segments=segments,
        features=[f.to_json() for f in layout.features],
    )


def action_spec(env: Any) -> ActionSpec:
    """The card's action block: the env's action space and what each entry commands."""
    from robot_rl.envs.franka.panda_env import FINGER_OPEN, PandaEnv
    from robot_rl.envs.quadrotor.quadrotor_env import MAX_RATES, QuadrotorEnv

    space, unwrapped = env.action_space, env.unwrapped
    common = {"shape": list(space.shape), "low": space.low.tolist(), "high": space.high.tolist()}
    if isinstance(unwrapped, PandaEnv):
        step = unwrapped.max_displacement
        dims = [
            ActionDim(i, f"tcp_d{axis}", f"TCP displacement target along world {axis}", f"a x {step} m per step")
            for i, axis in enumerate("xyz")
        ]
        grip = (
            "ignored (gripper blocked closed in this task)"
            if unwrapped.block_gripper
            else f"finger opening (a + 1) / 2 x {2 * FINGER_OPEN} m between the pads"
        )
        dims.append(ActionDim(3, "gripper", "gripper opening: -1 closed, +1 fully open (absolute)", grip))
        description = (
            "Franka Panda Cartesian control: TCP displacement x, y, z normalized to [-1, 1] (world frame, z up) "
            "and an absolute gripper opening; a differential-IK controller in the env tracks the target."
        )
        return ActionSpec(**common, family="franka", description=description, dims=dims)
    if isinstance(unwrapped, QuadrotorEnv):
        thrust = unwrapped.params.max_thrust
        dims = [ActionDim(0, "thrust", "collective thrust", f"(a + 1) / 2 x {thrust:.4g} N")]
        for i, (axis, name) in enumerate(zip("xyz", ("roll", "pitch", "yaw"), strict=True)):
            dims.append(
                ActionDim(i + 1, f"{name}_rate", f"{name} rate (body {axis}, FLU)", f"a x {MAX_RATES[i]} rad/s")
            )
        description = (
            "Quadrotor CTBR: collective thrust and body rates normalized to [-1, 1], for the on-board rate controller."
        )
        return ActionSpec(**common, family="quadrotor", description=description, dims=dims)
    raise ExportError(f"no action description for {type(unwrapped).__name__}; known families: franka, quadrotor.")


def _versions() -> dict[str, str]:
    from robot_rl import __version__

    versions = {"robot_rl": __version__}
    for name in ("torch", "onnx", "onnxruntime", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _check_out_dir(
    out_dir: Path, weights_sha256: str, inference_steps: int | None, overwrite: bool, residual_sha256: str | None = None
) -> None:
    """Refuse an ``out_dir`` that holds something else than this policy (unless ``overwrite``)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} is a file; the export writes a folder (e.g. policies/NAME).")
    if (out_dir / ckpt.CONFIG).is_file():
        raise ExportError(f"--out {out_dir} is a training run; export into its own folder (e.g. policies/NAME).")
    if overwrite:
        return
    card = out_dir / METADATA_FILE
    if card.is_file():
        try:
            existing = json.loads(card.read_text())
            same = (
                existing["base"]["weights_sha256"] == weights_sha256
                and existing["inference_steps"] == inference_steps
                and (existing.get("residual") or {}).get("agent_sha256") == residual_sha256
            )
            what = f"{existing['base']['policy_type']} from {existing['base']['run_dir']}"
        except (json.JSONDecodeError, KeyError, TypeError):
            same, what = False, "an unreadable metadata.json"
        if same:
            return  # re-exporting the same weights with the same sampler refreshes the folder
        raise ExportError(
            f"{out_dir} already holds another policy ({what}); pass --overwrite to replace it or choose another --out."
        )
    if any(out_dir.iterdir()):
        raise ExportError(
            f"{out_dir} exists, is not empty and holds no exported policy; choose an empty or new folder "
            "(or pass --overwrite)."
        )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def export_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    inference_steps: int | None = None,
    opset: int = OPSET,
    *,
    overwrite: bool = False,
    name: str | None = None,
    eval_results: dict[str, Any] | None = None,
    check_batch: int = 8,
    load_residual: Callable[[Path], ResidualStack] | None = None,
) -> PolicyMetadata:
    """Export the deployed weights of a training run into ``out_dir``.

    Args:
        run_dir: Training run (``robot-rl train bc|diffusion --out RUN_DIR``).
        out_dir: Policy folder to write (``policies/NAME``); created.
        inference_steps: DDIM steps unrolled in the graph (diffusion; default: the run's).
        opset: ONNX opset.
        overwrite: Replace another policy's policy.onnx, metadata.json and README.md in ``out_dir``
            (other files there are left alone).
        name: Policy name on the card (default: the folder's name).
        eval_results: An evaluation report to put on the card.
        check_batch: Random inputs of the export-time onnxruntime-vs-torch check.
        load_residual: Reads a residual run (``robot-rl train residual``) for its graph; the exporter
            knows graphs, not RL agents, so residual runs need one
            (:func:`robot_rl.rl.residual_export.export_training_run` passes it).

    Returns:
        The card written to ``out_dir/metadata.json``.

    Raises:
        RunError: ``run_dir`` is not a complete training run.
        ExportError: ``out_dir`` holds something else, bad ``inference_steps``, the graph does
            not match torch, or ``run_dir`` is a residual run and no ``load_residual`` was given.
    """
    from robot_rl.envs.registry import make

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if not 17 <= opset <= MAX_OPSET:
        raise ExportError(
            f"`opset` must be in [17, {MAX_OPSET}] (LayerNormalization to the exporter's newest). Got {opset}."
        )
    config = ckpt.read_config(run_dir)
    residual = None
    if config.get("policy_type") == "residual":
        if load_residual is None:
            raise ExportError(
                f"{run_dir} is a residual run: export it with robot_rl.rl.residual_export.export_training_run "
                "(what `robot-rl export` runs), which folds its agent into the graph beside the base."
            )
        residual = load_residual(run_dir)
        config = ckpt.read_config(residual.base_dir)
        policy = ckpt.load_policy(residual.base_dir)
    else:
        policy = ckpt.load_policy(run_dir)
    if policy.kind == "diffusion":
        limit = policy.config.train_timesteps
        steps = inference_steps if inference_steps is not None else policy.inference_steps
        if not 1 <= steps <= limit:
            raise ExportError(f"`inference_steps` must be in [1, train_timesteps={limit}]. Got {steps}.")
    elif inference_steps is not None:
        raise ExportError(f"`inference_steps` applies to diffusion policies; {run_dir} is a {policy.kind} policy.")
    else:
        steps = None
    base_dir = residual.base_dir if residual is not None else run_dir
    weights_sha256 = sha256_file(base_dir / ckpt.WEIGHTS)
    _check_out_dir(
        out_dir, weights_sha256, steps, overwrite, residual.provenance["agent_sha256"] if residual is not None else None
    )

    env = make(config["env_id"], **config.get("env_kwargs", {}))
    try:
        check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
        ctrl_dt = float(env.unwrapped.ctrl_dt)
        action = action_spec(env)
    finally:
        env.close()

    graph, names = as_onnx_graph(policy, steps)
    outputs: tuple[str, ...] = (ACTIONS_OUTPUT,)
    if residual is not None:
        graph, names, outputs = residual.graph(policy, graph, names, action.low, action.high)

    def example(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        inputs = _example_inputs(policy, batch, seed)
        if RESIDUAL_OBS_INPUT not in names:
            return inputs[: len(names)]
        gen = torch.Generator().manual_seed(seed + 100)
        norm = policy.normalizer
        rows = batch + 1  # a different count from the chunk batch: the two axes are independent
        current = norm.obs_mean + norm.obs_std * torch.randn(rows, policy.obs_dim, generator=gen)
        low, high = norm.action_low, norm.action_high
        base_action = low + (high - low) * torch.rand(rows, policy.action_dim, generator=gen)
        if PREVIOUS_ACTION_INPUT not in names:
            return (*inputs, current, base_action)
        previous = low + (high - low) * torch.rand(rows, policy.action_dim, generator=gen)
        return (*inputs, current, base_action, previous)

    # Traced at batch 2, not 1, so that no batch-size-1 broadcast can be baked into the graph.
    model_bytes = export_onnx(graph, example(2, seed=0), names, opset, outputs)
    diff = parity(model_bytes, graph, example(check_batch, seed=1), names, outputs)
    if not diff <= PARITY_ATOL:
        raise ExportError(f"the ONNX graph differs from torch by {diff:.3g} (tolerance {PARITY_ATOL}); not written.")

    sizes = {
        OBS_INPUT: [BATCH_AXIS, policy.n_obs_steps, policy.obs_dim],
        NOISE_INPUT: [BATCH_AXIS, policy.horizon, policy.action_dim],
        RESIDUAL_OBS_INPUT: [RESIDUAL_ROWS_AXIS, policy.obs_dim],
        BASE_ACTION_INPUT: [RESIDUAL_ROWS_AXIS, policy.action_dim],
        PREVIOUS_ACTION_INPUT: [RESIDUAL_ROWS_AXIS, policy.action_dim],
        ACTIONS_OUTPUT: [BATCH_AXIS, policy.horizon, policy.action_dim],
        RESIDUAL_ACTION_OUTPUT: [RESIDUAL_ROWS_AXIS, policy.action_dim],
    }
    options = {**config["policy"], **({"inference_steps": steps} if steps is not None else {})}
    norm = policy.normalizer
    data = config["data"]
    metadata = PolicyMetadata(
        name=name or out_dir.resolve().name,
        env_id=config["env_id"],
        env_kwargs={k: v for k, v in config.get("env_kwargs", {}).items() if k != "randomize"},
        observation=observation_spec(policy.layout),
        n_obs_steps=policy.n_obs_steps,
        action=action,
        control_rate_hz=1.0 / ctrl_dt,
        ctrl_dt=ctrl_dt,
        horizon=policy.horizon,
        n_action_steps=policy.n_action_steps,
        inference_steps=steps,
        normalization=Normalization(
            obs_mean=norm.obs_mean.tolist(),
            obs_std=norm.obs_std.tolist(),
            action_low=norm.action_low.tolist(),
            action_high=norm.action_high.tolist(),
        ),
        base=BaseProvenance(
            policy_type=policy.kind,
            options=options,
            train_steps=int(config["train"]["steps"]),
            deployed_step=ckpt.deployed_step(run_dir),
            best_train_eval_success=ckpt.best_success(run_dir),
            run_dir=str(run_dir),
            weights_sha256=weights_sha256,
            trained_with={k: config[k] for k in ("robot_rl_version", "torch_version") if k in config},
        ),
        residual=residual.provenance if residual is not None else None,
        training_data=TrainingData(
            path=data["path"],
            sha256=data["sha256"],
            demos=len(data["train_demos"]) + len(data["valid_demos"]),
            seeds=list(data["seeds"]),
            randomize=config.get("env_kwargs", {}).get("randomize"),
        ),
        onnx=OnnxSpec(
            file=ONNX_FILE,
            opset=opset,
            exporter=EXPORTER,
            inputs=[TensorSpec(n, sizes[n]) for n in names],
            outputs=[TensorSpec(n, sizes[n]) for n in outputs],
        ),
        export_check={"max_abs_diff": diff, "batch": check_batch, "atol": PARITY_ATOL},
        eval=eval_results,
        exported_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(),
    )
    metadata = describe(metadata, observation_doc(env))  # each tensor's meaning, units and call rule, for any runtime

    model = onnx.load_from_string(model_bytes)
    kind = policy.kind if residual is None else f"{policy.kind}+{residual.algo}"
    model.graph.name = f"robot_rl_{kind.replace('+', '_')}"
    model.doc_string = f"robot_rl {kind} policy for {metadata.env_id}: {', '.join(names)} -> {', '.join(outputs)}"
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, metadata.embedded_json()
    onnx.checker.check_model(model, full_check=True)
    final = model.SerializeToString()
    metadata = dataclasses.replace(metadata, onnx_sha256=sha256_bytes(final))

    from robot_rl.export.card import render_readme

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / ONNX_FILE, final)
    _write_atomic(out_dir / METADATA_FILE, dumps(metadata.to_json()).encode())
    _write_atomic(out_dir / README_FILE, render_readme(metadata, out_dir).encode())
    return metadata
