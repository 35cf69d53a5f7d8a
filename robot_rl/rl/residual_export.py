"""The residual of a residual-RL run folded into the exported graph, beside its frozen base.

A per-step residual (``sac``, ``ppo``: ResFiT / ResiP style) corrects each executed action from the
observation *at that step*, while the base's chunk is computed once per chunk. One graph carries
both paths and the two calls feed an empty batch to the path they do not need (onnxruntime runs
every node of a graph on each call, but a node on a batch of 0 costs next to nothing):

- chunk call: ``obs_history (B, n_obs, D)``, ``noise (B, H, A)`` -> ``actions (B, H, A)`` (the base);
  ``residual_obs`` and ``base_action`` with batch 0;
- step call: ``residual_obs (R, D)`` (the raw flattened current observation) and ``base_action (R, A)``
  (the raw base action for the step) -> ``residual_action (R, A)`` =
  ``clip(base_action + scale * clip(actor(residual_obs, base_action), -1, 1), low, high)``, the
  arithmetic of :func:`robot_rl.policies.residual.apply_correction`; ``obs_history`` and ``noise`` with batch 0.
  A run trained with ``--feedback`` takes a third residual input, ``previous_action (R, A)`` (the previous
  step's ``residual_action``; the step's own base action at an episode's first step), and its actor reads
  ``[residual_obs, base_action, previous_action]``; without feedback the graph has no such input.

A noise-space run (``dsrl``) needs no second path: the agent maps the flattened history to the
initial noise inside the graph, so the graph is ``obs_history -> actions`` and deterministic.

One file keeps base and residual from being deployed mismatched, and one sha256 covers both.

The exporter (:func:`robot_rl.export.onnx_export.export_run`) knows graphs, not agents: it asks the
``load_residual`` it is given for the run's :class:`ResidualRun`, whose :meth:`ResidualRun.graph` folds
the agent in. :func:`export_training_run` hands it :func:`load_residual_run`; ``robot-rl export`` calls it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robot_rl.deploy import open_policy
from robot_rl.export.metadata import (
    ACTIONS_OUTPUT,
    BASE_ACTION_INPUT,
    OBS_INPUT,
    PREVIOUS_ACTION_INPUT,
    RESIDUAL_ACTION_OUTPUT,
    RESIDUAL_OBS_INPUT,
    PolicyMetadata,
)
from robot_rl.export.onnx_export import export_run
from robot_rl.policies import checkpoint as ckpt
from robot_rl.policies.residual import resolve_scale


@dataclasses.dataclass
class ResidualRun:
    """A residual run ready to fold into a base graph."""

    run_dir: Path
    algo: str
    base_dir: Path
    """The base's training run (torch weights)."""
    agent: Any
    """The agent (:class:`robot_rl.rl.agent_io.Agent`: stable-baselines3's SAC or PPO policy network)."""
    scale: Any
    """One number or one per action dimension (the run's ``--scale``)."""
    noise_bound: float
    provenance: dict[str, Any]
    feedback: bool = False
    """The agent also observes the previous applied action (the run's ``--feedback``)."""

    def graph(
        self, policy: nn.Module, base_graph: nn.Module, base_names: tuple[str, ...], low: Any, high: Any
    ) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...]]:
        """The exported module for this run on ``policy``, its input names and output names."""
        return residual_graph(self, policy, base_graph, base_names, low, high)


RESTORED_BASE = "base_restored"
"""Folder in a residual run for its base's training run rebuilt from the exported base (robot_rl.export.restore)."""


def load_residual_run(run_dir: Path) -> ResidualRun:
    """The residual run's agent (rebuilt from safetensors, nothing unpickled) and its base's training run.

    The run is opened by :func:`robot_rl.deploy.open_policy` (its config, agent description and base
    validated). A base given as an exported policy folder is used through its training run when that is at
    hand, else through a run rebuilt from the folder (:func:`robot_rl.export.restore.restore_base_run`).

    Raises:
        RunError: the run is incomplete.
        PolicyOpenError: not a residual run, or its options or base refused.
        RestoreError: the exported base cannot be rebuilt exactly.
        AgentFileError: the agent's files are damaged or of the old pickled format (with how to convert).
    """
    opened = open_policy(run_dir, ("residual",), what="--run")
    base, config = opened.base, opened.config
    assert base is not None and config is not None
    base_dir = base.path
    if base.kind == "exported":
        assert base.card is not None
        trained = Path(base.card.base.run_dir)
        if (trained / ckpt.CONFIG).is_file() and (trained / ckpt.WEIGHTS).is_file():
            base_dir = trained
        else:  # the base's training run is elsewhere: rebuild it from the exported folder (checked for parity)
            from robot_rl.export.restore import restore_base_run

            base_dir = restore_base_run(base_dir, run_dir / RESTORED_BASE, card=base.card)
    agent = opened.load_agent()
    options = opened.residual_options()
    feedback = options["feedback"]  # runs from before the option have none: False
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    provenance = {
        "algo": config["algo"],
        "run_dir": str(run_dir),
        "steps": options["steps"],
        "scale": options["scale"] if config["algo"] != "dsrl" else None,
        "noise_bound": options["noise_bound"] if config["algo"] == "dsrl" else None,
        "feedback": feedback,
        "net": options["net"],
        "agent_sha256": agent.sha256,
        "last_train_eval": metrics[-1] if metrics else None,
    }
    return ResidualRun(
        run_dir, config["algo"], base_dir, agent, options["scale"], options["noise_bound"], provenance, feedback
    )


