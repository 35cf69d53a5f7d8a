"""Domain randomization: a typed, validated description of what to perturb and by how much.

A :class:`DomainRandomization` is shared by every robot_rl environment. Each episode, the env
draws one :class:`RandomizationSample` from it with its own seeded generator (so seeded resets
stay deterministic) and applies it to its MuJoCo model. Everything is off by default.

YAML keys (all optional; a range is ``[low, high]``, a scale multiplies the nominal value):

========================  =========  ===========================================================
key                       unit       meaning
========================  =========  ===========================================================
object_mass_scale         x          manipulated object's mass (Franka)
object_friction_scale     x          manipulated object's sliding friction (Franka)
joint_damping_scale       x          every robot joint's damping (Franka)
actuator_gain_scale       x          every actuator's stiffness and damping gains, kp, kv (Franka)
mass_scale                x          vehicle mass (quadrotor)
inertia_scale             x          vehicle rotational inertia (quadrotor)
motor_constant_scale      x          rotor thrust and torque per command (quadrotor)
motor_lag_scale           x          rotor spin-up time constant (quadrotor)
drag_coefficient          N s/m      linear aerodynamic drag (quadrotor)
wind_gust_std             N          gust force std, Ornstein-Uhlenbeck process (quadrotor)
wind_steady               N          steady horizontal wind force, random direction (quadrotor)
obs_noise_std             obs units  std of Gaussian noise added to ``observation`` (m, m/s, rad)
action_noise_std          action     std of Gaussian noise on the applied action, clipped (Franka)
action_latency_steps      steps      actions applied this many control periods late (integers)
obs_latency_steps         steps      observations this many control periods old (quadrotor)
========================  =========  ===========================================================

Each env lists the keys it applies (``randomization_keys``) and refuses the others.

Example::

    object_mass_scale: [0.5, 2.0]
    object_friction_scale: [0.7, 1.3]
    obs_noise_std: 0.002
    action_latency_steps: [0, 2]
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class DomainRandomization:
    """What to randomize per episode. The defaults leave the simulation nominal."""

    object_mass_scale: Range = (1.0, 1.0)
    """Scale range of the manipulated object's mass [x nominal]."""
    object_friction_scale: Range = (1.0, 1.0)
    """Scale range of the object's sliding friction coefficient [x nominal]."""
    joint_damping_scale: Range = (1.0, 1.0)
    """Scale range of every robot joint's viscous damping [x nominal]."""
    actuator_gain_scale: Range = (1.0, 1.0)
    """Scale range of every actuator's position and velocity gains [x nominal]."""
    obs_noise_std: float = 0.0
    """Standard deviation of zero-mean Gaussian noise on ``observation`` [its units: m, m/s, rad]."""
    action_noise_std: float = 0.0
    """Standard deviation of zero-mean Gaussian noise added to the applied action [normalized action
    units]; the result is clipped to the action space. Actuation noise for robustness, and DART-style
    demonstration collection: the recorded action is the command, the env perturbs what it applies."""
    action_latency_steps: tuple[int, int] = (0, 0)
    """Range (inclusive) of the action delay [control periods], drawn once per episode."""
    obs_latency_steps: tuple[int, int] = (0, 0)
    """Range (inclusive) of the observation delay [control periods] (quadrotor tasks)."""
    mass_scale: Range = (1.0, 1.0)
    """Scale range of the vehicle's mass [x nominal] (quadrotor tasks)."""
    inertia_scale: Range = (1.0, 1.0)
    """Scale range of the vehicle's rotational inertia [x nominal] (quadrotor tasks)."""
    motor_constant_scale: Range = (1.0, 1.0)
    """Scale range of the rotors' thrust and torque per command [x nominal] (quadrotor tasks)."""
    motor_lag_scale: Range = (1.0, 1.0)
    """Scale range of the rotors' spin-up time constant [x nominal] (quadrotor tasks)."""
    drag_coefficient: Range = (0.0, 0.0)
    """Range of the linear aerodynamic drag coefficient [N s/m] (quadrotor tasks)."""
    wind_gust_std: float = 0.0
    """Standard deviation of the gust force [N]: an Ornstein-Uhlenbeck process, 0.5 s correlation."""
    wind_steady: Range = (0.0, 0.0)
    """Range of a steady horizontal wind force [N] held over the episode, its direction drawn uniformly
    (quadrotor tasks)."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _SCALAR_KEYS:
                if not (np.isfinite(value) and value >= 0.0):
                    raise ValueError(f"`{field.name}` must be a finite number >= 0. Got {value!r}.")
                continue
            low, high = value
            if not (np.isfinite(low) and np.isfinite(high)):
                raise ValueError(f"`{field.name}` must be finite numbers. Got {list(value)}.")
            if low > high:
                raise ValueError(f"`{field.name}` must be [low, high] with low <= high. Got {list(value)}.")
            if field.name.endswith("_scale") and low <= 0.0:
                raise ValueError(f"`{field.name}` must be positive scales. Got {list(value)}.")
            if field.name in ("drag_coefficient", "wind_steady") and low < 0.0:
                raise ValueError(f"`{field.name}` must be >= 0. Got {list(value)}.")
            if field.name in _INTEGER_KEYS and (low < 0 or int(low) != low or int(high) != high):
                raise ValueError(f"`{field.name}` must be integers >= 0. Got {list(value)}.")

    def changed_keys(self) -> set[str]:
        """The keys set away from their nominal (no-op) value."""
        nominal = DomainRandomization()
        return {f.name for f in dataclasses.fields(self) if getattr(self, f.name) != getattr(nominal, f.name)}

    @property
    def enabled(self) -> bool:
        """True when any parameter differs from nominal."""
        return self != DomainRandomization()

    @classmethod
    def keys(cls) -> list[str]:
        """The valid YAML keys."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "randomization config") -> DomainRandomization:
        """Build from a mapping, naming any unknown key and the valid ones."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source}: expected a mapping of randomization keys, got {type(values).__name__}.")
        valid = cls.keys()
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in valid:
                close = difflib.get_close_matches(str(key), valid, n=1)
                hint = f" Did you mean `{close[0]}`?" if close else ""
                raise ValueError(f"{source}: unknown key `{key}`.{hint} Valid keys: {', '.join(valid)}.")
            if key in _SCALAR_KEYS:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{source}: `{key}` must be a number. Got {value!r}.")
                kwargs[key] = float(value)
                continue
            if (
                not isinstance(value, list | tuple)
                or len(value) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
            ):
                raise ValueError(f"{source}: `{key}` must be a [low, high] pair of numbers. Got {value!r}.")
            if key in _INTEGER_KEYS:
                # Checked before int(): int() of inf or NaN raises its own, unhelpful error.
                if not all(float(v).is_integer() for v in value):
                    raise ValueError(f"{source}: `{key}` must be integers. Got {value!r}.")
                kwargs[key] = (int(value[0]), int(value[1]))
            else:
                kwargs[key] = (float(value[0]), float(value[1]))
        try:
            return cls(**kwargs)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> DomainRandomization:
        """Load a YAML file of randomization keys (see the module docstring)."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"randomization file {str(path)!r} does not exist.")
        # PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; read it as a float (YAML 1.2).
        loader = type("_Loader", (yaml.SafeLoader,), {})
        loader.add_implicit_resolver(
            "tag:yaml.org,2002:float",
            re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
            list("-+0123456789."),
        )
        try:
            values = yaml.load(path.read_text(), Loader=loader)  # a SafeLoader: no arbitrary objects
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid YAML ({err}).") from None
        # An empty file is "randomize nothing"; any other non-mapping (a list, `false`) is refused.
        return cls.from_dict({} if values is None else values, source=str(path))

    def sample(self, rng: np.random.Generator) -> RandomizationSample:
        """Draw one episode's parameters. Draws nothing when randomization is off."""
        if not self.enabled:
            return RandomizationSample()

        def uniform(r: Range) -> float:
            return float(rng.uniform(r[0], r[1])) if r[0] != r[1] else float(r[0])

        def integer(r: tuple[int, int]) -> int:
            return int(rng.integers(r[0], r[1] + 1)) if r[0] != r[1] else int(r[0])

        # Draw order is fixed (and degenerate ranges draw nothing), so a config's samples never
        # change when unrelated keys are added.
        return RandomizationSample(
            object_mass_scale=uniform(self.object_mass_scale),
            object_friction_scale=uniform(self.object_friction_scale),
            joint_damping_scale=uniform(self.joint_damping_scale),
            actuator_gain_scale=uniform(self.actuator_gain_scale),
            obs_noise_std=self.obs_noise_std,
            action_noise_std=self.action_noise_std,
            action_latency_steps=integer(self.action_latency_steps),
            obs_latency_steps=integer(self.obs_latency_steps),
            mass_scale=uniform(self.mass_scale),
            inertia_scale=uniform(self.inertia_scale),
            motor_constant_scale=uniform(self.motor_constant_scale),
            motor_lag_scale=uniform(self.motor_lag_scale),
            drag_coefficient=uniform(self.drag_coefficient),
            wind_gust_std=self.wind_gust_std,
            wind_steady=uniform(self.wind_steady),
            wind_direction=float(rng.uniform(0.0, 2.0 * np.pi)) if self.wind_steady != (0.0, 0.0) else 0.0,
        )


