"""Demo files to and from LeRobotDataset v3.0 (parquet, optional MP4): ``robot-rl data export-lerobot|import-lerobot``.

Export writes the layout of :mod:`lerobot_format` with pyarrow (no lerobot install needed); LeRobot 0.4's
``LeRobotDataset(repo_id, root=DIR)`` loads it and trains on it (docs/interop.md). Each demo is one episode and
each step one frame; the features (``meta/info.json``):

=========================================  ===============================================  ===============
LeRobot feature                            demo file                                        dtype, shape
=========================================  ===============================================  ===============
``observation.state``                      ``obs/observation``                              float64 (O,)
``observation.environment_state``          ``obs/achieved_goal`` then ``obs/desired_goal``  float64 (2G,)
``action``                                 ``actions``                                      float64 (A,)
``next.reward``                            ``rewards``                                      float64 (1,)
``next.done``                              ``dones``                                        bool (1,)
``next.success``                           the demo's ``env_success``, on its last frame    bool (1,)
``next.observation.state``                 ``next_obs/observation``                         float64 (O,)
``next.observation.environment_state``     ``next_obs/achieved_goal``, ``desired_goal``     float64 (2G,)
``complementary_info.mujoco_state``        ``states`` (absent for demos without them)       float64 (S,)
``complementary_info.is_intervention``     ``interventions`` (if the demos track them)      bool (1,)
``observation.images.<camera>`` (--video)  rendered from ``states``                         video (H, W, 3)
=========================================  ===============================================  ===============

Values keep their float64 bits, so an import gives back the same arrays bit for bit (LeRobot hands them to a
policy as float32 tensors). The goals go into ``observation.environment_state``, which LeRobot's policies read
beside ``observation.state``. Per episode (``meta/episodes``), besides LeRobot's columns: ``success`` (the
demo's label), ``env_success``, ``seed``, ``source`` and ``randomization`` (JSON).
``info.json`` holds the file's metadata under ``robot_rl`` (env id and kwargs, control period, versions, masks).

Both directions refuse bad input in one line: a demo file is read through :class:`DemoDataset`, so a damaged
dataset or a NaN is refused with its demo, key and step; an import names a feature it does not know beside the
ones it reads, a missing or misshapen one, and a non-finite value with its episode, feature and frame.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.data import lerobot_format as fmt
from robot_rl.data import schema
from robot_rl.data.dataset import Demo, DemoDataset
from robot_rl.data.lerobot_format import (
    ACTION,
    DONE,
    ENV_STATE,
    GOALS,
    INTERVENTION,
    NEXT_ENV_STATE,
    NEXT_STATE,
    REWARD,
    SIM_STATE,
    STATE,
    SUCCESS,
)
from robot_rl.data.lerobot_import import format_import, import_lerobot
from robot_rl.data.schema import DatasetError, DatasetMeta

__all__ = ["export_lerobot", "format_export", "format_import", "import_lerobot"]


def _axis_names(prefix: str, size: int) -> list[str]:
    return [f"{prefix}.{'xyz'[i]}" for i in range(size)] if size == 3 else [f"{prefix}.{i}" for i in range(size)]


def features_for(demo: Demo, interventions: bool) -> dict[str, Any]:
    """The ``info.json`` features of a demo file's data (no camera, no LeRobot defaults), in column order.

    Args:
        demo: A demo of the file (the widths of its arrays).
        interventions: Whether any demo of the file tracks interventions.
    """

    def vector(size: int, names: list[str]) -> dict[str, Any]:
        return {"dtype": "float64", "shape": [size], "names": names}

    obs_dim, action_dim, state_dim = demo.obs["observation"].shape[1], demo.actions.shape[1], demo.states.shape[1]
    goal_names = [n for key in GOALS for n in _axis_names(key, demo.obs[key].shape[1])]
    features = {
        STATE: vector(obs_dim, [f"observation.{i}" for i in range(obs_dim)]),
        ENV_STATE: vector(len(goal_names), goal_names),
        ACTION: vector(action_dim, [f"action.{i}" for i in range(action_dim)]),
        REWARD: {"dtype": "float64", "shape": [1], "names": None},
        DONE: {"dtype": "bool", "shape": [1], "names": None},
        SUCCESS: {"dtype": "bool", "shape": [1], "names": None},
        NEXT_STATE: vector(obs_dim, [f"observation.{i}" for i in range(obs_dim)]),
        NEXT_ENV_STATE: vector(len(goal_names), goal_names),
    }
    if state_dim:
        features[SIM_STATE] = vector(state_dim, [f"{schema.STATE_SPEC}.{i}" for i in range(state_dim)])
    if interventions:
        features[INTERVENTION] = {"dtype": "bool", "shape": [1], "names": None}
    return features


def fps_of(ctrl_dt: float, where: str) -> int:
    """The integer frame rate of a control period (LeRobotDataset stores ``fps`` as an integer).

    Raises:
        DatasetError: ``1 / ctrl_dt`` is not an integer.
    """
    rate = 1.0 / ctrl_dt
    if not math.isfinite(rate) or rate < 1 or abs(rate - round(rate)) > 1e-6 * rate:
        raise DatasetError(
            f"{where}: control period {ctrl_dt} s is {rate:.6g} frames per second; a LeRobotDataset stores an "
            "integer fps, so only envs whose control rate is a whole number of Hz can be exported."
        )
    return round(rate)


def _demo_columns(demo: Demo, features: dict[str, Any]) -> dict[str, np.ndarray]:
    """One demo's feature columns (frames in order)."""
    steps = demo.num_samples
    success = np.zeros(steps, dtype=bool)
    success[-1] = demo.env_success
    columns = {
        STATE: demo.obs["observation"],
        ENV_STATE: np.concatenate([demo.obs[key] for key in GOALS], axis=1),
        ACTION: demo.actions,
        REWARD: demo.rewards,
        DONE: demo.dones,
        SUCCESS: success,
        NEXT_STATE: demo.next_obs["observation"],
        NEXT_ENV_STATE: np.concatenate([demo.next_obs[key] for key in GOALS], axis=1),
    }
    if SIM_STATE in features:
        columns[SIM_STATE] = demo.states
    if INTERVENTION in features:
        columns[INTERVENTION] = demo.interventions
    return columns


