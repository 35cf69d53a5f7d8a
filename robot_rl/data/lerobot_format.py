"""The LeRobotDataset v3.0 layout, written and read with pyarrow alone (no lerobot install needed).

What LeRobot 0.4 writes and reads (``lerobot/datasets/lerobot_dataset.py`` and ``utils.py``, ``CODEBASE_VERSION =
"v3.0"``), and so what this module writes::

    meta/info.json                              codebase_version, fps, features, totals, path templates
    meta/stats.json                             per feature: min, max, mean, std, count, q01, q10, q50, q90, q99
    meta/tasks.parquet                          task_index, indexed by the task string (a pandas index)
    meta/episodes/chunk-000/file-000.parquet    one row per episode: length, its frames' index range, where its
                                                data and video are, and its own stats (``stats/<feature>/<stat>``)
    data/chunk-000/file-000.parquet             one row per frame, many episodes per file
    videos/<key>/chunk-000/file-000.mp4         many episodes per video; an episode is [from, to) seconds of it

Vectors are ``fixed_size_list`` columns and shape-(1,) features plain columns, as Hugging Face ``datasets``
stores ``Sequence(length=n)`` and ``Value``; every frame has ``timestamp`` (``frame_index / fps``, float32),
``frame_index``, ``episode_index``, ``index`` (over the dataset) and ``task_index``. ``tasks.parquet`` carries
pandas' metadata so that ``pandas.read_parquet`` gives the task strings as the index, which LeRobot looks tasks up
by. A new data or video file starts when the current one reaches ``data_files_size_in_mb`` (100) or
``video_files_size_in_mb`` (200); a new chunk folder every ``chunks_size`` (1000) files.

Statistics are exact over all frames (LeRobot estimates its quantiles from 5000-bin histograms and averages the
episodes' quantiles by frame count); image statistics are per channel over every pixel, scaled to [0, 1], shape
(3, 1, 1), as LeRobot stores them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

CODEBASE_VERSION = "v3.0"
"""The LeRobotDataset layout this module writes (``lerobot.datasets.lerobot_dataset.CODEBASE_VERSION``)."""
CHUNKS_SIZE = 1000
"""Files per chunk folder (LeRobot's ``DEFAULT_CHUNK_SIZE``)."""
DATA_FILE_MB = 100
"""A data file is closed once it holds this many MB (LeRobot's ``DEFAULT_DATA_FILE_SIZE_IN_MB``)."""
VIDEO_FILE_MB = 200
"""A video file is closed once it holds this many MB (LeRobot's ``DEFAULT_VIDEO_FILE_SIZE_IN_MB``)."""

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
DATA_DIR = "data"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = f"{DATA_DIR}/{CHUNK_FILE}.parquet"
EPISODES_PATH = f"{EPISODES_DIR}/{CHUNK_FILE}.parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"

DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
"""The features every LeRobot frame has besides the dataset's own (LeRobot's ``DEFAULT_FEATURES``)."""
VISUAL_DTYPES = ("video", "image")

# robot_rl's features (the table of robot_rl.data.lerobot).
STATE = "observation.state"
ENV_STATE = "observation.environment_state"
ACTION = "action"
REWARD = "next.reward"
DONE = "next.done"
SUCCESS = "next.success"
NEXT_STATE = "next.observation.state"
NEXT_ENV_STATE = "next.observation.environment_state"
SIM_STATE = "complementary_info.mujoco_state"
INTERVENTION = "complementary_info.is_intervention"
IMAGES = "observation.images."

REQUIRED = (STATE, ENV_STATE, ACTION, REWARD, DONE, NEXT_STATE, NEXT_ENV_STATE)
"""Features an import needs: a demo holds each of them."""
OPTIONAL = (SUCCESS, SIM_STATE, INTERVENTION)
"""Features an import reads when present."""
GOALS = ("achieved_goal", "desired_goal")
"""The observation keys concatenated into ``observation.environment_state``, in this order."""

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
"""The quantiles LeRobot stores (``compute_stats.DEFAULT_QUANTILES``), as ``q01`` ... ``q99``."""
STAT_KEYS = ("min", "max", "mean", "std", "count", *(f"q{round(q * 100):02d}" for q in QUANTILES))


def pyarrow_modules() -> tuple[Any, Any]:
    """``(pyarrow, pyarrow.parquet)``.

    Raises:
        RuntimeError: pyarrow is not installed (it is an optional dependency).
    """
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise RuntimeError(
            "LeRobot datasets are parquet files and need pyarrow, which is not installed. Install it with "
            "`pip install 'robot_rl[lerobot]'` (or `pip install pyarrow==26.0.1`)."
        ) from None
    return pyarrow, pyarrow.parquet


def chunk_file(file_number: int) -> dict[str, int]:
    """``{"chunk_index", "file_index"}`` of the ``file_number``-th file (0, 1, ...) of a kind."""
    return {"chunk_index": file_number // CHUNKS_SIZE, "file_index": file_number % CHUNKS_SIZE}


# ------------------------------------------------------------------------------------------------ statistics
def vector_stats(values: np.ndarray) -> dict[str, list[Any]]:
    """LeRobot's statistics of a feature over frames, each a list over its dimensions.

    Args:
        values: Shape (N,) for a shape-(1,) feature or (N, D); float, int or bool.

    Returns:
        ``min``, ``max`` (in the feature's type), ``mean``, ``std`` (population), ``count`` ([N]) and the
        quantiles ``q01`` ... ``q99`` (linear interpolation), each a list of D values (1 for shape (1,)).
    """
    values = values.reshape(len(values), -1)
    as_float = values.astype(np.float64)
    stats: dict[str, list[Any]] = {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": as_float.mean(axis=0).tolist(),
        "std": as_float.std(axis=0).tolist(),
        "count": [len(values)],
    }
    quantiles = np.quantile(as_float, QUANTILES, axis=0)
    for key, values in zip(STAT_KEYS[5:], quantiles, strict=True):
        stats[key] = values.tolist()
    return stats


def pixel_histogram(frames: np.ndarray) -> np.ndarray:
    """Per-channel counts of each 8-bit value in RGB frames of shape (N, H, W, 3). Shape: (3, 256), int64."""
    flat = frames.reshape(-1, frames.shape[-1])
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def image_stats(histogram: np.ndarray, frames: int) -> dict[str, list[Any]]:
    """LeRobot's image statistics from :func:`pixel_histogram` counts: per channel, in [0, 1], shape (3, 1, 1).

    Quantiles are the smallest pixel value whose cumulative share reaches q (exact for 8-bit values).
    """
    levels = np.arange(histogram.shape[1], dtype=np.float64) / 255.0
    total = histogram.sum(axis=1, keepdims=True).astype(np.float64)
    share = histogram / total
    mean = (share * levels).sum(axis=1)
    std = np.sqrt(np.maximum((share * levels**2).sum(axis=1) - mean**2, 0.0))
    present = histogram > 0
    low = levels[np.argmax(present, axis=1)]
    high = levels[histogram.shape[1] - 1 - np.argmax(present[:, ::-1], axis=1)]
    cumulative = np.cumsum(share, axis=1)
    stats: dict[str, Any] = {"min": low, "max": high, "mean": mean, "std": std}
    for q, key in zip(QUANTILES, STAT_KEYS[5:], strict=True):
        stats[key] = levels[np.argmax(cumulative >= q - 1e-12, axis=1)]
    out = {key: np.asarray(value).reshape(-1, 1, 1).tolist() for key, value in stats.items()}
    out["count"] = [int(frames)]
    return {key: out[key] for key in STAT_KEYS}


# ------------------------------------------------------------------------------------------------ writing
def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """``value`` as JSON with LeRobot's indentation (4), creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=4, ensure_ascii=False) + "\n")


def hf_feature(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` feature of a LeRobot feature spec (the ``huggingface`` schema metadata)."""
    value = {"dtype": spec["dtype"], "_type": "Value"}
    if list(spec["shape"]) == [1]:
        return value
    return {"feature": value, "length": int(spec["shape"][0]), "_type": "List"}


def frame_table(columns: Mapping[str, np.ndarray], features: Mapping[str, Mapping[str, Any]]) -> Any:
    """A pyarrow table of frames: one column per non-visual feature, in ``features`` order.

    Args:
        columns: Feature name -> values, shape (N,) for shape-(1,) features, else (N, D).
        features: The ``info.json`` features (their dtype and shape decide each column's type).
    """
    pa, _ = pyarrow_modules()
    arrays, names, hf = [], [], {}
    for name, spec in features.items():
        if spec["dtype"] in VISUAL_DTYPES:
            continue
        values = np.ascontiguousarray(columns[name], dtype=np.dtype(spec["dtype"]))
        if list(spec["shape"]) == [1]:
            arrays.append(pa.array(values.reshape(-1)))
        else:
            width = int(spec["shape"][0])
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width))
        names.append(name)
        hf[name] = hf_feature(spec)
    table = pa.Table.from_arrays(arrays, names=names)
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": hf}})})


