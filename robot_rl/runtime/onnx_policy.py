"""An exported policy folder run by onnxruntime, behind the same Policy protocol as the torch policies.

:class:`OnnxPolicy` reads ``metadata.json``, checks that ``policy.onnx`` is the file the card was
written for (sha256), and runs it on the CPU with a fixed number of threads. It implements
:class:`robot_rl.policies.base.Policy`, so :class:`robot_rl.policies.base.ChunkedActor` runs it
unchanged; ``predict_batch`` evaluates several histories (or one history under several noises) in
one call.

The file is read once: the bytes that are hashed are the bytes the session is built from.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from robot_rl.export.metadata import (
    ACTIONS_OUTPUT,
    BASE_ACTION_INPUT,
    CONTRACT_FIELDS,
    NOISE_INPUT,
    OBS_INPUT,
    ONNX_FILE,
    ONNX_METADATA_KEY,
    PREVIOUS_ACTION_INPUT,
    RESIDUAL_ACTION_OUTPUT,
    RESIDUAL_OBS_INPUT,
    PolicyMetadata,
    read_metadata,
    sha256_bytes,
)

# ObsLayout carries the flattening rule shared with training; it lives beside the torch policies.
from robot_rl.policies.features import feature_from_json
from robot_rl.policies.layout import ObsLayout


class PolicyIntegrityError(ValueError):
    """policy.onnx is not the file its metadata.json describes."""


class OnnxPolicy:
    """An exported policy (``policies/NAME``) on onnxruntime.

    Args:
        policy_dir: Folder written by ``robot-rl export``.
        threads: onnxruntime intra-op threads (1 gives the steadiest latency on a busy CPU).
        inter_op_threads: onnxruntime inter-op threads (the graph runs sequentially).
        providers: onnxruntime execution providers, in order of preference.

    Raises:
        PolicyFormatError: no or malformed metadata.json.
        PolicyIntegrityError: policy.onnx is missing, its sha256 differs from the card's, or its
            inputs, outputs or embedded card disagree with metadata.json.
    """

    def __init__(
        self,
        policy_dir: str | os.PathLike[str],
        threads: int = 1,
        inter_op_threads: int = 1,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        if threads < 1 or inter_op_threads < 1:
            raise ValueError(f"`threads` and `inter_op_threads` must be >= 1. Got {threads}, {inter_op_threads}.")
        self.policy_dir = Path(policy_dir)
        self.metadata: PolicyMetadata = read_metadata(self.policy_dir)
        path = self.policy_dir / self.metadata.onnx.file
        if not path.is_file():
            raise PolicyIntegrityError(f"{self.policy_dir} has no {self.metadata.onnx.file}; re-export the policy.")
        model_bytes = path.read_bytes()
        digest = sha256_bytes(model_bytes)
        if digest != self.metadata.onnx_sha256:
            raise PolicyIntegrityError(
                f"{path} has sha256 {digest}, but {self.policy_dir / 'metadata.json'} was written for "
                f"{self.metadata.onnx_sha256}: the file was modified or replaced. Re-export the policy "
                "(`robot-rl export --run RUN_DIR --out POLICY_DIR --overwrite`)."
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_bytes, options, providers=list(providers))
        self._check_session()

        meta = self.metadata
        self.layout = ObsLayout(
            tuple(meta.observation.keys),
            tuple(tuple(s) for s in meta.observation.shapes),
            meta.observation.relative_goal,
            tuple(feature_from_json(f, f"{self.policy_dir}: observation.features") for f in meta.observation.features),
        )
        self.kind = meta.policy_type
        self.n_obs_steps = meta.n_obs_steps
        self.horizon = meta.horizon
        self.n_action_steps = meta.n_action_steps
        self.action_dim = meta.action_dim
        self.obs_dim = meta.observation.dim
        self.inference_steps = meta.inference_steps
        """DDIM steps unrolled in the graph (fixed at export); None for BC."""
        self.onnx_sha256 = digest
        inputs = {spec.name for spec in meta.onnx.inputs}
        self._diffusion = NOISE_INPUT in inputs
        self.has_residual = RESIDUAL_OBS_INPUT in inputs
        """The graph holds a per-step residual: call :meth:`correct` on every executed action."""
        self.residual_feedback = PREVIOUS_ACTION_INPUT in inputs
        """The residual also reads the previous step's corrected action: pass ``previous_action`` to :meth:`correct`."""
        if self.has_residual:
            # The other path's inputs on each call: an empty batch (module docstring of robot_rl.rl.residual_export).
            self._no_chunk = {OBS_INPUT: np.zeros((0, self.n_obs_steps, self.obs_dim), np.float32)}
            if self._diffusion:
                self._no_chunk[NOISE_INPUT] = np.zeros((0, self.horizon, self.action_dim), np.float32)
            self._no_rows = {
                RESIDUAL_OBS_INPUT: np.zeros((0, self.obs_dim), np.float32),
                BASE_ACTION_INPUT: np.zeros((0, self.action_dim), np.float32),
            }
            if self.residual_feedback:
                self._no_rows[PREVIOUS_ACTION_INPUT] = np.zeros((0, self.action_dim), np.float32)

    def _check_session(self) -> None:
        """The graph's inputs and outputs and its embedded card agree with metadata.json."""
        meta = self.metadata
        actual = {t.name: list(t.shape) for t in [*self.session.get_inputs(), *self.session.get_outputs()]}
        expected = {spec.name: spec.shape for spec in [*meta.onnx.inputs, *meta.onnx.outputs]}
        if set(actual) != set(expected) or any(
            len(actual[n]) != len(s) or any(isinstance(d, int) and d != a for d, a in zip(s, actual[n], strict=True))
            for n, s in expected.items()
        ):
            raise PolicyIntegrityError(
                f"{self.policy_dir}: the graph's tensors {actual} differ from metadata.json's {expected}."
            )
        embedded = self.session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        if embedded is None:
            raise PolicyIntegrityError(f"{self.policy_dir}/{ONNX_FILE} has no embedded '{ONNX_METADATA_KEY}' card.")
        # Both through the schema, so fields added later with a default (observation.features) compare equal.
        inner = PolicyMetadata.from_json(json.loads(embedded), f"{self.policy_dir}/{ONNX_FILE}").to_json()
        outer = meta.to_json()
        differ = [k for k in CONTRACT_FIELDS if inner.get(k) != outer.get(k)]
        if differ:
            raise PolicyIntegrityError(
                f"{self.policy_dir}: metadata.json disagrees with the card embedded in {ONNX_FILE} on {differ}; "
                "metadata.json was edited by hand. Re-export the policy."
            )

    def predict(self, obs_history: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Action chunk for raw flattened observations (n_obs_steps, obs_dim). Shape: (horizon, A).

        For a diffusion policy the initial noise is drawn from ``rng`` (standard normal, shape
        (1, horizon, A), cast to float32), exactly as the torch policy draws it, so the same
        seed gives the same chunks.
        """
        noise = None
        if self._diffusion:
            rng = rng or np.random.default_rng()
            noise = rng.standard_normal((1, self.horizon, self.action_dim))
        return self.predict_batch(np.asarray(obs_history)[None], noise)[0]

    def predict_batch(
        self, obs_histories: np.ndarray, noise: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """Action chunks for a batch of histories in one call.

        Args:
            obs_histories: Raw flattened observation histories. Shape: (B, n_obs_steps, obs_dim).
            noise: Diffusion: initial noise. Shape: (B, horizon, A); default: drawn from ``rng``.
                BC: ignored (the chunk is deterministic).
            rng: Source of the default noise (default: a fresh unseeded generator).

        Returns:
            Raw action chunks, float64. Shape: (B, horizon, A).
        """
        obs = np.asarray(obs_histories, dtype=np.float32)
        if obs.ndim != 3 or obs.shape[1:] != (self.n_obs_steps, self.obs_dim):
            raise ValueError(
                f"`obs_histories` must have shape (batch, n_obs_steps={self.n_obs_steps}, obs_dim={self.obs_dim}). "
                f"Got {obs.shape}."
            )
        feeds = {OBS_INPUT: obs}
        if self._diffusion:
            shape = (obs.shape[0], self.horizon, self.action_dim)
            if noise is None:
                noise = (rng or np.random.default_rng()).standard_normal(shape)
            noise = np.asarray(noise, dtype=np.float32)
            if noise.shape != shape:
                raise ValueError(f"`noise` must have shape (batch, horizon, action_dim) = {shape}. Got {noise.shape}.")
            feeds[NOISE_INPUT] = noise
        if self.has_residual:
            feeds.update(self._no_rows)
        (actions,) = self.session.run([ACTIONS_OUTPUT], feeds)
        return actions.astype(np.float64)

    def correct(
        self, observation: np.ndarray, base_action: np.ndarray, previous_action: np.ndarray | None = None
    ) -> np.ndarray:
        """The residual's action for one step: the base action plus its bounded correction. Shape: (A,).

        Args:
            observation: The raw flattened current observation. Shape: (obs_dim,).
            base_action: The base's action for this step. Shape: (action_dim,).
            previous_action: With :attr:`residual_feedback` (required then): the previous step's result of
                this method in the episode, before any safety filter; at an episode's first step,
                ``base_action``. Shape: (action_dim,). Without feedback: ignored.

        Raises:
            ValueError: the policy has no residual, or its residual has feedback and ``previous_action``
                is None.
        """
        if not self.has_residual:
            raise ValueError(f"{self.policy_dir} has no residual in its graph; its actions need no correction.")
        feeds = {
            RESIDUAL_OBS_INPUT: np.asarray(observation, dtype=np.float32).reshape(1, self.obs_dim),
            BASE_ACTION_INPUT: np.asarray(base_action, dtype=np.float32).reshape(1, self.action_dim),
            **self._no_chunk,
        }
        if self.residual_feedback:
            if previous_action is None:
                raise ValueError(
                    f"{self.policy_dir}'s residual was trained with feedback: `correct` needs `previous_action` (the "
                    "previous step's corrected action; at an episode's first step, the base action). Got None."
                )
            feeds[PREVIOUS_ACTION_INPUT] = np.asarray(previous_action, dtype=np.float32).reshape(1, self.action_dim)
        (action,) = self.session.run([RESIDUAL_ACTION_OUTPUT], feeds)
        return action[0].astype(np.float64)

    def __repr__(self) -> str:
        steps = f", {self.inference_steps} DDIM steps" if self.inference_steps is not None else ""
        residual = f" + {self.metadata.residual['algo']} residual" if self.metadata.residual else ""
        residual += " with feedback" if self.residual_feedback else ""
        return f"OnnxPolicy({str(self.policy_dir)!r}: {self.kind}{residual} for {self.metadata.env_id}{steps})"
