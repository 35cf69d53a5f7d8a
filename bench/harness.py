"""The benchmark suite's shared harness: the registry, common options, timing helpers and the reports.

Every benchmark is a module ``bench/bench_<x>.py`` that defines ``BENCHMARK`` (a :class:`Benchmark`): its typed
options (a frozen dataclass, parsed by tyro like the rest of the CLI), ``measure(options, run) -> results`` and
``markdown(results) -> str``. The harness does the rest, the same way for all of them:

- ``robot-rl bench NAME [options]`` finds NAME in :data:`REGISTRY`, imports only that module and parses its options;
- the common options (``--out``, ``--threads``, ``--report-only``) and the checks of counts and seeds;
- the thread limits (BLAS/OpenMP, torch) while it measures;
- the results: ``<stem>.json`` and ``<stem>.md`` in ``--out``, both with the exact command, the date and the
  machine (CPU, cores, load, library versions, git commit); the markdown is rendered from the JSON as written, so
  ``--report-only`` re-renders it later without measuring;
- thresholds: a benchmark reports what it measured and its ratios; a threshold appears only when the user passes
  one (``--min-speed-ratio 4``), and then as "met" or "not met" beside the value.

Results are committed in ``bench/results/`` and the docs pages (``docs/*.md``) cite them.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from robot_rl.limits import MAX_COUNT, check_counts, check_range
from robot_rl.provenance import machine_info

REPO = Path(__file__).resolve().parents[1]
"""The source checkout (the benchmarks read ``policies/``, ``hardware/`` and ``runs/`` there)."""
RESULTS = REPO / "bench" / "results"
"""Where results are committed (the default ``--out``)."""

REGISTRY: dict[str, str] = {
    "envs": "bench.bench_envs",
    "quadrotor": "bench.bench_quadrotor",
    "adaptation": "bench.bench_quadrotor_adaptation",
    "recording": "bench.bench_recording",
    "policy": "bench.bench_policy",
    "export": "bench.bench_export",
    "runtime": "bench.bench_runtime",
    "safety": "bench.bench_safety",
    "monitor": "bench.bench_monitor",
    "robustness": "bench.bench_robustness",
    "residual": "bench.bench_residual",
    "ros": "bench.bench_ros",
    "parallel": "bench.bench_parallel",
    "evallog": "bench.bench_eval_log",
    "fr3path": "bench.bench_fr3_path",
}
"""Benchmark name -> its module (imported only when that benchmark runs)."""


# --------------------------------------------------------------------------------------------- options
@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """The options every benchmark takes; a benchmark's own options subclass this."""

    out: Path | None = None
    """Folder for the results JSON and markdown (default: bench/results of the source checkout)."""
    threads: int = 1
    """Threads for BLAS/OpenMP, torch and onnxruntime while measuring (1: timings on one core compare)."""
    report_only: bool = False
    """Measure nothing: re-render the markdown (and figures) from the results JSON already in --out."""

    positive: ClassVar[tuple[str, ...]] = ()
    """Counts that must be at least 1, and tuples that must not be empty (the CLI refuses negative counts and bad
    seeds for all)."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "threads")
        for name in self.positive:
            value = getattr(self, name)
            if isinstance(value, tuple):
                if not value:
                    raise ValueError(f"`{name}` needs at least one value.")
                for item in value:
                    if isinstance(item, int):
                        check_range(name, item, 1, MAX_COUNT)
            elif value is not None:
                check_range(name, value, 1, MAX_COUNT)

    @property
    def out_dir(self) -> Path:
        """The folder results go to."""
        return Path(self.out) if self.out is not None else RESULTS


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """One benchmark of the suite: what it takes, what it measures and how its report reads."""

    name: str
    """Its name on the command line (``robot-rl bench NAME``)."""
    options: type[Options]
    """Its options (a frozen, keyword-only dataclass subclassing :class:`Options`)."""
    measure: Callable[[Any, Run], dict[str, Any]]
    """``measure(options, run)``: runs the measurement and returns the results (JSON-able)."""
    markdown: Callable[[dict[str, Any]], str]
    """``markdown(results)``: the report, from the results as written to JSON."""
    stem: str | Callable[[Any], str]
    """File stem of ``<stem>.json`` and ``<stem>.md`` (or a function of the options)."""
    packages: tuple[str, ...] = ("numpy", "mujoco")
    """Packages whose versions the machine description lists."""
    figures: Callable[[dict[str, Any], Path], None] | None = None
    """``figures(results, out_dir)``: plots written beside the markdown, if any."""

    def stem_for(self, options: Options) -> str:
        """The file stem for these options."""
        return self.stem(options) if callable(self.stem) else self.stem


# -------------------------------------------------------------------------------------------- registry
def summaries() -> dict[str, str]:
    """Benchmark name -> the first line of its module's docstring (read without importing the module)."""
    out = {}
    for name, module in REGISTRY.items():
        path = REPO / Path(*module.split(".")).with_suffix(".py")
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out[name] = doc.strip().split("\n", 1)[0]
    return out