def write_table(path: Path, table: Any) -> None:
    """Write a parquet file as LeRobot does (snappy, dictionary encoding), creating the parent folders."""
    _, pq = pyarrow_modules()
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy", use_dictionary=True)


def tasks_table(tasks: Sequence[str]) -> Any:
    """``meta/tasks.parquet``: ``task_index`` with the task strings as a pandas index, as LeRobot writes it.

    LeRobot reads the file with ``pandas.read_parquet`` and finds a task's index with ``tasks.loc[task]``; the
    ``pandas`` schema metadata below is what makes pandas restore the strings as the index.
    """
    pa, _ = pyarrow_modules()
    index = "__index_level_0__"
    pandas_meta = {
        "index_columns": [index],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": None, "field_name": index, "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "attributes": {},
        "creator": {"library": "pyarrow", "version": pa.__version__},
    }
    table = pa.Table.from_arrays(
        [pa.array(np.arange(len(tasks), dtype=np.int64)), pa.array(list(tasks), type=pa.large_string())],
        names=["task_index", index],
    )
    return table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})


def episodes_table(rows: Sequence[Mapping[str, Any]]) -> Any:
    """``meta/episodes/...parquet`` from one dict per episode (the columns are the first row's keys, in order)."""
    pa, _ = pyarrow_modules()
    return pa.Table.from_pydict({key: [row[key] for row in rows] for key in rows[0]})


