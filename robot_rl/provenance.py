"""Where a measurement was taken: the machine, library versions and the git commit.

Benchmarks write this beside their numbers so results from different machines or code versions
are never compared unknowingly.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where it exists)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return cpu


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """Short commit of ``repo``, suffixed ``-dirty`` when the tree has changes; None outside git."""
    with contextlib.suppress(Exception):
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True)
        if sha.returncode == 0:
            return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    return None


def scheduler_name() -> str:
    """This process's Linux scheduling policy, e.g. ``SCHED_OTHER`` or ``SCHED_FIFO priority 20``."""
    policy = os.sched_getscheduler(0)
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    name = names.get(policy, f"policy {policy}")
    if policy in (os.SCHED_FIFO, os.SCHED_RR):
        name += f" priority {os.sched_getparam(0).sched_priority}"
    return name


def machine_info(packages: Iterable[str]) -> dict[str, Any]:
    """CPU, pinned cores, Python, platform, the versions of ``packages``, git commit and UTC date."""
    versions = {}
    for name in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "pinned_cpus": sorted(os.sched_getaffinity(0)),
        "scheduler": scheduler_name(),
        "load_average_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
