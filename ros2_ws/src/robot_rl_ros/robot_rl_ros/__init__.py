"""ROS 2 nodes over robot_rl's ROS-free runtime (see ros2_ws/README.md).

Modules: ``fr3`` and ``crazyflie`` (the robots' arithmetic, ROS-free), ``control`` (the runtime a
node runs, ROS-free), ``conversions`` (every message conversion), ``adapters`` (a robot's topics),
and the nodes ``policy_node``, ``sim_bridge``, ``teleop_node``, ``recorder``.
"""

__version__ = "0.1.0"
