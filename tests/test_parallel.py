"""robot_rl.parallel: episodes on worker processes, results in episode order, a dead worker's episodes run again.

The tasks here are tiny module-level functions (spawned workers import them by name); the evaluation, collection
and calibration on workers are tested beside each (tests/evaluation/test_parallel.py, tests/data/...).
"""

from __future__ import annotations

import os
import time

import pytest

from robot_rl.parallel import (
    CRASH_HOOK,
    MAX_ATTEMPTS,
    EpisodePool,
    RayConnectionError,
    WorkerDiedError,
    check_ray_address,
    check_workers,
    connect_ray,
    is_parallel,
)


def setup_scale(scale: int) -> dict[str, int]:
    return {"scale": scale, "pid": os.getpid()}


def run_scaled(context: dict[str, int], index: int) -> tuple[int, int]:
    """Episode ``index``: a value that depends on the index only, and the worker that ran it."""
    time.sleep(0.02 * (index % 3))  # out of order on purpose
    if index == 99:
        raise ValueError("episode 99 is bad")
    return index * context["scale"], context["pid"]


def always_die(context: dict[str, int], index: int) -> int:
    os._exit(3)


class TestChecks:
    @pytest.mark.parametrize("bad", [0, -2, True, 1.5])
    def test_workers_below_one_are_refused_in_one_line(self, bad):
        with pytest.raises(ValueError, match=r"^`workers` must be >= 1 .* Got "):
            check_workers(bad)

    def test_none_and_counts_pass(self):
        check_workers(None)
        check_workers(3)
        assert not is_parallel(None, None) and not is_parallel(1, None)
        assert is_parallel(2, None) and is_parallel(None, "auto") and is_parallel(1, "10.0.0.5:6379")

    @pytest.mark.parametrize("good", ["auto", "10.0.0.5:6379", "head.local:6379", "ray://10.0.0.5:10001", "[::1]:6379"])
    def test_ray_addresses(self, good):
        check_ray_address(good)

    @pytest.mark.parametrize("bad", ["", "nonsense", "10.0.0.5", "host:99999", "host:port"])
    def test_bad_ray_addresses_are_refused(self, bad):
        with pytest.raises(ValueError, match="must be `auto`"):
            check_ray_address(bad)


class TestLocalProcesses:
    def test_results_come_back_in_episode_order_from_both_workers(self):
        with EpisodePool(setup_scale, (3,), run_scaled, workers=2) as pool:
            out = list(pool.ordered(range(8)))
        assert [i for i, _ in out] == list(range(8))
        assert [value for _, (value, _) in out] == [3 * i for i in range(8)]
        assert len({pid for _, (_, pid) in out}) == 2 and os.getpid() not in {pid for _, (_, pid) in out}
        assert pool.execution.backend == "processes" and sorted(pool.execution.where) == list(range(8))

    def test_more_workers_than_episodes_are_clamped_with_a_note(self):
        notes = []
        with EpisodePool(setup_scale, (1,), run_scaled, workers=5, most=2, log=notes.append) as pool:
            assert pool.workers == 2
            assert [v for _, (v, _) in pool.ordered(range(2))] == [0, 1]
        assert notes == ["note: 5 workers for 2 episodes: using 2"]

    def test_a_killed_worker_loses_no_episode_and_duplicates_none(self, tmp_path, monkeypatch):
        marker = tmp_path / "killed"
        monkeypatch.setenv(CRASH_HOOK, f"4:{marker}")
        notes = []
        with EpisodePool(setup_scale, (2,), run_scaled, workers=2, log=notes.append) as pool:
            out = list(pool.ordered(range(10)))
        assert marker.exists()  # the worker running episode 4 was SIGKILLed
        assert [i for i, _ in out] == list(range(10)) and [v for _, (v, _) in out] == [2 * i for i in range(10)]
        assert 4 in pool.execution.rerun and any("a worker died during episode 4" in n for n in notes)

    def test_an_episode_whose_worker_always_dies_is_an_error_after_the_retries(self):
        with pytest.raises(WorkerDiedError, match=rf"its worker died on each of {MAX_ATTEMPTS} runs"):
            with EpisodePool(setup_scale, (1,), always_die, workers=1, log=lambda _: None) as pool:
                list(pool.ordered(range(1)))

    def test_an_exception_of_the_episode_propagates_unchanged(self):
        with pytest.raises(ValueError, match="episode 99 is bad"):
            with EpisodePool(setup_scale, (1,), run_scaled, workers=2) as pool:
                list(pool.ordered([1, 99, 2]))

    def test_stopping_early_drops_the_rest(self):
        with EpisodePool(setup_scale, (1,), run_scaled, workers=2) as pool:
            for index, _ in pool.ordered(range(10**6)):
                if index == 3:
                    break
        assert len(pool.execution.where) < 20  # only a window ahead was started


class TestRayConnection:
    def test_an_unreachable_address_names_it_and_how_to_start_a_cluster(self):
        pytest.importorskip("ray")
        with pytest.raises(RayConnectionError) as err:
            connect_ray("127.0.0.1:1")
        message = str(err.value)
        assert "127.0.0.1:1" in message and "ray start --head" in message and "\n" not in message