def _read_demos(ds: DemoDataset) -> list[Demo]:
    """Every demo, checked: a damaged dataset or a non-finite value is refused with its location."""
    demos = []
    for name in ds.demo_names:
        demo, _, problems = ds.inspect(name)
        if problems:
            more = f" ({len(problems) - 1} more problems in this demo)" if len(problems) > 1 else ""
            raise DatasetError(f"cannot export: {problems[0].refusal(ds.path)}{more}")
        extra = sorted(set(demo.obs) - set(schema.OBS_KEYS))
        if extra:
            raise DatasetError(
                f"cannot export {ds.path}: {name} has observation keys {', '.join(extra)} besides "
                f"{', '.join(schema.OBS_KEYS)}; the LeRobot export maps only those."
            )
        demos.append(demo)
    return demos


def _prepare_out(out: Path) -> Path:
    """A fresh temporary folder beside ``out`` (``out`` must not exist or be an empty folder)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise DatasetError(
            f"{out} is {what}; export-lerobot writes a new dataset folder. Choose another --out or delete it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def export_lerobot(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    video: bool = False,
    width: int | None = None,
    height: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Write a demo file as a LeRobotDataset v3.0 folder (see the module docstring for the features).

    Args:
        path: The demo file (HDF5).
        out: The dataset folder to create (absent or empty). Written beside it first, then renamed.
        video: Also render each demo from its saved states into ``observation.images.<camera>`` (MP4).
        width: Video frame width [px] (default: the env's).
        height: Video frame height [px] (default: the env's).
        progress: Show a progress bar over the demos.

    Returns:
        ``out``, ``episodes``, ``frames``, ``fps``, ``features`` (names), ``data_files``, ``video_files``,
        ``size_bytes`` and ``wall_time_s``.

    Raises:
        DatasetError: the file is damaged or holds NaN/inf (named with demo, key and step), its control
            rate is not a whole number of Hz, or ``out`` exists and is not empty.
        RuntimeError: pyarrow is not installed, or offscreen rendering fails.
    """
    start = time.perf_counter()
    fmt.pyarrow_modules()
    out = Path(out)
    with DemoDataset(path) as ds:
        meta, masks = ds.meta, ds.masks()
        fps = fps_of(meta.ctrl_dt, str(ds.path))
        demos = _read_demos(ds)
    if not demos:
        raise DatasetError(f"{path} holds no demos; there is nothing to export.")
    features = features_for(demos[0], any(d.interventions is not None for d in demos))
    tmp = _prepare_out(out)
    try:
        summary = _write(tmp, demos, meta, masks, features, fps, video, width, height, progress, Path(path))
        fmt.replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    summary.update(out=str(out), size_bytes=fmt.directory_size(out), wall_time_s=time.perf_counter() - start)
    return summary


