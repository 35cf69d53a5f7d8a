"""Running a sweep's trials: on Ray (a task per trial) or as local processes, resumable.

Each trial runs its ``robot-rl train ...`` command line as a child process, then, with ``--eval-episodes``,
``robot-rl eval`` of the run it wrote (the deploy layer, as every evaluation) with its report in
``trials/NAME.eval.json``. A trial's record, ``trials/NAME.json``, is written when it ends: ``ok``, or
``failed`` with its error in one line. On the next run of the same sweep, a trial whose record says ``ok``
(for the same final-evaluation options) is skipped; any other starts over in a clean run folder.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robot_rl.sweep.config import Sweep, Trial, trials

SWEEP_FILE = "sweep.json"
TRIALS = "trials"
CLI = ("-m", "robot_rl.cli.main")
"""How a trial runs the robot-rl command line (the Python of the node it runs on)."""


@dataclasses.dataclass(frozen=True)
class Task:
    """What one worker does for a trial (picklable: it travels to a Ray worker)."""

    name: str
    run_dir: str
    log: str
    train: tuple[str, ...] | None
    """The training command line; None when the run is already trained (only its evaluation is redone)."""
    evaluate: tuple[str, ...] | None
    """The final evaluation's command line, or None."""
    cwd: str
    """The sweep's working directory, where the command lines' relative paths start (the same on every node)."""


def _error_line(text: str, returncode: int) -> str:
    """The one line that says why a robot-rl command failed: its ``robot-rl: error:`` line, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("robot-rl: error:"):
            return line.removeprefix("robot-rl: error:").strip()
    if returncode < 0:
        return f"killed by signal {-returncode}" + (f" after: {lines[-1]}" if lines else "")
    return lines[-1] if lines else f"exit code {returncode} with no output"


def _run_step(argv: Sequence[str], log: Path, cwd: str) -> str | None:
    """Run one robot-rl command line, its output appended to ``log``; None when it succeeds, else its error."""
    with open(log, "ab") as f:
        start = f.tell()
        f.write(f"$ robot-rl {' '.join(argv)}\n".encode())
        f.flush()
        command = [sys.executable, *CLI, *argv]
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=cwd, check=False).returncode
    if code == 0:
        return None
    with open(log, "rb") as f:
        f.seek(start)
        return _error_line(f.read().decode(errors="replace"), code)


def run_task(task: Task) -> dict[str, Any]:
    """Train (in a clean run folder) and evaluate one trial; returns its outcome (``status``, ``error``, times)."""
    started = time.time()
    outcome: dict[str, Any] = {"name": task.name, "status": "ok", "error": None, "host": os.uname().nodename}
    if not os.path.isdir(task.cwd) or not os.path.isdir(os.path.dirname(task.log)):
        error = (
            f"{task.cwd} or the sweep folder is not on node {outcome['host']}: the sweep folder, the data and the base "
            "must be on storage every node sees, at the same paths"
        )
        return {**outcome, "status": "failed", "error": error, "stage": "setup", "wall_time_s": 0.0}
    log = Path(task.log)
    if task.train is not None:
        shutil.rmtree(task.run_dir, ignore_errors=True)  # a trial that failed or was cut short starts over
        log.write_bytes(b"")
        error = _run_step(task.train, log, task.cwd)
        if error is not None:
            return {
                **outcome,
                "status": "failed",
                "error": error,
                "stage": "train",
                "wall_time_s": round(time.time() - started, 2),
            }
        outcome["train_wall_time_s"] = round(time.time() - started, 2)
    if task.evaluate is not None:
        error = _run_step(task.evaluate, log, task.cwd)
        if error is not None:
            return {
                **outcome,
                "status": "failed",
                "error": error,
                "stage": "eval",
                "wall_time_s": round(time.time() - started, 2),
            }
    return {**outcome, "wall_time_s": round(time.time() - started, 2)}


def record_path(out: Path, name: str) -> Path:
    """A trial's record: its outcome, written when it ends."""
    return out / TRIALS / f"{name}.json"


def eval_path(out: Path, name: str) -> Path:
    """A trial's final evaluation report (``robot-rl eval --json``)."""
    return out / TRIALS / f"{name}.eval.json"


