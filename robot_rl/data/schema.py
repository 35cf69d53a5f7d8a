"""The demonstration file layout (robomimic HDF5) and its attribute names, in one place.

A demonstration file holds one group per episode under ``data`` and optional train/validation
masks, as robomimic reads them::

    data/                              attrs: FileAttrs (env id, kwargs, control period, ...)
      demo_0/                          attrs: DemoAttrs (num_samples, seed, success, source, ...)
        obs/observation               (T, O)  float64  observation before each action
        obs/achieved_goal             (T, 3)  float64
        obs/desired_goal              (T, 3)  float64
        next_obs/<same keys>          (T, .)  float64  observation after each action
        actions                       (T, A)  float64  action applied (clipped to the action space)
        rewards                       (T,)    float64
        dones                         (T,)    bool     the episode ended after this step
        states                        (T, S)  float64  MuJoCo mjSTATE_INTEGRATION before each action
        interventions (optional)      (T,)    bool     a human took over at this step (RLIF, HIL-SERL)
      demo_1/ ...
    mask/train, mask/valid            (N,)    bytes    demo names of each split (robomimic filter keys)

``states`` is the full integration state (``mujoco.mj_getState`` with ``mjSTATE_INTEGRATION``:
time, qpos, qvel, act, warm start, ctrl, applied forces, mocap, equality flags, user data), so a
replay restored with ``mj_setState`` continues bit for bit. Demo names are ``demo_<K>`` with K
counting from 0 in the order the episodes were committed.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Mapping
from typing import Any

FORMAT = "robot_rl.demos"
"""Value of the ``format`` attribute on ``data``: marks a file written by robot_rl."""
FORMAT_VERSION = 1
"""Layout version; bumped when the layout changes incompatibly."""

DATA_GROUP = "data"
MASK_GROUP = "mask"
TRAIN_MASK = "train"
VALID_MASK = "valid"
DEMO_PREFIX = "demo_"

OBS = "obs"
NEXT_OBS = "next_obs"
ACTIONS = "actions"
REWARDS = "rewards"
DONES = "dones"
STATES = "states"
INTERVENTIONS = "interventions"

OBS_KEYS = ("observation", "achieved_goal", "desired_goal")
"""The dict observation keys of every robot_rl env."""
STEP_KEYS = (ACTIONS, REWARDS, DONES, STATES)
"""The per-step datasets every demo holds besides ``obs`` and ``next_obs``."""

STATE_SPEC = "mjSTATE_INTEGRATION"
"""The ``mujoco.mjtState`` spec of ``states``."""

ROBOMIMIC_GYM_ENV_TYPE = 2
"""robomimic's ``EnvType.GYM_TYPE``, recorded in the robomimic-style ``env_args`` attribute."""

_DEMO_NAME = re.compile(r"^demo_(0|[1-9][0-9]*)$")


class DatasetError(ValueError):
    """A demonstration file is missing, damaged, or not what was expected.

    The message says what is wrong, what was expected and how to fix it.
    """


class FileAttrs:
    """Attribute names on the ``data`` group."""

    FORMAT = "format"
    """``robot_rl.demos``."""
    FORMAT_VERSION = "format_version"
    """Integer layout version."""
    ENV_ID = "env_id"
    """Registered env id, e.g. ``robot_rl/PandaPush-v0``."""
    ENV_KWARGS = "env_kwargs"
    """JSON: keyword arguments for ``robot_rl.make(env_id, **env_kwargs)``."""
    ENV_ARGS = "env_args"
    """JSON, robomimic's form: ``{"env_name", "type", "env_kwargs"}``."""
    CTRL_DT = "ctrl_dt"
    """Control period [s]: one action every ``ctrl_dt``."""
    SOURCE = "source"
    """Source device(s): ``expert``, ``keyboard``, ...; comma-separated when a file mixes them."""
    SEED = "seed"
    """First episode seed of the collection that created the file."""
    CREATED = "created"
    """ISO 8601 UTC time the file was created."""
    UPDATED = "updated"
    """ISO 8601 UTC time of the last commit."""
    RANDOMIZATION = "randomization"
    """JSON: the env's DomainRandomization (the ranges episodes were drawn from)."""
    ROBOT_RL_VERSION = "robot_rl_version"
    MUJOCO_VERSION = "mujoco_version"
    """MuJoCo version that wrote ``states`` (the state layout may change between versions)."""
    STATE_SPEC = "state_spec"
    """``mjSTATE_INTEGRATION``."""
    TOTAL = "total"
    """Number of samples (steps) over all demos (robomimic)."""


