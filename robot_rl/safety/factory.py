"""Build a robot's safety chain and constraint check from its hardware file.

The env registry says which robot an env simulates and its file (:attr:`robot_rl.envs.registry.EnvSpec.robot`):
``robot_rl/Panda*`` envs read ``hardware/fr3.yaml`` (the arm the Panda sim stands in for, an FR3), and
``robot_rl/Quadrotor*`` envs read ``hardware/crazyflie.yaml``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from robot_rl.safety.base import ConstraintCheck
from robot_rl.safety.chain import SafetyChain
from robot_rl.safety.chunk import ChunkValidator
from robot_rl.safety.config import (
    HARDWARE_DIR,
    ConfigReader,
    FrankaSafetyConfig,
    franka_config_from_mapping,
    load_yaml,
    read_chunk,
    read_watchdog,
)
from robot_rl.safety.watchdog import EStop, Watchdog


def franka_safety(config: FrankaSafetyConfig) -> tuple[SafetyChain, ConstraintCheck]:
    """The Franka chain (CBF-QP filter, hold fallback, watchdog, e-stop, chunk validator) and its check."""
    from robot_rl.safety.franka import FrankaConstraintCheck, FrankaFallback, FrankaSafetyFilter

    check = FrankaConstraintCheck(config)
    chain = SafetyChain(
        [FrankaSafetyFilter(config)],
        FrankaFallback(config),
        watchdog=Watchdog(config.watchdog.deadline_s, config.command.ctrl_dt, config.watchdog.late_factor),
        estop=EStop(),
        check=check,
        chunk_validator=ChunkValidator.from_config(config.chunk),
    )
    return chain, check


def quadrotor_safety(safety: Any, source: str) -> tuple[SafetyChain, ConstraintCheck]:
    """The quadrotor chain from a ``safety:`` mapping (filters, fallback, check from :mod:`robot_rl.safety.quadrotor`).

    The optional ``chunk`` and ``watchdog`` sections are validated here (the quadrotor loader leaves them to
    the chain); the watchdog's control period is ``vehicle.ctrl_dt_s``.
    """
    from robot_rl.safety.quadrotor import load_quadrotor_safety

    filters, fallback, check = load_quadrotor_safety(safety, source)
    reader = ConfigReader(safety, source, "safety")
    watchdog = validator = None
    if reader.has("watchdog"):
        timing = read_watchdog(reader)
        watchdog = Watchdog(timing.deadline_s, float(safety["vehicle"]["ctrl_dt_s"]), timing.late_factor)
    if reader.has("chunk"):
        validator = ChunkValidator.from_config(read_chunk(reader, 4))
    chain = SafetyChain(filters, fallback, watchdog=watchdog, estop=EStop(), check=check, chunk_validator=validator)
    return chain, check


def env_id_of(env_id_or_env: Any) -> str:
    """The env id of an id string or a ``gym.make``'d env (its ``spec.id``)."""
    if isinstance(env_id_or_env, str):
        return env_id_or_env
    spec = getattr(env_id_or_env, "spec", None) or getattr(getattr(env_id_or_env, "unwrapped", None), "spec", None)
    if spec is None or not getattr(spec, "id", None):
        raise TypeError(f"expected an env id or a gym.make'd env with a spec. Got {type(env_id_or_env).__name__}.")
    return str(spec.id)


def hardware_file(env_id: str, hardware_dir: str | os.PathLike[str] | None = None) -> Path:
    """The hardware file of the robot ``env_id`` simulates (the env registry's: fr3.yaml, crazyflie.yaml).

    Raises:
        ValueError: an env id of no robot_rl robot, listing the valid ids (with a "did you mean").
    """
    from robot_rl.envs.registry import ENV_SPECS

    if env_id in ENV_SPECS:
        return Path(hardware_dir if hardware_dir is not None else HARDWARE_DIR) / ENV_SPECS[env_id].robot.hardware_file
    valid = sorted(ENV_SPECS)
    close = difflib.get_close_matches(env_id, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"no safety configuration for env {env_id!r}.{hint} Valid env ids: {valid}.")


def safety_for_env(
    env_id_or_env: Any, hardware_dir: str | os.PathLike[str] | None = None
) -> tuple[SafetyChain, ConstraintCheck]:
    """The safety chain and constraint check for an env.

    Args:
        env_id_or_env: An env id (``robot_rl/PandaPush-v0``) or a ``gym.make``'d env.
        hardware_dir: Folder of the hardware files (default: the repository's ``hardware/``).

    Returns:
        ``(chain, check)``: ``chain`` is a Controller filter (``chain.monitor`` its chunk monitor); ``check``
        judges measured states (``check.violations(env.unwrapped.robot_state())``).

    Raises:
        ValueError: an unknown env id (the valid ones listed), a missing hardware file, or an invalid one (the
            message names the file and the key).
    """
    from robot_rl.envs.registry import ENV_SPECS, ROBOTS

    env_id = env_id_of(env_id_or_env)
    path = hardware_file(env_id, hardware_dir)
    if not path.is_file():
        raise ValueError(
            f"{path}: no such hardware file (for {env_id!r}). Pass `hardware_dir=` the folder holding "
            f"{sorted(r.hardware_file for r in ROBOTS.values())} (the repository's hardware/)."
        )
    document, source = load_yaml(path)
    if ENV_SPECS[env_id].robot.family == "franka":
        return franka_safety(franka_config_from_mapping(document, source))
    if "safety" not in document:
        raise ValueError(f"{source}: safety is missing (the top-level section the quadrotor loader reads).")
    return quadrotor_safety(document["safety"], source)