@dataclasses.dataclass(frozen=True)
class RandomizationSample:
    """One episode's drawn parameters (all nominal by default)."""

    object_mass_scale: float = 1.0
    object_friction_scale: float = 1.0
    joint_damping_scale: float = 1.0
    actuator_gain_scale: float = 1.0
    obs_noise_std: float = 0.0
    action_noise_std: float = 0.0
    action_latency_steps: int = 0
    obs_latency_steps: int = 0
    mass_scale: float = 1.0
    inertia_scale: float = 1.0
    motor_constant_scale: float = 1.0
    motor_lag_scale: float = 1.0
    drag_coefficient: float = 0.0
    wind_gust_std: float = 0.0
    wind_steady: float = 0.0
    """Steady horizontal wind force [N]."""
    wind_direction: float = 0.0
    """Its direction in the horizontal plane [rad from world x]."""


_SCALAR_KEYS = frozenset({"obs_noise_std", "action_noise_std", "wind_gust_std"})
_INTEGER_KEYS = frozenset({"action_latency_steps", "obs_latency_steps"})

PRESETS: dict[str, DomainRandomization] = {
    "nominal": DomainRandomization(),
    "train": DomainRandomization(
        object_mass_scale=(0.5, 2.0),
        object_friction_scale=(0.7, 1.3),
        joint_damping_scale=(0.8, 1.2),
        actuator_gain_scale=(0.8, 1.2),
        obs_noise_std=0.001,
        action_latency_steps=(0, 1),
    ),
    "wide": DomainRandomization(
        object_mass_scale=(0.4, 2.8),
        object_friction_scale=(0.45, 1.6),
        joint_damping_scale=(0.7, 2.7),
        actuator_gain_scale=(0.55, 1.4),
        obs_noise_std=0.004,
        action_noise_std=0.05,
        action_latency_steps=(0, 1),
    ),
}
"""Named settings for ``--randomize`` on the Franka tasks: ``nominal`` (off), ``train`` (moderate) and ``wide``
(the training randomization of the robust policies: a margin around every family of the robustness suite)."""

