"""`robot-rl eval --safety on|off --monitor on|off`: the report's safety and monitor fields."""

import shutil
from pathlib import Path

import pytest

from robot_rl.evaluation.evaluate import EvalConfig, evaluate

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.mark.parametrize("env_id", ["robot_rl/PandaPush-v0", "robot_rl/QuadrotorHover-v1"])
def test_random_commands_break_the_constraints_without_the_filter_and_never_with_it(env_id):
    off = evaluate(EvalConfig(env=env_id, policy="random", episodes=8, safety="off", progress=False))
    on = evaluate(EvalConfig(env=env_id, policy="random", episodes=8, safety="on", progress=False))
    assert off["safety_violations"] > 0 and off["safety_violations_by_constraint"]
    assert off["safety_interventions"] is None
    assert on["safety_violations"] == 0 and on["safety_violations_by_constraint"] == {}
    assert on["safety_interventions"] > 0
    assert sum(e["safety_interventions"] for e in on["per_episode"]) == on["safety_interventions"]
    assert sum(e["safety_violations"] for e in off["per_episode"]) == off["safety_violations"]


def test_an_exported_policy_runs_the_chain_inside_the_controller():
    report = evaluate(
        EvalConfig(policy=str(POLICIES / "panda_push_diffusion"), episodes=2, safety="on", progress=False)
    )
    assert report["safety"] == "on" and report["safety_violations"] == 0
    assert report["safety_interventions"] is not None


def test_monitor_without_calibration_runs_off_and_says_so(tmp_path):
    policy = tmp_path / "policy"
    shutil.copytree(POLICIES / "panda_push_diffusion", policy, ignore=shutil.ignore_patterns("monitor"))
    report = evaluate(EvalConfig(policy=str(policy), episodes=1, monitor="on", progress=False))
    assert report["monitor"].startswith("off:") and "calibrat" in report["monitor"]
    assert report["monitor_alarms"] is None


def test_monitor_needs_an_exported_policy():
    with pytest.raises(ValueError, match="exported policy"):
        EvalConfig(policy="expert", monitor="on")


def test_monitor_detector_is_checked():
    with pytest.raises(ValueError, match="monitor_detector.*fiper_progress"):
        EvalConfig(policy=str(POLICIES / "panda_push_diffusion"), monitor="on", monitor_detector="fiper_or")


def test_monitor_detector_picks_the_calibrated_detector():
    report = evaluate(
        EvalConfig(
            policy=str(POLICIES / "panda_push_diffusion"),
            episodes=2,
            monitor="on",
            monitor_detector="progress",
            progress=False,
        )
    )
    assert report["monitor"] == "on (progress)" and report["monitor_alarms"] is not None


@pytest.mark.parametrize("name", ["panda_push_diffusion", "quadrotor_hover_diffusion"])
def test_a_non_finite_observation_under_the_chain_gets_the_robot_s_fallback(name, monkeypatch):
    """Eval with --safety on hands the Controller the chain's fallback command; NaN sensing mid-episode runs on."""
    import importlib

    import gymnasium as gym
    import numpy as np

    module = importlib.import_module("robot_rl.evaluation.evaluate")

    class NanOnce(gym.Wrapper):
        def step(self, action):
            observation, *rest = self.env.step(action)
            self.count = getattr(self, "count", 0) + 1
            if self.count == 5:
                observation = {k: np.full_like(v, np.nan) for k, v in observation.items()}
            return (observation, *rest)

    real = module.make
    monkeypatch.setattr(module, "make", lambda *a, **k: NanOnce(real(*a, **k)))
    report = evaluate(EvalConfig(policy=str(POLICIES / name), episodes=1, safety="on", progress=False))
    assert report["episodes"] == 1 and report["safety_violations"] == 0
