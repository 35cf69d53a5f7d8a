"""Seed an off-policy residual agent's replay buffer with demonstrations (ResFiT-style).

Each demo is walked with the frozen base (reset with the demo's seed, so a diffusion base draws
the noise it would draw in the env): at every step the base proposes an action for the recorded
observation, and the demo's action becomes the correction that would have produced it,
``clip((demo - base) / scale, -1, 1)`` (0 on dimensions whose scale is 0). The transitions carry the
demo's sparse rewards. With ``feedback`` the features at step ``t`` also hold the previous applied
action, the demo's action at ``t - 1`` (the base action at ``t = 0``, as :class:`ResidualEnv` after a
reset), and the next features the demo's action at ``t``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from robot_rl.data.dataset import DemoDataset
from robot_rl.policies.layout import ChunkedActor
from robot_rl.policies.residual import resolve_scale


def demo_transitions(
    path: str | os.PathLike[str], base: Any, scale: Any, feedback: bool = False
) -> list[tuple[np.ndarray, ...]]:
    """(obs, next_obs, correction, reward, done) for every step of every successful demo in ``path``.

    The observations are the residual's features (:class:`robot_rl.rl.wrappers.ResidualEnv`): flattened
    observation and base action, and with ``feedback`` the previous applied action.
    """
    scale = resolve_scale(scale, base.action_dim)
    reach = np.where(scale > 0, scale, 1.0)
    out = []
    with DemoDataset(path) as ds:
        for demo in ds:
            if not demo.success:
                continue
            actor = ChunkedActor(base)
            actor.reset(demo.seed)
            steps = demo.num_samples
            obs_t = [{k: v[t] for k, v in demo.obs.items()} for t in range(steps)]
            last = {k: v[-1] for k, v in demo.next_obs.items()}
            features = []
            base_actions = []
            for t, obs in enumerate([*obs_t, last]):
                action = np.asarray(actor(obs), dtype=np.float64)
                base_actions.append(action)
                parts = [actor.current, action]  # the base's flattening, with its features when it has any
                if t < steps:
                    actor.sent(demo.actions[t])
                if feedback:
                    parts.append(action if t == 0 else np.asarray(demo.actions[t - 1], dtype=np.float64))
                features.append(np.concatenate(parts).astype(np.float32))
            for t in range(steps):
                correction = np.where(scale > 0, np.clip((demo.actions[t] - base_actions[t]) / reach, -1.0, 1.0), 0.0)
                correction = correction.astype(np.float32)
                out.append((features[t], features[t + 1], correction, float(demo.rewards[t]), bool(demo.dones[t])))
    return out


def add_demos_to_buffer(model: Any, path: str | os.PathLike[str], base: Any, scale: Any, feedback: bool = False) -> int:
    """Add the demos' transitions to a stable-baselines3 off-policy model's replay buffer; returns the count.

    ``feedback``: the model observes the previous applied action too (:func:`demo_transitions`).
    """
    transitions = demo_transitions(path, base, scale, feedback)
    for obs, next_obs, action, reward, done in transitions:
        model.replay_buffer.add(
            obs[None],
            next_obs[None],
            action[None],
            np.array([reward]),
            np.array([done]),
            [{"TimeLimit.truncated": False}],
        )
    return len(transitions)
