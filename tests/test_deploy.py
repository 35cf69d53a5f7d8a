"""The deploy layer: a policy is opened (``open_policy``) and its stack assembled (``build_stack``) in one place.

For every shipped policy in ``policies/``, ``robot-rl eval --safety on --monitor on`` and the ROS 2 policy node
(``robot_rl_ros.control.build_runtime``, ROS-free) both open the folder through :func:`robot_rl.deploy.open_policy`
and build the stack at :func:`robot_rl.deploy.build_stack`; the two stacks are compared: the same chain (filter types
and order), the chunk validator present and first among the monitors, the same failure monitor, the same fallback.
Every bad path (missing, the wrong kind, a runtime field out of range, files that contradict each other) is refused
with one line that says what was expected and what arrived.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import robot_rl.deploy as deploy
import robot_rl.deploy.source as source
from robot_rl.deploy import PolicyOpenError, open_policy
from robot_rl.envs.registry import ENV_SPECS, ROBOTS, robot_of

REPO = Path(__file__).resolve().parents[1]
POLICIES = sorted(str(p.relative_to(REPO)) for p in (REPO / "policies").iterdir() if (p / "metadata.json").is_file())
PUSH = REPO / "policies" / "panda_push_diffusion"

# The ROS package runs from the source tree when it is not pip-installed; control.py needs no rclpy.
if importlib.util.find_spec("robot_rl_ros") is None:
    sys.path.insert(0, str(REPO / "ros2_ws" / "src" / "robot_rl_ros"))


def _capture(monkeypatch: pytest.MonkeyPatch) -> list[deploy.Stack]:
    """Every Stack build_stack returns from now on (the callers import it lazily, so the patch reaches them)."""
    built: list[deploy.Stack] = []
    real = deploy.build_stack

    def spy(*args: Any, **kwargs: Any) -> deploy.Stack:
        stack = real(*args, **kwargs)
        built.append(stack)
        return stack

    monkeypatch.setattr(deploy, "build_stack", spy)
    return built


def _monitor_name(monitor: Any) -> str:
    owner = getattr(monitor, "__self__", None)
    if owner is not None:  # a bound method: the chain's chunk validator
        return f"{type(owner).__name__}.{monitor.__func__.__name__}"
    return f"{type(monitor).__name__}:{getattr(monitor, 'name', '')}"


def _describe(stack: deploy.Stack) -> dict[str, Any]:
    """What must match between eval and the node: types and order, the validator's bounds, the fallback."""
    chain, controller = stack.chain, stack.controller
    assert chain is not None
    validator = chain.chunk_validator
    assert validator is not None, "the chain runs without its chunk validator"
    assert controller.monitors[0].__self__ is chain, "the chunk validator is not the Controller's first monitor"
    assert controller.fallback.__self__ is chain.fallback
    return {
        "filters": [type(f).__name__ for f in controller.filters],
        "chain": [type(f).__name__ for f in chain.filters],
        "monitors": [_monitor_name(m) for m in controller.monitors],
        "validator": {k: np.asarray(v).tolist() for k, v in sorted(vars(validator).items())},
        "fallback": f"{type(chain.fallback).__name__}.{controller.fallback.__func__.__name__}",
        "watchdog": type(chain.watchdog).__name__,
        "monitor_thresholds": None if stack.monitor is None else dict(stack.monitor.thresholds),
    }


