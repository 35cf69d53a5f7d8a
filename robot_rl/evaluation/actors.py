"""What an evaluation runs for ``--policy``: the expert, random actions, an opened run, or the deployed stack.

An exported policy runs inside the stack the robot runs (:func:`robot_rl.deploy.build_stack`); a training run or
a residual run through its own actor (:meth:`robot_rl.deploy.OpenedPolicy.actor`), the guard filtering after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from robot_rl.envs.registry import scripted_expert

if TYPE_CHECKING:
    from robot_rl.deploy import OpenedPolicy
    from robot_rl.evaluation.config import EvalConfig
    from robot_rl.evaluation.guard import Guard

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]
Reset = Callable[[int], None]


def make_actor(
    config: EvalConfig, opened: OpenedPolicy | None, env_id: str, env: Any, guard: Guard
) -> tuple[Policy, Reset]:
    """The evaluated ``obs -> action`` function and its per-episode ``reset(seed)``.

    Args:
        config: The evaluation's options.
        opened: ``config.policy`` opened (:func:`robot_rl.deploy.open_policy`); None for ``expert`` and ``random``.
        env_id: The evaluated env.
        env: The evaluated env, made.
        guard: The evaluation's safety chain and monitor bookkeeping (an exported policy's stack runs the chain).
    """
    if config.policy == "random":
        space = env.action_space
        rng = np.random.default_rng(0)

        def random_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            return rng.uniform(space.low, space.high)

        return random_policy, lambda seed: None
    if opened is None:
        return expert_actor(env_id, env)
    if opened.kind == "exported":
        return exported_actor(config, opened, env_id, env, guard)  # onnxruntime: no torch
    import torch

    torch.set_num_threads(config.threads)
    return opened.actor(env, n_action_steps=config.n_action_steps, inference_steps=config.inference_steps)


def expert_actor(env_id: str, env: Any) -> tuple[Policy, Reset]:
    """The scripted expert of ``env_id``'s task (the env registry's)."""
    expert = scripted_expert(env_id, env)
    return expert, lambda seed: expert.reset()


def exported_actor(
    config: EvalConfig, opened: OpenedPolicy, env_id: str, env: Any, guard: Guard
) -> tuple[Policy, Reset]:
    """An exported policy folder on onnxruntime, run by the runtime Controller (the hardware code path).

    The controller's clock is the simulated time ``k * ctrl_dt`` at step ``k`` of the episode. With the
    safety chain on, the controller sees the observation merged with the measured robot state (as the
    ROS 2 node gives it) and the chain is its filter; with the monitor on, the monitor is its monitor.
    """
    from robot_rl.deploy import build_stack, load_monitor
    from robot_rl.policies.layout import check_layout
    from robot_rl.runtime import ControllerConfig

    policy = opened.load_policy()
    check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
    opened.set_inference_steps(policy, config.inference_steps)
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    monitor = None
    if config.monitor == "on":
        monitor, guard.monitor_state = load_monitor(config.policy, policy, config.monitor_detector)
        guard.monitor = monitor
    chain = guard.chain
    # The stack the ROS 2 node runs (robot_rl.deploy): the chain as filter, its chunk validator and the failure
    # monitor as monitors, the chain's fallback.
    stack = build_stack(
        policy,
        env_id,
        safety=chain if chain is not None else False,
        monitor=monitor,
        controller_config=ControllerConfig(
            blend=config.blend,
            n_action_steps=config.n_action_steps,
            ctrl_dt=ctrl_dt,
            prefetch=config.prefetch_lead > 0,
            lead=max(config.prefetch_lead, 1),
            prefetch_sync=True,
        ),
    )
    controller = stack.controller
    clock = {"step": 0}

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        output = controller.step(guard.observation(obs) if chain is not None else obs, clock["step"] * ctrl_dt)
        clock["step"] += 1
        guard.last_output = output
        status = output.status
        if chain is not None:
            guard.count_report(status.filter_reports[-1] if status.filter_reports else None)
        if stack.monitor_alarm(status):  # the failure monitor's alarm (a refused chunk is counted by the chain)
            guard.alarm()
        return output.action

    def reset(seed: int) -> None:
        clock["step"] = 0
        controller.reset(seed)
        if stack.monitor is not None:
            stack.monitor.reset()

    guard.in_controller = True

    return act, reset
