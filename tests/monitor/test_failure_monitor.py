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
from robot_rl.monitor.calibrate import fit_thresholds
from robot_rl.monitor.conformal import DEFAULT_PROGRESS_SHARE, DETECTORS
from robot_rl.monitor.failure_monitor import CALIBRATION_FILE, MONITOR_DIR, RND_FILE
from robot_rl.monitor.learned import RISK_FILE, fit_risk, trace_features, trace_scores
from robot_rl.monitor.rollouts import EpisodeTrace, run_monitored
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
    """A copy of the push policy calibrated on 16 rollouts (alpha 0.5, half of them fit), RND on 3 expert demos."""
    root = tmp_path_factory.mktemp("monitor")
    demos = root / "demos.hdf5"
    collect("robot_rl/PandaPush-v0", "expert", 3, demos, seed=0, progress=False, fsync=False)
    policy_dir = copy_policy(root / "push")
    config = MonitorCalibrate(
        policy=policy_dir, episodes=16, alpha=0.5, fit_share=0.5, data=demos, rnd_hidden=16, rnd_steps=50,
        progress=False,
    )  # fmt: skip
    calibration = calibrate(config, log=lambda *_: None)
    return policy_dir, calibration


class TestCalibration:
    def test_writes_weights_and_calibration(self, calibrated):
        policy_dir, calibration = calibrated
        assert (policy_dir / MONITOR_DIR / RND_FILE).is_file()
        value = json.loads((policy_dir / MONITOR_DIR / CALIBRATION_FILE).read_text())
        assert value["alpha"] == 0.5 and value["settings"]["samples"] == 3
        assert value["settings"]["window"] == MonitorCalibrate.window == 3
        assert value["seeds"] == list(range(2_000_000, 2_000_016))
        assert value["fit_seeds"] == list(range(2_000_001, 2_000_016, 2))  # every other rollout, by index
        assert value["n_successful"] == sum(e["success"] for e in value["episodes"]) >= 1
        assert {"numpy", "onnxruntime"} <= set(value["versions"])
        assert set(value["thresholds"]) == set(DETECTORS) == set(value["promises"]) == {
            "fiper", "fiper_marginal", "rnd", "entropy", "progress", "fiper_progress", "fiper_progress_split", "risk"
        }  # fmt: skip
        assert value["settings"]["progress_share"] == DEFAULT_PROGRESS_SHARE
        assert read_calibration(policy_dir) == calibration
        # PandaPush is a goal task: the envelope is fitted on the fit split's successes only, every chunk (50 / 4).
        fit = [e for e in value["episodes"] if e["success"] and e["seed"] in value["fit_seeds"]]
        cal = [e for e in value["episodes"] if e["success"] and e["seed"] not in value["fit_seeds"]]
        envelope = calibration.progress
        assert envelope is not None and len(envelope.mean) == 13 and envelope.rollouts == len(fit)
        np.testing.assert_allclose(envelope.mean, np.mean([e["goal_distance"] for e in fit], axis=0))
        assert value["thresholds"]["progress"]["rnd"] == "inf" and value["thresholds"]["fiper"]["progress"] == "inf"
        # Promises: detectors with a fitted part are ranked among the calibration split, the others among both.
        assert value["promises"]["fiper"]["n"] == value["promises"]["progress"]["n"] == len(cal)
        assert value["promises"]["rnd"]["n"] == len(fit) + len(cal)
        assert value["promises"]["rnd"]["expected"] <= 0.5 and "split conformal" in value["promises"]["rnd"]["text"]

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
        _, _, again, _ = fit_thresholds(
            stored, older.fit_seeds, 0.5, 3, DEFAULT_PROGRESS_SHARE, envelope=older.progress, fit=False
        )
        assert again["fiper_progress_split"] == calibration.thresholds["fiper_progress_split"]

    def test_a_format_1_calibration_is_refused(self, calibrated, tmp_path):
        """Format 1 ranked its thresholds on the rollouts that fitted its transforms: no promise, so not loaded."""
        policy_dir, _ = calibrated
        old = shutil.copytree(policy_dir, tmp_path / "v1")
        path = old / MONITOR_DIR / CALIBRATION_FILE
        path.write_text(json.dumps(json.loads(path.read_text()) | {"format_version": 1}))
        with pytest.raises(MonitorNotCalibratedError, match="format_version 1 .* not the alpha it names"):
            FailureMonitor.load(old)

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
        with pytest.raises(ValueError, match=r"alpha=0.1 needs at least 9 successful .*\(n >= 1/alpha - 1\); got \d"):
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
    assert report["promises"]["fiper"]["alpha"] == 0.5
    assert "| detector | promise |" in (tmp_path / "report.md").read_text()
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
    assert other["alpha"] == 0.6 and other["window"] == 1 and other["promises"]["fiper"]["alpha"] == 0.6
    with pytest.raises(ValueError, match="alpha=0.01 needs at least 99 successful"):
        evaluate_monitor(dataclasses.replace(config, alpha=0.01), log=lambda *_: None)
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

    @pytest.mark.parametrize("alpha", ["0", "1", "1.5", "-0.1"])
    def test_alpha_outside_0_1_is_refused(self, alpha):
        result = cli("monitor", "calibrate", "--policy", str(PUSH), "--alpha", alpha, "--budget-only")
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
        assert f"must be in (0, 1), e.g. 0.05. Got {float(alpha)}" in result.stderr

    def test_budget_is_printed_with_its_numbers(self):
        result = cli("monitor", "calibrate", "--policy", str(PUSH), "--alpha", "0.05", "--budget-only")
        assert result.returncode == 0, result.stderr
        # alpha 0.05, width 0.05 at 90%: 190 calibration successes (see test_guarantee), fit share 0.25.
        assert "190 calibration successes" in result.stdout and "0.25 of the rollouts" in result.stdout

    def test_a_calibration_of_another_policy_is_refused_with_exit_2(self, calibrated, tmp_path):
        policy_dir, _ = calibrated
        other = shutil.copytree(policy_dir, tmp_path / "other")
        path = other / MONITOR_DIR / CALIBRATION_FILE
        path.write_text(json.dumps(json.loads(path.read_text()) | {"policy_sha256": "ab" * 32}))
        result = cli("monitor", "eval", "--policy", str(other), "--episodes", "1", "--out", str(tmp_path / "out"))
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
        assert "was calibrated for policy.onnx" in result.stderr and "not this one" in result.stderr

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


