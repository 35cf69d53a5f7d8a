"""robot_rl: sim-to-real robot learning, from MuJoCo tasks to ONNX policies on real robots.

Importing the package registers the environments with Gymnasium (``robot_rl/PandaPush-v0``...).
"""

from robot_rl.envs.registry import make, register_all

__version__ = "0.1.0"

register_all()

__all__ = ["__version__", "make"]
