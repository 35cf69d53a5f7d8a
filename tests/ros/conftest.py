"""ROS 2 test fixtures: a unique ROS_DOMAIN_ID per session, private rclpy contexts, spinning helpers.

Every module here starts with ``pytest.importorskip("rclpy")``: without the ``ros`` extra the tests
are skipped with that reason. Nodes talk over real Fast DDS (loopback, shared memory), isolated
from other runs on the machine by the domain id ros-domain-coordinator hands out.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The ROS package runs from the source tree when it is not pip-installed (`pip install -e ros2_ws/src/robot_rl_ros`).
if importlib.util.find_spec("robot_rl_ros") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "ros2_ws" / "src" / "robot_rl_ros"))

PUSH_POLICY = "policies/panda_push_diffusion"
QUAD_POLICY = "policies/quadrotor_waypoint_diffusion"
EVAL_SEED = 1_000_000
"""First seed of the shipped policies' eval reports."""


@pytest.fixture(scope="session", autouse=True)
def ros_domain() -> Iterator[int | None]:
    """A ROS_DOMAIN_ID no other process holds, and discovery kept on this host."""
    try:
        from domain_coordinator import domain_id
    except ImportError:
        yield None
        return
    with domain_id() as domain:
        saved = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE")}
        os.environ["ROS_DOMAIN_ID"] = str(domain)
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        yield domain
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def ros_context() -> Iterator[Any]:
    """A private, initialised rclpy Context (shut down after the test)."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


@pytest.fixture
def executor(ros_context: Any) -> Iterator[Any]:
    """A SingleThreadedExecutor on the private context; its nodes are destroyed after the test."""
    from rclpy.executors import SingleThreadedExecutor

    ex = SingleThreadedExecutor(context=ros_context)
    yield ex
    for node in list(ex.get_nodes()):
        close = getattr(node, "close", None)
        if close is not None:
            close()
        ex.remove_node(node)
        node.destroy_node()
    ex.shutdown()


def spin_until(executor: Any, done: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    """Spin until ``done()`` is true or ``timeout`` seconds pass; returns ``done()``."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=step)
    return done()


def spin_for(executor: Any, seconds: float) -> None:
    """Spin for ``seconds``."""
    spin_until(executor, lambda: False, seconds)


@pytest.fixture
def safety_chain_available() -> None:
    """Skip when robot_rl.safety cannot build the FR3 chain (another package's work in progress)."""
    from robot_rl_ros.control import load_safety

    try:
        load_safety("robot_rl/PandaPush-v0")
    except RuntimeError as err:
        pytest.skip(f"safety chain unavailable: {err}")
