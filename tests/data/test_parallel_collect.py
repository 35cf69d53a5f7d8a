"""``collect --workers 2``: the scripted expert's attempts on worker processes, the file written here in seed order.

The file must hold what one process writes (every dataset, every attribute but the timestamps), including the
attempts the expert fails (dropped) and the refusal after too many failed attempts (the same demos kept); a worker
killed mid-collection costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from robot_rl.data.collect import collect
from robot_rl.parallel import CRASH_HOOK

SLIDE = "robot_rl/PandaSlide-v0"
"""Under ``train`` randomization its expert fails most attempts (3 demos take 16 attempts from seed 0)."""
TIMESTAMPS = {"created", "updated"}


def contents(path: Path) -> dict[str, Any]:
    """Every dataset's values and every attribute of the file, but the timestamps."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:

        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
            out[f"{name}@"] = {k: str(v) for k, v in obj.attrs.items() if k not in TIMESTAMPS}

        f.visititems(visit)
    return out


def assert_same_file(a: Path, b: Path) -> None:
    first, second = contents(a), contents(b)
    assert first.keys() == second.keys()
    for key, value in first.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, second[key], err_msg=key)
            assert value.dtype == second[key].dtype, key
        else:
            assert value == second[key], key


def test_two_workers_write_the_file_one_process_writes(tmp_path):
    kwargs = {"env_kwargs": {"randomize": "train"}, "seed": 0, "progress": False}
    one = collect(SLIDE, "expert", 3, tmp_path / "one.hdf5", **kwargs)
    two = collect(SLIDE, "expert", 3, tmp_path / "two.hdf5", workers=2, **kwargs)
    assert one["discarded"] > 0  # the failed attempts are dropped alike
    for key in ("kept", "discarded", "attempts", "steps", "demos", "attempt_success_rate"):
        assert one[key] == two[key], key
    assert two["execution"]["workers"] == 2
    assert_same_file(tmp_path / "one.hdf5", tmp_path / "two.hdf5")


def test_too_many_failed_attempts_keep_the_same_demos(tmp_path):
    kwargs = {"env_kwargs": {"randomize": "train"}, "seed": 0, "progress": False, "max_attempts": 6}
    messages = []
    for name, workers in (("one", None), ("two", 2)):
        with pytest.raises(RuntimeError, match="were kept after 6 attempts") as err:
            collect(SLIDE, "expert", 4, tmp_path / f"{name}.hdf5", workers=workers, **kwargs)
        messages.append(str(err.value).replace(name, "X"))
    assert messages[0] == messages[1]
    assert_same_file(tmp_path / "one.hdf5", tmp_path / "two.hdf5")


def test_a_killed_worker_costs_no_demo(tmp_path, monkeypatch):
    one = collect("robot_rl/PandaPush-v0", "expert", 4, tmp_path / "one.hdf5", seed=0, progress=False)
    monkeypatch.setenv(CRASH_HOOK, f"1:{tmp_path / 'killed'}")
    two = collect("robot_rl/PandaPush-v0", "expert", 4, tmp_path / "two.hdf5", seed=0, progress=False, workers=2)
    assert (tmp_path / "killed").exists() and 1 in two["execution"]["rerun_episodes"]
    assert one["demos"] == two["demos"] == ["demo_0", "demo_1", "demo_2", "demo_3"]
    assert_same_file(tmp_path / "one.hdf5", tmp_path / "two.hdf5")


def test_workers_apply_to_the_expert_only(tmp_path):
    with pytest.raises(ValueError, match="split the scripted expert's attempts"):
        collect("robot_rl/PandaPush-v0", "keyboard", 2, tmp_path / "x.hdf5", workers=2)
    with pytest.raises(ValueError, match=r"`workers` must be >= 1"):
        collect("robot_rl/PandaPush-v0", "expert", 2, tmp_path / "x.hdf5", workers=0)
