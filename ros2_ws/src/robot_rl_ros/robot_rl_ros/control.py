"""The runtime a node runs, ROS-free: policy folder -> Controller with the safety chain and the failure monitor.

:func:`build_runtime` is what the policy node calls on configure, and what tests call without ROS:
it loads ``policies/NAME`` through :class:`robot_rl.runtime.OnnxPolicy` (whose sha256 check refuses a
policy.onnx that is not the one the card was written for), builds the robot's safety chain from
``hardware/<robot>.yaml`` and the calibrated failure monitor when the folder has one. Missing pieces
degrade with a note (``safety: off (...)``, ``monitor: off: ...``) that the node logs and puts in
its diagnostics, except that ``require_safety`` turns a missing safety chain into an error.

:func:`check_control_period` is the configure-time check of the card's ``ctrl_dt`` (the node's timer
period): a number within the robot's plausible range and equal to the period the env was trained at.
:class:`StampCheck` judges each state message by its own header stamp against the node's clock (stale,
from the future, unset) before it is cached.
:mod:`robot_rl_ros.realtime` times the loop and makes it real-time.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np

from robot_rl.envs.registry import ROBOTS

Robot = Literal["fr3", "crazyflie"]
ROBOT_OF_FAMILY: dict[str, Robot] = {family: spec.robot for family, spec in ROBOTS.items()}  # type: ignore[misc]
"""Policy action family (``metadata.action.family``) -> the robot adapter that runs it (the env registry's
:data:`robot_rl.envs.registry.ROBOTS`)."""


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """What the policy node runs (its parameters, validated here)."""

    policy: str
    """Policy folder (``policies/NAME``), or a bare NAME looked up in the repository's ``policies/``."""
    blend: Literal["none", "ensemble", "crossfade"] = "none"
    """Chunk transitions of the Controller (see ``robot-rl eval --blend``)."""
    n_action_steps: int = 0
    """Actions executed per chunk (0: the policy's)."""
    prefetch: bool = False
    """Compute the next chunk in a background thread (steadier step latency; changes the chunks' timing)."""
    prefetch_lead: int = 0
    """With ``prefetch``: 0 starts each chunk on the first complete state after the tick before it is due (between
    ticks, from the newest state: in lockstep simulation the chunks of no prefetch); N >= 1 starts it in the tick N
    steps before it is due, from that tick's observation (``robot-rl eval --prefetch-lead N`` measures its cost)."""
    threads: int = 1
    """onnxruntime intra-op threads."""
    safety: bool = True
    """Run the robot's safety chain (hardware/<robot>.yaml) as the Controller's filter, with its chunk validator
    judging each new chunk (a refused chunk gets the fallback), as ``robot-rl eval --safety on`` does."""
    require_safety: bool = True
    """Refuse to run when the safety chain cannot be built (instead of running without it)."""
    hardware_dir: str = ""
    """Folder of the hardware files (empty: the repository's ``hardware/``)."""
    monitor: bool = True
    """Run the calibrated failure monitor when the policy folder has one."""
    monitor_detector: str = "fiper"
    """The calibrated detector that raises the alarm (``fiper``, ``fiper_marginal``, ``rnd``, ``entropy``,
    ``progress``, ``fiper_progress`` or ``fiper_progress_split``; see robot_rl.monitor.conformal.DETECTORS)."""

    def __post_init__(self) -> None:
        if not self.policy:
            raise ValueError("`policy` must name a policy folder (policies/NAME). Got ''.")
        if self.blend not in ("none", "ensemble", "crossfade"):
            raise ValueError(f"`blend` must be one of ['none', 'ensemble', 'crossfade']. Got {self.blend!r}.")
        if self.n_action_steps < 0:
            raise ValueError(f"`n_action_steps` must be >= 0 (0: the policy's). Got {self.n_action_steps}.")
        if self.threads < 1:
            raise ValueError(f"`threads` must be >= 1. Got {self.threads}.")
        if self.prefetch_lead < 0:
            raise ValueError(f"`prefetch_lead` must be >= 0. Got {self.prefetch_lead}.")


HARDWARE_FILES: dict[Robot, str] = {"fr3": "fr3.yaml", "crazyflie": "crazyflie.yaml"}
"""Robot -> its file in the repository's ``hardware/``."""
INFORMATIONAL_KEYS = ("frame", "control_rate_hz")
"""``ros:`` keys that document the interface rather than set a node parameter."""


