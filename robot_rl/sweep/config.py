"""What a sweep runs: its options (``robot-rl sweep``) and the trials they expand into.

A trial is one ``robot-rl train ...`` command line: the sweep's training command with one grid point's
options and one seed appended, and its own run folder under the sweep folder.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from robot_rl.limits import MAX_COUNT, check_counts, check_seed
from robot_rl.parallel import check_ray_address

TRAIN_VERBS = ("bc", "diffusion", "residual")
"""The ``robot-rl train`` verbs a sweep runs."""
SET_BY_SWEEP = ("--out", "--seed", "--progress", "--no-progress")
"""Options of the training command the sweep sets per trial: refused in the command it is given."""
MAX_TRIALS = 1_000
"""More trials than this in one sweep is a mistake (a grid too large), refused before anything runs."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Run one training command over several seeds and a small grid; each trial a run folder, then a summary.

    `robot-rl sweep [OPTIONS] -- train bc|diffusion|residual [ITS OPTIONS, without --out and --seed]`.
    Trials run on Ray when it is installed (`pip install 'robot_rl[ray]'`; a cluster with
    `--ray-address`), else as local processes. The sweep folder gets one run folder per trial, the trials'
    logs and records (`trials/`), and `summary.md`, `summary.json` and `curves.png`: each trial's final
    success and, per grid point, mean, std, min and max across seeds. A trial that finished is skipped when
    the sweep runs again; a trial that failed or was interrupted starts over.
    """

    out: Path
    """Sweep folder: one run folder per trial (`NAME/`), `trials/` (logs, records, final evaluations),
    the summary."""
    seeds: tuple[int, ...] = (0,)
    """Seeds: every grid point is trained once per seed (`--seed` of the training command)."""
    grid: tuple[str, ...] = ()
    """Grid axes, each `KEY=V1,V2,...`: an option of the training command (`lr`, `policy.hidden`,
    `--learning-rate`) and its values; a value with spaces gives several words (`policy.hidden=64 64,256 256`).
    Every combination of the axes is one grid point."""
    backend: Literal["auto", "ray", "local"] = "auto"
    """Where trials run: `ray` (tasks on a Ray cluster, or a local Ray instance), `local` (processes on
    this machine), `auto` (ray when it is installed, else local)."""
    ray_address: str | None = None
    """Address of a running Ray cluster: HOST:PORT (`ray start --head` prints it, e.g. `10.0.0.1:6379`) or `auto`
    (the cluster started on this machine); default: a Ray instance started for the sweep on this machine. The
    sweep folder, the data and the base must be on storage every node sees."""
    max_concurrent: int = 1
    """Trials running at the same time (each is one training process: give it --threads 1 on a small machine)."""
    cpus_per_trial: float = 1.0
    """Ray: CPUs reserved per trial (the scheduler places trials by them)."""
    eval_episodes: int = 0
    """After training, evaluate each trial's deployed policy (`robot-rl eval`, the deploy layer) on this many
    fresh seeds: its final success in the summary. 0: the run's last training evaluation instead."""
    eval_seed: int = 1_000_000
    """First seed of the final evaluations (every trial on the same seeds, none a demo's or a training
    evaluation's)."""
    eval_safety: Literal["on", "off"] = "on"
    """The final evaluations' `robot-rl eval --safety`: on evaluates the stack as deployed (the robot's safety
    chain and its chunk validator), off the policy alone."""
    dry_run: bool = False
    """Print each trial's command line (and any the CLI refuses), run nothing, write nothing."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("`seeds` must list at least one seed (e.g. --seeds 0 1 2 3 4).")
        for seed in self.seeds:
            check_seed("seeds", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`seeds` must be distinct. Got {list(self.seeds)}.")
        check_counts(self, 1, "max_concurrent")
        check_counts(self, 0, "eval_episodes")
        check_seed("eval_seed", self.eval_seed)
        if not 0.0 < self.cpus_per_trial <= MAX_COUNT or not math.isfinite(self.cpus_per_trial):
            raise ValueError(f"`cpus_per_trial` must be a number > 0. Got {self.cpus_per_trial}.")
        check_ray_address(self.ray_address, "ray_address")
        if self.ray_address is not None and self.backend == "local":
            raise ValueError("`ray_address` needs the ray backend; drop --backend local (or the address).")
        axes = grid_axes(self.grid)
        count = math.prod(len(values) for _, values in axes) * len(self.seeds)
        if count > MAX_TRIALS:
            raise ValueError(f"a sweep may have at most {MAX_TRIALS} trials. Got {count} (grid x seeds).")


@dataclasses.dataclass(frozen=True)
class Trial:
    """One training run of the sweep."""

    name: str
    """Its name: the run folder under the sweep folder, its log and record under ``trials/``."""
    seed: int
    """Its ``--seed``."""
    point: tuple[tuple[str, str], ...]
    """Its grid point: (option, value) per axis."""
    argv: tuple[str, ...]
    """Its ``robot-rl`` command line (``train ... --seed S --out SWEEP/NAME --no-progress``)."""


def grid_axes(grid: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["lr=1e-3,3e-4"]`` -> ``[("lr", ["1e-3", "3e-4"])]``; option names as tyro spells them (hyphens).

    Raises:
        ValueError: an axis that is not ``KEY=V1,V2,...``, an empty value, a key twice, or a key the sweep sets.
    """
    axes: list[tuple[str, list[str]]] = []
    for axis in grid:
        key, sep, values = axis.partition("=")
        key = key.strip().removeprefix("--").replace("_", "-")
        items = [v.strip() for v in values.split(",")]
        if not sep or not re.fullmatch(r"[a-z][a-z0-9.-]*", key) or not all(items):
            raise ValueError(
                f"`grid` axes must be KEY=V1,V2,... with an option of the training command as KEY (e.g. lr=1e-3,3e-4). "
                f"Got {axis!r}."
            )
        if f"--{key}" in SET_BY_SWEEP:
            raise ValueError(f"`grid` cannot set --{key}: the sweep sets it per trial (use --seeds for seeds).")
        if key in (k for k, _ in axes):
            raise ValueError(f"`grid` names --{key} twice; give all its values in one axis.")
        axes.append((key, items))
    return axes


