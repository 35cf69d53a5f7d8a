"""MuJoCo environments: the Franka Panda tasks (and, later, the quadrotor tasks)."""

from robot_rl.envs.randomization import DomainRandomization
from robot_rl.envs.registry import ENV_SPECS, check_env_id, make, register_all

__all__ = ["ENV_SPECS", "DomainRandomization", "check_env_id", "make", "register_all"]
