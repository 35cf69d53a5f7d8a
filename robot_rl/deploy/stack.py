"""The deployed stack, assembled in one place: policy -> Controller with its safety chain, monitors and fallback.

``robot-rl eval --safety on --monitor on``, the ROS 2 policy node (``robot_rl_ros.control.build_runtime``) and the
failure monitor's rollouts (:func:`robot_rl.monitor.rollouts.run_monitored`) all call :func:`build_stack`, so what
is evaluated and calibrated is what runs on the robot:

- filters: the robot's :class:`~robot_rl.safety.chain.SafetyChain` (``hardware/<robot>.yaml``), when safety is on;
- monitors: the chain's chunk validator (``chain.monitor``) whenever the chain is on, then the failure monitor,
  then any extra (plain) monitors;
- fallback: ``chain.fallback.command`` (what the Controller sends for a non-finite policy output).

The caller keeps its own :class:`~robot_rl.runtime.ControllerConfig` (evaluation steps on simulated time, the
node on the wall clock) and its own reporting of what it could not load.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from robot_rl.runtime import Controller, ControllerConfig, ControlStatus
    from robot_rl.safety.base import ConstraintCheck
    from robot_rl.safety.chain import SafetyChain


@dataclasses.dataclass
class Stack:
    """A policy's deployed stack and the handles its users count reports with."""

    controller: Controller
    """The :class:`~robot_rl.runtime.Controller` (filters: the chain; monitors: chunk validator, failure monitor)."""
    chain: SafetyChain | None
    """The safety chain (the Controller's only filter), or None with safety off."""
    check: ConstraintCheck | None
    """The chain's constraint check (judges measured states), or None with safety off."""
    monitor: Any | None
    """The failure monitor (:class:`~robot_rl.monitor.FailureMonitor`), or None when off."""

    def monitor_alarm(self, status: ControlStatus) -> bool:
        """Whether the failure monitor (not the chunk validator) raised the alarm at the step of ``status``."""
        if self.monitor is None or not status.alarm:
            return False
        return getattr(self.monitor, "name", type(self.monitor).__name__) in status.alarms


def safety_chain(
    env_id_or_env: Any, hardware: str | os.PathLike[str] | None = None
) -> tuple[SafetyChain, ConstraintCheck]:
    """The robot's safety chain (with its chunk validator) and constraint check for an env id or a made env.

    Raises:
        ValueError: an unknown env id, or a missing or invalid hardware file (the message names the file and key).
    """
    from robot_rl.safety.factory import safety_for_env

    return safety_for_env(env_id_or_env, hardware)


def load_monitor(policy_dir: str | os.PathLike[str], policy: Any, detector: str = "fiper") -> tuple[Any | None, str]:
    """The policy folder's calibrated failure monitor with ``detector``'s thresholds, or None and why it is off.

    Evaluation (``--monitor on``) and the ROS policy node (``monitor:=true``) both load it here and run without a
    monitor, saying why, when the folder has no calibration, one made for another policy.onnx, or calibration
    files that cannot be read.

    Returns:
        ``(monitor, "on")`` (``"on (DETECTOR)"`` for a detector other than ``fiper``), or ``(None, "off: WHY")``.
    """
    from robot_rl.monitor.calibration_file import MonitorNotCalibratedError
    from robot_rl.monitor.failure_monitor import FailureMonitor

    try:
        monitor = FailureMonitor.load(policy_dir, policy=policy, detector=detector)
    except MonitorNotCalibratedError as error:
        return None, f"off: {error}"
    except (OSError, ValueError, KeyError) as error:  # a half-written or damaged calibration
        return None, f"off: the calibration in {policy_dir} cannot be read ({type(error).__name__}: {error})"
    return monitor, "on" if detector == "fiper" else f"on ({detector})"


def build_stack(
    policy: Any,
    env_id_or_env: Any,
    *,
    safety: bool | SafetyChain,
    monitor: bool | Any | None,
    hardware: str | os.PathLike[str] | None = None,
    controller_config: ControllerConfig | None = None,
    monitor_detector: str = "fiper",
    extra_monitors: Sequence[Any] = (),
) -> Stack:
    """The Controller a policy is deployed with: its chain, chunk validator, failure monitor and fallback.

    Args:
        policy: The :class:`~robot_rl.runtime.OnnxPolicy` (``policy.policy_dir`` holds the monitor's files).
        env_id_or_env: The env the policy acts in (``robot_rl/PandaPush-v0`` or a ``gym.make``'d env): selects
            ``hardware/fr3.yaml`` or ``hardware/crazyflie.yaml``.
        safety: True builds the robot's chain from its hardware file; a :class:`SafetyChain` is used as given
            (evaluation shares it with its own bookkeeping); False runs without a chain.
        monitor: True loads the policy folder's calibrated failure monitor (errors propagate); a monitor object
            is used as given; False or None runs without one.
        hardware: Folder of the hardware files (default: the repository's ``hardware/``).
        controller_config: The Controller's settings (default: ``ControllerConfig()``).
        monitor_detector: The calibrated detector a loaded monitor alarms with (``monitor=True`` only).
        extra_monitors: Further monitors (the Monitor protocol; e.g. the plain monitors the failure monitor's
            rollouts trace), after the failure monitor, in order.

    Returns:
        The :class:`Stack`. With a chain the chunk validator is the Controller's first monitor, always; the
        failure monitor follows, then ``extra_monitors``.

    Raises:
        ValueError: the chain cannot be built (unknown env, missing or invalid hardware file), or it has no
            chunk validator (the hardware file lacks its ``chunk`` section).
    """
    from robot_rl.runtime import Controller, ControllerConfig

    chain = check = None
    if safety is True:
        chain, check = safety_chain(env_id_or_env, hardware)
    elif safety is not False and safety is not None:
        chain, check = safety, safety.check
    if chain is not None and chain.chunk_validator is None:
        raise ValueError(
            "the safety chain has no chunk validator; add a `chunk:` section to the robot's hardware file "
            "(hardware/fr3.yaml and hardware/crazyflie.yaml have one)."
        )
    failure_monitor: Any | None = None
    if monitor is True:
        from robot_rl.monitor.failure_monitor import FailureMonitor

        failure_monitor = FailureMonitor.load(policy.policy_dir, policy=policy, detector=monitor_detector)
    elif monitor is not False and monitor is not None:
        failure_monitor = monitor
    monitors: list[Any] = []
    if chain is not None:
        monitors.append(chain.monitor)
    if failure_monitor is not None:
        monitors.append(failure_monitor)
    monitors.extend(extra_monitors)
    controller = Controller(
        policy,
        controller_config if controller_config is not None else ControllerConfig(),
        filters=[chain] if chain is not None else [],
        monitors=monitors,
        fallback=chain.fallback.command if chain is not None else None,
    )
    return Stack(controller, chain, check, failure_monitor)