QUADROTOR_PRESETS: dict[str, DomainRandomization] = {
    "nominal": DomainRandomization(),
    "train": DomainRandomization(
        mass_scale=(0.7, 1.3),
        inertia_scale=(0.8, 1.2),
        motor_constant_scale=(0.9, 1.1),
        motor_lag_scale=(0.7, 1.5),
        drag_coefficient=(0.0, 0.02),
        wind_gust_std=0.01,
        obs_noise_std=0.002,
        action_latency_steps=(0, 1),
        obs_latency_steps=(0, 1),
    ),
    "wide": DomainRandomization(
        mass_scale=(0.6, 1.4),
        inertia_scale=(0.6, 1.4),
        motor_constant_scale=(0.8, 1.2),
        motor_lag_scale=(0.7, 2.2),
        drag_coefficient=(0.0, 0.05),
        wind_gust_std=0.025,
        obs_noise_std=0.004,
        action_latency_steps=(0, 1),
        obs_latency_steps=(0, 2),
    ),
}
"""Named settings for ``--randomize`` on the quadrotor tasks: ``nominal``, ``train`` (mass +-30%, gusts, latency,
noise) and ``wide`` (the training randomization of the robust policies: a margin around the robustness suite)."""


def resolve_randomization(
    spec: str | Path | DomainRandomization | Mapping[str, Any] | None,
    presets: Mapping[str, DomainRandomization] = PRESETS,
) -> DomainRandomization:
    """Turn a preset name (from ``presets``), a YAML path, a mapping or None into a config."""
    if spec is None:
        return DomainRandomization()
    if isinstance(spec, DomainRandomization):
        return spec
    if isinstance(spec, Mapping):
        return DomainRandomization.from_dict(spec)
    if not isinstance(spec, str | Path):
        raise ValueError(f"--randomize expects a preset name or a YAML file path. Got {type(spec).__name__}.")
    if spec in presets:
        return presets[spec]
    if str(spec).endswith((".yaml", ".yml")) or Path(spec).exists():
        return DomainRandomization.from_yaml(spec)
    close = difflib.get_close_matches(str(spec), list(presets), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"--randomize expects a preset ({', '.join(presets)}) or a YAML file path. Got {spec!r}.{hint}")