def test_the_run_time_risk_equals_the_replayed_one(calibrated, tmp_path):
    """A risk model in the folder: the monitor scores it online, chunk by chunk, as replay from the trace does."""
    policy_dir, calibration = calibrated
    folder = shutil.copytree(policy_dir, tmp_path / "risky")
    stored = [EpisodeTrace.from_json(e) for e in calibration.extra["episodes"]]
    features = [trace_features(t, True, 13) for t in stored]
    model = fit_risk(features, [i % 2 == 0 for i in range(len(stored))], hidden=8, steps=20)  # any labels will do
    model.save(folder / MONITOR_DIR / RISK_FILE)
    calibration_path = folder / MONITOR_DIR / CALIBRATION_FILE
    value = json.loads(calibration_path.read_text())
    value["thresholds"]["risk"]["risk"] = -1e9  # alarms at the first chunk
    calibration_path.write_text(json.dumps(value))
    policy = OnnxPolicy(folder)
    monitor = FailureMonitor.load(folder, policy, detector="risk")
    assert monitor.risk is not None and monitor.promise is not None and monitor.promise.n >= 1
    env = make("robot_rl/PandaPush-v0")
    (trace,) = run_monitored(env, monitor, [3_000_123])
    env.close()
    online = [c.risk for c in monitor.trace]
    assert all(np.isfinite(online)) and trace.consistency[0] == 0.0 and max(trace.consistency) > 0.0
    np.testing.assert_allclose(online, trace_scores(trace, None, model)["risk"], rtol=1e-9, atol=1e-9)
    assert monitor.first_alarm_step == 0
    with pytest.raises(MonitorNotCalibratedError, match="no learned risk model"):
        FailureMonitor.load(policy_dir, detector="risk")


