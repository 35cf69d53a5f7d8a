"""The one way every node's ``main`` runs: spin until Ctrl-C, then close and shut down cleanly."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


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
