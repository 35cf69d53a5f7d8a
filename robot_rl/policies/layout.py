"""What every base policy shares: the observation layout, normalization and chunked execution.

A policy maps a short history of observations to an action chunk: ``predict(obs_history)``
returns ``horizon`` actions starting at the current step, of which the first ``n_action_steps``
are executed before the policy is asked again (receding horizon). :class:`ChunkedActor` turns a
policy into the ``obs -> action`` function an env loop needs: it keeps the observation history
(padded with the first observation after a reset) and the queue of actions still to execute.

Observations are the env's dict; :class:`ObsLayout` picks the keys the policy reads (for the
goal-conditioned tasks ``observation`` and ``desired_goal``) and flattens them in a fixed order.
This module needs numpy only, so the deployment runtime (onnxruntime) runs without torch; the
normalization lives in the model (:mod:`robot_rl.policies.base`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from robot_rl.policies.features import Feature, FeatureState, feature_from_json, feature_series

_KEY_SPEC = re.compile(r"^(?P<name>[A-Za-z_][\w]*)(\[(?P<start>-?\d*)(?P<colon>:?)(?P<stop>-?\d*)\])?$")


def parse_key(spec: str) -> tuple[str, slice | None]:
    """``"observation"`` -> ("observation", None); ``"observation[5:]"`` -> ("observation", slice(5, None)).

    Raises:
        ValueError: not ``name`` or ``name[i]`` / ``name[i:j]``.
    """
    match = _KEY_SPEC.match(spec)
    if match is None:
        raise ValueError(f"observation key {spec!r}: expected NAME, NAME[i] or NAME[i:j] (e.g. 'observation[5:]').")
    name, start, stop = match["name"], match["start"], match["stop"]
    if match.group(2) is None:
        return name, None
    if not match["colon"]:
        if not start:
            raise ValueError(f"observation key {spec!r}: empty index.")
        i = int(start)
        return name, slice(i, i + 1 if i != -1 else None)
    return name, slice(int(start) if start else None, int(stop) if stop else None)


@dataclasses.dataclass(frozen=True)
class ObsLayout:
    """Which observation entries a policy reads, in order.

    ``keys`` name dict entries, optionally sliced (``observation[5:]``: a translation-invariant
    policy leaves out absolute horizontal positions); ``shapes`` are the full entries' shapes.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    relative_goal: bool = False
    """Append ``desired_goal - achieved_goal`` (the quantity goal-conditioned tasks are about)."""
    features: tuple[Feature, ...] = ()
    """Features with memory appended last (:mod:`robot_rl.policies.features`): computed from the observation
    stream and the commands sent, so :meth:`flatten` needs their current values."""

    def __post_init__(self) -> None:
        for key, shape in zip(self.keys, self.shapes, strict=True):
            _, part = parse_key(key)
            if part is not None and len(shape) != 1:
                raise ValueError(f"observation key {key!r}: slicing needs a 1-D entry; its shape is {shape}.")
            if part is not None and not range(shape[0])[part]:
                raise ValueError(f"observation key {key!r} selects nothing of an entry of shape {shape}.")

    # Parsed once per layout (cached_property writes the instance dict, which a frozen dataclass
    # allows): flatten runs every control step, and parsing the keys there cost half of it.
    @functools.cached_property
    def _parts(self) -> tuple[tuple[str, slice], ...]:
        return tuple((name, part or slice(None)) for name, part in map(parse_key, self.keys))

    @functools.cached_property
    def plain(self) -> ObsLayout:
        """This layout without its features (the observation entries alone); the layout itself when it has none."""
        return dataclasses.replace(self, features=()) if self.features else self

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        """The dict entries read (keys without slices, plus the goals for ``relative_goal``)."""
        names = tuple(dict.fromkeys(name for name, _ in self._parts))
        if self.relative_goal:
            names += tuple(n for n in ("desired_goal", "achieved_goal") if n not in names)
        return names

    @functools.cached_property
    def dim(self) -> int:
        """Length of the flattened observation."""
        total = sum(
            len(range(int(np.prod(shape)))[part]) for (_, part), shape in zip(self._parts, self.shapes, strict=True)
        )
        return total + (3 if self.relative_goal else 0) + sum(f.dim for f in self.features)

    @functools.cached_property
    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each dict entry read (the goals are (3,) for ``relative_goal``)."""
        shapes = {name: shape for (name, _), shape in zip(self._parts, self.shapes, strict=True)}
        if self.relative_goal:
            for name in ("desired_goal", "achieved_goal"):
                shapes.setdefault(name, (3,))
        return shapes

    def check(self, obs: Mapping[str, np.ndarray]) -> None:
        """Refuse an observation that lacks an entry or has one of the wrong shape.

        Raises:
            KeyError: an entry the policy reads is missing (names what the observation has).
            ValueError: an entry's shape differs (names the key, the expected and the actual shape).
        """
        for name, shape in self.expected_shapes.items():
            if name not in obs:
                raise KeyError(
                    f"the policy reads observation entries {list(self.names)}; the observation has {sorted(obs)} "
                    f"(missing {name!r})."
                )
            actual = np.shape(obs[name])
            if actual != shape:
                raise ValueError(f"observation entry {name!r} must have shape {shape}. Got {actual}.")

    def flatten(self, obs: Mapping[str, np.ndarray], features: np.ndarray | None = None) -> np.ndarray:
        """Concatenate the entries of one observation (and the current ``features``). Shape: (dim,).

        Raises:
            ValueError: the layout has features and none are given (they need the episode's stream:
                :class:`ChunkedActor` or the runtime ``Controller`` keep it).
        """
        if self.features:
            if features is None:
                raise ValueError(
                    f"this policy reads the observation features {[f.name for f in self.features]}, computed over "
                    "the episode: run it through ChunkedActor or the runtime Controller, which keep their state."
                )
            return np.concatenate([self.plain.flatten(obs), np.asarray(features, dtype=np.float64).reshape(-1)])
        return self.flatten_batch({k: np.asarray(v)[None] for k, v in obs.items()})[0]

    def new_feature_state(self) -> FeatureState:
        """A fresh state of the layout's features (empty for a layout without any)."""
        return FeatureState(self.features)

    def flatten_batch(self, obs: Mapping[str, np.ndarray], actions: np.ndarray | None = None) -> np.ndarray:
        """Concatenate the entries of a time series of observations, (T, ...) each. Shape: (T, dim).

        A layout with features needs the episode's ``actions`` (T, A) too: row ``t`` of the features
        comes from observations ``0..t`` and actions ``0..t-1``, as at deployment.
        """
        if self.features:
            if actions is None:
                raise ValueError(
                    f"this policy reads the observation features {[f.name for f in self.features]}: flattening an "
                    "episode needs its actions."
                )
            series = feature_series(self.features, np.asarray(obs["observation"]), np.asarray(actions))
            return np.concatenate([self.plain.flatten_batch(obs), series], axis=1)
        missing = [k for k in self.names if k not in obs]
        if missing:
            raise KeyError(
                f"the policy reads observation entries {list(self.names)}; the observation has {sorted(obs)} "
                f"(missing {missing[0]!r})."
            )
        length = len(obs[self.names[0]])
        parts = [np.asarray(obs[name], dtype=np.float64).reshape(length, -1)[:, part] for name, part in self._parts]
        if self.relative_goal:
            parts.append(np.asarray(obs["desired_goal"], dtype=np.float64) - np.asarray(obs["achieved_goal"]))
        return np.concatenate(parts, axis=1)

    def to_json(self) -> dict[str, Any]:
        """Plain form for config.json."""
        value: dict[str, Any] = {
            "keys": list(self.keys),
            "shapes": [list(s) for s in self.shapes],
            "relative_goal": self.relative_goal,
        }
        if self.features:
            value["features"] = [f.to_json() for f in self.features]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ObsLayout:
        """Inverse of :meth:`to_json`."""
        return cls(
            tuple(value["keys"]),
            tuple(tuple(int(d) for d in s) for s in value["shapes"]),
            bool(value.get("relative_goal", False)),
            tuple(feature_from_json(f, "obs_layout.features") for f in value.get("features", ())),
        )

    def difference(self, other: ObsLayout) -> str | None:
        """A sentence naming how ``other`` differs, or None when the layouts match."""
        if self == other:
            return None
        mine = dict(zip(self.keys, self.shapes, strict=True))
        theirs = dict(zip(other.keys, other.shapes, strict=True))
        parts = []
        if set(mine) != set(theirs):
            parts.append(f"keys {list(self.keys)} vs {list(other.keys)}")
        for key in mine.keys() & theirs.keys():
            if mine[key] != theirs[key]:
                parts.append(f"{key!r} shape {mine[key]} vs {theirs[key]}")
        if self.relative_goal != other.relative_goal:
            parts.append(f"relative_goal {self.relative_goal} vs {other.relative_goal}")
        if self.features != other.features:
            parts.append(f"features {[f.to_json() for f in self.features]} vs {[f.to_json() for f in other.features]}")
        if not parts:
            parts.append(f"key order {list(self.keys)} vs {list(other.keys)}")
        return "; ".join(parts)


