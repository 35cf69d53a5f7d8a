"""The `robot-rl` verbs as typed options (tyro dataclasses): what each command takes and writes.

The library's own configs (eval, train, monitor, pipeline) live beside their code; the verbs that are
only command lines (envs, bench, collect, data, export, convert) are here, with the union tyro parses.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Literal

import tyro

from robot_rl.cli.checks import OutputKind
from robot_rl.evaluation.evaluate import EvalConfig
from robot_rl.limits import check_counts, check_seed
from robot_rl.monitor.config import MonitorCalibrate, MonitorEval
from robot_rl.parallel import check_ray_address, check_workers, is_parallel
from robot_rl.pipeline import Pipeline
from robot_rl.policies.config import TrainBC, TrainDiffusion
from robot_rl.rl.config import TrainResidual
from robot_rl.sweep.config import Sweep


@dataclasses.dataclass(frozen=True)
class Envs:
    """List the registered environments with a one-line description each."""


@dataclasses.dataclass(frozen=True)
class Bench:
    """Run a benchmark: `robot-rl bench NAME [options]` (`--list`: the benchmarks; `NAME --help`: its options)."""


@dataclasses.dataclass(frozen=True)
class Collect:
    """Record demonstrations (crash-safe HDF5, robomimic layout) from the expert or a teleop device."""

    env: str
    """Environment id (``robot-rl envs`` lists them)."""
    out: Path
    """HDF5 file to write; appended to if it exists (same env required)."""
    source: Literal["expert", "keyboard", "gamepad", "spacemouse"] = "expert"
    """Who acts: the scripted expert or a teleoperation device."""
    episodes: int = 10
    """Episodes to keep."""
    seed: int | None = None
    """First episode's seed (default: after the largest seed already in the file)."""
    randomize: str = "nominal"
    """Domain randomization: nominal, train or a YAML file."""
    keep_failed: bool = False
    """Keep episodes that end without success."""
    view: bool = True
    """With a teleop source: show a live MuJoCo viewer when a display exists (else a status line)."""
    workers: int | None = None
    """With --source expert: processes that run the attempts (attempt k still resets with seed ``seed + k``); this
    process writes the file in seed order, so it holds the same demos. Default 1: this process; with --ray-address,
    the cluster's CPUs."""
    ray_address: str | None = None
    """With --source expert: run the attempts on a Ray cluster (the ``ray`` extra; docs/scale.md): ``auto`` or
    HOST:PORT of its head."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "episodes")
        check_seed("seed", self.seed)
        check_workers(self.workers)
        check_ray_address(self.ray_address)
        if is_parallel(self.workers, self.ray_address) and self.source != "expert":
            raise ValueError(
                f"--workers and --ray-address split the scripted expert's attempts; --source {self.source} records "
                "one operator in this process. Drop them or use --source expert."
            )


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """Episodes, steps, success rate, per-key shapes and ranges of a demo file."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""


@dataclasses.dataclass(frozen=True)
class DataReplay:
    """Re-simulate demos from their saved states and actions; report the largest deviation."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""


@dataclasses.dataclass(frozen=True)
class DataRender:
    """Render demos from their saved states into an MP4."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""
    out: Path = Path("demos.mp4")
    """The video to write."""


@dataclasses.dataclass(frozen=True)
class DataMerge:
    """Merge two demo files of the same env into a new one (checked, with checksums); one file: re-write it."""

    a: tyro.conf.Positional[Path]
    """First file."""
    b: Annotated[tyro.conf.Positional[Path | None], tyro.conf.arg(metavar="[B]")] = None
    """Second file; omitted, the first is re-written alone (checked, and given checksums if it has none)."""
    out: Path = Path("merged.hdf5")
    """The merged file."""
    drop_duplicates: bool = False
    """Keep only the first copy of a demo that is in the inputs twice (same seed and data) instead of refusing."""


