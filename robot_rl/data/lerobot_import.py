"""LeRobotDataset v3.0 to a demo file: ``robot-rl data import-lerobot`` (the features: :mod:`robot_rl.data.lerobot`).

:func:`import_lerobot` refuses a feature it does not know (naming the ones it reads), a missing one, and one
whose width differs from the env's observation or action. :func:`read_episodes` checks what it reads as every
demo reader does: frames indexed 0..N-1 without gaps, each episode's frames in order, finite numbers (naming the
episode, feature and frame of a NaN or inf). :func:`write_demo_file` writes the robomimic layout with a sha256
checksum on every dataset (:mod:`integrity`), into a hidden file beside ``out`` that is renamed into place once
complete, as merge does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from robot_rl.data import lerobot_format as fmt
from robot_rl.data import schema
from robot_rl.data.dataset import Demo, DemoDataset
from robot_rl.data.integrity import CHECKSUM_ATTR, checksum_value, digest, nonfinite
from robot_rl.data.lerobot_format import (
    ACTION,
    DONE,
    ENV_STATE,
    GOALS,
    IMAGES,
    INTERVENTION,
    NEXT_ENV_STATE,
    NEXT_STATE,
    OPTIONAL,
    REQUIRED,
    REWARD,
    SIM_STATE,
    STATE,
    SUCCESS,
)
from robot_rl.data.merge import atomic_hdf5, remove_stale_temps
from robot_rl.data.schema import DatasetError, DatasetMeta, DemoAttrs

SCALARS = (REWARD, DONE, SUCCESS, INTERVENTION, *fmt.DEFAULT_FEATURES)
"""Shape-(1,) features: read as one value per frame."""


def _columns(root: Path, table: Any, features: Mapping[str, Any], widths: Mapping[str, int]) -> dict[str, np.ndarray]:
    """The frame columns the import reads, in ``index`` order."""
    names = [STATE, ENV_STATE, ACTION, REWARD, DONE, NEXT_STATE, NEXT_ENV_STATE, "index", "episode_index"]
    names += ["frame_index"] + [k for k in (SUCCESS, SIM_STATE, INTERVENTION) if k in features]
    absent = [n for n in names if n not in table.column_names]
    if absent:
        raise DatasetError(
            f"{root}: the data files lack the column{'s' if len(absent) > 1 else ''} {', '.join(absent)}."
        )
    columns = {}
    for name in names:
        try:
            if name in SCALARS:
                columns[name] = fmt.column_values(table, name, 1).reshape(-1)
            else:
                columns[name] = fmt.column_values(table, name, widths[name])
        except ValueError as err:
            raise DatasetError(f"{root}: {err}; the dataset is damaged or not from robot_rl.") from None
    index = columns["index"].astype(np.int64)
    order = np.argsort(index, kind="stable")
    if not np.array_equal(index[order], np.arange(len(index))):
        raise DatasetError(
            f"{root}: the frames' `index` is not 0..{len(index) - 1} without gaps or repeats; the dataset is damaged."
        )
    return {name: values[order] for name, values in columns.items()}


def _episode_table(root: Path, frames: int) -> dict[str, Any]:
    """``meta/episodes`` as columns, in episode order, checked against the ``frames`` of the data files."""
    table = fmt.read_parquet_dir(root, fmt.EPISODES_DIR)
    for name in ("episode_index", "dataset_from_index", "dataset_to_index"):
        if name not in table.column_names:
            raise DatasetError(f"{root}: {fmt.EPISODES_DIR} lacks the column {name}; the dataset is damaged.")
    rows = table.to_pydict()
    order = np.argsort(np.asarray(rows["episode_index"]), kind="stable")
    rows = {key: [values[i] for i in order] for key, values in rows.items()}
    count = len(order)
    if rows["episode_index"] != list(range(count)):
        raise DatasetError(f"{root}: episode indices are not 0..{count - 1}; the dataset is damaged.")
    ends = [0, *rows["dataset_to_index"]]
    if (
        rows["dataset_from_index"] != ends[:-1]
        or ends[-1] != frames
        or any(a >= b for a, b in zip(rows["dataset_from_index"], rows["dataset_to_index"], strict=True))
    ):
        raise DatasetError(
            f"{root}: the episodes' frame ranges (dataset_from_index, dataset_to_index) do not cover the {frames} "
            "frames one after another; the dataset is damaged."
        )
    return rows


def _check_finite(root: Path, episode: int, name: str, values: np.ndarray) -> None:
    found = nonfinite(values)
    if found is not None:
        raise DatasetError(
            f"{root}: episode {episode}, feature {name}: {found.describe().replace('step', 'frame', 1)}; demos must "
            "hold finite numbers."
        )


def read_episodes(
    root: Path, info: Mapping[str, Any], features: Mapping[str, Any], meta: DatasetMeta, widths: Mapping[str, int]
) -> list[Demo]:
    """Every episode of the dataset at ``root`` as a :class:`Demo` named ``demo_<episode_index>``.

    Args:
        root: The dataset folder.
        info: Its ``meta/info.json``.
        features: Its features (checked: known, present, widths matching the env).
        meta: The demo file's metadata (its ``source`` is the default of episodes without one).
        widths: Feature name -> values per frame, and ``goal``: the env's goal size (splits the
            environment state into achieved and desired goal).

    Raises:
        DatasetError: gaps or disorder in the frames or episodes, a frame out of its episode's order, a
            non-finite value (with episode, feature and frame), or a label column that cannot be read.
    """
    try:
        data = fmt.read_parquet_dir(root, fmt.DATA_DIR)
        columns = _columns(root, data, features, widths)
        rows = _episode_table(root, len(columns["index"]))
    except ValueError as err:
        raise DatasetError(str(err)) from None
    goal = widths["goal"]
    demos = []
    for e, (lo, hi) in enumerate(zip(rows["dataset_from_index"], rows["dataset_to_index"], strict=True)):
        part = {name: values[lo:hi] for name, values in columns.items()}
        if (part["episode_index"] != e).any() or not np.array_equal(part["frame_index"], np.arange(hi - lo)):
            raise DatasetError(
                f"{root}: frames {lo}..{hi - 1} should be episode {e}'s frames 0..{hi - lo - 1} in order, but their "
                "episode_index or frame_index differ; the dataset is damaged."
            )
        floats = {}
        for name in (STATE, ENV_STATE, ACTION, REWARD, NEXT_STATE, NEXT_ENV_STATE, SIM_STATE):
            if name in part:
                floats[name] = np.ascontiguousarray(part[name], dtype=np.float64)
                _check_finite(root, e, name, floats[name])
        steps = hi - lo
        labels = _labels(root, rows, e, part, meta.source)
        interventions = part[INTERVENTION].astype(bool) if INTERVENTION in part else None
        demos.append(
            Demo(
                name=schema.demo_name(e),
                obs=_observation(floats[STATE], floats[ENV_STATE], goal),
                next_obs=_observation(floats[NEXT_STATE], floats[NEXT_ENV_STATE], goal),
                actions=floats[ACTION],
                rewards=np.ascontiguousarray(floats[REWARD].reshape(steps)),
                dones=np.ascontiguousarray(part[DONE].reshape(steps).astype(bool)),
                states=floats.get(SIM_STATE, np.zeros((steps, 0), dtype=np.float64)),
                interventions=None if interventions is None else np.ascontiguousarray(interventions.reshape(steps)),
                **labels,
            )
        )
    return demos


def _observation(state: np.ndarray, env_state: np.ndarray, goal: int) -> dict[str, np.ndarray]:
    return {
        "observation": state,
        "achieved_goal": np.ascontiguousarray(env_state[:, :goal]),
        "desired_goal": np.ascontiguousarray(env_state[:, goal:]),
    }


def _labels(root: Path, rows: Mapping[str, list[Any]], e: int, part: Mapping[str, np.ndarray], source: str) -> dict:
    """Episode ``e``'s seed, success labels, source and randomization."""

    def column(name: str, default: Any) -> Any:
        value = rows[name][e] if name in rows else None
        return default if value is None else value

    last_success = bool(part[SUCCESS][-1]) if SUCCESS in part else None
    env_success = bool(column("env_success", last_success if last_success is not None else False))
    randomization = column("randomization", "null")
    try:
        parsed = json.loads(randomization) if isinstance(randomization, str) else randomization
    except json.JSONDecodeError as err:
        raise DatasetError(f"{root}: episode {e}'s randomization is not JSON ({err}).") from None
    seed = int(column("seed", -1))
    return {
        "seed": None if seed < 0 else seed,
        "success": bool(column("success", env_success)),
        "env_success": env_success,
        "source": str(column("source", source or "lerobot")),
        "randomization": parsed,
    }


