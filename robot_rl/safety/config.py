"""Hardware safety configs: ``hardware/<robot>.yaml`` loaded into frozen dataclasses, validated key by key.

Each hardware file has a top-level ``safety:`` section (read here) and may have others (``ros:`` topics and
rates, read by the ROS 2 package); sections other than ``safety`` are left alone. Inside ``safety`` every key
is required and unknown keys are refused, so a typo fails loudly. Every error names the file and the key path,
for example ``hardware/fr3.yaml: safety.joint_limits.position.lower[3] (-0.15) is above upper (-3.04)``.

:class:`ConfigReader` is the validator the robot-specific loaders share (the quadrotor's included).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root (``hardware/`` and ``assets/`` live there; also right for an editable install)."""
HARDWARE_DIR = REPO_ROOT / "hardware"
"""The default folder of hardware configs."""


def display_path(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository root when inside it (``hardware/fr3.yaml``), else as given."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def load_yaml(path: str | os.PathLike[str]) -> tuple[Mapping[str, Any], str]:
    """The parsed document of a hardware file and its display name.

    Raises:
        ValueError: the file is missing, is not valid YAML, or is not a mapping at the top level.
    """
    source = display_path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ValueError(f"{source}: no such hardware file.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, Mapping):
        raise ValueError(f"{source}: expected a mapping with a `safety:` section. Got {type(document).__name__}.")
    return document, source


class ConfigReader:
    """Reads one mapping of a hardware file, keeping the key path for error messages.

    Every accessor records the key as valid; :meth:`finish` then refuses the keys nobody read and lists
    the valid ones.

    Args:
        data: The mapping.
        source: File name for messages (``hardware/fr3.yaml``).
        path: Key path of ``data`` in the file (``safety.cbf``).
    """

    def __init__(self, data: Any, source: str, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: {path} must be a mapping. Got {data!r}.")
        self.data = data
        self.source = source
        self.path = path
        self._known: list[str] = []

    def error(self, key: str, message: str) -> ValueError:
        """A ValueError naming the file and the key path ``<path>.<key>``."""
        return ValueError(f"{self.source}: {self._key_path(key)} {message}")

    def _key_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> Any:
        self._known.append(key)
        if key not in self.data:
            raise ValueError(f"{self.source}: {self._key_path(key)} is missing.")
        return self.data[key]

    def has(self, key: str) -> bool:
        """Whether ``key`` is present (and mark it valid)."""
        self._known.append(key)
        return key in self.data

    def section(self, key: str) -> ConfigReader:
        """The reader of the required sub-mapping ``key``."""
        return ConfigReader(self._get(key), self.source, self._key_path(key))

    def number(self, key: str, *, low: float | None = None, high: float | None = None, low_open: bool = False) -> float:
        """A finite number, within [``low``, ``high``] (``low`` excluded with ``low_open``)."""
        return self._check_number(self._get(key), key, low, high, low_open)

    def _check_number(self, value: Any, key: str, low: float | None, high: float | None, low_open: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number. Got {value!r}.")
        value = float(value)
        if not math.isfinite(value):
            raise self.error(key, f"must be finite. Got {value}.")
        if low is not None and (value <= low if low_open else value < low):
            raise self.error(key, f"must be {'>' if low_open else '>='} {low}. Got {value}.")
        if high is not None and value > high:
            raise self.error(key, f"must be <= {high}. Got {value}.")
        return value

    def vector(self, key: str, length: int, *, low: float | None = None, low_open: bool = False) -> tuple[float, ...]:
        """A list of ``length`` finite numbers, each >= ``low`` (> with ``low_open``)."""
        value = self._get(key)
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != length:
            raise self.error(key, f"must be a list of {length} numbers. Got {value!r}.")
        return tuple(self._check_number(v, f"{key}[{i}]", low, None, low_open) for i, v in enumerate(value))

    def per_dimension(
        self, key: str, length: int, *, low: float | None = None, high: float | None = None, low_open: bool = False
    ) -> tuple[float, ...]:
        """One number for every dimension, or a list of ``length`` numbers, each in [``low``, ``high``]."""
        value = self.data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (self.number(key, low=low, high=high, low_open=low_open),) * length
        values = self.vector(key, length, low=low, low_open=low_open)
        for i, v in enumerate(values):
            if high is not None and v > high:
                raise self.error(f"{key}[{i}]", f"must be <= {high}. Got {v}.")
        return values

    def strings(self, key: str, length: int) -> tuple[str, ...]:
        """A list of ``length`` non-empty strings."""
        value = self._get(key)
        if (
            not isinstance(value, Sequence)
            or isinstance(value, str)
            or len(value) != length
            or not all(isinstance(v, str) and v for v in value)
        ):
            raise self.error(key, f"must be a list of {length} names. Got {value!r}.")
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str]) -> str:
        """One of ``choices``."""
        value = self._get(key)
        if value not in choices:
            raise self.error(key, f"must be one of {list(choices)}. Got {value!r}.")
        return str(value)

    def ordered(self, lower_key: str, lower: Sequence[float], upper_key: str, upper: Sequence[float]) -> None:
        """Refuse any ``lower[i] > upper[i]``, naming the entry (``position.lower[3] (-0.15) is above upper``)."""
        for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
            if lo > hi:
                raise self.error(f"{lower_key}[{i}]", f"({lo:g}) is above {upper_key} ({hi:g}).")

    def finish(self) -> None:
        """Refuse keys that were not read, listing the valid ones."""
        unknown = [k for k in self.data if k not in self._known]
        if unknown:
            raise self.error(
                str(unknown[0]), f"is not a valid key. Valid keys in `{self.path}`: {sorted(set(self._known))}."
            )


@dataclasses.dataclass(frozen=True)
class CommandConfig:
    """How the action maps to motion (must match the env: ``PandaEnv.max_displacement``, ``ctrl_dt``)."""

    max_displacement: float
    """TCP displacement per control period at |action| = 1 [m]."""
    ctrl_dt: float
    """Control period [s]."""
    gripper_max_width: float
    """Finger opening at gripper action +1 [m] (-1 is closed)."""


@dataclasses.dataclass(frozen=True)
class JointLimits:
    """Published joint limits, one entry per arm joint."""

    names: tuple[str, ...]
    position_lower: tuple[float, ...]
    """[rad]"""
    position_upper: tuple[float, ...]
    """[rad]"""
    velocity: tuple[float, ...]
    """[rad/s]"""
    acceleration: tuple[float, ...]
    """[rad/s^2]"""
    jerk: tuple[float, ...]
    """[rad/s^3]"""


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box [m, world]."""

    low: tuple[float, ...]
    high: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Margins:
    """How far inside the limits the filter keeps the command."""

    workspace: float
    """Distance kept from the workspace faces [m] (covers the servo's tracking overshoot)."""
    joint_position: float
    """Distance kept from the joint position limits [rad]."""
    joint_velocity: tuple[float, ...]
    """Fraction of each joint's velocity limit kept in reserve [1]. Shape: (7,)."""
    joint_velocity_overshoot: float
    """How far the servo's measured joint velocity overshoots a commanded velocity change, per unit change [1]."""
    joint_velocity_change: float
    """Largest change of a joint's commanded velocity per period away from zero, as a fraction of its limit [1]."""


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """Whole-chunk validation thresholds (per action dimension where a list)."""

    low: tuple[float, ...]
    """Lowest allowed command [action units]. Shape: (A,)."""
    high: tuple[float, ...]
    """Highest allowed command [action units]. Shape: (A,)."""
    max_jump: tuple[float, ...]
    """Largest step-to-step change per action dimension [action units / step]. Shape: (A,)."""
    max_jerk: tuple[float, ...]
    """Largest second difference per action dimension [action units / step^2]. Shape: (A,)."""


@dataclasses.dataclass(frozen=True)
class WatchdogConfig:
    """Timing checks."""

    deadline_s: float
    """Oldest acceptable state: ``now - stamp`` beyond it is stale [s]."""
    late_factor: float
    """A step more than ``late_factor * ctrl_dt`` after the previous one missed a period [1]."""


@dataclasses.dataclass(frozen=True)
class FrankaSafetyConfig:
    """The Franka arm's ``safety:`` section (hardware/fr3.yaml)."""

    robot: str
    command: CommandConfig
    joint_limits: JointLimits
    workspace: Box
    """TCP workspace the filter keeps the arm in and the check judges [m, world]."""
    rate_limit: tuple[float, float, float]
    """Largest change per control period of each displacement entry (x, y, z) that speeds the motion up or reverses
    it [action units]; slowing down towards zero is free."""
    cbf_gamma: float
    """Discrete-time CBF rate: each step may close at most this fraction of the distance to a limit (0, 1]."""
    floor_gamma: float
    """CBF rate of the workspace's bottom face (the table top), without velocity lead (1: a plain clip) (0, 1]."""
    velocity_lead_s: float
    """The CBF predicts the TCP (joints) ``velocity_lead_s`` further along their measured velocity [s]."""
    margins: Margins
    chunk: ChunkConfig
    watchdog: WatchdogConfig
    fallback: str
    """``hold``: zero displacement, keep the gripper width."""
    source: str = ""
    """The file it came from."""


FALLBACKS = ("hold",)


def read_watchdog(reader: ConfigReader) -> WatchdogConfig:
    """The ``watchdog`` section: ``deadline_s`` > 0, ``late_factor`` > 1."""
    section = reader.section("watchdog")
    config = WatchdogConfig(
        deadline_s=section.number("deadline_s", low=0.0, low_open=True),
        late_factor=section.number("late_factor", low=1.0, low_open=True),
    )
    section.finish()
    return config


def read_chunk(reader: ConfigReader, action_dim: int) -> ChunkConfig:
    """The ``chunk`` section: ``low``/``high`` per dimension, ``max_jump``/``max_jerk`` > 0 (one or per dimension)."""
    section = reader.section("chunk")
    low = section.vector("low", action_dim)
    high = section.vector("high", action_dim)
    section.ordered("low", low, "high", high)
    config = ChunkConfig(
        low=low,
        high=high,
        max_jump=section.per_dimension("max_jump", action_dim, low=0.0, low_open=True),
        max_jerk=section.per_dimension("max_jerk", action_dim, low=0.0, low_open=True),
    )
    section.finish()
    return config


def load_franka_config(path: str | os.PathLike[str] | None = None) -> FrankaSafetyConfig:
    """Load and validate the ``safety:`` section of a Franka hardware file (default: hardware/fr3.yaml).

    Raises:
        ValueError: a missing or unknown key, a value out of range, non-finite, or a lower limit above its
            upper one; the message names the file and the key path.
    """
    document, source = load_yaml(HARDWARE_DIR / "fr3.yaml" if path is None else path)
    return franka_config_from_mapping(document, source)


def franka_config_from_mapping(document: Mapping[str, Any], source: str = "<mapping>") -> FrankaSafetyConfig:
    """:func:`load_franka_config` on an already parsed document (top level, with its ``safety:`` key)."""
    if "safety" not in document:
        raise ValueError(f"{source}: safety is missing (the top-level section this loader reads).")
    root = ConfigReader(document["safety"], source, "safety")
    robot = root.choice("robot", ("fr3",))

    command = root.section("command")
    command_config = CommandConfig(
        max_displacement=command.number("max_displacement", low=0.0, low_open=True),
        ctrl_dt=command.number("ctrl_dt", low=0.0, low_open=True),
        gripper_max_width=command.number("gripper_max_width", low=0.0, low_open=True),
    )
    command.finish()

    joints = root.section("joint_limits")
    names = joints.strings("names", 7)
    position = joints.section("position")
    lower = position.vector("lower", 7)
    upper = position.vector("upper", 7)
    position.ordered("lower", lower, "upper", upper)
    position.finish()
    joint_limits = JointLimits(
        names=names,
        position_lower=lower,
        position_upper=upper,
        velocity=joints.vector("velocity", 7, low=0.0, low_open=True),
        acceleration=joints.vector("acceleration", 7, low=0.0, low_open=True),
        jerk=joints.vector("jerk", 7, low=0.0, low_open=True),
    )
    joints.finish()

    workspace = root.section("workspace")
    low = workspace.vector("low", 3)
    high = workspace.vector("high", 3)
    workspace.ordered("low", low, "high", high)
    workspace.finish()

    rate_limit = root.per_dimension("rate_limit", 3, low=0.0, low_open=True)
    cbf = root.section("cbf")
    gamma = cbf.number("gamma", low=0.0, low_open=True, high=1.0)
    if gamma > min(rate_limit):
        # The CBF brakes by gamma of the distance per step; a smaller rate limit could not follow it.
        raise cbf.error("gamma", f"({gamma:g}) must be <= the smallest rate_limit ({min(rate_limit):g}).")
    floor_gamma = cbf.number("floor_gamma", low=0.0, low_open=True, high=1.0)
    lead = cbf.number("velocity_lead_s", low=0.0)
    cbf.finish()

    margins = root.section("margins")
    margins_config = Margins(
        workspace=margins.number("workspace_m", low=0.0),
        joint_position=margins.number("joint_position_rad", low=0.0),
        joint_velocity=margins.per_dimension("joint_velocity_fraction", 7, low=0.0, high=0.99),
        joint_velocity_overshoot=margins.number("joint_velocity_overshoot", low=0.0),
        joint_velocity_change=margins.number("joint_velocity_change_fraction", low=0.0, low_open=True),
    )
    margins.finish()
    for axis in range(3):
        if high[axis] - low[axis] <= 2.0 * margins_config.workspace:
            raise workspace.error(
                f"high[{axis}]",
                f"({high[axis]:g}) leaves no room above low ({low[axis]:g}) with margins.workspace_m "
                f"{margins_config.workspace:g} on both sides.",
            )

    config = FrankaSafetyConfig(
        robot=robot,
        command=command_config,
        joint_limits=joint_limits,
        workspace=Box(low, high),
        rate_limit=rate_limit,
        cbf_gamma=gamma,
        floor_gamma=floor_gamma,
        velocity_lead_s=lead,
        margins=margins_config,
        chunk=read_chunk(root, 4),
        watchdog=read_watchdog(root),
        fallback=root.choice("fallback", FALLBACKS),
        source=source,
    )
    root.finish()
    return config
