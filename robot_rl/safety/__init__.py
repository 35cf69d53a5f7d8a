"""Safety between a policy and a robot: CBF-QP filters, chunk validation, watchdog, e-stop, one chain.

Start from :func:`safety_for_env`, which reads the robot's ``hardware/*.yaml``::

    chain, check = safety_for_env("robot_rl/PandaPush-v0")
    controller = Controller(policy, filters=[chain], monitors=[chain.monitor])
    command, report = chain.filter(action, {**obs, **env.unwrapped.robot_state()}, now)

The robot-specific modules (:mod:`robot_rl.safety.franka` with MuJoCo and DAQP,
:mod:`robot_rl.safety.quadrotor`) load on first use of their names.
"""

from __future__ import annotations

import importlib
from typing import Any

from robot_rl.safety.base import ConstraintCheck, Fallback, FilterReport, RobotState, SafetyFilter
from robot_rl.safety.chain import ChainReport, SafetyChain
from robot_rl.safety.chunk import ChunkIssue, ChunkReport, ChunkValidator
from robot_rl.safety.config import FrankaSafetyConfig, load_franka_config
from robot_rl.safety.factory import safety_for_env
from robot_rl.safety.watchdog import EStop, Watchdog, WatchdogReport

_LAZY = {
    "FrankaSafetyFilter": "robot_rl.safety.franka",
    "FrankaConstraintCheck": "robot_rl.safety.franka",
    "FrankaFallback": "robot_rl.safety.franka",
    "FrankaKinematics": "robot_rl.safety.franka",
    "QuadrotorSafetyFilter": "robot_rl.safety.quadrotor",
    "QuadrotorConstraintCheck": "robot_rl.safety.quadrotor",
    "QuadrotorFallback": "robot_rl.safety.quadrotor",
    "load_quadrotor_safety": "robot_rl.safety.quadrotor",
}

__all__ = [
    "ChainReport",
    "ChunkIssue",
    "ChunkReport",
    "ChunkValidator",
    "ConstraintCheck",
    "EStop",
    "Fallback",
    "FilterReport",
    "FrankaSafetyConfig",
    "RobotState",
    "SafetyChain",
    "SafetyFilter",
    "Watchdog",
    "WatchdogReport",
    "load_franka_config",
    "safety_for_env",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'robot_rl.safety' has no attribute {name!r}")