def format_list() -> str:
    """One line per benchmark: its name and what it measures."""
    rows = summaries()
    width = max(map(len, rows))
    return "\n".join(f"{name:<{width}}  {summary}" for name, summary in rows.items())


def unknown_message(name: str) -> str:
    """The one-line refusal of an unknown benchmark name, with the closest match and the list."""
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown benchmark {name!r} for `robot-rl bench`; choose one of {', '.join(REGISTRY)}.{hint} "
        "(`robot-rl bench --list` says what each measures)"
    )


def load(name: str) -> Benchmark:
    """The registered benchmark ``name`` (its module is imported now).

    Raises:
        ValueError: ``name`` is not registered (the message names the closest match and every benchmark).
    """
    if name not in REGISTRY:
        raise ValueError(unknown_message(name))
    benchmark = importlib.import_module(REGISTRY[name]).BENCHMARK
    if benchmark.name != name:  # pragma: no cover - a registry typo; tests/bench checks every entry
        raise RuntimeError(f"{REGISTRY[name]} defines benchmark {benchmark.name!r}, registered as {name!r}")
    return benchmark


# ---------------------------------------------------------------------------------------------- a run
@dataclasses.dataclass
class Run:
    """One run of a benchmark: its options, the command that started it and where it writes."""

    benchmark: Benchmark
    options: Options
    command: str
    """The exact command line (``robot-rl bench envs --steps 3000``)."""
    started: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def out_dir(self) -> Path:
        return self.options.out_dir

    @property
    def stem(self) -> str:
        return self.benchmark.stem_for(self.options)

    @property
    def json_path(self) -> Path:
        return self.out_dir / f"{self.stem}.json"

    def machine(self) -> dict[str, Any]:
        """The machine now: CPU, pinned cores, scheduler, load, versions of the benchmark's packages, git, date."""
        return machine_info(self.benchmark.packages)

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.started

    def write(self, results: dict[str, Any]) -> dict[str, Any]:
        """Write ``<stem>.json`` and ``<stem>.md`` (and figures); returns the results as written.

        The command and the machine are added when the benchmark did not record them itself. Callable more
        than once (a long benchmark writes after each part, so a crash keeps what is done).
        """
        results = dict(results)
        results.setdefault("command", self.command)
        results.setdefault("machine", self.machine())
        written = as_json(results)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.json_path.write_text(json.dumps(written, indent=2) + "\n")
        render(self.benchmark, written, self.out_dir, self.stem)
        return written


def as_json(results: Any) -> Any:
    """``results`` as JSON reads it back (tuples as lists, numpy numbers and paths converted)."""

    def convert(value: Any) -> Any:
        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating):
            return float(value)
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"not JSON-serializable: {type(value).__name__}")

    return json.loads(json.dumps(results, default=convert))


def render(benchmark: Benchmark, results: dict[str, Any], out_dir: Path, stem: str) -> Path:
    """Write the markdown (and figures) of ``results``; returns the markdown's path."""
    path = out_dir / f"{stem}.md"
    text = benchmark.markdown(results)
    path.write_text(text if text.endswith("\n") else text + "\n")
    if benchmark.figures is not None:
        benchmark.figures(results, out_dir)
    return path


def run(benchmark: Benchmark, options: Options, command: str) -> dict[str, Any]:
    """Run ``benchmark`` with ``options`` (or re-render its report with ``--report-only``); returns the results."""
    session = Run(benchmark, options, command)
    if options.report_only:
        if not session.json_path.is_file():
            raise ValueError(
                f"--report-only re-renders {session.json_path}, which does not exist; run the benchmark first."
            )
        results = json.loads(session.json_path.read_text())
        print(f"wrote {render(benchmark, results, session.out_dir, session.stem)}")
        return results
    session.out_dir.mkdir(parents=True, exist_ok=True)
    with limit_threads(options.threads):
        results = session.write(benchmark.measure(options, session))
    print(f"wrote {session.json_path} and {session.json_path.with_suffix('.md')}")
    return results


