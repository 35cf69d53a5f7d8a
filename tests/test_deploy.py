"""The deployed stack is assembled once (robot_rl.deploy): eval and the ROS node run the same one.

For every shipped policy in ``policies/``, the stack ``robot-rl eval --safety on --monitor on`` builds and the
stack the ROS 2 policy node builds on configure (``robot_rl_ros.control.build_runtime``, ROS-free) are captured
at :func:`robot_rl.deploy.build_stack` and compared: the same chain (filter types and order), the chunk
validator present and first among the monitors, the same failure monitor, the same fallback.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import robot_rl.deploy as deploy
from robot_rl.export.metadata import is_policy_dir

REPO = Path(__file__).resolve().parents[1]
POLICIES = sorted(str(p.relative_to(REPO)) for p in (REPO / "policies").iterdir() if is_policy_dir(p))

# The ROS package runs from the source tree when it is not pip-installed; control.py needs no rclpy.
if importlib.util.find_spec("robot_rl_ros") is None:
    sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "robot_rl_ros"))


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[deploy.Stack]:
    """Every Stack build_stack returns from now on (the callers import it lazily, so the patch reaches them)."""
    built: list[deploy.Stack] = []
    real = deploy.build_stack

    def spy(*args: Any, **kwargs: Any) -> deploy.Stack:
        stack = real(*args, **kwargs)
        built.append(stack)
        return stack

    monkeypatch.setattr(deploy, "build_stack", spy)
    return built


def _monitor_name(monitor: Any) -> str:
    owner = getattr(monitor, "__self__", None)
    if owner is not None:  # a bound method: the chain's chunk validator
        return f"{type(owner).__name__}.{monitor.__func__.__name__}"
    return f"{type(monitor).__name__}:{getattr(monitor, 'name', '')}"


def _describe(stack: deploy.Stack) -> dict[str, Any]:
    """What must match between eval and the node: types and order, the validator's bounds, the fallback."""
    chain, controller = stack.chain, stack.controller
    assert chain is not None
    validator = chain.chunk_validator
    assert validator is not None, "the chain runs without its chunk validator"
    assert controller.monitors[0].__self__ is chain, "the chunk validator is not the Controller's first monitor"
    assert controller.fallback.__self__ is chain.fallback
    return {
        "filters": [type(f).__name__ for f in controller.filters],
        "chain": [type(f).__name__ for f in chain.filters],
        "monitors": [_monitor_name(m) for m in controller.monitors],
        "validator": {k: np.asarray(v).tolist() for k, v in sorted(vars(validator).items())},
        "fallback": f"{type(chain.fallback).__name__}.{controller.fallback.__func__.__name__}",
        "watchdog": type(chain.watchdog).__name__,
        "monitor_thresholds": None if stack.monitor is None else dict(stack.monitor.thresholds),
    }


def _eval_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> deploy.Stack:
    from robot_rl.envs.registry import make
    from robot_rl.evaluation.evaluate import EvalConfig, _make_policy, policy_env_id
    from robot_rl.evaluation.guard import Guard

    built = _capture(monkeypatch)
    config = EvalConfig(policy=policy_dir, safety="on", monitor="on")
    env_id = policy_env_id(config)
    env = make(env_id)
    try:
        _make_policy(config, env_id, env, Guard(env_id, env, safety=True))
    finally:
        env.close()
    assert len(built) == 1
    return built[0]


def _node_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> deploy.Stack:
    from robot_rl_ros.control import RuntimeConfig, build_runtime

    built = _capture(monkeypatch)
    runtime = build_runtime(RuntimeConfig(policy=policy_dir))
    assert len(built) == 1
    stack = built[0]
    assert runtime.controller is stack.controller and runtime.chain is stack.chain
    return stack


def test_every_shipped_policy_is_found() -> None:
    assert len(POLICIES) >= 2, f"no shipped policies under {REPO / 'policies'}"


@pytest.mark.parametrize("policy_dir", POLICIES)
def test_eval_and_the_node_build_the_same_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated = _describe(_eval_stack(policy_dir, monkeypatch))
    deployed = _describe(_node_stack(policy_dir, monkeypatch))
    assert evaluated == deployed
    assert evaluated["filters"] == ["SafetyChain"]
    assert evaluated["monitors"][0] == "SafetyChain.monitor"


class TestBuildStack:
    def test_the_chunk_validator_is_on_wherever_the_chain_is(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        stack = deploy.build_stack(policy, "robot_rl/PandaPush-v0", safety=True, monitor=False)
        assert stack.chain is not None and stack.chain.chunk_validator is not None
        assert stack.controller.filters == [stack.chain]
        assert stack.controller.monitors == [stack.chain.monitor]
        assert stack.monitor is None

    def test_without_safety_there_is_no_chain_and_no_fallback(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        stack = deploy.build_stack(policy, "robot_rl/PandaPush-v0", safety=False, monitor=False)
        assert stack.chain is None and stack.check is None
        assert stack.controller.filters == [] and stack.controller.monitors == []
        assert stack.controller.fallback is None

    def test_an_unknown_env_is_refused_with_the_valid_ids(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        with pytest.raises(ValueError, match="Valid env ids"):
            deploy.build_stack(policy, "robot_rl/PandaPushh-v0", safety=True, monitor=False)