class _SquashedActor(nn.Module):
    """SAC's deterministic action, ``tanh(mu(latent_pi(x)))``, as a plain module."""

    def __init__(self, agent: Any) -> None:
        super().__init__()
        actor = agent.actor
        self.latent, self.mu = actor.latent_pi, actor.mu

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Action in [-1, 1]."""
        return torch.tanh(self.mu(self.latent(features)))


class _GaussianMean(nn.Module):
    """PPO's deterministic action (the mean), clipped to [-1, 1] as ``predict`` does."""

    def __init__(self, agent: Any) -> None:
        super().__init__()
        policy = agent.policy
        self.policy_net, self.action_net = policy.mlp_extractor.policy_net, policy.action_net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Action in [-1, 1]."""
        return self.action_net(self.policy_net(features)).clamp(-1.0, 1.0)


def _actor(run: ResidualRun) -> nn.Module:
    return (_GaussianMean(run.agent) if run.algo == "ppo" else _SquashedActor(run.agent)).float().eval()


class _ResidualGraph(nn.Module):
    """Base chunk path and per-step residual path in one graph (module docstring)."""

    def __init__(
        self, base_graph: nn.Module, actor: nn.Module, scale: Any, low: Any, high: Any, feedback: bool = False
    ) -> None:
        super().__init__()
        self.base, self.actor, self.feedback = base_graph, actor, feedback
        per_dim = resolve_scale(scale, int(np.prod(np.shape(low))))
        self.register_buffer("scale", torch.as_tensor(per_dim, dtype=torch.float32))
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32))

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(*base inputs, residual_obs, base_action[, previous_action]) -> (actions, residual_action)``."""
        residual_inputs = 3 if self.feedback else 2
        base_inputs, (residual_obs, base_action, *previous) = inputs[:-residual_inputs], inputs[-residual_inputs:]
        actions = self.base(*base_inputs)
        correction = self.actor(torch.cat([residual_obs, base_action, *previous], dim=-1)).clamp(-1.0, 1.0)
        corrected = torch.minimum(torch.maximum(base_action + self.scale * correction, self.low), self.high)
        return actions, corrected


class _NoiseGraph(nn.Module):
    """DSRL: ``obs_history -> actions``, the agent choosing the sampler's initial noise."""

    def __init__(self, policy: nn.Module, actor: nn.Module, bound: float, steps: int) -> None:
        super().__init__()
        self.policy, self.actor, self.bound, self.steps = policy, actor, float(bound), steps

    def forward(self, obs_history: torch.Tensor) -> torch.Tensor:
        """Raw action chunk sampled from the agent's noise."""
        batch = obs_history.shape[0]
        noise = self.bound * self.actor(obs_history.reshape(batch, -1))
        noise = noise.reshape(batch, self.policy.horizon, self.policy.action_dim)
        return self.policy.sample(obs_history, noise, self.steps)


def residual_graph(
    run: ResidualRun, policy: nn.Module, base_graph: nn.Module, base_names: tuple[str, ...], low: Any, high: Any
) -> tuple[nn.Module, tuple[str, ...], tuple[str, ...]]:
    """The exported module for ``run`` on ``policy``, its input names and output names."""
    actor = _actor(run)
    if run.algo == "dsrl":
        graph = _NoiseGraph(policy, actor, run.noise_bound, base_graph.steps).eval()
        return graph, (OBS_INPUT,), (ACTIONS_OUTPUT,)
    graph = _ResidualGraph(base_graph, actor, run.scale, low, high, run.feedback).eval()
    names = (*base_names, RESIDUAL_OBS_INPUT, BASE_ACTION_INPUT)
    if run.feedback:
        names = (*names, PREVIOUS_ACTION_INPUT)
    return graph, names, (ACTIONS_OUTPUT, RESIDUAL_ACTION_OUTPUT)


def export_training_run(
    run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *args: Any, **options: Any
) -> PolicyMetadata:
    """Export any training run, bc|diffusion or residual, into ``out_dir`` (what ``robot-rl export`` runs).

    :func:`robot_rl.export.onnx_export.export_run` with :func:`load_residual_run`: a residual run's agent is
    folded into the graph beside its frozen base. Arguments (``inference_steps``, ``opset``, then keywords:
    ``overwrite``, ``name``, ``eval_results``, ``check_batch``), return value and errors as ``export_run``'s, and
    those of :func:`load_residual_run` for a residual run.
    """
    return export_run(run_dir, out_dir, *args, load_residual=load_residual_run, **options)