def _dataset(group: h5py.Group, name: str, values: np.ndarray) -> None:
    dset = group.create_dataset(name, data=values, track_times=False)
    dset.attrs[CHECKSUM_ATTR] = checksum_value(digest(values))


def write_demo_file(
    out: Path, meta: DatasetMeta, demos: Sequence[Demo], masks: Mapping[str, Sequence[str]], origin: str
) -> None:
    """Write ``demos`` as a new demo file ``out`` (robomimic layout, a checksum on every dataset).

    Args:
        out: The file to create.
        meta: The file's metadata (``total`` is set from the demos).
        demos: The demos, written as ``demo_0``, ``demo_1``... in this order.
        masks: robomimic filter keys (``train``, ``valid``) -> demo names; empty for none.
        origin: Where the demos come from; each demo's ``origin`` attribute is ``<origin>:episode_<K>``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    total = sum(d.num_samples for d in demos)
    with atomic_hdf5(out) as f:
        data = f.create_group(schema.DATA_GROUP, track_times=False)
        for k, demo in enumerate(demos):
            group = data.create_group(schema.demo_name(k), track_times=False)
            for sub, obs in ((schema.OBS, demo.obs), (schema.NEXT_OBS, demo.next_obs)):
                sub_group = group.create_group(sub, track_times=False)
                for key in schema.OBS_KEYS:
                    _dataset(sub_group, key, obs[key])
            _dataset(group, schema.ACTIONS, demo.actions)
            _dataset(group, schema.REWARDS, demo.rewards)
            _dataset(group, schema.DONES, demo.dones)
            _dataset(group, schema.STATES, demo.states)
            if demo.interventions is not None:
                _dataset(group, schema.INTERVENTIONS, demo.interventions)
            group.attrs[DemoAttrs.NUM_SAMPLES] = np.int64(demo.num_samples)
            group.attrs[DemoAttrs.SEED] = np.int64(-1 if demo.seed is None else demo.seed)
            group.attrs[DemoAttrs.SUCCESS] = np.bool_(demo.success)
            group.attrs[DemoAttrs.ENV_SUCCESS] = np.bool_(demo.env_success)
            group.attrs[DemoAttrs.SOURCE] = demo.source
            group.attrs[DemoAttrs.RANDOMIZATION] = schema.canonical_json(demo.randomization)
            group.attrs[DemoAttrs.ORIGIN] = f"{origin}:episode_{k}"
        for key, value in dataclasses.replace(meta, total=total).to_attrs().items():
            data.attrs[key] = value
        if masks:
            mask_group = f.create_group(schema.MASK_GROUP, track_times=False)
            for key, names in masks.items():
                _dataset(mask_group, key, np.array(list(names), dtype="S"))


def import_lerobot(
    root: str | os.PathLike[str], out: str | os.PathLike[str], env_id: str | None = None
) -> dict[str, Any]:
    """Write a LeRobotDataset v3.0 of a robot_rl env as a demo file (robomimic HDF5 with checksums).

    A dataset written by :func:`export_lerobot` comes back bit for bit (every array, the demos' labels, seeds
    and sources, the file's metadata and masks). Camera features are skipped (re-render them from the states
    with ``robot-rl data render``).

    Args:
        root: The dataset folder (``meta/info.json`` ...).
        out: The demo file to create (must not exist).
        env_id: The env the dataset comes from, for a dataset without the ``robot_rl`` block in its
            ``info.json`` (not written by robot_rl); must match the block when both are given.

    Returns:
        ``out``, ``env_id``, ``episodes``, ``frames``, ``skipped`` (camera features), ``size_bytes``,
        ``wall_time_s``.

    Raises:
        DatasetError: not a v3 dataset, an unknown, missing or misshapen feature, a non-finite value,
            no env given, or ``out`` exists.
        RuntimeError: pyarrow is not installed.
    """
    start = time.perf_counter()
    fmt.pyarrow_modules()
    root, out = Path(root), Path(out)
    if out.exists():
        raise DatasetError(f"{out} already exists; import-lerobot writes a new demo file. Choose another --out.")
    try:
        info = fmt.read_info(root)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    features: dict[str, Any] = info["features"]
    skipped = _check_features(root, features)
    block = info.get("robot_rl") if isinstance(info.get("robot_rl"), dict) else None
    meta, masks = _meta_of(root, block, env_id, info)
    episodes = read_episodes(root, info, features, meta, _shapes(root, features, meta))
    demo_masks = {k: [schema.demo_name(i) for i in v] for k, v in masks.items()}
    write_demo_file(out, meta, episodes, demo_masks, origin=str(root))
    with DemoDataset(out) as ds:  # the readers' checks, on what was written
        for name in ds.demo_names:
            ds[name]
    frames = sum(len(e.actions) for e in episodes)
    return {
        "out": str(out),
        "env_id": meta.env_id,
        "episodes": len(episodes),
        "frames": frames,
        "skipped": skipped,
        "size_bytes": out.stat().st_size,
        "wall_time_s": time.perf_counter() - start,
    }


def _check_features(root: Path, features: dict[str, Any]) -> list[str]:
    """Refuse unknown and missing features; returns the camera features that are skipped."""
    damaged = [k for k, v in features.items() if not isinstance(v, dict) or "dtype" not in v or "shape" not in v]
    if damaged:
        raise DatasetError(f"{root}: meta/info.json feature {damaged[0]!r} lacks its dtype or shape; it is damaged.")
    known = set(REQUIRED) | set(OPTIONAL) | set(fmt.DEFAULT_FEATURES)
    cameras = [k for k, v in features.items() if k.startswith(IMAGES) and v.get("dtype") in fmt.VISUAL_DTYPES]
    unknown = [k for k in features if k not in known and k not in cameras]
    valid = (
        f"a robot_rl demo needs {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)}; cameras, {IMAGES}*, are "
        "skipped)"
    )
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise DatasetError(f"{root}: unknown LeRobot feature{plural} {', '.join(map(repr, unknown))}; {valid}.")
    missing = [k for k in (*REQUIRED, "index", "episode_index", "frame_index") if k not in features]
    if missing:
        raise DatasetError(f"{root}: missing feature{'s' if len(missing) > 1 else ''} {', '.join(missing)}; {valid}.")
    return cameras


def _meta_of(
    root: Path, block: dict[str, Any] | None, env_id: str | None, info: dict[str, Any]
) -> tuple[DatasetMeta, dict[str, list[int]]]:
    """The demo file's metadata: from the ``robot_rl`` block, else from ``env_id`` and the dataset's fps."""
    from robot_rl.envs.registry import ENV_SPECS, check_env_id

    if block is None and env_id is None:
        raise DatasetError(
            f"{root}: its meta/info.json does not say which robot_rl env the data comes from (no `robot_rl` "
            "block: it was not written by `robot-rl data export-lerobot`); pass --env ID."
        )
    if env_id is not None:
        env_id = check_env_id(env_id)
    if block is None:
        assert env_id is not None
        now = schema.utc_now()
        fps = info.get("fps")
        if not isinstance(fps, int | float) or fps <= 0:
            raise DatasetError(f"{root}: meta/info.json has fps {fps!r}; expected a positive number.")
        spec_kwargs = dict(ENV_SPECS[env_id].kwargs)
        meta = DatasetMeta(env_id, spec_kwargs, 1.0 / fps, "lerobot", created=now, updated=now)
        return meta, {}
    try:
        fields = {f.name: block[f.name] for f in dataclasses.fields(DatasetMeta) if f.name in block}
        meta = DatasetMeta(**fields)
        masks = {str(k): [int(i) for i in v] for k, v in (block.get("masks") or {}).items()}
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{root}: the `robot_rl` block of meta/info.json is damaged ({err}).") from None
    if env_id is not None and env_id != meta.env_id:
        raise DatasetError(f"{root} holds demos of {meta.env_id} (meta/info.json), but --env says {env_id}.")
    if meta.env_id not in ENV_SPECS:
        check_env_id(meta.env_id)
    now = schema.utc_now()
    return dataclasses.replace(meta, created=meta.created or now, updated=now), masks


def _shapes(root: Path, features: dict[str, Any], meta: DatasetMeta) -> dict[str, int]:
    """Each feature's width, checked against the env's observation and action spaces."""
    from robot_rl.envs.registry import make

    env = make(meta.env_id, **meta.env_kwargs)
    try:
        spaces = env.observation_space.spaces
        obs_dim = int(spaces["observation"].shape[0])
        goal_dims = [int(spaces[key].shape[0]) for key in GOALS]
        action_dim = int(env.action_space.shape[0])
    finally:
        env.close()
    expected = {
        STATE: (obs_dim, "observation"),
        NEXT_STATE: (obs_dim, "observation"),
        ENV_STATE: (sum(goal_dims), "achieved_goal + desired_goal"),
        NEXT_ENV_STATE: (sum(goal_dims), "achieved_goal + desired_goal"),
        ACTION: (action_dim, "action"),
    }
    widths = {}
    for name, spec in features.items():
        shape = spec.get("shape")
        if not isinstance(shape, list | tuple) or len(shape) != 1 or not all(isinstance(n, int) for n in shape):
            if name.startswith(IMAGES):
                continue
            raise DatasetError(f"{root}: feature {name} has shape {shape}; robot_rl reads 1-D features.")
        widths[name] = int(shape[0])
        if name in expected and widths[name] != expected[name][0]:
            raise DatasetError(
                f"{root}: feature {name} has {widths[name]} values per frame, but {meta.env_id} has "
                f"{expected[name][0]} ({expected[name][1]}); the dataset is not from this env."
            )
    widths["goal"] = goal_dims[0]
    return widths


def format_import(summary: dict[str, Any]) -> str:
    """One line for ``robot-rl data import-lerobot``."""
    skipped = f"; skipped {', '.join(summary['skipped'])} (re-render with `robot-rl data render`)"
    return (
        f"{summary['out']}: {summary['episodes']} demos ({summary['frames']} steps) of {summary['env_id']}, "
        f"{summary['size_bytes'] / 1e6:.2f} MB, {summary['wall_time_s']:.1f} s"
        + (skipped if summary["skipped"] else "")
    )