def check_command(command: Sequence[str], grid: Sequence[str] = ()) -> None:
    """Refuse a training command the sweep cannot run.

    That is a command other than ``train bc|diffusion|residual``, or one with an option the sweep sets per
    trial or that a grid axis also sets.

    Raises:
        ValueError: one line, with what is valid.
    """
    if len(command) < 2 or command[0] != "train" or command[1] not in TRAIN_VERBS:
        got = " ".join(command) if command else "nothing"
        raise ValueError(
            f"`robot-rl sweep` needs a training command after `--`: train {'|'.join(TRAIN_VERBS)} with its options "
            f"(e.g. robot-rl sweep --seeds 0 1 --out SWEEP -- train bc --data demos.hdf5). Got {got}."
        )
    options = {token.split("=", 1)[0] for token in command if token.startswith("--")}
    taken = sorted(options & set(SET_BY_SWEEP))
    if taken:
        raise ValueError(
            f"the training command of a sweep must not give {', '.join(taken)}: the sweep sets the run folder "
            "(SWEEP/TRIAL), the seed (--seeds) and --no-progress per trial."
        )
    both = sorted(options & {f"--{key}" for key, _ in grid_axes(grid)})
    if both:
        raise ValueError(f"{', '.join(both)} is both in the training command and a grid axis; keep one.")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=+-]+", "-", text).strip("-")


def trials(options: Sweep, command: Sequence[str]) -> list[Trial]:
    """The sweep's trials, grid point by grid point, each over every seed."""
    check_command(command, options.grid)
    axes = grid_axes(options.grid)
    keys = [key for key, _ in axes]
    out: list[Trial] = []
    for values in itertools.product(*(vals for _, vals in axes)):
        point = tuple(zip(keys, values, strict=True))
        grid_args = [word for key, value in point for word in (f"--{key}", *value.split())]
        for seed in options.seeds:
            name = "_".join([*(_slug(f"{k}={v}") for k, v in point), f"seed{seed}"])
            run_dir = options.out / name
            argv = (*command, *grid_args, "--seed", str(seed), "--out", str(run_dir), "--no-progress")
            out.append(Trial(name, seed, point, argv))
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ValueError(
            "two grid points give the same trial name; make the grid's values differ in letters or digits."
        )
    return out