def hardware_ros_parameters(robot: Robot, hardware_dir: str = "") -> dict[str, Any]:
    """The ``ros:`` section of ``hardware/<robot>.yaml`` as node parameters (launch files pass them on).

    Raises:
        FileNotFoundError: no hardware file.
        ValueError: an unknown robot, or no ``ros:`` mapping in the file.
    """
    import yaml

    if robot not in HARDWARE_FILES:
        raise ValueError(f"`robot` must be one of {sorted(HARDWARE_FILES)}. Got {robot!r}.")
    import robot_rl

    folder = Path(hardware_dir) if hardware_dir else Path(robot_rl.__file__).resolve().parents[1] / "hardware"
    path = folder / HARDWARE_FILES[robot]
    section = (yaml.safe_load(path.read_text()) or {}).get("ros")
    if not isinstance(section, dict):
        raise ValueError(f"{path} has no `ros:` mapping (the topics and rates of the ROS 2 nodes).")
    return {key: value for key, value in section.items() if key not in INFORMATIONAL_KEYS}


def resolve_policy_dir(name: str) -> Path:
    """The policy folder ``name`` names: a path, or a folder of the repository's ``policies/``.

    Raises:
        FileNotFoundError: neither exists (the message lists the shipped policies).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    import robot_rl

    shipped = Path(robot_rl.__file__).resolve().parents[1] / "policies"
    if (shipped / name).is_dir():
        return shipped / name
    available = sorted(p.name for p in shipped.iterdir() if (p / "metadata.json").is_file()) if shipped.is_dir() else []
    raise FileNotFoundError(f"no policy folder {name!r} (nor {shipped / name}). Shipped policies: {available}.")


CONTROL_PERIOD_RANGE_S: dict[Robot, tuple[float, float]] = {
    # franka_ros2's controller_manager reads commands at 1 kHz: a shorter period sends commands it never reads.
    # Over 1 s between joint targets the arm is no longer under closed-loop control worth the name.
    "fr3": (0.001, 1.0),
    # The firmware's stabilizer loop runs at 1 kHz (the fastest a setpoint can matter), and commander.c drops a
    # legacy setpoint older than 500 ms (COMMANDER_WDT_TIMEOUT_STABILIZE: the vehicle levels out between them).
    "crazyflie": (0.001, 0.5),
}
"""Robot -> plausible control periods [s] of a policy driving it (both ends included)."""


def check_control_period(robot: Robot, ctrl_dt: Any, trained_dt: float, env_id: str, where: str = "") -> float:
    """The card's control period, checked: a finite number in the robot's range, the period ``env_id`` was trained at.

    The node's timer runs at this period, and the robot-side arithmetic (the FR3's IK step, the quadrotor's
    observer) assumes the env's ``ctrl_dt``: a card edited to another period would run the policy at a rate it
    was never trained for.

    Args:
        robot: The robot the policy drives (:data:`CONTROL_PERIOD_RANGE_S`).
        ctrl_dt: ``metadata.json``'s ``ctrl_dt`` as read (any JSON value).
        trained_dt: ``ctrl_dt`` of the env the card names (``robot_rl.envs.registry.make(env_id).unwrapped``) [s].
        env_id: The card's env id (for the message).
        where: The card's path (for the message).

    Returns:
        The period [s].

    Raises:
        ValueError: not a number, not finite, outside the robot's range or not the trained period (one line:
            what was expected, what arrived, what is valid).
    """
    low, high = CONTROL_PERIOD_RANGE_S[robot]
    expected = (
        f"{where + ': ' if where else ''}`ctrl_dt` must be {trained_dt:g} s, the control period {env_id} was trained "
        f"at (valid for the {robot}: a number of seconds in [{low:g}, {high:g}] equal to the env's ctrl_dt)."
    )
    if isinstance(ctrl_dt, bool) or not isinstance(ctrl_dt, int | float):
        raise ValueError(f"{expected} Got {ctrl_dt!r} ({type(ctrl_dt).__name__}).")
    period = float(ctrl_dt)
    if not (math.isfinite(period) and low <= period <= high):
        raise ValueError(f"{expected} Got {ctrl_dt!r}, outside [{low:g}, {high:g}] s.")
    if not math.isclose(period, trained_dt, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError(f"{expected} Got {ctrl_dt!r} ({1.0 / period:g} Hz instead of {1.0 / trained_dt:g} Hz).")
    return period


CLOCK_SKEW_TOLERANCE_S = 0.01
"""Default ``clock_skew_tolerance`` [s]: how far ahead of the node's clock a state's stamp may be.

