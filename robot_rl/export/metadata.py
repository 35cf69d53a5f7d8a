"""The policy card: what ``policies/NAME/metadata.json`` holds, and reading it back.

An exported policy folder::

    policies/NAME/
      policy.onnx      one graph: raw observation history (and initial noise) in, raw action chunk out
      metadata.json    this schema (:class:`PolicyMetadata`), including the sha256 of policy.onnx
      README.md        the same card for people

The same JSON, minus ``onnx_sha256``, is embedded in policy.onnx as the metadata property
``robot_rl`` (a file cannot contain its own hash), so a lone .onnx file still says what it is.
metadata.json may gain fields after export (``eval``); the runtime checks that the fields the
graph depends on agree with the embedded copy.

This module imports no torch: the runtime reads cards with numpy and onnxruntime only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

FORMAT_VERSION = 1
"""Version of the metadata.json layout; readers refuse newer versions."""

ONNX_FILE = "policy.onnx"
METADATA_FILE = "metadata.json"
README_FILE = "README.md"

ONNX_METADATA_KEY = "robot_rl"
"""Key of the embedded policy card in the ONNX model's ``metadata_props``."""

OBS_INPUT = "obs_history"
"""Graph input: raw flattened observation history, float32 (batch, n_obs_steps, obs_dim), oldest first."""
NOISE_INPUT = "noise"
"""Graph input (diffusion only): initial DDIM noise, float32 (batch, horizon, action_dim), standard normal."""
ACTIONS_OUTPUT = "actions"
"""Graph output: raw action chunk, float32 (batch, horizon, action_dim), in the env's action units."""
RESIDUAL_OBS_INPUT = "residual_obs"
"""Graph input (per-step residual only): raw flattened current observation, float32 (rows, obs_dim)."""
BASE_ACTION_INPUT = "base_action"
"""Graph input (per-step residual only): the base's raw action for the step, float32 (rows, action_dim)."""
PREVIOUS_ACTION_INPUT = "previous_action"
"""Graph input (per-step residual trained with ``--feedback`` only): the previous step's raw corrected action
(``residual_action`` of the previous step, before any safety filter; the step's own ``base_action`` at an
episode's first step), float32 (rows, action_dim). Graphs without feedback have no such input."""
RESIDUAL_ACTION_OUTPUT = "residual_action"
"""Graph output (per-step residual only): base action plus the bounded correction, float32 (rows, action_dim)."""
RESIDUAL_ROWS_AXIS = "rows"
"""Name of the dynamic first axis of the residual inputs and output (0 on a chunk call)."""
BATCH_AXIS = "batch"
"""Name of the dynamic first axis of every input and output."""

CONTRACT_FIELDS = (
    "env_id",
    "observation",
    "n_obs_steps",
    "action",
    "horizon",
    "n_action_steps",
    "inference_steps",
    "control_rate_hz",
    "ctrl_dt",
    "normalization",
    "onnx",
    "calling",
)
"""Fields that describe the graph and how it is run: metadata.json must agree with the embedded copy on these."""


class PolicyFormatError(ValueError):
    """A policy folder or its metadata.json is missing, malformed, or from a newer robot_rl."""


@dataclasses.dataclass(frozen=True)
class ObsSegment:
    """Where one part of the flattened observation comes from."""

    source: str
    """Observation dict entry, or ``desired_goal - achieved_goal`` for the relative goal."""
    start: int
    """First index read from the (flattened) entry."""
    stop: int
    """One past the last index read."""
    offset: int
    """Position of the first value in the flattened observation."""


