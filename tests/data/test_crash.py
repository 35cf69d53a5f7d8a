"""Crash safety: a recording process killed with SIGKILL loses at most the episode in progress.

A real subprocess records PandaPush expert episodes (slowed down a little so that an episode is in
progress most of the time) and prints a line after each commit. The parent kills it with SIGKILL,
then opens the file: it must open cleanly (with plain h5py, and through robot_rl) and hold exactly
the committed episodes, each complete and replayable. Kills inside a commit are injected by
patching the journal's writes in the child.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import pytest

from robot_rl.data import DemoDataset, replay

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    import robot_rl.data.journal as journal
    from robot_rl.data import DemoRecorder, mujoco_state
    from robot_rl.data.collect import expert_source
    from robot_rl.envs.registry import make

    path, fault, fault_at, step_sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    env_id = "robot_rl/PandaPush-v0"
    commits = 0

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    if fault == "torn_journal":  # killed half way through writing the journal record
        pwritev = os.pwritev
        def torn(fd, parts, offset):
            if commits == fault_at:
                data = b"".join(parts)
                os.pwrite(fd, data[: len(data) // 2], offset)
                die()
            return pwritev(fd, parts, offset)
        os.pwritev = torn
    elif fault in ("after_journal", "mid_apply"):  # killed after the journal is durable
        apply = journal._apply
        def faulty(fd, record):
            if commits == fault_at:
                if fault == "mid_apply":
                    offset, chunk = record.runs[-1]
                    os.pwrite(fd, chunk[: len(chunk) // 2], offset)
                die()
            apply(fd, record)
        journal._apply = faulty

    env = make(env_id)
    source = expert_source(env, env_id)
    with DemoRecorder(path, env_id, {}, env.unwrapped.ctrl_dt, "expert", seed=0) as rec:
        for seed in range(1000):
            obs, info = env.reset(seed=seed)
            source.reset(obs)
            rec.start_episode(seed, info["randomization"])
            print(f"started {seed}", flush=True)
            done = False
            while not done:
                state = mujoco_state(env)
                action = source.act(obs)
                next_obs, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                rec.add_step(obs, action, reward, done, next_obs, state)
                obs = next_obs
                time.sleep(step_sleep)
            rec.commit(success=bool(info["is_success"]))
            commits += 1
            print(f"committed {commits}", flush=True)
    """
)

STEP_SLEEP = 0.002
"""Per-step delay in the child [s]: a 50-step episode takes over 100 ms, a commit a few ms."""


def _start(tmp_path: Path, fault: str = "none", fault_at: int = -1) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "record.py"
    script.write_text(CHILD)
    path = tmp_path / "demos.hdf5"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), fault, str(fault_at), str(STEP_SLEEP)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, path


def _check_file(path: Path, expected: int, plain_h5py: int | None = -1) -> None:
    """``expected`` demos through robot_rl; ``plain_h5py`` through h5py before recovery (-1: same)."""
    if plain_h5py is not None:
        # Any HDF5 reader opens the file as it is left, before robot_rl's recovery runs.
        plain = expected if plain_h5py == -1 else plain_h5py
        with h5py.File(path, "r") as f:
            assert sorted(f["data"]) == sorted(f"demo_{k}" for k in range(plain))
    with DemoDataset(path) as ds:  # validates every demo: keys, shapes, lengths, total
        assert ds.demo_names == [f"demo_{k}" for k in range(expected)]
        assert all(d.num_samples == 50 and d.dones[-1] for d in ds)
    report = replay(path)
    assert report["episodes"] == expected
    assert report["max_state_deviation"] == 0.0 and report["max_obs_deviation"] == 0.0
    assert not path.with_name(path.name + ".journal").exists()  # recovery finished and cleaned up


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_during_an_episode_keeps_exactly_the_committed_ones(tmp_path: Path, trial: int) -> None:
    rng = random.Random(trial)
    min_commits = 2 + trial
    proc, path = _start(tmp_path)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        # Wait for the episode after the min_commits-th commit to start, then kill inside it.
        while sum(line.startswith("committed") for line in lines) < min_commits or not lines[-1].startswith("started"):
            line = proc.stdout.readline()
            assert line, f"recorder exited early: {proc.stderr.read() if proc.stderr else ''}"
            lines.append(line.strip())
            assert time.monotonic() < deadline
        time.sleep(rng.uniform(0.0, 0.08))  # an episode lasts more than 0.1 s
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        out, _ = proc.communicate(timeout=30)
    lines += out.splitlines()
    assert proc.returncode == -signal.SIGKILL
    assert lines[-1].startswith("started"), "the kill should land while an episode is recorded"
    committed = sum(line.startswith("committed") for line in lines)
    assert committed >= min_commits
    _check_file(path, committed)


@pytest.mark.parametrize(
    ("fault", "kept", "plain"),
    [
        # The third commit never became durable: dropped; the file is as after the second.
        ("torn_journal", 2, 2),
        # Durable in the journal, not yet in the file: plain h5py reads the file as it was before
        # (a valid file), robot_rl applies the journal at open.
        ("after_journal", 3, 2),
        # The file was half updated, which plain h5py cannot read; the journal finishes the update.
        ("mid_apply", 3, None),
    ],
)
def test_sigkill_inside_a_commit_leaves_the_file_all_or_nothing(
    tmp_path: Path, fault: str, kept: int, plain: int | None
) -> None:
    proc, path = _start(tmp_path, fault, fault_at=2)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert out.count("committed") == 2
    journal = path.with_name(path.name + ".journal")
    assert journal.stat().st_size > 0
    _check_file(path, kept, plain_h5py=plain)