On one machine (the sim bridge, or crazyswarm2's server beside the node) publisher and node read the same
clock and a stamp can never be ahead of receipt: 0 would do. Across machines (franka_ros2 on the robot's
real-time PC, the policy on another) the two clocks agree only as well as chrony or PTP keeps them: PTP within
microseconds, chrony on a quiet LAN well under 1 ms once converged, a few ms after a restart or a step. 10 ms
covers that with margin and is still a quarter of the FR3's period and a fifth of the Crazyflie's 50 ms
watchdog deadline, while an unsynchronized clock (seconds off) or a fabricated stamp is refused.
"""
STALE_PERIODS = 2.5
"""Without a watchdog (no safety chain) a state older than this many control periods is stale (the hardware
files' deadlines are 2.5 periods)."""
STAMP_REFUSALS = ("stale", "future", "zero")
"""Kinds of states :class:`StampCheck` refuses."""


class StampCheck:
    """Refuses state messages by their own header stamp, compared with the node's clock, before they are cached.

    A refused state never reaches the Controller; the cache keeps the previous one, whose stamp keeps ageing,
    so the safety chain's watchdog turns a stream of refused states into its fallback exactly as it would a
    silent topic.

    Args:
        max_age_s: A state stamped more than this before ``now`` is stale [s] (the node passes the watchdog's
            deadline of ``hardware/<robot>.yaml`` unless ``max_state_age`` is set).
        skew_s: A state stamped more than this after ``now`` is from the future [s] (clock skew allowance; see
            :data:`CLOCK_SKEW_TOLERANCE_S`).

    Raises:
        ValueError: ``max_age_s`` not finite and > 0, or ``skew_s`` not finite and >= 0.
    """

    def __init__(self, max_age_s: float, skew_s: float = CLOCK_SKEW_TOLERANCE_S) -> None:
        if not (math.isfinite(max_age_s) and max_age_s > 0):
            raise ValueError(f"`max_state_age` must be finite and > 0 [s]. Got {max_age_s}.")
        if not (math.isfinite(skew_s) and skew_s >= 0):
            raise ValueError(f"`clock_skew_tolerance` must be finite and >= 0 [s]. Got {skew_s}.")
        self.max_age_s = float(max_age_s)
        self.skew_s = float(skew_s)
        self.counts: dict[str, int] = dict.fromkeys(STAMP_REFUSALS, 0)
        """States refused per kind (``stale``, ``future``, ``zero``)."""

    def refuse(self, stamp: float, now: float) -> str:
        """Why a state stamped ``stamp`` [s] and received at ``now`` [s] is refused ('' when it is not); counted.

        A zero stamp (``header.stamp`` never set) carries no time at all; a stamp more than ``max_age_s`` old is
        a state the watchdog would already call stale (replayed, queued or delayed); one more than ``skew_s``
        ahead comes from a clock the node's does not agree with.
        """
        age = now - stamp
        if stamp == 0.0:
            kind, why = "zero", "header.stamp is zero (unset): the publisher must stamp its states"
        elif not math.isfinite(age):
            kind, why = "stale", f"stamp {stamp!r} is not a time"
        elif age > self.max_age_s:
            kind, why = "stale", f"stamped {age:.3f} s before receipt (max_state_age {self.max_age_s:g} s)"
        elif -age > self.skew_s:
            why = f"stamped {-age:.3f} s after receipt (clock_skew_tolerance {self.skew_s:g} s: are the clocks "
            kind, why = "future", why + "of the robot's computer and this one synchronized (chrony/PTP)?)"
        else:
            return ""
        self.counts[kind] += 1
        return f"{kind} state: {why}"


@dataclasses.dataclass
class Runtime:
    """The pieces one policy node runs."""

    policy: Any
    """The :class:`~robot_rl.runtime.OnnxPolicy`."""
    controller: Any
    """The :class:`~robot_rl.runtime.Controller` (filters: the safety chain; monitors: chunk check, failure monitor)."""
    chain: Any | None
    """The :class:`~robot_rl.safety.chain.SafetyChain`, or None when off."""
    monitor: Any | None
    """The failure monitor, or None when off."""
    env_id: str
    robot: Robot
    notes: list[str] = dataclasses.field(default_factory=list)
    """One line per degraded piece (``safety: off (...)``, ``monitor: off: ...``)."""
    env: Any = None
    """The env the card names (``env_id`` with its ``env_kwargs``): constants and kinematics for the adapter."""
    stack: Any = None
    """The :class:`robot_rl.deploy.Stack` the controller belongs to (``stack.monitor_alarm(status)``)."""

    @property
    def ctrl_dt(self) -> float:
        """Control period [s]."""
        return float(self.controller.ctrl_dt)


def load_safety(env_id: str, hardware_dir: str = "") -> tuple[Any, Any]:
    """``robot_rl.safety.factory.safety_for_env``, imported here so that a missing module is one clear error.

    Raises:
        RuntimeError: the safety package or the hardware file is missing or invalid.
    """
    try:
        from robot_rl.safety.factory import safety_for_env
    except ImportError as err:
        raise RuntimeError(f"robot_rl.safety.factory is not available ({err})") from None
    try:
        return safety_for_env(env_id, hardware_dir or None)
    except (ValueError, OSError) as err:
        raise RuntimeError(str(err)) from None


def build_runtime(config: RuntimeConfig) -> Runtime:
    """Load the policy and build its Controller, safety chain and monitor.

    Raises:
        FileNotFoundError: no such policy folder.
        ValueError: not an exported policy folder, a card :func:`robot_rl.deploy.open_policy` refuses, or a
            policy for a robot the nodes do not drive.
        robot_rl.runtime.onnx_policy.PolicyIntegrityError: policy.onnx fails the sha256 check.
        RuntimeError: ``require_safety`` and the safety chain cannot be built.
    """
    from robot_rl.deploy import build_stack, load_monitor, open_policy
    from robot_rl.runtime import ControllerConfig

    policy_dir = resolve_policy_dir(config.policy)
    # The control period first, from the card as written: the node's timer would run at it, and the robot's and
    # the env's view (what it was trained at, what the robot allows) says more than a generic format error.
    env = _check_card_period(policy_dir)
    # Opened as robot-rl eval opens it (the card validated, the env and robot family from the env registry).
    policy = open_policy(policy_dir, ("exported",), what="policy").load_policy(threads=config.threads)
    meta = policy.metadata
    family = meta.action.family
    if family not in ROBOT_OF_FAMILY:
        raise ValueError(
            f"{policy_dir} acts for the {family!r} family; the ROS nodes drive {sorted(ROBOT_OF_FAMILY)} policies."
        )
    robot = ROBOT_OF_FAMILY[family]
    if env is None:
        env = _make_env(meta.env_id, meta.env_kwargs, policy_dir)
    check_control_period(
        robot, meta.ctrl_dt, float(env.unwrapped.ctrl_dt), meta.env_id, str(policy_dir / "metadata.json")
    )
    notes: list[str] = []
    chain = None
    if config.safety:
        try:
            chain, _ = load_safety(meta.env_id, config.hardware_dir)
        except RuntimeError as err:
            if config.require_safety:
                raise RuntimeError(
                    f"safety chain for {meta.env_id} unavailable: {err}. Fix it, or set require_safety:=false to run "
                    "without one (simulation only)."
                ) from None
            notes.append(f"safety: off ({err})")
    else:
        notes.append("safety: off (parameter safety:=false)")
    monitor = None
    if config.monitor:
        monitor, state = load_monitor(policy_dir, policy, config.monitor_detector)
        if monitor is None:
            notes.append(f"monitor: {state}")
    else:
        notes.append("monitor: off (parameter monitor:=false)")
    # The stack robot-rl eval runs (robot_rl.deploy): the chain as filter, its chunk validator and the failure
    # monitor as monitors, the chain's fallback.
    stack = build_stack(
        policy,
        meta.env_id,
        safety=chain if chain is not None else False,
        monitor=monitor,
        controller_config=ControllerConfig(
            blend=config.blend,
            n_action_steps=config.n_action_steps or None,
            prefetch=config.prefetch,
            lead=config.prefetch_lead,
        ),
    )
    controller = stack.controller
    # The first inference of a session is several times slower (allocations): pay it here, not in the first step.
    policy.predict(np.zeros((policy.n_obs_steps, policy.obs_dim)), np.random.default_rng(0))
    return Runtime(policy, controller, chain, monitor, meta.env_id, robot, notes, env, stack)


def _check_card_period(policy_dir: Path) -> Any:
    """:func:`check_control_period` on ``metadata.json`` as written, before the policy is loaded.

    Returns:
        The env the card names (built to read its ``ctrl_dt``), or None when the card does not say which robot
        and env it is for (loading the policy then reports what is wrong with it).

    Raises:
        ValueError: the period is refused, or the card's env cannot be built.
    """
    path = policy_dir / "metadata.json"
    try:
        card = json.loads(path.read_text())
        env_id, family, ctrl_dt = card["env_id"], card["action"]["family"], card["ctrl_dt"]
        env_kwargs = card.get("env_kwargs") or {}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(env_id, str) or family not in ROBOT_OF_FAMILY:
        return None
    env = _make_env(env_id, env_kwargs, policy_dir)
    check_control_period(ROBOT_OF_FAMILY[family], ctrl_dt, float(env.unwrapped.ctrl_dt), env_id, str(path))
    return env


def _make_env(env_id: str, env_kwargs: Any, policy_dir: Path) -> Any:
    """The env a card names, built from the registry (its ``ctrl_dt`` is what the policy was trained at).

    Raises:
        ValueError: an unknown id, or kwargs the env refuses.
    """
    from robot_rl.envs.registry import make

    if not isinstance(env_kwargs, dict):
        raise ValueError(f"{policy_dir / 'metadata.json'}: `env_kwargs` must be an object. Got {env_kwargs!r}.")
    try:
        return make(env_id, **env_kwargs)
    except TypeError as err:
        raise ValueError(f"{policy_dir / 'metadata.json'}: env {env_id!r} refuses its `env_kwargs`: {err}") from None