@dataclasses.dataclass(frozen=True)
class ObservationSpec:
    """The observation the policy reads and how to flatten it (see ``robot_rl.policies.base.ObsLayout``)."""

    keys: list[str]
    """Dict entries read, in order; ``NAME`` or a slice ``NAME[i:j]``."""
    shapes: list[list[int]]
    """Full shape of each entry."""
    relative_goal: bool
    """``desired_goal - achieved_goal`` (3 values) is appended."""
    dim: int
    """Length of one flattened observation (obs_dim)."""
    segments: list[ObsSegment]
    """The flattened observation, part by part (float64 values cast to float32 at the graph input)."""
    features: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Observation features with memory, appended last (``robot_rl.policies.features``): each with its name,
    parameters, ``dim`` and ``formula``; the runtime computes them from the observation stream and the commands
    sent. Empty for a policy that reads each observation as it is."""
    flatten: str = (
        "concatenate the segments of one observation in order (each entry flattened row-major, then sliced); "
        "stack the last n_obs_steps observations oldest first, repeating the first observation of an episode "
        "until there are enough"
    )
    values: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """What the flattened observation holds, index range by index range: ``index`` ("first-last"), ``source``
    (the dict entry and its indices), ``quantity`` and ``unit`` (from the env's documentation). Empty on cards
    exported before they were described (:func:`robot_rl.export.tensors.describe`)."""


@dataclasses.dataclass(frozen=True)
class ActionDim:
    """Meaning of one action entry."""

    index: int
    name: str
    meaning: str
    physical: str
    """What the value ``a`` commands, with units."""


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """The env's action space; the graph outputs actions in it (not clipped: the env clips)."""

    shape: list[int]
    low: list[float]
    high: list[float]
    family: str
    """``franka`` or ``quadrotor``."""
    description: str
    dims: list[ActionDim]


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Statistics of the training data; already applied inside policy.onnx (for reference only)."""

    obs_mean: list[float]
    obs_std: list[float]
    """Observations are standardized: (obs - mean) / std."""
    action_low: list[float]
    action_high: list[float]
    """The network works in [-1, 1] over [action_low, action_high] per dimension."""


@dataclasses.dataclass(frozen=True)
class BaseProvenance:
    """The trained base policy inside the graph."""

    policy_type: str
    """``bc`` or ``diffusion``."""
    options: dict[str, Any]
    """Policy options (config.json ``policy``), ``inference_steps`` as exported."""
    train_steps: int
    deployed_step: int | None
    """Training step of the exported weights."""
    best_train_eval_success: float | None
    """Best success rate of the evaluations during training (on seeds 900000...)."""
    run_dir: str
    weights_sha256: str
    """sha256 of the run's policy.safetensors."""
    trained_with: dict[str, str]
    """robot_rl and torch versions of the training run."""


@dataclasses.dataclass(frozen=True)
class TrainingData:
    """The demonstrations the base was trained on."""

    path: str
    sha256: str
    demos: int
    seeds: list[int]
    """Env seeds of the demos: evaluations must use others."""
    randomize: dict[str, Any] | None = None
    """The domain randomization the demos were collected under (resolved values; None: nominal). The policy runs
    in whatever env it is given: this records what it was trained for, it is not a setting of the env."""


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One graph input or output, described for a runtime in any language (:mod:`robot_rl.export.tensors`)."""

    name: str
    shape: list[int | str]
    """``batch`` (chunk path) and ``rows`` (a residual's step path) name the dynamic axes."""
    dtype: str = "float32"
    axes: list[str] = dataclasses.field(default_factory=list)
    """What each axis counts, e.g. ``["batch", "n_obs_steps", "obs_dim"]``."""
    meaning: str = ""
    units: str = ""
    call: str = ""
    """When the tensor is fed (or read) and what it holds on each kind of call, the empty batch included."""
    distribution: str | None = None
    """A random input's distribution (the diffusion ``noise``: standard normal); None for the others."""


@dataclasses.dataclass(frozen=True)
class CallRule:
    """How a runtime drives policy.onnx, control period by control period.

    What robot_rl's runtime Controller does (blend ``none``, no prefetch), written out for a runtime without
    robot_rl (C++, Node, ...).
    """

    sequence: list[str]
    """The steps of one control period, in order."""
    chunking: str
    """Which actions of a chunk are executed, and when the next chunk is computed."""
    history: str
    """How ``obs_history`` is built over an episode."""
    normalization: str
    """Where observations are standardized and actions unnormalized (inside the graph)."""
    action_limits: str
    """What the graph clips and what the caller must clip."""
    noise: str | None
    """When the diffusion noise is drawn and how robot_rl draws it (reproducible chunks); None without noise."""
    empty_batch: str | None
    """A per-step residual graph: the inputs of the path not used on a call get a batch of 0; None otherwise."""
    invalid_input: str
    """What to do with an observation holding NaN or inf."""
    reference_runtime: str
    """The onnxruntime settings robot_rl runs the graph with (for bit-identical actions)."""


@dataclasses.dataclass(frozen=True)
class OnnxSpec:
    """The graph file."""

    file: str
    opset: int
    exporter: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
    """Everything needed to run the policy and to know where it came from (metadata.json)."""

    name: str
    env_id: str
    env_kwargs: dict[str, Any]
    observation: ObservationSpec
    n_obs_steps: int
    action: ActionSpec
    control_rate_hz: float
    """Rate at which the policy acts: one action per control period."""
    ctrl_dt: float
    """Control period [s]."""
    horizon: int
    """Actions per predicted chunk."""
    n_action_steps: int
    """Actions executed per chunk before predicting again."""
    inference_steps: int | None
    """DDIM steps unrolled in the graph (diffusion), None for BC."""
    normalization: Normalization
    base: BaseProvenance
    residual: dict[str, Any] | None
    """The residual folded into the graph (algo, run, scale or noise bound, feedback, model sha256); None without
    one."""
    training_data: TrainingData
    onnx: OnnxSpec
    export_check: dict[str, Any]
    """onnxruntime against torch at export: ``max_abs_diff`` over ``batch`` random inputs."""
    eval: dict[str, Any] | None
    """Evaluation report of the exported policy, when given."""
    exported_at: str
    """UTC, ISO 8601."""
    versions: dict[str, str]
    """robot_rl, torch, onnx, onnxruntime, numpy at export."""
    onnx_sha256: str | None = None
    """sha256 of policy.onnx; None in the copy embedded in policy.onnx itself."""
    robustness: dict[str, Any] | None = None
    """The robustness suite's table (``robot-rl eval --suite robustness --card``): per family, success with its
    95% interval, the drop from nominal and the scripted expert's success; the full report in robustness.json."""
    calling: CallRule | None = None
    """How to call the graph control period by control period (:mod:`robot_rl.export.tensors`); None on cards
    written before it was described."""
    format_version: int = FORMAT_VERSION

    @property
    def policy_type(self) -> str:
        """``bc`` or ``diffusion``."""
        return self.base.policy_type

    @property
    def action_dim(self) -> int:
        """Action length."""
        return int(self.action.shape[0])

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form (format_version first)."""
        value = dataclasses.asdict(self)
        return {"format_version": value.pop("format_version"), **value}

    def embedded_json(self) -> str:
        """The JSON embedded in policy.onnx: everything but ``onnx_sha256``."""
        value = self.to_json()
        del value["onnx_sha256"]
        return json.dumps(value, sort_keys=False)

    @classmethod
    def from_json(cls, value: dict[str, Any], where: str = METADATA_FILE) -> PolicyMetadata:
        """Inverse of :meth:`to_json`.

        Raises:
            PolicyFormatError: a newer format version, or a field missing.
        """
        if not isinstance(value, dict):
            raise PolicyFormatError(f"{where}: expected a JSON object (a policy card). Got {type(value).__name__}.")
        version = value.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise PolicyFormatError(
                f"{where}: format_version {version!r}; this robot_rl reads versions up to {FORMAT_VERSION} "
                "(upgrade robot_rl, or re-export the policy)."
            )
        card = _build(cls, value, where)
        card.check_runtime(where)
        return card

    def check_runtime(self, where: str = METADATA_FILE) -> None:
        """Refuse runtime fields a Controller cannot run: counts, the control period, the action box.

        Raises:
            PolicyFormatError: naming the field, what it holds and what is valid.
        """

        def count(name: str, value: Any, low: int, high: int | None = None) -> None:
            valid = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok or value < low or (high is not None and value > high):
                raise PolicyFormatError(f"{where}: {name} must be {valid}. Got {value!r}.")

        count("n_obs_steps", self.n_obs_steps, 1)
        count("horizon", self.horizon, 1)
        count("n_action_steps", self.n_action_steps, 1, self.horizon)
        if self.inference_steps is not None:
            count("inference_steps", self.inference_steps, 1)
        for name in ("ctrl_dt", "control_rate_hz"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise PolicyFormatError(f"{where}: {name} must be a finite number > 0. Got {value!r}.")
        if abs(self.ctrl_dt * self.control_rate_hz - 1.0) > 1e-6:
            raise PolicyFormatError(
                f"{where}: ctrl_dt {self.ctrl_dt} s and control_rate_hz {self.control_rate_hz} disagree (one is the "
                "other's inverse)."
            )


def _build(cls: type, value: Any, where: str) -> Any:
    """A dataclass from its JSON dict, recursing into nested dataclasses; unknown keys are ignored."""
    if not isinstance(value, dict):
        raise PolicyFormatError(f"{where}: expected an object for {cls.__name__}, got {type(value).__name__}.")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in value:
            if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING:
                continue
            raise PolicyFormatError(f"{where}: {cls.__name__} field {field.name!r} is missing.")
        kwargs[field.name] = _convert(hints[field.name], value[field.name], f"{where}: {field.name}")
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _convert(inner[0], value, where) if len(inner) == 1 else value
    if origin is list and value is not None:
        (item,) = typing.get_args(hint)
        if dataclasses.is_dataclass(item):
            return [_build(item, v, where) for v in value]
    return value


def dumps(value: Any, indent: int = 0) -> str:
    """Indented JSON with lists of scalars (statistics, seeds, shapes) kept on one line."""
    pad = " " * (indent + 2)
    if isinstance(value, dict) and value:
        items = [f"{pad}{json.dumps(str(k))}: {dumps(v, indent + 2)}" for k, v in value.items()]
        text = "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        text = "[\n" + ",\n".join(pad + dumps(v, indent + 2) for v in value) + "\n" + " " * indent + "]"
    else:
        text = json.dumps(value)
    return text + ("\n" if indent == 0 else "")


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's contents."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_policy_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an exported policy folder (it has a metadata.json)."""
    return (Path(path) / METADATA_FILE).is_file()


def read_metadata(policy_dir: str | os.PathLike[str]) -> PolicyMetadata:
    """The policy card of an exported policy folder.

    Raises:
        PolicyFormatError: no metadata.json, invalid JSON, or a field missing.
    """
    path = Path(policy_dir) / METADATA_FILE
    if not path.is_file():
        raise PolicyFormatError(
            f"{policy_dir} is not an exported policy: it has no {METADATA_FILE}. Export a training run with "
            f"`robot-rl export --run RUN_DIR --out {policy_dir}`."
        )
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:  # text that is not JSON, bytes that are not text
        raise PolicyFormatError(f"{path} is not valid JSON ({err}).") from None
    return PolicyMetadata.from_json(value, str(path))


EVAL_FILE = "eval.json"
"""The full eval report of an exported policy, next to its card."""

ROBUSTNESS_FILE = "robustness.json"
"""The full robustness-suite report of an exported policy, next to its card."""