class Policy(Protocol):
    """A base policy: a history of observations in, an action chunk out."""

    layout: ObsLayout
    n_obs_steps: int
    """Observations the policy conditions on (the current one and those before it)."""
    horizon: int
    """Actions predicted per call, starting at the current step."""
    n_action_steps: int
    """Actions of each chunk executed before predicting again."""
    action_dim: int

    def predict(self, obs_history: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Action chunk for flattened raw observations (n_obs_steps, obs_dim). Shape: (horizon, A)."""


class ChunkedActor:
    """Runs a :class:`Policy` step by step: observation history and receding-horizon action queue.

    Args:
        policy: The policy.
        seed: Seed of the sampling noise (diffusion); episodes are reproducible given it.
        n_action_steps: Override the policy's execution horizon (1 re-plans every step).
    """

    def __init__(self, policy: Policy, seed: int = 0, n_action_steps: int | None = None) -> None:
        self.policy = policy
        self.n_action_steps = n_action_steps or policy.n_action_steps
        if not 1 <= self.n_action_steps <= policy.horizon:
            raise ValueError(f"`n_action_steps` must be in [1, horizon={policy.horizon}]. Got {self.n_action_steps}.")
        self.rng = np.random.default_rng(seed)
        self._history: deque[np.ndarray] = deque(maxlen=policy.n_obs_steps)
        self._queue: deque[np.ndarray] = deque()
        self.chunks = 0
        """Chunks predicted since construction."""
        self._previous: np.ndarray | None = None
        self._features = policy.layout.new_feature_state()
        self._sent: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        """New episode: forget history, queued actions and feature state (and reseed the noise when given)."""
        self._history.clear()
        self._queue.clear()
        self._previous = None
        self._features.reset()
        self._sent = None
        if seed is not None:
            self.rng = np.random.default_rng(seed)

    @property
    def current(self) -> np.ndarray:
        """The flattened observation of the latest call (with the policy's features, when it has any)."""
        return self._history[-1]

    def sent(self, command: np.ndarray) -> None:
        """Tell the actor what was actually sent this step (after a safety filter); by default, what it returned.

        Only policies with observation features read it (the disturbance observer compares the command
        sent with the motion that followed).
        """
        self._sent = np.array(command, dtype=np.float64)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The action to apply now."""
        layout = self.policy.layout
        features = self._features.update(obs, self._sent) if layout.features else None
        flat = layout.flatten(obs, features)
        if not self._history:
            self._history.extend([flat] * self.policy.n_obs_steps)
        else:
            self._history.append(flat)
        if not self._queue:
            chunk = self.policy.predict(np.stack(self._history), self.rng)
            self._queue.extend(chunk[: self.n_action_steps])
            self.chunks += 1
        action = self._queue.popleft()
        if getattr(self.policy, "has_residual", False):  # an exported policy with a per-step residual
            if getattr(self.policy, "residual_feedback", False):
                # It also reads the previous corrected action (the base action at the episode's first step).
                previous = action if self._previous is None else self._previous
                action = self.policy.correct(flat, action, previous)
                self._previous = np.array(action, dtype=np.float64)
            else:
                action = self.policy.correct(flat, action)
        if layout.features:
            self._sent = np.array(action, dtype=np.float64)
        return action


def check_layout(layout: ObsLayout, observation_space: Any, action_dim: int, action_space: Any) -> None:
    """Refuse an env whose observation or action layout differs from the policy's.

    Raises:
        ValueError: naming what differs.
    """
    spaces = getattr(observation_space, "spaces", None)
    if spaces is None:
        raise ValueError("the policy expects a dict observation space (goal-conditioned env).")
    missing = [k for k in layout.names if k not in spaces]
    if missing:
        raise ValueError(f"the policy reads observation entries {list(layout.names)}; the env has {sorted(spaces)}.")
    env_layout = layout_from_space(observation_space, layout.keys, layout.relative_goal)
    difference = layout.plain.difference(env_layout)
    if difference is not None:
        raise ValueError(f"the policy's observation layout differs from the env's: {difference} (policy vs env).")
    if tuple(action_space.shape) != (action_dim,):
        raise ValueError(
            f"the policy outputs {action_dim}-D actions; the env's action space has shape {tuple(action_space.shape)}."
        )


def layout_from_space(observation_space: Any, keys: Sequence[str], relative_goal: bool = False) -> ObsLayout:
    """The layout of ``keys`` in a dict observation space."""
    shapes = tuple(tuple(observation_space.spaces[parse_key(k)[0]].shape) for k in keys)
    return ObsLayout(tuple(keys), shapes, relative_goal)