def read_record(out: Path, name: str) -> dict[str, Any] | None:
    """The trial's record, or None when it has none (never ran, or was interrupted) or it is damaged."""
    try:
        record = json.loads(record_path(out, name).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _eval_options(options: Sweep) -> dict[str, Any] | None:
    if not options.eval_episodes:
        return None
    return {"episodes": options.eval_episodes, "seed": options.eval_seed, "safety": options.eval_safety}


def _task(options: Sweep, trial: Trial) -> Task | None:
    """What is left to do for ``trial``: None when its record says it is complete for these options."""
    out = options.out
    record = read_record(out, trial.name)
    wanted = _eval_options(options)
    trained = record is not None and record.get("trained") is True and (out / trial.name).is_dir()
    if trained and record.get("status") == "ok" and record.get("eval") == wanted:
        return None
    evaluate = None
    if wanted is not None:
        evaluate = (
            "eval",
            "--policy",
            str(out / trial.name),
            "--episodes",
            str(options.eval_episodes),
            "--seed",
            str(options.eval_seed),
            "--safety",
            options.eval_safety,
            "--json",
            str(eval_path(out, trial.name)),
            "--no-progress",
        )
    return Task(
        trial.name,
        str(out / trial.name),
        str(out / TRIALS / f"{trial.name}.log"),
        None if trained else trial.argv,
        evaluate,
        os.getcwd(),
    )


def _write_record(options: Sweep, trial: Trial, outcome: dict[str, Any], trained: bool) -> dict[str, Any]:
    """Write the trial's record (atomically); ``trained``: its run folder holds a finished training."""
    record = {
        **outcome,
        "seed": trial.seed,
        "point": dict(trial.point),
        "argv": list(trial.argv),
        "trained": trained,
        "eval": _eval_options(options) if outcome["status"] == "ok" else None,
    }
    path = record_path(options.out, trial.name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return record


def _check_sweep_file(options: Sweep, command: Sequence[str]) -> None:
    """Write sweep.json, or check that the sweep already in the folder ran the same training command."""
    path = options.out / SWEEP_FILE
    spec = {
        "command": list(command),
        "seeds": list(options.seeds),
        "grid": list(options.grid),
        "eval_episodes": options.eval_episodes,
        "eval_seed": options.eval_seed,
    }
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = {}
        if before.get("command") != list(command):
            other = " ".join(before.get("command") or ["?"])
            raise ValueError(
                f"{options.out} holds a sweep of another training command ({other}); choose another --out, or give "
                "the same command to resume it."
            )
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / TRIALS).mkdir(exist_ok=True)
    path.write_text(json.dumps(spec, indent=2) + "\n")


def _backend(options: Sweep) -> str:
    if options.backend == "local":
        return "local"
    try:
        import ray  # noqa: F401
    except ImportError:
        if options.backend == "ray" or options.ray_address is not None:
            raise ValueError(
                "the ray backend needs Ray: pip install 'robot_rl[ray]' (or run with --backend local)."
            ) from None
        return "local"
    return "ray"


def _run_local(tasks: list[Task], options: Sweep, done: Callable[[Task, dict[str, Any]], None]) -> None:
    with concurrent.futures.ThreadPoolExecutor(max_workers=options.max_concurrent) as pool:
        futures = {pool.submit(run_task, task): task for task in tasks}
        for future in concurrent.futures.as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except Exception as err:  # the worker itself broke (a log it cannot write): that trial fails
                outcome = {"name": task.name, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            done(task, outcome)


def connect_ray(address: str | None, num_cpus: float) -> tuple[Any, bool]:
    """Ray, connected to the cluster at ``address`` or to a local instance started here; True when started here.

    Raises:
        RayConnectionError: the cluster cannot be reached (one line naming the address and how to start one).
    """
    if address is not None:
        from robot_rl.parallel import connect_ray as connect_cluster

        return connect_cluster(address)
    import ray

    if ray.is_initialized():
        return ray, False
    # "local": a new instance of our own, never a cluster `ray start` left running on this machine
    ray.init(address="local", num_cpus=max(1, math.ceil(num_cpus)), include_dashboard=False, log_to_driver=False)
    return ray, True


def _run_ray(tasks: list[Task], options: Sweep, done: Callable[[Task, dict[str, Any]], None]) -> None:
    local_cpus = max(os.cpu_count() or 1, options.max_concurrent * options.cpus_per_trial)
    ray, started = connect_ray(options.ray_address, local_cpus)
    try:
        # max_retries: a worker or node that dies re-runs the trial from a clean run folder.
        remote = ray.remote(num_cpus=options.cpus_per_trial, max_retries=2)(run_task)
        queue = list(tasks)
        pending: dict[Any, Task] = {}
        while queue or pending:
            while queue and len(pending) < options.max_concurrent:
                task = queue.pop(0)
                pending[remote.remote(task)] = task
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # the task could not run (worker lost after its retries, ...)
                    reason = " ".join(str(err).split())[:300]
                    outcome = {"name": task.name, "status": "failed", "error": f"Ray: {type(err).__name__}: {reason}"}
                done(task, outcome)
    finally:
        if started:
            ray.shutdown()


def run_trials(
    options: Sweep,
    command: Sequence[str],
    refused: Callable[[Trial], str | None] = lambda trial: None,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the sweep's trials that are not complete yet; returns every trial's record, in trial order.

    Args:
        options: The sweep.
        command: Its training command (``train ...`` without --out and --seed).
        refused: Why a trial's command line is refused before it runs (the CLI parses it), or None.
        echo: Where progress lines go.
    """
    all_trials = trials(options, command)
    _check_sweep_file(options, command)
    by_name = {t.name: t for t in all_trials}
    todo: list[Task] = []
    for trial in all_trials:
        reason = refused(trial)
        if reason is not None:
            outcome = {"name": trial.name, "status": "failed", "error": reason, "stage": "parse"}
            _write_record(options, trial, outcome, trained=False)
            echo(f"{trial.name}: refused, not started")
            continue
        task = _task(options, trial)
        if task is None:
            echo(f"{trial.name}: complete, skipped")
        else:
            todo.append(task)
    if todo:
        backend = _backend(options)
        where = (
            f"Ray at {options.ray_address}"
            if options.ray_address
            else ("local Ray" if backend == "ray" else "local processes")
        )
        echo(f"running {len(todo)} of {len(all_trials)} trials on {where}, {options.max_concurrent} at a time")
        finished = 0

        def done(task: Task, outcome: dict[str, Any]) -> None:
            nonlocal finished
            finished += 1
            # trained: the training step succeeded now, or was not needed (only the evaluation ran)
            trained = outcome["status"] == "ok" or outcome.get("stage") == "eval" or task.train is None
            record = _write_record(options, by_name[task.name], outcome, trained)
            what = "ok" if record["status"] == "ok" else f"FAILED ({record.get('stage', '?')}): {record['error']}"
            echo(f"[{finished}/{len(todo)}] {task.name}: {what} ({float(outcome.get('wall_time_s', 0.0)):.0f} s)")

        (_run_ray if backend == "ray" else _run_local)(todo, options, done)
    return [
        read_record(options.out, t.name) or {"name": t.name, "status": "failed", "error": "no record"}
        for t in all_trials
    ]