@dataclasses.dataclass(frozen=True)
class DataCheck:
    """Verify every dataset of a demo file against its sha256 checksum and for NaN/inf; exit 2 on any problem."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""


@dataclasses.dataclass(frozen=True)
class DataSplit:
    """Write a train/validation split (robomimic mask/train, mask/valid) into a demo file."""

    path: tyro.conf.Positional[Path]
    """The HDF5 file."""
    val_fraction: float = 0.1
    """Fraction of demos for validation."""
    seed: int = 0
    """Shuffle seed."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in (0, 1). Got {self.val_fraction}.")
        check_seed("seed", self.seed)


@dataclasses.dataclass(frozen=True)
class DataFromBag:
    """Convert a rosbag2 recording of the ROS 2 nodes (their /robot_rl/steps records) into demonstrations."""

    bag: tyro.conf.Positional[Path]
    """The rosbag2 folder (MCAP or sqlite3), e.g. from `ros2 run robot_rl_ros bag_recorder`."""
    out: Path
    """Demonstration HDF5 file to write (appended to if it holds the same env)."""
    env: str | None = None
    """Environment id of the recorded policy (default: the one named in the bag's episode events)."""
    topic: str = "/robot_rl/steps"
    """Topic of the step records."""


@dataclasses.dataclass(frozen=True)
class DataExportLeRobot:
    """Write a demo file as a LeRobotDataset v3.0 folder (parquet, optional MP4): state, action, episodes, success."""

    path: tyro.conf.Positional[Path]
    """The HDF5 demo file."""
    out: Path
    """The dataset folder to create (absent or empty); `LeRobotDataset(repo_id, root=OUT)` loads it."""
    video: bool = False
    """Also render each demo from its saved MuJoCo states into observation.images.<camera> (MP4, H.264)."""
    width: int | None = None
    """With --video: frame width [px], even (default: the env's, 480)."""
    height: int | None = None
    """With --video: frame height [px], even (default: the env's, 360)."""

    def __post_init__(self) -> None:
        if not self.video and (self.width is not None or self.height is not None):
            raise ValueError("`--width` and `--height` set the video's frame size; add --video to render one.")


@dataclasses.dataclass(frozen=True)
class DataImportLeRobot:
    """Write a LeRobotDataset v3.0 of a robot_rl env (e.g. from export-lerobot) as an HDF5 demo file."""

    root: tyro.conf.Positional[Path]
    """The dataset folder (it holds meta/info.json)."""
    out: Path
    """The HDF5 demo file to create."""
    env: str | None = None
    """Environment id, for a dataset not written by export-lerobot (its meta/info.json names none)."""


@dataclasses.dataclass(frozen=True)
class DataView:
    """Write a demo file as an MCAP file for Foxglove: the scene from the saved states, actions, goals, success."""

    path: tyro.conf.Positional[Path]
    """The HDF5 demo file."""
    out: Path | None = None
    """The MCAP file to write (default: PATH with the suffix .mcap); open it in Foxglove (docs/observability.md)."""


DataCommand = (
    Annotated[DataInfo, tyro.conf.subcommand("info")]
    | Annotated[DataReplay, tyro.conf.subcommand("replay")]
    | Annotated[DataRender, tyro.conf.subcommand("render")]
    | Annotated[DataMerge, tyro.conf.subcommand("merge")]
    | Annotated[DataSplit, tyro.conf.subcommand("split")]
    | Annotated[DataCheck, tyro.conf.subcommand("check")]
    | Annotated[DataFromBag, tyro.conf.subcommand("from-bag")]
    | Annotated[DataExportLeRobot, tyro.conf.subcommand("export-lerobot")]
    | Annotated[DataImportLeRobot, tyro.conf.subcommand("import-lerobot")]
    | Annotated[DataView, tyro.conf.subcommand("view")]
)