# ------------------------------------------------------------------------------------ machine and threads
@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit BLAS/OpenMP pools started from now on (and subprocesses) and torch's intra-op pool to ``n``.

    numpy's BLAS pool, already started in this process, keeps its size; the benchmarks' matrices are far below
    any threading threshold. onnxruntime sessions take their thread count from the benchmark (``--threads``).
    """
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(dict.fromkeys(names, str(n)))
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        for key in [k for k, v in saved.items() if v is None]:
            os.environ.pop(key, None)
        if torch is not None and previous is not None:
            torch.set_num_threads(previous)


@contextlib.contextmanager
def one_core(last: bool = False) -> Iterator[int]:
    """Pin this process to one CPU (the first, CPU 0 where allowed, or the last) while in the block; yields it."""
    previous = os.sched_getaffinity(0)
    cores = sorted(previous)
    core = cores[-1] if last else (0 if 0 in previous else cores[0])
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, previous)


def machine_line(machine: Mapping[str, Any] | str) -> str:
    """The machine description as one markdown line."""
    if isinstance(machine, str):
        return machine
    pinned = machine.get("pinned_cpus")
    cores = f", pinned to CPU {pinned}" if pinned and len(pinned) < (machine.get("logical_cpus") or 0) else ""
    load = machine.get("load_average_1min")
    load_text = f"; 1-min load average {load:.1f} at the start" if load is not None else ""
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items())
    return (
        f"{machine.get('cpu', '?')} ({machine.get('logical_cpus', '?')} logical CPUs{cores}), "
        f"{machine.get('scheduler', 'SCHED_OTHER')}{load_text}; Python {machine.get('python', '?')} on "
        f"{machine.get('platform', '?')}; {versions}; git {machine.get('git', '?')}"
    )


def header(title: str, results: Mapping[str, Any]) -> list[str]:
    """The report's first lines: the title, the exact command and its date, the machine."""
    machine = results.get("machine", {})
    date = machine.get("date") if isinstance(machine, Mapping) else results.get("date")
    return [
        f"# {title}",
        "",
        f"Generated by `{results.get('command', '?')}` on {date or '?'}.",
        "",
        f"- Machine: {machine_line(machine)}",
    ]


# --------------------------------------------------------------------------------------------- timing
def percentiles(
    seconds: Sequence[float],
    ps: Sequence[float] = (50, 99),
    *,
    scale: float = 1e3,
    suffix: str = "",
    count: bool = True,
    mean: bool = False,
    largest: bool = False,
) -> dict[str, float] | None:
    """Percentiles of durations in seconds, scaled (1e3: ms), keyed ``p50{suffix}``...; None when empty.

    Args:
        seconds: The durations.
        ps: Percentiles to report.
        scale: Factor from seconds to the unit reported (1e3: ms, 1e6: us).
        suffix: Key suffix (``_ms`` gives ``p50_ms``).
        count: Add ``n``, the number of samples.
        mean: Add ``mean{suffix}``.
        largest: Add ``max{suffix}``.
    """
    if len(seconds) == 0:
        return None
    values = np.asarray(seconds, dtype=np.float64) * scale
    out: dict[str, float] = {}
    if mean:
        out[f"mean{suffix}"] = float(values.mean())
    for p in ps:
        out[f"p{p:g}{suffix}"] = float(np.percentile(values, p))
    if largest:
        out[f"max{suffix}"] = float(values.max())
    if count:
        out["n"] = int(values.size)
    return out


class Clock:
    """Wall-clock and thread CPU time of labelled sections, back to back (``start()``, then ``stop(label)``...)."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}
        self._start = (0.0, 0.0)

    def start(self) -> None:
        self._start = (time.perf_counter(), time.thread_time())

    def stop(self, key: str | None) -> None:
        """End the section under ``key`` (None: not recorded) and start the next one."""
        wall, cpu = time.perf_counter() - self._start[0], time.thread_time() - self._start[1]
        if key is not None:
            self.wall.setdefault(key, []).append(wall)
            self.cpu.setdefault(key, []).append(cpu)
        self.start()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per label: wall and CPU p50 and p99 [ms] and the number of calls."""
        out = {}
        for key, wall in self.wall.items():
            cpu = percentiles(self.cpu[key], suffix="_ms", count=False) or {}
            out[key] = {
                **(percentiles(wall, suffix="_ms", count=False) or {}),
                **{f"cpu_{k}": v for k, v in cpu.items()},
                "n": len(wall),
            }
        return out