class DemoAttrs:
    """Attribute names on each ``demo_K`` group."""

    NUM_SAMPLES = "num_samples"
    """Steps T in this demo (robomimic)."""
    SEED = "seed"
    """Seed of the env reset the demo starts from."""
    SUCCESS = "success"
    """The demo's success label: the env's success at the end, or the operator's save."""
    ENV_SUCCESS = "env_success"
    """The env's ``info["is_success"]`` after the last step."""
    SOURCE = "source"
    """Device that produced the actions."""
    RANDOMIZATION = "randomization"
    """JSON: the parameters drawn for this episode (``info["randomization"]`` at reset)."""
    ORIGIN = "origin"
    """``file:demo_K`` this demo was copied from (merge)."""


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    """The file-level metadata, as stored on the ``data`` group."""

    env_id: str
    """Registered env id."""
    env_kwargs: dict[str, Any]
    """Keyword arguments for ``make(env_id, **env_kwargs)`` (JSON-serializable)."""
    ctrl_dt: float
    """Control period [s]."""
    source: str
    """Source device(s)."""
    seed: int | None = None
    """First seed of the collection that created the file."""
    randomization: dict[str, Any] | None = None
    """The env's DomainRandomization as a dict (None: not recorded)."""
    created: str = ""
    """ISO 8601 UTC creation time."""
    updated: str = ""
    """ISO 8601 UTC time of the last commit."""
    robot_rl_version: str = ""
    mujoco_version: str = ""
    total: int = 0
    """Samples over all demos."""

    def env_args(self) -> dict[str, Any]:
        """The ``env_args`` attribute in robomimic's form."""
        return {"env_name": self.env_id, "type": ROBOMIMIC_GYM_ENV_TYPE, "env_kwargs": self.env_kwargs}

    def to_attrs(self) -> dict[str, Any]:
        """Attribute name -> value for the ``data`` group."""
        return {
            FileAttrs.FORMAT: FORMAT,
            FileAttrs.FORMAT_VERSION: FORMAT_VERSION,
            FileAttrs.ENV_ID: self.env_id,
            FileAttrs.ENV_KWARGS: canonical_json(self.env_kwargs),
            FileAttrs.ENV_ARGS: canonical_json(self.env_args()),
            FileAttrs.CTRL_DT: float(self.ctrl_dt),
            FileAttrs.SOURCE: self.source,
            FileAttrs.SEED: -1 if self.seed is None else int(self.seed),
            FileAttrs.CREATED: self.created,
            FileAttrs.UPDATED: self.updated,
            FileAttrs.RANDOMIZATION: canonical_json(self.randomization),
            FileAttrs.ROBOT_RL_VERSION: self.robot_rl_version,
            FileAttrs.MUJOCO_VERSION: self.mujoco_version,
            FileAttrs.STATE_SPEC: STATE_SPEC,
            FileAttrs.TOTAL: int(self.total),
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], where: str) -> DatasetMeta:
        """Read and check the ``data`` group's attributes; ``where`` names the file in errors."""
        fmt = _text(attrs.get(FileAttrs.FORMAT, ""))
        missing = [a for a in (FileAttrs.ENV_ID, FileAttrs.ENV_KWARGS, FileAttrs.CTRL_DT) if a not in attrs]
        if fmt != FORMAT and len(fmt) == len(FORMAT) and sum(a != b for a, b in zip(fmt, FORMAT, strict=True)) <= 2:
            raise DatasetError(
                f"{where} is corrupt: group 'data' has format {fmt!r}, a byte or two away from {FORMAT!r}. The file "
                "was damaged after it was written (disk, copy or transfer); copy it again from its source or "
                "re-collect it."
            )
        if fmt != FORMAT or missing:
            what = f"lacks the attributes {', '.join(missing)}" if missing else f"has format {fmt!r}"
            raise DatasetError(
                f"{where}: not a robot_rl demonstration file: group 'data' {what} (expected format "
                f"{FORMAT!r} with env_id, env_kwargs and ctrl_dt, as written by `robot-rl collect`). "
                "Record demonstrations with `robot-rl collect`, or pass a file it wrote."
            )
        version = int(attrs.get(FileAttrs.FORMAT_VERSION, 0))
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{where}: layout version {version}, this robot_rl reads version {FORMAT_VERSION}. "
                "Use the robot_rl release that wrote the file, or re-collect it."
            )
        try:
            env_kwargs = json.loads(_text(attrs[FileAttrs.ENV_KWARGS]))
            randomization = json.loads(_text(attrs.get(FileAttrs.RANDOMIZATION, "null")))
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{where}: attribute env_kwargs or randomization is not valid JSON ({err}). "
                "The file was edited or damaged; re-collect it."
            ) from None
        seed = int(attrs.get(FileAttrs.SEED, -1))
        return cls(
            env_id=_text(attrs[FileAttrs.ENV_ID]),
            env_kwargs=env_kwargs,
            ctrl_dt=float(attrs[FileAttrs.CTRL_DT]),
            source=_text(attrs.get(FileAttrs.SOURCE, "")),
            seed=None if seed < 0 else seed,
            randomization=randomization,
            created=_text(attrs.get(FileAttrs.CREATED, "")),
            updated=_text(attrs.get(FileAttrs.UPDATED, "")),
            robot_rl_version=_text(attrs.get(FileAttrs.ROBOT_RL_VERSION, "")),
            mujoco_version=_text(attrs.get(FileAttrs.MUJOCO_VERSION, "")),
            total=int(attrs.get(FileAttrs.TOTAL, 0)),
        )

    def same_env(self, other: DatasetMeta) -> str | None:
        """None when both describe the same env (id, kwargs, control period), else what differs."""
        if self.env_id != other.env_id:
            return f"env id {self.env_id!r} vs {other.env_id!r}"
        if canonical_json(self.env_kwargs) != canonical_json(other.env_kwargs):
            return f"env kwargs {canonical_json(self.env_kwargs)} vs {canonical_json(other.env_kwargs)}"
        if abs(self.ctrl_dt - other.ctrl_dt) > 1e-12:
            return f"ctrl_dt {self.ctrl_dt} s vs {other.ctrl_dt} s"
        return None


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, tuples as lists) used for storing and comparing kwargs.

    Raises:
        TypeError: ``value`` holds something JSON cannot represent (names the offending type).
    """
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"cannot store {value!r} as JSON: {err}. Pass plain numbers, strings, lists and dicts."
        ) from None


def _json_default(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def demo_name(index: int) -> str:
    """``demo_<index>``."""
    return f"{DEMO_PREFIX}{index}"


def demo_index(name: str) -> int | None:
    """K of ``demo_K``, or None for any other name."""
    match = _DEMO_NAME.match(name)
    return int(match.group(1)) if match else None


def sorted_demo_names(names: list[str] | Any) -> list[str]:
    """Demo names in numeric order (``demo_2`` before ``demo_10``); other names are dropped."""
    indexed = [(demo_index(n), n) for n in names]
    return [n for i, n in sorted((i, n) for i, n in indexed if i is not None)]


def _text(value: Any) -> str:
    """An HDF5 string attribute as ``str`` (h5py returns str, or bytes for fixed-length strings)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def utc_now() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
