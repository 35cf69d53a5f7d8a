"""A policy run from its card alone: metadata.json, policy.onnx, numpy and onnxruntime; no robot_rl import.

What a runtime in another language does (docs/runtime.md), written in Python so that a test can check it against
robot_rl's own runtime bit for bit: every rule it follows is read from the card (``calling``, ``observation``,
``onnx``), not from robot_rl's code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort


class CardPolicy:
    """One robot's policy from ``policies/NAME``: :meth:`reset` per episode, :meth:`step` per control period."""

    def __init__(self, policy_dir: str | Path) -> None:
        policy_dir = Path(policy_dir)
        card = json.loads((policy_dir / "metadata.json").read_text())
        self.card = card
        model = (policy_dir / card["onnx"]["file"]).read_bytes()
        if hashlib.sha256(model).hexdigest() != card["onnx_sha256"]:
            raise ValueError(f"{policy_dir}: policy.onnx is not the file metadata.json describes")
        options = ort.SessionOptions()  # calling.reference_runtime
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.inputs = {spec["name"]: spec for spec in card["onnx"]["inputs"]}
        self.n, self.d = card["n_obs_steps"], card["observation"]["dim"]
        self.h, self.k = card["horizon"], card["n_action_steps"]
        self.a = card["action"]["shape"][0]
        self.features = [_feature(f) for f in card["observation"].get("features", [])]

    def reset(self, seed: int) -> None:
        """calling.sequence step 1 (and calling.noise: one generator per episode, seeded with the episode's seed)."""
        self.t, self.s = 0, 0
        self.history: list[np.ndarray] = []
        self.chunk: np.ndarray | None = None
        self.previous: np.ndarray | None = None
        self.last_command: np.ndarray | None = None
        self.rng = np.random.default_rng(seed)
        self.drawn: list[np.ndarray] = []
        for feature in self.features:
            feature.reset()

    def flatten(self, observation: Mapping[str, Any]) -> np.ndarray:
        """observation.segments in order, float64; features appended (updated from the last command sent)."""
        parts = []
        for seg in self.card["observation"]["segments"]:
            source = seg["source"]
            if source == "desired_goal - achieved_goal":
                value = np.asarray(observation["desired_goal"], np.float64) - np.asarray(observation["achieved_goal"])
            elif source.startswith("feature "):
                continue
            else:
                value = np.asarray(observation[source], np.float64).reshape(-1)[seg["start"] : seg["stop"]]
            parts.append(value)
        for feature in self.features:
            parts.append(feature.update(np.asarray(observation["observation"], np.float64), self.last_command))
        return np.concatenate(parts)

    def noise(self, batch: int) -> np.ndarray:
        """calling.noise: N(0, I), drawn as robot_rl draws it."""
        noise = self.rng.standard_normal((batch, self.h, self.a)).astype(np.float32)
        self.drawn.append(noise)
        return noise

    def step(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The action of this control period (before clipping and safety filters), float64."""
        flat = self.flatten(observation)
        self.history = [flat] * self.n if not self.history else [*self.history[1:], flat]
        residual = "residual_obs" in self.inputs
        empty_rows = {
            name: np.zeros((0, self.a if name != "residual_obs" else self.d), np.float32)
            for name in ("residual_obs", "base_action", "previous_action")
            if name in self.inputs
        }
        if self.chunk is None or self.t >= self.s + self.k:
            feeds = {"obs_history": np.stack(self.history)[None].astype(np.float32)}
            if "noise" in self.inputs:
                feeds["noise"] = self.noise(1)
            (actions,) = self.session.run(["actions"], {**feeds, **empty_rows})
            self.chunk, self.s = actions[0].astype(np.float64), self.t
        action = self.chunk[self.t - self.s]
        if residual:
            feeds = {
                "obs_history": np.zeros((0, self.n, self.d), np.float32),
                "residual_obs": flat[None].astype(np.float32),
                "base_action": action[None].astype(np.float32),
            }
            if "noise" in self.inputs:
                feeds["noise"] = np.zeros((0, self.h, self.a), np.float32)
            if "previous_action" in self.inputs:
                previous = action if self.previous is None else self.previous
                feeds["previous_action"] = previous[None].astype(np.float32)
            (corrected,) = self.session.run(["residual_action"], feeds)
            action = corrected[0].astype(np.float64)
            self.previous = action
        self.last_command = action  # sent unfiltered here: the command the features read next period
        self.t += 1
        return action


class _Disturbance:
    """observation.features ``quadrotor_disturbance``: its ``formula`` with the card's parameters."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = spec

    def reset(self) -> None:
        self.v: np.ndarray | None = None
        self.body_z: np.ndarray | None = None
        self.d = np.zeros(3)

    def update(self, obs: np.ndarray, command: np.ndarray | None) -> np.ndarray:
        spec = self.spec
        v, body_z = obs[3:6].copy(), obs[6:15].reshape(3, 3)[:, 2].copy()
        if self.v is not None and command is not None:
            thrust = (min(max(float(command[0]), -1.0), 1.0) + 1.0) / 2.0 * spec["max_thrust"]
            expected = self.body_z * (thrust / spec["mass"])
            expected[2] -= 9.81
            measured = (v - self.v) / spec["ctrl_dt"]
            self.d = np.clip(self.d + spec["gain"] * (measured - expected - self.d), -spec["limit"], spec["limit"])
        self.v, self.body_z = v, body_z
        return self.d.copy()


def _feature(spec: Mapping[str, Any]) -> _Disturbance:
    if spec["name"] != "quadrotor_disturbance":
        raise ValueError(f"this runner computes the feature quadrotor_disturbance only; the card needs {spec['name']}")
    return _Disturbance(spec)


def run_stream(policy_dir: str | Path, episodes: Sequence[Mapping[str, Any]]) -> list[np.ndarray]:
    """Actions for recorded episodes (``seed`` and ``observations``, a list of observation dicts each)."""
    policy = CardPolicy(policy_dir)
    out = []
    for episode in episodes:
        policy.reset(episode["seed"])
        out.append(np.stack([policy.step(obs) for obs in episode["observations"]]))
    return out