def clock_overhead_us() -> float:
    """Median cost of one ``time.perf_counter()`` call [us] (each timed section carries about one)."""
    clock = time.perf_counter
    samples = []
    for _ in range(5):
        t0 = clock()
        for _ in range(20_000):
            clock()
        samples.append((clock() - t0) / 20_000)
    return statistics.median(samples) * 1e6


def median_ci(values: np.ndarray, resamples: int = 2000) -> list[float]:
    """95% bootstrap interval of the median of ``values`` (seeded: the same values give the same interval)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(resamples, values.size)), axis=1)
    return [float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))]


def seeds(first: int, n: int) -> list[int]:
    """``n`` consecutive seeds from ``first`` (episode k uses ``first + k``, as ``robot-rl eval`` does)."""
    return list(range(first, first + n))


def env_id(task: str) -> str:
    """The oldest registered version of a task: the one the committed results measure (``PandaPush-v0``;
    ``QuadrotorHover-v1``, its v0 being retired).

    Raises:
        ValueError: no version of ``task`` is registered.
    """
    from robot_rl.envs.registry import ENV_SPECS

    prefix = f"robot_rl/{task}-v"
    versions = [int(k[len(prefix) :]) for k in ENV_SPECS if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    if not versions:
        raise ValueError(f"no version of {task} is registered (robot-rl envs lists them).")
    return f"{prefix}{min(versions)}"


def short(env: str) -> str:
    """``robot_rl/QuadrotorHover-v0`` -> ``QuadrotorHover``."""
    return env.split("/")[-1].rsplit("-v", 1)[0]


# ------------------------------------------------------------------------------- ratios and thresholds
def ratio(a: float, b: float) -> float:
    """``a / b`` (nan when ``b`` is 0)."""
    return a / b if b else math.nan


def side_by_side(names: tuple[str, str], rows: Sequence[tuple[str, float, float, str, bool]], what: str) -> list[str]:
    """A markdown table of two subjects' values with their ratio.

    Args:
        names: The two subjects (columns).
        rows: ``(label, a, b, format, with_ratio)`` per row; the ratio is ``a / b``.
        what: The first column's header.
    """
    lines = [f"| {what} | {names[0]} | {names[1]} | {names[0]} / {names[1]} |", "|---|---:|---:|---:|"]
    for label, a, b, fmt, with_ratio in rows:
        cell = f"{ratio(a, b):.2f}x" if with_ratio else ""
        lines.append(f"| {label} | {a:{fmt}} | {b:{fmt}} | {cell} |")
    return lines


def threshold(what: str, value: float, limit: float | None, *, at_most: bool, unit: str = "") -> dict[str, Any] | None:
    """A measured value against a threshold the user passed (None when none was passed)."""
    if limit is None:
        return None
    met = bool(value <= limit) if at_most else bool(value >= limit)
    return {"what": what, "value": value, "limit": limit, "at_most": at_most, "unit": unit, "met": met}


def thresholds(*items: dict[str, Any] | None) -> dict[str, Any]:
    """``{"thresholds": [...]}`` for the items the user passed a threshold for, or ``{}`` when none."""
    given = [t for t in items if t is not None]
    return {"thresholds": given} if given else {}


def threshold_lines(results: Mapping[str, Any]) -> list[str]:
    """The thresholds the user passed, one markdown bullet each (nothing when none was passed)."""
    items = results.get("thresholds") or []
    if not items:
        return []
    lines = ["## Thresholds given on the command line", ""]
    for t in items:
        bound = "at most" if t["at_most"] else "at least"
        lines.append(
            f"- {t['what']}: {t['value']:.4g}{t['unit']} ({bound} {t['limit']:g}{t['unit']}: "
            f"{'met' if t['met'] else 'not met'})"
        )
    return [*lines, ""]


def print_thresholds(results: Mapping[str, Any]) -> None:
    """Print the thresholds the user passed (for the terminal)."""
    for line in threshold_lines(results)[2:]:
        if line:
            print(line[2:])


def success_text(successes: int, n: int) -> str:
    """``0.83 [0.74, 0.89]``: a success rate with its Wilson 95% interval."""
    from robot_rl.evaluation.evaluate import wilson_interval

    low, high = wilson_interval(successes, n)
    return f"{successes / n:.2f} [{low:.2f}, {high:.2f}]"