def directory_size(path: Path) -> int:
    """Bytes of every file under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ reading
def read_info(root: Path) -> dict[str, Any]:
    """``meta/info.json`` of the dataset at ``root``.

    Raises:
        ValueError: no such file, not JSON, or not a v3 dataset.
    """
    path = root / INFO_PATH
    if not root.is_dir():
        raise ValueError(f"{root}: no such folder; give the root folder of a LeRobotDataset (it holds {INFO_PATH}).")
    if not path.is_file():
        raise ValueError(
            f"{root}: not a LeRobotDataset: it has no {INFO_PATH} (a v3 dataset holds {INFO_PATH}, {EPISODES_DIR}/ "
            f"and {DATA_DIR}/). Give the dataset's root folder."
        )
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the dataset is damaged.") from None
    version = str(info.get("codebase_version", ""))
    if not version.startswith("v3."):
        raise ValueError(
            f"{root}: LeRobotDataset {version or 'without a codebase_version'}; robot_rl reads v3.0. Convert it "
            "with LeRobot's `lerobot/datasets/v30/convert_dataset_v21_to_v30.py` first."
        )
    if not isinstance(info.get("features"), dict):
        raise ValueError(f"{path} has no `features` table; the dataset is damaged.")
    return info


def read_parquet_dir(root: Path, folder: str) -> Any:
    """Every ``<folder>/chunk-*/file-*.parquet`` under ``root``, concatenated in chunk and file order.

    Raises:
        ValueError: no parquet file there, or one pyarrow cannot read.
    """
    pa, pq = pyarrow_modules()
    paths = sorted((root / folder).glob("chunk-*/file-*.parquet"))
    if not paths:
        raise ValueError(f"{root}: no {folder}/chunk-*/file-*.parquet; the dataset is incomplete.")
    tables = []
    for path in paths:
        try:
            tables.append(pq.read_table(path))
        except (OSError, pa.ArrowException) as err:
            raise ValueError(
                f"{path}: pyarrow cannot read it ({str(err).splitlines()[0]}); the file is damaged."
            ) from None
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as err:
        raise ValueError(f"{root / folder}: its files have different columns ({err}).") from None


def column_values(table: Any, name: str, width: int | None) -> np.ndarray:
    """A column as numpy: shape (N,) for ``width`` None, else (N, width).

    Raises:
        ValueError: the column holds missing values, or rows of another length than ``width``.
    """
    pa, _ = pyarrow_modules()
    column = table.column(name).combine_chunks()
    kind = column.type
    if width is None or (width == 1 and not pa.types.is_nested(kind)):
        values = column
    elif pa.types.is_fixed_size_list(kind):
        if kind.list_size != width:
            raise ValueError(f"column {name!r} holds lists of {kind.list_size} values, expected {width}")
        values = column.flatten()
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        lengths = column.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != width).any():
            row = int(np.argmax(lengths != width))
            raise ValueError(f"column {name!r} row {row} holds {lengths[row]} values, expected {width}")
        values = column.flatten()
    else:
        raise ValueError(f"column {name!r} holds {kind} values, expected lists of {width}")
    if column.null_count or values.null_count:
        raise ValueError(f"column {name!r} holds missing values (nulls)")
    array = values.to_numpy(zero_copy_only=False)
    return array if width is None else array.reshape(len(column), width)


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out`` (which must be absent or an empty folder)."""
    if out.is_dir():
        out.rmdir()
    os.replace(tmp, out)
