"""Software in the loop, multi-process: the sim bridge and the policy node as separate processes on a unique domain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e '.[ros]')")
pytestmark = pytest.mark.ros

from robot_rl_ros.sil import SilDriver  # noqa: E402

from tests.ros.conftest import EVAL_SEED, PUSH_POLICY  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def start(module: str, *params: str) -> subprocess.Popen:
    """``python -c 'from robot_rl_ros.<module> import main; main()' --ros-args -p ...`` in the repository root."""
    env = dict(os.environ)
    package = str(REPO / "ros2_ws" / "src" / "robot_rl_ros")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package, str(REPO), env.get("PYTHONPATH", "")) if p)
    args = [arg for p in params for arg in ("-p", p)]
    return subprocess.Popen(
        [sys.executable, "-c", f"from robot_rl_ros.{module} import main; main()", "--ros-args", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.send_signal(2)  # SIGINT: the nodes shut down cleanly
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    out, _ = process.communicate()
    return out


def test_an_eval_seed_replays_through_two_processes(ros_context, executor):
    import rclpy

    from robot_rl.evaluation.evaluate import EvalConfig, evaluate

    # The eval replica: the bridge without FR3 limits, the node's forward path (tests/ros/test_fr3_vendor.py runs the
    # FR3 command path).
    bridge = start("sim_bridge", "env_id:=robot_rl/PandaPush-v0", f"seed:={EVAL_SEED}", "fr3_limits:=false")
    policy = start(
        "policy_node",
        f"policy:={PUSH_POLICY}",
        "command_interface:=forward",
        "allow_forward:=true",
        "require_safety:=false",
        "safety:=false",
        "monitor:=false",
        "diagnostics_period:=0.2",
    )
    try:
        node = rclpy.create_node("sil_driver", context=ros_context)
        executor.add_node(node)
        driver = SilDriver(node, executor)
        driver.wait_ready(timeout=60.0)
        assert driver.configure()
        info = driver.run_episode(timeout=30.0)
        driver.spin_until(lambda: driver.diagnostics.get("active") == "False", 2.0)
    finally:
        logs = stop(policy) + stop(bridge)
    assert info["seed"] == EVAL_SEED and info["step"] == 50 and info["done"], logs
    assert info["ignored_commands"] == 0, logs
    report = evaluate(EvalConfig(policy=PUSH_POLICY, episodes=1, seed=EVAL_SEED, progress=False))
    assert info["success"] == report["per_episode"][0]["success"], logs
    assert driver.diagnostics["rejected_total"] == "0"
    assert int(driver.diagnostics["steps"]) >= 49
