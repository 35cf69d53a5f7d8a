"""The policy card is complete: a runner that reads only metadata.json and policy.onnx acts as robot_rl does.

Each shipped policy runs on a recorded observation stream twice: through robot_rl's runtime Controller and
through ``card_runner`` (json, numpy and onnxruntime; every rule from the card), and through the Node example
of docs/runtime.md where Node and onnxruntime-node are at hand. The actions must agree bit for bit.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from robot_rl.envs.registry import ENV_SPECS, make
from robot_rl.export.metadata import ONNX_METADATA_KEY
from robot_rl.export.tensors import observation_doc
from robot_rl.runtime import Controller

from .card_runner import CardPolicy, run_stream

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted(p.name for p in (ROOT / "policies").iterdir() if (p / "metadata.json").is_file())
SEEDS = (1_000_000, 1_000_001)
STEPS = 30
"""Periods per recorded episode: several chunks, and the features' warm-up on the quadrotor."""


def record(policy_dir: Path) -> list[dict]:
    """Episodes of ``policy_dir`` under robot_rl's Controller (no filters): seed, observations, actions."""
    controller = Controller.load(policy_dir)
    env = make(controller.policy.metadata.env_id)
    episodes = []
    try:
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            controller.reset(seed)
            observations, actions = [], []
            for t in range(STEPS):
                out = controller.step(obs, t * controller.ctrl_dt)
                observations.append({k: np.asarray(v).tolist() for k, v in obs.items()})
                actions.append(out.action)
                obs, _, terminated, truncated, _ = env.step(out.action)
                if terminated or truncated:
                    break
            episodes.append({"seed": seed, "observations": observations, "actions": np.stack(actions)})
    finally:
        env.close()
    return episodes


@pytest.fixture(scope="module")
def streams():
    return {name: record(ROOT / "policies" / name) for name in POLICIES}


@pytest.mark.parametrize("name", POLICIES)
def test_a_policy_run_from_its_card_alone_matches_the_runtime_bit_for_bit(streams, name):
    episodes = streams[name]
    got = run_stream(ROOT / "policies" / name, episodes)
    for episode, actions in zip(episodes, got, strict=True):
        assert actions.shape == episode["actions"].shape
        assert np.array_equal(actions, episode["actions"]), np.abs(actions - episode["actions"]).max()


def test_the_card_runner_needs_no_robot_rl():
    code = (
        "import sys; sys.path.insert(0, 'tests/export'); import numpy as np; from card_runner import CardPolicy; "
        "p = CardPolicy('policies/panda_push_diffusion_residual_sac'); p.reset(0); "
        "obs = {'observation': np.zeros(25), 'desired_goal': np.zeros(3), 'achieved_goal': np.zeros(3)}; "
        "a = p.step(obs); print(a.shape, [m for m in sys.modules if m.startswith('robot_rl')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "(4,) []"


@pytest.mark.parametrize("name", POLICIES)
def test_every_tensor_and_the_call_rule_are_on_both_copies_of_the_card(name):
    folder = ROOT / "policies" / name
    outer = json.loads((folder / "metadata.json").read_text())
    model = onnx.load(folder / "policy.onnx", load_external_data=False)
    inner = json.loads(next(p.value for p in model.metadata_props if p.key == ONNX_METADATA_KEY))
    for card in (outer, inner):
        tensors = [*card["onnx"]["inputs"], *card["onnx"]["outputs"]]
        for spec in tensors:
            assert spec["meaning"] and spec["units"] and spec["call"], spec["name"]
            assert len(spec["axes"]) == len(spec["shape"]), spec["name"]
            assert (spec["distribution"] is not None) == (spec["name"] == "noise"), spec["name"]
        names = {spec["name"] for spec in tensors}
        calling = card["calling"]
        assert calling["sequence"] and calling["chunking"] and calling["reference_runtime"]
        if "noise" in names:
            assert "N(0, I)" in calling["noise"] and "default_rng" in calling["noise"]
        if "residual_obs" in names:  # the empty-batch convention of the path not used, both ways
            assert "(0, " in calling["empty_batch"] and {"residual_obs", "base_action", "residual_action"} <= names
            rows = {s["name"]: s["call"] for s in tensors}
            assert all("shape (0, " in rows[n] for n in ("obs_history", "noise", "residual_obs", "base_action"))
        else:
            assert calling["empty_batch"] is None
        values = card["observation"]["values"]
        assert [v["start"] for v in values[1:]] == [v["stop"] for v in values[:-1]]  # contiguous
        assert values[0]["start"] == 0 and values[-1]["stop"] == card["observation"]["dim"]
        assert all(v["quantity"] != "undocumented" and v["unit"] for v in values)
    assert {k: v for k, v in outer.items() if k != "onnx_sha256"}.keys() >= inner.keys()
    for key in ("observation", "onnx", "calling"):
        assert outer[key] == inner[key]


def _node_modules() -> Path | None:
    """An onnxruntime-node install: $ORT_NODE_MODULES, or docs/examples/node/node_modules."""
    for candidate in (os.environ.get("ORT_NODE_MODULES"), ROOT / "docs/examples/node/node_modules"):
        if candidate and (Path(candidate) / "onnxruntime-node").is_dir():
            return Path(candidate)
    return None


@pytest.mark.skipif(shutil.which("node") is None or _node_modules() is None, reason="needs node and onnxruntime-node")
@pytest.mark.parametrize("name", POLICIES)
def test_the_node_example_matches_the_runtime_bit_for_bit(streams, name, tmp_path):
    folder = ROOT / "policies" / name
    episodes = streams[name]
    card = CardPolicy(folder)  # the noise of robot_rl's draws (calling.noise), replayed by the Node example
    noise = []
    for episode in episodes:
        card.reset(episode["seed"])
        for obs in episode["observations"]:
            card.step(obs)
        noise.append([draw.reshape(-1).tolist() for draw in card.drawn])
    stream = {
        "episodes": [
            {"seed": e["seed"], "observations": e["observations"], "noise": z}
            for e, z in zip(episodes, noise, strict=True)
        ]
    }
    (tmp_path / "stream.json").write_text(json.dumps(stream))
    shutil.copy(ROOT / "docs/examples/node/run_policy.mjs", tmp_path)
    (tmp_path / "node_modules").symlink_to(_node_modules())
    out = subprocess.run(
        ["node", "run_policy.mjs", str(folder), "stream.json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)["actions"]
    for episode, actions in zip(episodes, got, strict=True):
        assert np.array_equal(np.asarray(actions, dtype=np.float64), episode["actions"])


@pytest.mark.parametrize("env_id", sorted(i for i in ENV_SPECS if "Dense" not in i))
def test_every_env_documents_each_index_of_its_observation(env_id):
    env = make(env_id)
    try:
        doc = observation_doc(env)
        size = env.observation_space["observation"].shape[0]
    finally:
        env.close()
    rows = doc["observation"]
    assert [r[0] for r in rows] == [0, *[r[1] for r in rows[:-1]]] and rows[-1][1] == size
    assert all(quantity and unit for _, _, quantity, unit in rows)
    assert set(doc) == {"observation", "achieved_goal", "desired_goal"}
    if "Reach" in env_id:  # the 10 entries without an object, not the first 10 rows of the shared table
        assert [r[2] for r in rows][2:] == ["TCP linear velocity (world)", "finger velocities"]
        assert doc["achieved_goal"][0][2] == "TCP position"