def _opened(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every exported folder open_policy opens from now on (its reader is looked up at each call)."""
    opened: list[Path] = []
    real = source._open_exported

    def spy(folder: Path) -> deploy.OpenedPolicy:
        opened.append(Path(folder).resolve())
        return real(folder)

    monkeypatch.setattr(source, "_open_exported", spy)
    return opened


def _eval_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> deploy.Stack:
    from robot_rl.envs.registry import make
    from robot_rl.evaluation.actors import make_actor
    from robot_rl.evaluation.config import EvalConfig, resolve
    from robot_rl.evaluation.guard import Guard

    built, opened = _capture(monkeypatch), _opened(monkeypatch)
    config = EvalConfig(policy=policy_dir, safety="on", monitor="on")
    resolved = resolve(config)
    env = make(resolved.env_id)
    try:
        make_actor(config, resolved.opened, resolved.env_id, env, Guard(resolved.env_id, env, safety=True))
    finally:
        env.close()
    assert len(built) == 1 and opened == [(REPO / policy_dir).resolve()]
    return built[0]


def _node_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> deploy.Stack:
    from robot_rl_ros.control import RuntimeConfig, build_runtime

    built, opened = _capture(monkeypatch), _opened(monkeypatch)
    runtime = build_runtime(RuntimeConfig(policy=policy_dir))
    assert len(built) == 1 and opened == [(REPO / policy_dir).resolve()]
    stack = built[0]
    assert runtime.controller is stack.controller and runtime.chain is stack.chain
    assert runtime.robot == robot_of(runtime.env_id).robot  # the robot adapter the registry names
    return stack


def test_every_shipped_policy_is_found() -> None:
    assert len(POLICIES) >= 2, f"no shipped policies under {REPO / 'policies'}"


@pytest.mark.parametrize("policy_dir", POLICIES)
def test_eval_and_the_node_build_the_same_stack(policy_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluated = _describe(_eval_stack(policy_dir, monkeypatch))
    deployed = _describe(_node_stack(policy_dir, monkeypatch))
    assert evaluated == deployed
    assert evaluated["filters"] == ["SafetyChain"]
    assert evaluated["monitors"][0] == "SafetyChain.monitor"


class TestBuildStack:
    def test_the_chunk_validator_is_on_wherever_the_chain_is(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        stack = deploy.build_stack(policy, "robot_rl/PandaPush-v0", safety=True, monitor=False)
        assert stack.chain is not None and stack.chain.chunk_validator is not None
        assert stack.controller.filters == [stack.chain]
        assert stack.controller.monitors == [stack.chain.monitor]
        assert stack.monitor is None

    def test_without_safety_there_is_no_chain_and_no_fallback(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        stack = deploy.build_stack(policy, "robot_rl/PandaPush-v0", safety=False, monitor=False)
        assert stack.chain is None and stack.check is None
        assert stack.controller.filters == [] and stack.controller.monitors == []
        assert stack.controller.fallback is None

    def test_an_unknown_env_is_refused_with_the_valid_ids(self) -> None:
        from robot_rl.runtime import OnnxPolicy

        policy = OnnxPolicy(REPO / "policies" / "panda_push_diffusion")
        with pytest.raises(ValueError, match="Valid env ids"):
            deploy.build_stack(policy, "robot_rl/PandaPushh-v0", safety=True, monitor=False)


@pytest.mark.parametrize("policy_dir", POLICIES)
def test_every_shipped_policy_opens_as_an_exported_folder_of_its_registry_robot(policy_dir: str) -> None:
    opened = open_policy(REPO / policy_dir)
    card = json.loads((REPO / policy_dir / "metadata.json").read_text())
    assert opened.kind == "exported" and opened.card is not None and opened.config is None
    assert opened.env_id == card["env_id"] and opened.env_kwargs == card["env_kwargs"]
    assert opened.robot is ENV_SPECS[opened.env_id].robot and opened.robot.family == card["action"]["family"]
    assert opened.demo_seeds == tuple(card["training_data"]["seeds"])
    assert opened.policy_type == card["base"]["policy_type"]
    assert opened.residual_algo == (card["residual"] or {}).get("algo") and opened.is_base == (not card["residual"])
    policy = opened.load_policy()
    assert policy.metadata == opened.card


def test_the_registry_names_each_env_s_robot_and_hardware_file() -> None:
    for env_id, spec in ENV_SPECS.items():
        family = "franka" if env_id.startswith("robot_rl/Panda") else "quadrotor"
        assert spec.robot is ROBOTS[family] and spec.entry_point.startswith(f"robot_rl.envs.{family}.")
        assert (REPO / "hardware" / spec.robot.hardware_file).is_file()
    assert robot_of("PandaPush-v0").robot == "fr3"


# ----------------------------------------------------------------------------------------------- bad input


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def _card(folder: Path, **changes: Any) -> Path:
    """A copy of the Push policy with ``changes`` written into its metadata.json."""
    shutil.copytree(PUSH, folder, ignore=shutil.ignore_patterns("monitor", "*.mp4"))
    card = json.loads((folder / "metadata.json").read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = card
        for parent in parents:
            node = node[parent]
        node[key] = value
    _write_json(folder / "metadata.json", card)
    return folder


def _bc_run(folder: Path, **changes: Any) -> Path:
    """A bc run folder as `robot-rl train bc` writes it (the weights a placeholder: opening does not read them)."""
    folder.mkdir()
    config: dict[str, Any] = {
        "policy_type": "bc",
        "policy": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4},
        "train": {"steps": 10},
        "env_id": "robot_rl/PandaPush-v0",
        "env_kwargs": {"randomize": "nominal"},
        "obs_layout": {},
        "action_dim": 4,
        "data": {"path": "demos.hdf5", "sha256": "0", "seeds": [0, 1, 2]},
    }
    config.update(changes)
    _write_json(folder / "config.json", config)
    (folder / "policy.safetensors").write_bytes(b"")
    return folder


def _residual_run(folder: Path, base_dir: Path = PUSH, **changes: Any) -> Path:
    """A residual run folder as `robot-rl train residual` writes it (agent weights a placeholder)."""
    folder.mkdir()
    config: dict[str, Any] = {
        "policy_type": "residual",
        "algo": "sac",
        "options": {"scale": [0.2], "feedback": False, "noise_bound": 1.5, "steps": 10},
        "base": {"path": str(base_dir), "source": "onnx"},
        "env_id": "robot_rl/PandaPush-v0",
        "env_kwargs": {"randomize": "train"},
        "data": {"seeds": [0, 1]},
    }
    config.update(changes)
    _write_json(folder / "config.json", config)
    _write_json(folder / "agent.json", {"format": "robot_rl.residual_agent/1", "algo": config["algo"]})
    (folder / "agent.safetensors").write_bytes(b"")
    return folder


def _refused(path: Path, match: str, **kwargs: Any) -> str:
    with pytest.raises(ValueError, match=match) as err:
        open_policy(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message, message
    return message


class TestOpenPolicyRefuses:
    def test_a_path_that_is_no_policy_saying_what_is_valid_and_what_is_there(self, tmp_path: Path) -> None:
        message = _refused(tmp_path / "nowhere", "no such file or folder")
        for kind in ("exported policy folder", "bc|diffusion training run", "residual run"):
            assert kind in message
        assert "expected" in _refused(tmp_path, "got an empty folder")
        (tmp_path / "notes.txt").write_text("")
        _refused(tmp_path / "notes.txt", "a file, not a folder")
        _refused(tmp_path, r"a folder of notes\.txt")
        lone = tmp_path / "lone"
        lone.mkdir()
        shutil.copy(PUSH / "policy.onnx", lone)
        _refused(lone, "policy.onnx without its metadata.json")

    def test_a_kind_the_caller_cannot_use(self, tmp_path: Path) -> None:
        run = _bc_run(tmp_path / "run")
        residual = _residual_run(tmp_path / "residual")
        message = _refused(PUSH, "got an exported policy folder", accept=("run", "residual"))
        assert message.startswith(f"{PUSH}: expected a bc|diffusion training run")
        _refused(run, "expected an exported policy folder .*; got a bc\\|diffusion training run", accept=("exported",))
        message = _refused(
            residual, "residuals do not stack", accept=("exported", "run"), base_only=True, what="--base"
        )
        assert message.startswith(f"--base {residual}: expected") and message.endswith(
            "got a residual run (config.json + agent.json + agent.safetensors, from `robot-rl train residual`)."
        )
        stack = REPO / "policies" / "panda_push_diffusion_residual_sac"
        _refused(stack, "exported policy folder .* with a sac residual", base_only=True)

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"n_action_steps": 0}, r"n_action_steps must be an integer in \[1, 8\]. Got 0"),
            ({"n_action_steps": -3}, r"n_action_steps must be an integer in \[1, 8\]. Got -3"),
            ({"n_action_steps": "four"}, r"n_action_steps must be an integer in \[1, 8\]. Got 'four'"),
            ({"ctrl_dt": 0}, "ctrl_dt must be a finite number > 0. Got 0"),
            ({"ctrl_dt": -0.04}, "ctrl_dt must be a finite number > 0. Got -0.04"),
            ({"horizon": 2.5}, "horizon must be an integer >= 1. Got 2.5"),
            ({"env_id": "robot_rl/PandaPushh-v0"}, "unknown environment 'robot_rl/PandaPushh-v0'. Did you mean"),
            ({"env_id": 3}, "`env_id` must be a registered env id"),
            (
                {"action.family": "quadrotor"},
                r"action.family is 'quadrotor', but robot_rl/PandaPush-v0 is a franka env",
            ),
            ({"env_kwargs": [1]}, "`env_kwargs` must be an object. Got \\[1\\]"),
            ({"training_data.seeds": "0-99"}, "demo seeds must be a list of integers. Got '0-99'"),
        ],
    )
    def test_a_card_runtime_field_out_of_range(self, tmp_path: Path, changes: dict[str, Any], match: str) -> None:
        folder = _card(tmp_path / "push", **changes)
        assert str(folder / "metadata.json") in _refused(folder, match)

    def test_a_card_without_its_graph(self, tmp_path: Path) -> None:
        folder = _card(tmp_path / "push")
        (folder / "policy.onnx").unlink()
        _refused(folder, "expected its graph policy.onnx beside metadata.json; it is missing")

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"policy": {"horizon": 4, "n_action_steps": 8}}, "config.json: policy: .*n_action_steps"),
            ({"policy": {"n_obs_steps": 0}}, "config.json: policy: .*n_obs_steps"),
            ({"policy": {"depth": 3}}, r"config.json: policy: unknown BCConfig options \['depth'\]"),
            ({"policy_type": "transformer"}, "unknown policy_type 'transformer'"),
            ({"action_dim": 0}, "`action_dim` must be an integer >= 1. Got 0"),
            ({"env_id": "robot_rl/QuadrotorHover-v0"}, "'robot_rl/QuadrotorHover-v0' is retired: use"),
            ({"data": {"seeds": None}}, "data.seeds: the demo seeds must be a list of integers. Got None"),
        ],
    )
    def test_a_run_whose_config_is_out_of_range(self, tmp_path: Path, changes: dict[str, Any], match: str) -> None:
        _refused(_bc_run(tmp_path / "run", **changes), match)

    def test_a_run_without_weights(self, tmp_path: Path) -> None:
        run = _bc_run(tmp_path / "run")
        (run / "policy.safetensors").unlink()
        _refused(run, "has no policy.safetensors yet")

    @pytest.mark.parametrize(
        ("changes", "match"),
        [
            ({"algo": "td3"}, r"algo must be one of \['sac', 'ppo', 'dsrl'\]. Got 'td3'"),
            ({"options": {"scale": [3.0]}}, r"options: `scale` must be in \(0.0, 2.0\]"),
            ({"options": {"scale": [0.1, 0.2]}}, r"options: `scale` takes 1 value .* or 4"),
            ({"options": {"scale": 0.2, "feedback": "yes"}}, "`feedback` must be true or false. Got 'yes'"),
            ({"env_id": "robot_rl/QuadrotorHover-v1"}, "is a quadrotor env; its base acts for the franka"),
            ({"base": {"source": "onnx"}}, "expected `options` and `base` \\(with its `path`\\) objects"),
        ],
    )
    def test_a_residual_run_whose_config_is_out_of_range(
        self, tmp_path: Path, changes: dict[str, Any], match: str
    ) -> None:
        _refused(_residual_run(tmp_path / "residual", **changes), match)

    def test_a_residual_run_with_a_bad_dsrl_bound_or_inconsistent_agent_files(self, tmp_path: Path) -> None:
        dsrl = _residual_run(tmp_path / "dsrl", algo="dsrl", options={"noise_bound": 0})
        _refused(dsrl, "`noise_bound` must be a finite number > 0. Got 0")
        mixed = _residual_run(tmp_path / "mixed")
        _write_json(mixed / "agent.json", {"format": "robot_rl.residual_agent/1", "algo": "ppo"})
        _refused(mixed, "agent.json holds a ppo agent; config.json says sac")
        early = _residual_run(tmp_path / "early")
        (early / "agent.safetensors").unlink()
        _refused(early, "has no agent.safetensors: the residual run has not reached its first evaluation")
        legacy = _residual_run(tmp_path / "legacy")
        (legacy / "agent.json").unlink()
        (legacy / "model.zip").write_bytes(b"")
        _refused(legacy, r"robot-rl convert --run .* --trust-pickle")
        stacked = _residual_run(tmp_path / "stacked", base_dir=REPO / "policies" / "panda_push_diffusion_residual_sac")
        _refused(stacked, "config.json: base .*: expected .*residuals do not stack.*with a sac residual")

    def test_the_cli_prints_the_one_line_and_exits_2(self, tmp_path: Path) -> None:
        folder = _card(tmp_path / "push", n_action_steps=0)
        done = subprocess.run(
            [sys.executable, "-m", "robot_rl.cli.main", "eval", "--policy", str(folder), "--episodes", "1"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "n_action_steps must be an integer in [1, 8]. Got 0" in lines[0], done.stderr


def test_a_valid_residual_run_opens_with_its_base_and_records_how_to_rebuild_it(tmp_path: Path) -> None:
    residual = open_policy(_residual_run(tmp_path / "residual", options={"scale": [0.2], "steps": 10}))
    assert residual.kind == "residual" and residual.residual_algo == "sac" and not residual.is_base
    assert residual.base is not None and residual.base.kind == "exported" and residual.base.path == PUSH
    assert residual.residual_options()["feedback"] is False and "feedback" not in residual.config["options"]
    assert residual.demo_seeds == (0, 1) and residual.robot.family == "franka"
    with pytest.raises(PolicyOpenError, match="no single policy"):
        residual.load_policy()
    run = open_policy(_bc_run(tmp_path / "run"))
    assert run.base_info() == {
        "path": str(tmp_path / "run"),
        "source": "run",
        "policy_type": "bc",
        "env_id": "robot_rl/PandaPush-v0",
        "env_kwargs": {},
        "seeds": [0, 1, 2],
    }
    assert open_policy(PUSH).base_info()["source"] == "onnx"


def test_the_monitor_s_rollouts_run_the_deployed_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    from robot_rl.envs.registry import make
    from robot_rl.monitor.plain import NonFiniteObservation
    from robot_rl.monitor.rollouts import run_monitored
    from robot_rl.runtime import OnnxPolicy

    built = _capture(monkeypatch)

    class Watcher:
        """A stand-in failure monitor: what run_monitored reads from one."""

        name = "watcher"

        def __init__(self) -> None:
            self.policy = OnnxPolicy(PUSH)

        def reset(self, seed: int | None = None) -> None:
            pass

        def __call__(self, observation: Any, chunk: Any, status: Any) -> bool:
            return False

        def trace_arrays(self) -> dict[str, np.ndarray]:
            return {"step": np.zeros(0), "rnd": np.zeros(0), "entropy": np.zeros(0), "consistency": np.zeros(0)}

    watcher, plain = Watcher(), NonFiniteObservation()
    env = make("robot_rl/PandaPush-v0")
    try:
        (trace,) = run_monitored(env, watcher, [1000000], plain=[plain])  # type: ignore[arg-type]
    finally:
        env.close()
    assert trace.length == 50
    (stack,) = built
    assert stack.chain is None and stack.controller.monitors == [watcher, plain] and stack.monitor is watcher
