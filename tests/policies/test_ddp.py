"""Data-parallel training of the base policies (robot_rl.policies.distributed) under torchrun.

The module imports only torch and the policies at the top: mp.spawn's children import it again.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from robot_rl.policies import distributed
from robot_rl.policies.base import ObsLayout
from robot_rl.policies.models import BCConfig, BCPolicy

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


@pytest.fixture(scope="module")
def reach_demos(tmp_path_factory):
    from robot_rl.data import collect

    path = tmp_path_factory.mktemp("demos") / "reach.hdf5"
    collect("robot_rl/PandaReach-v0", "expert", 6, path, seed=0, progress=False, fsync=False)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestWorkers:
    def test_outside_torchrun_it_is_one_process(self, monkeypatch):
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
            monkeypatch.delenv(name, raising=False)
        workers = distributed.from_environment()
        assert workers.main and not workers.distributed and workers.device == torch.device("cpu")
        assert distributed.rank_seed(7, workers) == 7  # single-process runs keep their seeds
        assert distributed.local_batch_size(256, workers) == 256

    def test_torchrun_environment_is_read(self, monkeypatch):
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("LOCAL_RANK", "1")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        workers = distributed.from_environment()
        assert (workers.rank, workers.world_size, workers.local_rank) == (1, 2, 1) and not workers.main
        assert workers.backend == ("nccl" if torch.cuda.is_available() else "gloo")

    def test_bad_environment_is_one_line(self, monkeypatch):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "2")
        with pytest.raises(ValueError, match=r"RANK must be in \[0, WORLD_SIZE\)"):
            distributed.from_environment()

    def test_shards_split_the_windows_like_distributed_sampler(self):
        ranks = [distributed.Workers(rank=r, world_size=3) for r in range(3)]
        shards = [distributed.shard(10, w).tolist() for w in ranks]
        assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
        assert sorted(sum(shards, [])) == list(range(10))
        with pytest.raises(ValueError, match="cannot be split over 3 processes"):
            distributed.shard(2, ranks[0])

    def test_global_batch_is_split_evenly_or_refused(self):
        two = distributed.Workers(rank=0, world_size=2)
        assert distributed.local_batch_size(256, two) == 128
        with pytest.raises(ValueError, match="multiple of the 2 training processes.*Got 255; e.g. 254"):
            distributed.local_batch_size(255, two)

    def test_each_rank_has_its_own_repeatable_seed(self):
        seeds = [distributed.rank_seed(0, distributed.Workers(rank=r, world_size=4)) for r in range(4)]
        assert len(set(seeds)) == 4
        assert seeds == [distributed.rank_seed(0, distributed.Workers(rank=r, world_size=4)) for r in range(4)]
        # seed 1 of rank 0 is not seed 0 of rank 1 (no overlap between sweeps' seeds and ranks)
        assert distributed.rank_seed(1, distributed.Workers(0, 2)) != distributed.rank_seed(
            0, distributed.Workers(1, 2)
        )


LAYOUT = ObsLayout(("observation",), ((5,),))


def _policy() -> BCPolicy:
    torch.manual_seed(0)
    policy = BCPolicy(BCConfig(obs_keys=("observation",), relative_goal=False, hidden=(16,)), LAYOUT, 2)
    rng = np.random.default_rng(0)
    policy.normalizer.fit(rng.normal(size=(100, 5)), rng.normal(size=(100, 2)))
    return policy


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(8, 2, 5, generator=generator), torch.randn(8, 4, 2, generator=generator)


def _ddp_gradients(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    workers = distributed.Workers(rank=rank, world_size=world, local_rank=rank, local_world_size=world)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        policy = _policy()
        obs, actions = _batch()
        index = distributed.shard(len(obs), workers)  # this rank's half of the global batch
        loss_fn = distributed.loss_fn(policy, workers)
        loss = loss_fn(obs[index], actions[index])
        loss.backward()
        mean = distributed.mean(loss.detach(), workers)
        if rank == 0:
            grads = {name: p.grad.tolist() for name, p in policy.named_parameters()}
            Path(out).write_text(json.dumps({"grads": grads, "mean_loss": mean}))
    finally:
        dist.destroy_process_group()


def test_ddp_averages_gradients_to_the_full_batch_gradient(tmp_path):
    """Two gloo ranks on halves of a batch: the averaged gradient equals one process's on the whole batch."""
    out = tmp_path / "ddp.json"
    mp.spawn(_ddp_gradients, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    got = json.loads(out.read_text())
    policy = _policy()
    loss = policy.loss(*_batch())
    loss.backward()
    for name, p in policy.named_parameters():
        np.testing.assert_allclose(got["grads"][name], p.grad.numpy(), rtol=1e-5, atol=1e-7, err_msg=name)
    assert got["mean_loss"] == pytest.approx(float(loss.detach()), rel=1e-6)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not on PATH")
def test_torchrun_with_two_processes_trains_and_the_run_loads(reach_demos, tmp_path):
    from robot_rl.deploy import open_policy
    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    out = tmp_path / "ddp_run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    command = [
        TORCHRUN,
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "robot_rl.cli.main",
        "train",
        "diffusion",
        "--data",
        str(reach_demos),
        "--out",
        str(out),
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--eval-episodes",
        "1",
        "--batch-size",
        "32",
        "--warmup-steps",
        "2",
        "--threads",
        "1",
        "--no-progress",
        "--policy.mlp-hidden",
        "32",
        "--policy.embed-dim",
        "16",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert done.stdout.count(f"run: {out}") == 1  # rank 0 alone reports
    # The layout of a single-process run, written once.
    assert {p.name for p in out.iterdir()} == {
        "config.json",
        "policy.safetensors",
        "checkpoints",
        "metrics.jsonl",
        "tb",
    }
    assert {p.name for p in (out / "checkpoints" / "latest").iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "optimizer.safetensors",
        "trainer.json",
    }
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [10, 20]  # evaluations once, by rank 0
    assert all(m["eval_episodes"] == 1 and np.isfinite(m["val_loss"]) for m in lines)
    opened = open_policy(out)
    assert (opened.kind, opened.policy_type) == ("run", "diffusion")
    assert opened.load_policy().predict(
        np.zeros((1, opened.load_policy().obs_dim)), np.random.default_rng(0)
    ).shape == (8, 4)
    report = evaluate(EvalConfig(policy=str(out), episodes=2, progress=False))
    assert report["episodes"] == 2 and 0.0 <= report["success_rate"] <= 1.0
