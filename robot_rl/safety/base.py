"""The shapes every safety filter shares: the filter protocol, its report and the violation check.

A :class:`SafetyFilter` maps a nominal command and the measured robot state to the command to send,
and says what it changed in a :class:`FilterReport`. Filters are minimally invasive: when the
nominal command satisfies every constraint the output is the nominal command, bit for bit, and
``report.changed`` is False. :class:`~robot_rl.safety.chain.SafetyChain` runs several in order and
plugs into :class:`robot_rl.runtime.Controller` as one of its ``filters``.

The robot state is a mapping of named arrays (units in the env's ``robot_state()`` docstring):

- Franka: ``tcp_pos`` (3,) [m], ``tcp_vel`` (3,) [m/s], ``joint_pos`` (7,) [rad],
  ``joint_vel`` (7,) [rad/s], ``gripper_width`` (1,) [m];
- quadrotor: ``position`` (3,) [m], ``velocity`` (3,) [m/s], ``rotation`` (9,) body->world
  row-major, ``body_rates`` (3,) [rad/s].

In simulation these come from ``env.unwrapped.robot_state()``; on hardware from the robot's state
topics. The controller passes the observation mapping merged with them, so one mapping carries both.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

import numpy as np

RobotState = Mapping[str, np.ndarray]
"""Named state arrays (see the module docstring)."""


@dataclasses.dataclass
class FilterReport:
    """What one filter did to one command."""

    name: str
    """The filter's name (``workspace_cbf``, ``joint_limits``, ``rate_limit``, ``geofence_cbf``, ...)."""
    changed: bool = False
    """The output differs from the input."""
    active: list[str] = dataclasses.field(default_factory=list)
    """Constraints that were binding (for example ``z_low``, ``joint4_high``, ``tilt``)."""
    fallback: str | None = None
    """Why the filter replaced the command with its fallback (hold, hover, land); None otherwise."""
    detail: dict[str, float] = dataclasses.field(default_factory=dict)
    """Numbers worth logging (largest change, QP solve time [s], ...)."""


class SafetyFilter(Protocol):
    """One link of the safety chain."""

    name: str

    def filter(self, command: np.ndarray, state: RobotState) -> tuple[np.ndarray, FilterReport]:
        """The command to send instead of ``command`` (same shape) and what changed.

        Must return ``command`` unchanged (equal values) when it is safe, and never NaN.
        """
        ...

    def reset(self) -> None:
        """Forget per-episode memory (previous command for rate limits, ...)."""
        ...


class ConstraintCheck(Protocol):
    """Judges the measured state against the configured constraints (the eval's ``safety_violations``)."""

    def violations(self, state: RobotState) -> list[str]:
        """Names of the constraints the state breaks (empty when it is within all of them)."""
        ...


class Fallback(Protocol):
    """The command a chain sends when it cannot trust the nominal one (arm: hold; quadrotor: hover or land)."""

    name: str

    def command(self, state: RobotState) -> np.ndarray:
        """The fallback command for ``state``: finite, inside the action box. Shape: (action_dim,).

        ``state`` may hold non-finite values (that can be why the chain falls back); the command
        must stay finite then too.
        """
        ...
