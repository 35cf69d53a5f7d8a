"""How every node runs and reads its settings: spin until Ctrl-C, parameters, the clock.

:func:`spin_node` is the one way every node's ``main`` runs (spin until Ctrl-C, then close and shut down cleanly);
:func:`node_param` reads a parameter declared on first read; :func:`node_seconds` is the node's clock in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


def node_param(node: Node, name: str, default: Any) -> Any:
    """Parameter ``name`` of ``node``, declared with ``default`` the first time it is read."""
    if not node.has_parameter(name):
        node.declare_parameter(name, default)
    return node.get_parameter(name).value


def node_seconds(node: Node) -> float:
    """``node``'s clock [s] (simulated time under ``use_sim_time``)."""
    return node.get_clock().now().nanoseconds * 1e-9


def spin_node(node: Node, start: Callable[[], None] | None = None, close: Callable[[], None] | None = None) -> None:
    """Spin ``node`` on a single-threaded executor until Ctrl-C or shutdown.

    Args:
        node: The node (created after ``rclpy.init``).
        start: Called once before spinning (e.g. lifecycle autostart).
        close: Called after the executor stops, before the node is destroyed (release devices, files).
    """
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if start is not None:
            start()
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        executor.shutdown()
        if close is not None:
            close()
        node.destroy_node()
        rclpy.try_shutdown()