def test_parallel_calibration_rollouts_equal_the_serial_ones(calibrated, monkeypatch):
    """Worker processes run the same seeds to the same traces (each rollout is seeded), in seed order."""
    from robot_rl.monitor import budget
    from robot_rl.monitor.plain import plain_monitors
    from robot_rl.monitor.rollout_pool import RolloutPool

    policy_dir, calibration = calibrated
    monkeypatch.setattr(budget, "BATCH", 2)  # two workers, two seeds each
    policy = OnnxPolicy(policy_dir)
    monitor = FailureMonitor.load(policy_dir, policy)
    env = make("robot_rl/PandaPush-v0")
    serial = budget.collect(
        lambda seeds: run_monitored(env, monitor, seeds, plain_monitors(policy.metadata)),
        3_000_500, 0.5, None, 4, 10, log=lambda *_: None,
    )  # fmt: skip
    env.close()
    settings = type(calibration).settings_json(calibration.settings)
    pool = RolloutPool(
        policy_dir, policy_dir / MONITOR_DIR / RND_FILE, settings, policy.metadata.env_id, 2, None, 4, False
    )
    try:
        parallel = budget.collect(
            lambda seeds: [], 3_000_500, 0.5, None, 4, 10, log=lambda *_: None, parallel=pool.run, workers=2,
        )  # fmt: skip
    finally:
        pool.close()
    assert [t.seed for t in parallel] == [3_000_500, 3_000_501, 3_000_502, 3_000_503]
    assert [t.to_json() for t in parallel] == [t.to_json() for t in serial]


def test_the_card_states_each_detectors_promise(calibrated, tmp_path):
    from robot_rl.export.card import render_readme
    from robot_rl.export.metadata import read_metadata

    policy_dir, calibration = calibrated
    text = render_readme(read_metadata(policy_dir), policy_dir)
    assert "## Failure monitor" in text and "Calibrated at alpha = 0.5 on 16 rollouts" in text
    assert f"| `fiper` | {calibration.promises['fiper']['text']} |" in text
    assert "## Failure monitor" not in render_readme(read_metadata(PUSH), copy_policy(tmp_path / "bare"))


def test_eval_reports_the_promise_beside_the_measured_rate(calibrated, tmp_path):
    policy_dir, _ = calibrated
    out = tmp_path / "eval.json"
    result = cli("eval", "--policy", str(policy_dir), "--episodes", "3", "--seed", "3000700", "--monitor", "on",
                 "--monitor-detector", "rnd", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(out.read_text())["monitor_false_alarms"]
    assert summary["detector"] == "rnd" and summary["promised_alpha"] == 0.5
    assert summary["successes"] + summary["failures"] == 3 and "split conformal" in summary["promise"]
    assert "false alarms on successes" in result.stdout and "promised <= 0.5" in result.stdout


def test_reusing_the_rnd_recalibrates_without_the_demos(calibrated, tmp_path):
    policy_dir, calibration = calibrated
    other = shutil.copytree(policy_dir, tmp_path / "again")
    config = MonitorCalibrate(policy=other, episodes=8, alpha=0.5, fit_share=0.5, reuse_rnd=True, progress=False)
    again = calibrate(config, log=lambda *_: None)
    assert (other / MONITOR_DIR / RND_FILE).read_bytes() == (policy_dir / MONITOR_DIR / RND_FILE).read_bytes()
    assert again.extra["data"]["reused_rnd"] and again.extra["data"]["path"] == calibration.extra["data"]["path"]
    bare = copy_policy(tmp_path / "bare")
    with pytest.raises(FileNotFoundError, match="--reuse-rnd: .* does not exist"):
        calibrate(dataclasses.replace(config, policy=bare), log=lambda *_: None)


def test_the_shipped_calibration_keeps_its_split_and_states_its_promises():
    """policies/panda_push_diffusion/monitor: format 2, disjoint splits, a promise per detector, the risk model."""
    calibration = read_calibration(PUSH)
    assert calibration.alpha == 0.05 and set(calibration.promises) == set(DETECTORS)
    fit = set(calibration.fit_seeds)
    assert fit < set(calibration.seeds) and len(fit) == len(calibration.seeds) // 4
    n_cal = sum(e["success"] and e["seed"] not in fit for e in calibration.extra["episodes"])
    assert calibration.promises["risk"]["n"] == calibration.promises["fiper"]["n"] == n_cal >= 808  # the budget
    assert all(p["expected"] <= 0.05 for p in calibration.promises.values())
    monitor = FailureMonitor.load(PUSH, detector="risk")
    assert monitor.risk is not None and monitor.promise.alpha == 0.05
