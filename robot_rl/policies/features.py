"""Observation features with memory: what a policy needs to know that one observation does not show.

A quadrotor's thrust-to-weight ratio (payload, battery sag, another propeller) and a steady wind are
invisible in a single observation: position, velocity, attitude and rates look the same whatever the
mass. A policy that must hold a point needs an estimate of that offset. These features are computed
outside the network, from the observation stream and the commands already sent, by the same numpy
code in training (over each recorded demo) and at deployment (``ChunkedActor``, the runtime
``Controller``, and so the ROS 2 node): the ONNX graph itself only sees what a real robot measures,
plus the feature values appended to each flattened observation.

:class:`QuadrotorDisturbance` is a disturbance observer (the expert's own, in
``robot_rl/envs/quadrotor/expert.py``): the acceleration the vehicle measured over the last period
minus the one the last command should have produced on the nominal model, low-pass filtered. It
converges to the unmodelled acceleration: ``g (1 - m / (k m_nom))`` upward at hover for a mass ``m`` and
a motor constant scale ``k`` (-0.3 g for a payload of 30%), and the wind force over the mass
horizontally. A policy trained on demos collected under randomized mass, motors and wind, with this
estimate in its input, learns the
expert's compensation (thrust up by the missing acceleration times the nominal mass): it is the
sufficient statistic of a constant offset, and it needs no history in the network.

Needs numpy only (the deployment runtime imports it).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GRAVITY = 9.81
"""[m/s^2]."""


@dataclasses.dataclass(frozen=True)
class QuadrotorDisturbance:
    """Disturbance observer on the quadrotor observation (see the module docstring).

    Per control period ``t`` (``observation`` of the QuadrotorHover/Waypoint/Track envs: velocity at
    indices 3-5, world frame; rotation matrix body -> world row-major at 6-14; ``command`` the
    normalized CTBR action sent at ``t - 1``)::

        thrust   = (clip(command[0], -1, 1) + 1) / 2 * max_thrust                      [N]
        expected = body_z(t - 1) * thrust / mass - (0, 0, g)                              [m/s^2]
        measured = (velocity(t) - velocity(t - 1)) / ctrl_dt                             [m/s^2]
        d(t)     = clip(d(t - 1) + gain * (measured - expected - d(t - 1)), -limit, limit)

    with ``d = 0`` until two observations and a command have been seen. Output: ``d`` (3 values,
    world frame, m/s^2), appended to the flattened observation.
    """

    ctrl_dt: float = 0.02
    """Control period [s]."""
    mass: float = 0.027
    """Nominal vehicle mass [kg]."""
    max_thrust: float = 0.596
    """Collective thrust at command +1 [N] (four rotors at their limit)."""
    gain: float = 0.1
    """Low-pass gain per period [1] (0.1 at 50 Hz: time constant about 0.2 s)."""
    limit: float = 3.0 * GRAVITY
    """Bound on each estimated component [m/s^2]."""

    name = "quadrotor_disturbance"
    dim = 3

    def __post_init__(self) -> None:
        for key in ("ctrl_dt", "mass", "max_thrust", "limit"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"feature {self.name!r}: `{key}` must be a finite number > 0. Got {value!r}.")
        if not (isinstance(self.gain, int | float) and 0.0 < self.gain <= 1.0):
            raise ValueError(f"feature {self.name!r}: `gain` must be in (0, 1]. Got {self.gain!r}.")

    def to_json(self) -> dict[str, Any]:
        """Plain form for config.json and the policy card (with the formula for other runtimes)."""
        return {"name": self.name, **dataclasses.asdict(self), "dim": self.dim, "formula": _FORMULA}

    def stream(self) -> _DisturbanceStream:
        """A fresh estimator state (one per episode and robot)."""
        return _DisturbanceStream(self)


_FORMULA = (
    "d = 0 at an episode's start; each control period, once the previous observation and command exist: "
    "thrust = (clip(command[0], -1, 1) + 1) / 2 * max_thrust; expected = R_prev[:, 2] * thrust / mass - (0, 0, 9.81); "
    "measured = (v - v_prev) / ctrl_dt; d = clip(d + gain * (measured - expected - d), -limit, limit); "
    "v = observation[3:6] (m/s, world), R = observation[6:15] reshaped 3x3 row-major (body -> world), "
    "command = the normalized action sent in the previous period"
)


class _DisturbanceStream:
    """The observer's state over one episode."""

    def __init__(self, spec: QuadrotorDisturbance) -> None:
        self.spec = spec
        self.reset()

    def reset(self) -> None:
        self._velocity: np.ndarray | None = None
        self._body_z: np.ndarray | None = None
        self._estimate = np.zeros(3)

    def interrupt(self) -> None:
        """A period passed without a usable observation: keep the estimate, restart the differencing."""
        self._velocity = self._body_z = None

    def update(self, observation: np.ndarray, command: np.ndarray | None) -> np.ndarray:
        """The estimate after ``observation`` (this period's) and ``command`` (sent last period). Shape: (3,)."""
        spec = self.spec
        obs = np.asarray(observation, dtype=np.float64).reshape(-1)
        velocity = obs[3:6].copy()
        body_z = obs[[8, 11, 14]].copy()  # third column of the row-major rotation matrix at 6..14
        if self._velocity is not None and command is not None:
            thrust = (min(max(float(np.asarray(command).reshape(-1)[0]), -1.0), 1.0) + 1.0) / 2.0 * spec.max_thrust
            expected = self._body_z * (thrust / spec.mass)
            expected[2] -= GRAVITY
            measured = (velocity - self._velocity) / spec.ctrl_dt
            self._estimate = np.clip(
                self._estimate + spec.gain * (measured - expected - self._estimate), -spec.limit, spec.limit
            )
        self._velocity, self._body_z = velocity, body_z
        return self._estimate.copy()