def _write(
    root: Path,
    demos: list[Demo],
    meta: DatasetMeta,
    masks: dict[str, list[str]],
    features: dict[str, Any],
    fps: int,
    video: bool,
    width: int | None,
    height: int | None,
    progress: bool,
    source: Path,
) -> dict[str, Any]:
    from robot_rl.envs.registry import ENV_SPECS

    spec = ENV_SPECS.get(meta.env_id)
    task = spec.description if spec is not None else meta.env_id
    videos = None
    if video:
        from robot_rl.data.lerobot_video import EpisodeVideos

        videos = EpisodeVideos(root, meta.env_id, meta.env_kwargs, fps, width, height)
    all_features = {**features, **fmt.DEFAULT_FEATURES}
    columns: dict[str, list[np.ndarray]] = {name: [] for name in all_features}
    rows: list[dict[str, Any]] = []
    file_rows: dict[str, list[np.ndarray]] = {name: [] for name in all_features}
    file_number, file_bytes, data_files, index = 0, 0, 0, 0
    iterator: Any = demos
    if progress:
        from tqdm import tqdm

        iterator = tqdm(demos, desc=f"export {source.name}", unit="demo")
    try:
        for episode, demo in enumerate(iterator):
            steps = demo.num_samples
            frame = _demo_columns(demo, features)
            frame_index = np.arange(steps, dtype=np.int64)
            frame["timestamp"] = (frame_index / fps).astype(np.float32)
            frame["frame_index"] = frame_index
            frame["episode_index"] = np.full(steps, episode, dtype=np.int64)
            frame["index"] = np.arange(index, index + steps, dtype=np.int64)
            frame["task_index"] = np.zeros(steps, dtype=np.int64)
            place = fmt.chunk_file(file_number)
            row: dict[str, Any] = {
                "episode_index": episode,
                "tasks": [task],
                "length": steps,
                "data/chunk_index": place["chunk_index"],
                "data/file_index": place["file_index"],
                "dataset_from_index": index,
                "dataset_to_index": index + steps,
            }
            stats = {name: fmt.vector_stats(np.asarray(frame[name])) for name in all_features}
            if videos is not None:
                video_columns, stats[videos.key] = videos.add(demo, str(source))
                row.update(video_columns)
            for name in stats:
                for key, value in stats[name].items():
                    row[f"stats/{name}/{key}"] = value
            row.update(
                {
                    "meta/episodes/chunk_index": 0,
                    "meta/episodes/file_index": 0,
                    "success": bool(demo.success),
                    "env_success": bool(demo.env_success),
                    "seed": -1 if demo.seed is None else int(demo.seed),
                    "source": demo.source,
                    "randomization": schema.canonical_json(demo.randomization),
                }
            )
            rows.append(row)
            for name in all_features:
                columns[name].append(frame[name])
                file_rows[name].append(frame[name])
            index += steps
            file_bytes += sum(np.asarray(frame[name]).nbytes for name in all_features)
            if file_bytes >= fmt.DATA_FILE_MB * 1024 * 1024:
                _flush(root, file_rows, all_features, file_number)
                file_number, file_bytes, data_files = file_number + 1, 0, data_files + 1
        if file_bytes:
            _flush(root, file_rows, all_features, file_number)
            data_files += 1
    finally:
        if videos is not None:
            videos.close()
    info_features = dict(features)
    if videos is not None:
        info_features[videos.key] = videos.feature()
    info_features.update(fmt.DEFAULT_FEATURES)
    stats = {name: fmt.vector_stats(np.concatenate(columns[name])) for name in all_features}
    if videos is not None:
        stats[videos.key] = videos.stats()
    fmt.write_json(root / fmt.STATS_PATH, stats)
    fmt.write_table(root / fmt.TASKS_PATH, fmt.tasks_table([task]))
    fmt.write_table(root / fmt.EPISODES_PATH.format(**fmt.chunk_file(0)), fmt.episodes_table(rows))
    index_of = {demo.name: i for i, demo in enumerate(demos)}
    info = {
        "codebase_version": fmt.CODEBASE_VERSION,
        "robot_type": _robot_type(meta.env_id),
        "total_episodes": len(demos),
        "total_frames": index,
        "total_tasks": 1,
        "chunks_size": fmt.CHUNKS_SIZE,
        "data_files_size_in_mb": fmt.DATA_FILE_MB,
        "video_files_size_in_mb": fmt.VIDEO_FILE_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(demos)}"},
        "data_path": fmt.DATA_PATH,
        "video_path": fmt.VIDEO_PATH if videos is not None else None,
        "features": info_features,
        "robot_rl": _file_meta(meta, {k: [index_of[n] for n in v if n in index_of] for k, v in masks.items()}),
    }
    fmt.write_json(root / fmt.INFO_PATH, info)
    video_files = len(list((root / "videos").rglob("*.mp4"))) if videos is not None else 0
    return {
        "episodes": len(demos),
        "frames": index,
        "fps": fps,
        "features": list(info_features),
        "data_files": data_files,
        "video_files": video_files,
    }


