"""The deploy layer: what a path holds (:func:`open_policy`) and the stack it runs in (:func:`build_stack`).

Evaluation, the ROS 2 policy node, the failure monitor's rollouts, residual training (its base) and the
residual exporter open policies and assemble the deployed stack here, so each is done in one place:

- :mod:`robot_rl.deploy.source`: :func:`open_policy` -> :class:`OpenedPolicy` (exported folder, training run or
  residual run, validated once);
- :mod:`robot_rl.deploy.stack`: :func:`build_stack` -> :class:`Stack` (Controller with the safety chain, its chunk
  validator, the failure monitor and the fallback).
"""

from robot_rl.deploy.source import KINDS, OpenedPolicy, PolicyOpenError, open_policy, policy_kind
from robot_rl.deploy.stack import Stack, build_stack, load_monitor, safety_chain

__all__ = [
    "KINDS",
    "OpenedPolicy",
    "PolicyOpenError",
    "Stack",
    "build_stack",
    "load_monitor",
    "open_policy",
    "policy_kind",
    "safety_chain",
]
