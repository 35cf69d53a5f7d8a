"""FailureMonitor in the runtime Controller: calibrate a copy of the shipped push policy, load, run, evaluate."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robot_rl.data.collect import collect
from robot_rl.envs.registry import make
from robot_rl.monitor import (
    FailureMonitor,
    MonitorCalibrate,
    MonitorEval,
    MonitorNotCalibratedError,
    calibrate,
    evaluate_monitor,
    read_calibration,
)
from robot_rl.monitor.conformal import DEFAULT_PROGRESS_SHARE, DETECTORS, calibrate_detectors
from robot_rl.monitor.failure_monitor import CALIBRATION_FILE, MONITOR_DIR, RND_FILE
from robot_rl.monitor.rollouts import EpisodeTrace
from robot_rl.runtime import Controller, ControllerConfig, OnnxPolicy

PUSH = Path(__file__).resolve().parents[2] / "policies" / "panda_push_diffusion"
REPO = PUSH.parents[1]


def copy_policy(root):
    """The shipped policy's graph and card, without any monitor files."""
    root.mkdir()
    for name in ("policy.onnx", "metadata.json"):
        shutil.copy(PUSH / name, root / name)
    return root


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A copy of the push policy calibrated on 10 rollouts (alpha 0.5) with an RND trained on 3 expert demos."""
    root = tmp_path_factory.mktemp("monitor")
    demos = root / "demos.hdf5"
    collect("robot_rl/PandaPush-v0", "expert", 3, demos, seed=0, progress=False, fsync=False)
    policy_dir = copy_policy(root / "push")
    config = MonitorCalibrate(
        policy=policy_dir, episodes=10, alpha=0.5, data=demos, rnd_hidden=16, rnd_steps=50, progress=False
    )
    calibration = calibrate(config, log=lambda *_: None)
    return policy_dir, calibration


class TestCalibration:
    def test_writes_weights_and_calibration(self, calibrated):
        policy_dir, calibration = calibrated
        assert (policy_dir / MONITOR_DIR / RND_FILE).is_file()
        value = json.loads((policy_dir / MONITOR_DIR / CALIBRATION_FILE).read_text())
        assert value["alpha"] == 0.5 and value["settings"]["samples"] == 3
        assert value["settings"]["window"] == MonitorCalibrate.window == 3
        assert value["seeds"] == list(range(2_000_000, 2_000_010))
        assert value["n_successful"] == sum(e["success"] for e in value["episodes"]) >= 1
        assert {"numpy", "onnxruntime"} <= set(value["versions"])
        assert set(value["thresholds"]) == set(DETECTORS) == {
            "fiper", "fiper_marginal", "rnd", "entropy", "progress", "fiper_progress", "fiper_progress_split"
        }  # fmt: skip
        assert value["settings"]["progress_share"] == DEFAULT_PROGRESS_SHARE
        assert read_calibration(policy_dir) == calibration
        # PandaPush is a goal task: the envelope covers every chunk of the successful rollouts (50 steps / 4).
        envelope = calibration.progress
        assert envelope is not None and len(envelope.mean) == 13 and envelope.rollouts == value["n_successful"]
        distances = [e["goal_distance"] for e in value["episodes"] if e["success"]]
        np.testing.assert_allclose(envelope.mean, np.mean(distances, axis=0))
        assert value["thresholds"]["progress"]["rnd"] == "inf" and value["thresholds"]["fiper"]["progress"] == "inf"

    def test_calibration_without_progress_still_loads(self, calibrated, tmp_path):
        """A calibration.json written before the progress score: FIPER loads; the progress detectors are refused."""
        policy_dir, _ = calibrated
        old = shutil.copytree(policy_dir, tmp_path / "old")
        path = old / MONITOR_DIR / CALIBRATION_FILE
        value = json.loads(path.read_text())
        del value["progress"], value["thresholds"]["progress"], value["thresholds"]["fiper_progress"]
        for thresholds in value["thresholds"].values():
            del thresholds["progress"]
        path.write_text(json.dumps(value))
        calibration = read_calibration(old)
        assert calibration.progress is None and calibration.thresholds["fiper_progress"]["progress"] == np.inf
        assert FailureMonitor.load(old).progress is None
        with pytest.raises(MonitorNotCalibratedError, match="no goal-progress envelope"):
            FailureMonitor.load(old, detector="progress")

    def test_a_calibration_older_than_a_detector_refuses_it_and_monitor_eval_recomputes_it(self, calibrated, tmp_path):
        """A calibration.json without fiper_progress_split's thresholds: that detector is refused by name (not
        silently never firing); the others load; ``monitor eval`` recomputes it from the stored rollouts."""
        policy_dir, calibration = calibrated
        old = shutil.copytree(policy_dir, tmp_path / "older")
        path = old / MONITOR_DIR / CALIBRATION_FILE
        value = json.loads(path.read_text())
        del value["thresholds"]["fiper_progress_split"], value["settings"]["progress_share"]
        path.write_text(json.dumps(value))
        older = read_calibration(old)
        assert "fiper_progress_split" not in older.calibrated_detectors
        assert older.settings.progress_share == DEFAULT_PROGRESS_SHARE
        assert FailureMonitor.load(old, detector="fiper_progress").rule == "both_or_progress"
        with pytest.raises(MonitorNotCalibratedError, match="no thresholds for detector 'fiper_progress_split'"):
            FailureMonitor.load(old, detector="fiper_progress_split")
        stored = [EpisodeTrace.from_json(e) for e in value["episodes"]]
        again = calibrate_detectors([t.scores(older.progress) for t in stored if t.success], 0.5, 3)
        assert again["fiper_progress_split"] == calibration.thresholds["fiper_progress_split"]

    def test_missing_data_is_named(self, calibrated, tmp_path):
        policy_dir, _ = calibrated
        config = MonitorCalibrate(policy=policy_dir, episodes=2, alpha=0.1, data=tmp_path / "none.hdf5")
        with pytest.raises(FileNotFoundError, match="--data"):
            calibrate(config)

    def test_too_few_successes_for_alpha(self, calibrated, tmp_path):
        policy_dir, _ = calibrated
        other = shutil.copytree(policy_dir, tmp_path / "push")
        demos = policy_dir.parent / "demos.hdf5"
        config = MonitorCalibrate(policy=other, episodes=2, alpha=0.1, data=demos, rnd_hidden=8, rnd_steps=5)
        with pytest.raises(ValueError, match="alpha=0.1 needs at least 9 successful"):
            calibrate(dataclasses.replace(config, progress=False), log=lambda *_: None)

    def test_demo_seeds_are_refused(self, calibrated):
        policy_dir, _ = calibrated
        with pytest.raises(ValueError, match="overlap the demos' seeds"):
            calibrate(MonitorCalibrate(policy=policy_dir, episodes=2, seed=0))


class TestInController:
    def test_scores_every_chunk_and_raises_the_alarm(self, calibrated):
        policy_dir, _ = calibrated
        policy = OnnxPolicy(policy_dir)
        monitor = FailureMonitor.load(policy_dir, policy)
        env = make("robot_rl/PandaPush-v0")
        controller = Controller(policy, ControllerConfig(), monitors=[monitor])
        calibrated_thresholds = dict(monitor.thresholds)
        assert np.isfinite([calibrated_thresholds["rnd"], calibrated_thresholds["entropy"]]).all()
        assert calibrated_thresholds["progress"] == np.inf  # FIPER does not read it
        monitor.thresholds = {"rnd": np.inf, "entropy": np.inf}  # quiet first
        obs, _ = env.reset(seed=3_000_000)
        controller.reset(3_000_000)
        for t in range(18):
            output = controller.step(obs, t * controller.ctrl_dt)
            obs, *_ = env.step(output.action)
        n = policy.n_action_steps
        assert [c.step for c in monitor.trace] == list(range(0, 18, n))
        assert all(np.isfinite([c.rnd, c.entropy]).all() for c in monitor.trace)
        # Thresholds below every score: the alarm goes up at the next chunk, under the monitor's name.
        monitor.thresholds = {"rnd": -np.inf, "entropy": -np.inf}
        statuses = []
        next_chunk = -(-18 // n) * n  # the first chunk from step 18 on
        for t in range(18, next_chunk + 1):
            output = controller.step(obs, t * controller.ctrl_dt)
            statuses.append(output.status)
            obs, *_ = env.step(output.action)
        assert [s.alarm for s in statuses] == [False] * (next_chunk - 18) + [True]
        assert statuses[-1].alarms == ["fiper"] and monitor.first_alarm_step == next_chunk
        env.close()

    def test_progress_detector_scores_the_goal_distance(self, calibrated):
        policy_dir, calibration = calibrated
        policy = OnnxPolicy(policy_dir)
        monitor = FailureMonitor.load(policy_dir, policy, detector="progress")
        assert monitor.rule == "progress" and monitor.thresholds["rnd"] == np.inf
        env = make("robot_rl/PandaPush-v0")
        controller = Controller(policy, ControllerConfig(), monitors=[monitor])
        obs, _ = env.reset(seed=3_000_001)
        controller.reset(3_000_001)
        distances = {}
        for t in range(20):
            distances[t] = float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"]))
            output = controller.step(obs, t * controller.ctrl_dt)
            obs, *_ = env.step(output.action)
        env.close()
        envelope = calibration.progress
        for k, chunk in enumerate(monitor.trace):
            assert chunk.goal_distance == pytest.approx(distances[chunk.step])
            assert chunk.progress == pytest.approx(envelope.score(k, distances[chunk.step]))
        arrays = monitor.trace_arrays()
        np.testing.assert_allclose(arrays["goal_distance"], [distances[c.step] for c in monitor.trace])

    def test_without_calibration_the_monitor_is_off(self, tmp_path):
        policy_dir = copy_policy(tmp_path / "bare")
        with pytest.raises(MonitorNotCalibratedError, match="monitor is off") as error:
            FailureMonitor.load(policy_dir)
        assert isinstance(error.value, FileNotFoundError)
        assert "robot-rl monitor calibrate" in str(error.value)

    def test_calibration_of_another_graph_is_refused(self, calibrated, tmp_path):
        policy_dir, _ = calibrated
        other = tmp_path / "other"
        shutil.copytree(policy_dir, other)
        value = json.loads((other / MONITOR_DIR / CALIBRATION_FILE).read_text())
        value["policy_sha256"] = "0" * 64
        (other / MONITOR_DIR / CALIBRATION_FILE).write_text(json.dumps(value))
        with pytest.raises(MonitorNotCalibratedError, match="calibrated for policy.onnx 000000000000"):
            FailureMonitor.load(other)

    def test_run_time_imports_no_torch(self, calibrated):
        policy_dir, _ = calibrated
        code = (
            "import sys, numpy as np\n"
            "from robot_rl.monitor import FailureMonitor\n"
            "from robot_rl.runtime import Controller, OnnxPolicy\n"
            f"p = OnnxPolicy({str(policy_dir)!r}); m = FailureMonitor.load({str(policy_dir)!r}, p)\n"
            "c = Controller(p, monitors=[m])\n"
            "obs = {'observation': np.zeros(25), 'desired_goal': np.zeros(3), 'achieved_goal': np.zeros(3)}\n"
            "c.step(obs, 0.0)\n"
            "assert len(m.trace) == 1 and 'torch' not in sys.modules, sorted(k for k in sys.modules if 'torch' in k)\n"
        )
        subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_monitor_eval_writes_the_report(calibrated, tmp_path):
    policy_dir, _ = calibrated
    config = MonitorEval(policy=policy_dir, episodes=2, conditions=("nominal", "kick"), out=tmp_path, progress=False)
    report = evaluate_monitor(config, log=lambda *_: None)
    assert set(report["conditions"]) == {"nominal", "kick"} and set(report["pooled"]) == {"shifted", "all"}
    nominal = report["conditions"]["nominal"]
    assert nominal["episodes"] == 2 and set(nominal["detectors"]) >= {"fiper", "rnd", "entropy", "tracking"}
    assert [e["seed"] for e in report["per_episode"]] == [
        3_000_000,
        3_000_001,
        3_300_000,
        3_300_001,
    ]  # kick: condition 3
    assert "| nominal |" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["alpha"] == 0.5
    # Other alpha and window: thresholds recomputed from the stored calibration scores.
    other = evaluate_monitor(
        MonitorEval(
            policy=policy_dir, episodes=1, conditions=("nominal",), out=tmp_path, alpha=0.6, window=1, progress=False
        ),
        log=lambda *_: None,
    )
    assert other["alpha"] == 0.6 and other["window"] == 1
    with pytest.raises(ValueError, match="unknown"):
        evaluate_monitor(MonitorEval(policy=policy_dir, conditions=("windy",), out=tmp_path))


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "robot_rl.cli.main", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


class TestCLI:
    def test_help(self):
        result = cli("monitor", "calibrate", "--help")
        assert result.returncode == 0
        for option in ("--policy", "--episodes", "--alpha", "--window", "--samples", "--seed", "--data"):
            assert option in result.stdout
        assert "--conditions" in cli("monitor", "eval", "--help").stdout

    def test_bad_policy_path_is_one_line(self, tmp_path):
        result = cli("monitor", "calibrate", "--policy", str(tmp_path / "missing"))
        assert result.returncode != 0
        assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
        assert "no such folder" in result.stderr

    def test_uncalibrated_eval_is_one_line(self, tmp_path):
        result = cli("monitor", "eval", "--policy", str(copy_policy(tmp_path / "bare")), "--episodes", "1")
        assert result.returncode != 0 and result.stderr.strip().count("\n") == 0
        assert "monitor is off" in result.stderr


def test_reusing_the_policy_chunk_draws_one_sample_less(calibrated):
    policy_dir, _ = calibrated
    policy = OnnxPolicy(policy_dir)
    monitor = FailureMonitor.load(policy_dir, policy)
    monitor.settings = dataclasses.replace(monitor.settings, samples=3, reuse_policy_chunk=True)
    batches = []
    original = policy.predict_batch

    def spy(histories, noise=None, rng=None):
        batches.append(len(histories))
        return original(histories, noise, rng)

    policy.predict_batch = spy
    history = np.zeros((policy.n_obs_steps, policy.obs_dim))
    chunk = np.zeros((policy.horizon, policy.action_dim))
    rnd, entropy = monitor.scores(history, chunk)
    assert batches == [2] and np.isfinite([rnd, entropy]).all()
    monitor.scores(history)  # no chunk given: K fresh samples
    assert batches == [2, 3]