def _flush(root: Path, rows: dict[str, list[np.ndarray]], features: dict[str, Any], file_number: int) -> None:
    """Write the frames gathered for one data file and empty ``rows``."""
    table = fmt.frame_table({name: np.concatenate(parts) for name, parts in rows.items()}, features)
    fmt.write_table(root / fmt.DATA_PATH.format(**fmt.chunk_file(file_number)), table)
    for parts in rows.values():
        parts.clear()


def _robot_type(env_id: str) -> str | None:
    from robot_rl.envs.registry import ENV_SPECS

    spec = ENV_SPECS.get(env_id)
    return spec.robot.robot if spec is not None else None


def _file_meta(meta: DatasetMeta, masks: dict[str, list[int]]) -> dict[str, Any]:
    """The ``robot_rl`` block of ``info.json``: the demo file's metadata, masks as episode indices."""
    fields = dataclasses.asdict(meta)
    fields.pop("total")
    return {"format": schema.FORMAT, "format_version": schema.FORMAT_VERSION, **fields, "masks": masks}


def format_export(summary: dict[str, Any]) -> str:
    """One line for ``robot-rl data export-lerobot``."""
    video = f", {summary['video_files']} video files" if summary["video_files"] else ""
    return (
        f"{summary['out']}: LeRobotDataset v3.0, {summary['episodes']} episodes, {summary['frames']} frames at "
        f"{summary['fps']} fps, {summary['data_files']} data files{video}, {summary['size_bytes'] / 1e6:.2f} MB, "
        f"{summary['wall_time_s']:.1f} s"
    )