FEATURES: dict[str, type[QuadrotorDisturbance]] = {QuadrotorDisturbance.name: QuadrotorDisturbance}
"""Feature name -> its spec class: the features this runtime can compute."""

Feature = QuadrotorDisturbance


def feature_from_json(value: Mapping[str, Any], where: str = "feature") -> Feature:
    """A feature spec from its plain form (config.json, metadata.json).

    Raises:
        ValueError: an unknown feature (naming the ones this runtime computes) or a bad parameter.
    """
    if not isinstance(value, Mapping) or "name" not in value:
        raise ValueError(f"{where}: expected an object with a `name`, got {value!r}.")
    name = value["name"]
    if name not in FEATURES:
        close = difflib.get_close_matches(str(name), list(FEATURES), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"{where}: the policy needs the observation feature {name!r}, which this robot_rl runtime cannot "
            f"compute.{hint} Features it computes: {', '.join(FEATURES)}."
        )
    cls = FEATURES[name]
    fields = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in value.items() if k in fields})
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def feature_for_env(name: str, env: Any) -> Feature:
    """The feature ``name`` with the nominal parameters of ``env`` (a robot_rl env, wrapped or not).

    Raises:
        ValueError: an unknown name, or a feature the env's robot cannot provide.
    """
    feature_from_json({"name": name})  # refuses unknown names with the list
    unwrapped = getattr(env, "unwrapped", env)
    params = getattr(unwrapped, "params", None)
    if name == QuadrotorDisturbance.name:
        if params is None or not hasattr(params, "max_thrust"):
            raise ValueError(
                f"feature {name!r} reads a quadrotor's velocity, attitude and thrust command; "
                f"{type(unwrapped).__name__} is not a quadrotor env."
            )
        return QuadrotorDisturbance(ctrl_dt=float(unwrapped.ctrl_dt), mass=params.mass, max_thrust=params.max_thrust)
    raise AssertionError(name)  # pragma: no cover (every registered name is handled above)


def feature_series(features: Sequence[Feature], observation: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The features over a recorded episode: row ``t`` from observations ``0..t`` and actions ``0..t-1``.

    Args:
        features: The feature specs, in layout order.
        observation: The episode's ``observation`` entry, (T, ...).
        actions: The actions sent, (T, A) (the one of step ``t`` is sent after observation ``t``).

    Returns:
        (T, sum of the features' dims).
    """
    rows = len(observation)
    out = np.zeros((rows, sum(f.dim for f in features)))
    for column, spec in zip(np.cumsum([0, *[f.dim for f in features]])[:-1], features, strict=True):
        stream = spec.stream()
        for t in range(rows):
            out[t, column : column + spec.dim] = stream.update(observation[t], actions[t - 1] if t else None)
    return out


class FeatureState:
    """The running features of one policy over an episode (the deployment side of :func:`feature_series`)."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = tuple(features)
        self._streams = [f.stream() for f in self.features]
        self.dim = sum(f.dim for f in self.features)
        self.last = np.zeros(self.dim)
        """The values of the latest :meth:`update` (zeros after a reset)."""

    def reset(self) -> None:
        """New episode."""
        for stream in self._streams:
            stream.reset()
        self.last = np.zeros(self.dim)

    def interrupt(self) -> None:
        """A period passed without a usable observation (the runtime's fallback step)."""
        for stream in self._streams:
            stream.interrupt()

    def update(self, observation: Mapping[str, np.ndarray], command: np.ndarray | None) -> np.ndarray:
        """The feature values for this period's observation dict and the command sent last period."""
        if not self._streams:
            return np.zeros(0)
        values = observation["observation"]
        self.last = np.concatenate([stream.update(values, command) for stream in self._streams])
        return self.last.copy()

    def peek(self, observation: Mapping[str, np.ndarray], command: np.ndarray | None) -> np.ndarray:
        """What :meth:`update` would return, leaving the state as it is (the runtime's prefetch)."""
        return copy.deepcopy(self).update(observation, command)