@dataclasses.dataclass(frozen=True)
class Export:
    """Export a training run to a policy folder: policy.onnx (the whole inference), metadata.json, README.md."""

    run: Path
    """Training run directory (`robot-rl train bc|diffusion|residual ... --out RUN_DIR`); a residual run exports its
    base and its residual into one graph."""
    out: Path
    """Policy folder to write, e.g. policies/NAME."""
    inference_steps: int | None = None
    """Diffusion: DDIM steps unrolled into the graph (default: the run's)."""
    overwrite: bool = False
    """Replace another policy already in --out."""
    eval_episodes: int = 0
    """Then evaluate the exported policy on this many held-out seeds (from 1000000) and put the report
    (eval.json) on its card; 0 skips it."""
    video_episodes: int = 0
    """With --eval-episodes: also record a video (rollout.mp4) of this many episodes."""

    def __post_init__(self) -> None:
        check_counts(self, 0, "eval_episodes", "video_episodes")
        check_counts(self, 1, "inference_steps")


@dataclasses.dataclass(frozen=True)
class Convert:
    """Rewrite an old residual run's stable-baselines3 zips (pickles) as safetensors, once, for a run you trust."""

    run: Path
    """The residual run folder holding model.zip (written before runs were pickle-free)."""
    trust_pickle: bool = False
    """Required: opening a stable-baselines3 zip unpickles it, which runs any code its author put in it. Pass it
    only for runs you made or whose author you trust; eval, export and training never open a zip."""


TrainCommand = (
    Annotated[TrainBC, tyro.conf.subcommand("bc")]
    | Annotated[TrainDiffusion, tyro.conf.subcommand("diffusion")]
    | Annotated[TrainResidual, tyro.conf.subcommand("residual")]
)

MonitorCommand = (
    Annotated[MonitorCalibrate, tyro.conf.subcommand("calibrate")]
    | Annotated[MonitorEval, tyro.conf.subcommand("eval")]
)


Command = (
    Annotated[Envs, tyro.conf.subcommand("envs")]
    | Annotated[
        EvalConfig,
        tyro.conf.subcommand(
            "eval", description="Evaluate a policy (expert, random, a run, an exported policy) on held-out seeds."
        ),
    ]
    | Annotated[Bench, tyro.conf.subcommand("bench")]
    | Annotated[Collect, tyro.conf.subcommand("collect")]
    | Annotated[
        DataCommand,
        tyro.conf.subcommand(
            "data",
            description="Demo files: info | replay | render | merge | split | check | from-bag | export-lerobot | "
            "import-lerobot | view.",
        ),
    ]
    | Annotated[
        TrainCommand,
        tyro.conf.subcommand(
            "train", description="Train a base policy (bc | diffusion) or a residual on a frozen base."
        ),
    ]
    | Annotated[Pipeline, tyro.conf.subcommand("pipeline")]
    | Annotated[Sweep, tyro.conf.subcommand("sweep")]
    | Annotated[Export, tyro.conf.subcommand("export")]
    | Annotated[Convert, tyro.conf.subcommand("convert")]
    | Annotated[
        MonitorCommand,
        tyro.conf.subcommand("monitor", description="Failure monitor (RND + chunk entropy): calibrate | eval."),
    ]
)


OUTPUTS: dict[type, dict[str, OutputKind]] = {
    EvalConfig: {"json": "file", "video": "file", "plot": "file", "record": "file"},
    Collect: {"out": "file"},
    DataRender: {"out": "file"},
    DataMerge: {"out": "file"},
    DataFromBag: {"out": "file"},
    DataExportLeRobot: {"out": "folder"},
    DataImportLeRobot: {"out": "file"},
    DataView: {"out": "file"},
    TrainBC: {"out": "folder"},
    TrainDiffusion: {"out": "folder"},
    TrainResidual: {"out": "folder"},
    Export: {"out": "folder"},
    Convert: {"run": "folder"},
    Pipeline: {"out": "folder"},
    Sweep: {"out": "folder"},
    MonitorCalibrate: {"policy": "folder"},
    MonitorEval: {"out": "folder"},
}
"""What each command writes: checked before it starts (a folder it may not write fails at once, not at the end)."""
