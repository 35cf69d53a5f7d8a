"""Roll a policy out on an env over consecutive seeds and build the eval report.

With ``takeover`` a teleop device can take over from the policy during the rollout
(:mod:`robot_rl.teleop.intervention`); with ``record`` every episode is recorded into a demo file
with the per-step ``interventions`` flag (the RLIF / HIL-SERL signal).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from robot_rl.envs.registry import check_env_id, make
from robot_rl.envs.rollout import EPISODE_EXTRAS
from robot_rl.evaluation.guard import Guard, load_monitor
from robot_rl.limits import check_counts, check_seed

if TYPE_CHECKING:
    from robot_rl.envs.randomization import DomainRandomization
    from robot_rl.export.metadata import PolicyMetadata
    from robot_rl.teleop.base import Teleoperator

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how."""

    env: str | None = None
    """Environment id (``robot-rl envs`` lists them); default: the trained policy's env, else PandaPush."""
    policy: str = "expert"
    """``expert`` (the scripted expert), ``random`` (uniform random actions), a training run directory or an
    exported policy folder (``robot-rl export``; run by onnxruntime)."""
    episodes: int = 100
    """Number of episodes; episode k uses seed ``seed + k``."""
    seed: int | None = None
    """First episode's seed; default 0, and 1000000 for a trained policy (never a demo's seed)."""
    inference_steps: int | None = None
    """Diffusion runs: denoising steps (default: the run's; an exported policy has them fixed at export)."""
    n_action_steps: int | None = None
    """Chunked policies: actions executed per chunk (default: the run's)."""
    blend: Literal["none", "ensemble", "crossfade"] = "none"
    """Exported policies: transitions between action chunks in the runtime controller (``none``: receding
    horizon; ``ensemble``: ACT-style temporal ensembling; ``crossfade``: linear cross-fade; see README, Runtime)."""
    prefetch_lead: int = 0
    """Exported policies: 0 computes each chunk when it is due (also what the ROS policy node's ``prefetch`` with
    ``prefetch_lead`` 0 gives when the state it primes from is the step's); N > 0 computes it N steps earlier, from
    the observation then, as the node does with ``prefetch_lead`` N (there in a background thread; here in step,
    giving the chunks the thread gives when it finishes in time). Measures what prefetch costs in success."""
    threads: int = 1
    """torch CPU threads for a trained policy (one avoids fighting other jobs for the cores)."""
    plot: Path | None = None
    """Trained policies: write the training curves (success and return over training) as a PNG here."""
    randomize: str = "nominal"
    """Domain randomization: ``nominal`` (off), ``train``, or a YAML file (keys in the README)."""
    video: Path | None = None
    """Write an MP4 of the first episodes here (offscreen rendering; MUJOCO_GL=osmesa on CPU)."""
    video_episodes: int = 3
    """How many episodes the video shows."""
    json: Path | None = None
    """Write the eval report (JSON) here."""
    progress: bool = True
    """Show a progress bar."""
    takeover: Literal["none", "keyboard", "gamepad", "spacemouse"] = "none"
    """A device that can take over from the policy (rules: robot_rl/teleop/intervention.py); runs in real time."""
    takeover_hold: float = 0.5
    """How long a motion takeover lasts after the device stops moving [s]."""
    record: Path | None = None
    """Record every episode, with the per-step human ``interventions`` flag, into this demo HDF5 (appends)."""
    realtime: bool = True
    """With --takeover: pace the rollout at the env's control period."""
    view: bool = True
    """With --takeover: show a MuJoCo viewer when a display exists (else a status line)."""
    safety: Literal["on", "off"] = "off"
    """``on``: every command passes the robot's safety chain (hardware/fr3.yaml or hardware/crazyflie.yaml: limits,
    CBF workspace/geofence, rate limits, watchdog), as on hardware; the report counts the steps it changed
    (``safety_interventions``). The constraint check (``safety_violations``) runs either way."""
    monitor: Literal["on", "off"] = "off"
    """``on``: an exported policy's failure monitor (``robot-rl monitor calibrate``) watches every chunk; the report
    counts episodes with an alarm (``monitor_alarms``) and each episode's first alarm step. Without calibration
    files the eval runs with the monitor off and says so."""
    suite: str | None = None
    """Run a robustness suite instead of one condition: ``robustness`` (the families of the policy's robot, in
    robot_rl/evaluation/suites/) or a suite YAML. Every family on the same ``--episodes`` seeds (from the suite's
    seed unless --seed is given), the scripted expert beside the policy; prints the table, writes --json and --plot."""
    families: tuple[str, ...] = ()
    """With --suite: only these families (and nominal); default all."""
    suite_expert: bool = True
    """With --suite: also run the scripted expert under every family, on the same seeds."""
    card: bool = False
    """With --suite on an exported policy: put the table on its card (metadata.json ``robustness``, README.md,
    robustness.json)."""
    monitor_detector: str = "fiper"
    """Which calibrated detector raises the alarm: ``fiper`` (RND and entropy, jointly calibrated), ``fiper_marginal``,
    ``rnd``, ``entropy``, ``progress`` (goal progress, goal tasks), ``fiper_progress`` (FIPER or goal progress) or
    ``fiper_progress_split`` (the same, alpha split between the two: on PandaPush the one that meets the targets)."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "episodes", "video_episodes", "threads", "inference_steps", "n_action_steps")
        if self.prefetch_lead < 0:
            raise ValueError(f"`prefetch_lead` must be >= 0 (0: off). Got {self.prefetch_lead}.")
        check_counts(self, 0, "prefetch_lead")
        check_seed("seed", self.seed)
        if not 0.0 <= self.takeover_hold <= 60.0:
            raise ValueError(f"`takeover_hold` must be in [0, 60] s. Got {self.takeover_hold}.")
        if self.policy not in ("expert", "random") and not Path(self.policy).is_dir():
            raise ValueError(
                f"`policy` must be 'expert', 'random', a training run directory (`robot-rl train ... --out DIR`) or "
                "an exported policy folder (`robot-rl export ... --out DIR`). "
                f"Got {self.policy!r}, which is neither a keyword nor an existing directory."
            )
        if self.blend != "none":
            from robot_rl.export.metadata import is_policy_dir

            if not is_policy_dir(self.policy):
                raise ValueError(
                    f"`blend` applies to exported policies (`robot-rl export ... --out DIR`); {self.policy!r} is not "
                    "one. Use --blend none."
                )
        if self.prefetch_lead:
            from robot_rl.export.metadata import is_policy_dir

            if not is_policy_dir(self.policy):
                raise ValueError(
                    f"`prefetch_lead` applies to exported policies (`robot-rl export ... --out DIR`); {self.policy!r} "
                    "is not one. Use --prefetch-lead 0."
                )
        if self.blend == "ensemble" and self.n_action_steps is not None:
            raise ValueError(
                "`n_action_steps` does not apply with --blend ensemble (it takes up a new chunk every "
                "`ControllerConfig.replan_every` steps and blends them all)."
            )
        if self.suite is None and (self.families or self.card):
            raise ValueError("`families` and `card` apply to a robustness suite; add --suite robustness.")
        if self.suite is not None and (self.takeover != "none" or self.record is not None or self.video is not None):
            raise ValueError("--suite runs many conditions unattended: drop --takeover, --record and --video.")
        if self.card:
            from robot_rl.export.metadata import is_policy_dir

            if not is_policy_dir(self.policy):
                raise ValueError(
                    f"`card` writes an exported policy's card (`robot-rl export ... --out DIR`); {self.policy!r} "
                    "is not one."
                )
        if self.plot is not None and self.policy in ("expert", "random") and self.suite is None:
            raise ValueError("`plot` draws a training run's curves; --policy must be a run directory.")
        for name in ("safety", "monitor"):
            if getattr(self, name) not in ("on", "off"):
                raise ValueError(f"`{name}` must be 'on' or 'off'. Got {getattr(self, name)!r}.")
        from robot_rl.monitor.conformal import DETECTORS

        if self.monitor_detector not in DETECTORS:
            raise ValueError(f"`monitor_detector` must be one of {list(DETECTORS)}. Got {self.monitor_detector!r}.")
        if self.monitor == "on":
            from robot_rl.export.metadata import is_policy_dir

            if not is_policy_dir(self.policy):
                raise ValueError(
                    f"`monitor` watches an exported policy (`robot-rl export ... --out DIR`, then `robot-rl monitor "
                    f"calibrate`); {self.policy!r} is not one. Use --monitor off."
                )


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Rounded so that p = 0 or 1 gives exact interval ends (not 0.9999999999999999).
    return (round(max(0.0, centre - half), 12), round(min(1.0, centre + half), 12))


TRAINED_EVAL_SEED = 1_000_000
"""Default first seed when evaluating a trained policy: above every seed ``robot-rl collect`` hands out."""


@dataclasses.dataclass
class _Resolved:
    env_id: str
    seed: int
    run: dict[str, Any] | None
    """The trained policy's config.json (None for expert, random and exported policies)."""
    exported: PolicyMetadata | None = None
    """The exported policy's card (metadata.json), None otherwise."""


def policy_env_id(config: EvalConfig) -> str:
    """The env an evaluation runs: ``--env``, else the trained policy's env, else PandaPush (checked)."""
    return _resolve(config, check_seeds=False).env_id


def _resolve(config: EvalConfig, check_seeds: bool = True) -> _Resolved:
    """The env, first seed and run config an evaluation uses (checks demo-seed overlap)."""
    run, exported = None, None
    trained_env, demo_seeds = None, None
    if config.policy not in ("expert", "random"):
        from robot_rl.export.metadata import is_policy_dir, read_metadata

        if is_policy_dir(config.policy):
            exported = read_metadata(config.policy)
            trained_env, demo_seeds = exported.env_id, set(exported.training_data.seeds)
            if config.plot is not None:
                raise ValueError(
                    f"`plot` draws a training run's curves; {config.policy} is an exported policy (its run: "
                    f"{exported.base.run_dir})."
                )
        else:
            from robot_rl.policies.checkpoint import read_config

            run = read_config(config.policy)
            trained_env, demo_seeds = run["env_id"], set(run["data"]["seeds"])
    env_id = check_env_id(config.env or trained_env or "robot_rl/PandaPush-v0")
    if trained_env is not None and env_id != trained_env:
        raise ValueError(f"{config.policy} was trained on {trained_env}; --env is {env_id}. Evaluate it on its env.")
    seed = config.seed if config.seed is not None else (TRAINED_EVAL_SEED if trained_env else 0)
    if demo_seeds is not None and check_seeds:
        overlap = sorted(demo_seeds & set(range(seed, seed + config.episodes)))
        if overlap:
            raise ValueError(
                f"evaluation seeds {seed}..{seed + config.episodes - 1} overlap the seeds of the demos "
                f"{config.policy} was trained on (e.g. {overlap[:3]}); choose --seed outside "
                f"{min(demo_seeds)}..{max(demo_seeds)} (the default, {TRAINED_EVAL_SEED}, is)."
            )
    return _Resolved(env_id, seed, run, exported)


def _residual_actor(run_dir: str, env: Any) -> tuple[Policy, Callable[[int], None]]:
    from robot_rl.policies.base import check_layout
    from robot_rl.rl.train import load_residual
    from robot_rl.rl.wrappers import NoiseActor, ResidualActor

    agent, base, run = load_residual(run_dir)
    check_layout(base.layout, env.observation_space, base.action_dim, env.action_space)
    if run["algo"] == "dsrl":
        actor: Any = NoiseActor(agent, base)
    else:
        options = run["options"]
        actor = ResidualActor(agent, base, options["scale"], env.action_space, options.get("feedback", False))
    return actor, actor.reset


def mean_final_distance(episodes: list[dict[str, Any]]) -> float | None:
    """Mean over episodes of the env's ``info["distance"]`` at the last step [m].

    Quadrotor tasks report the vehicle's distance to its goal or reference; None when the env does not.
    """
    if not episodes or any("distance" not in e for e in episodes):
        return None
    return float(np.mean([e["distance"] for e in episodes]))


def _base_alone(run_dir: str, env: Any, seeds: list[int]) -> dict[str, Any]:
    """The residual run's base, without its residual, on the same seeds."""
    from robot_rl.envs.rollout import run_episodes
    from robot_rl.policies import ChunkedActor
    from robot_rl.policies.checkpoint import read_config
    from robot_rl.rl.train import load_base

    run = read_config(run_dir)
    base, _ = load_base(run["base"]["path"])
    actor = ChunkedActor(base)
    episodes = run_episodes(env, actor, lambda seed: actor.reset(seed), seeds)
    successes = sum(e["success"] for e in episodes)
    return {
        "policy": run["base"]["path"],
        "success_rate": successes / len(episodes),
        "success_ci95": list(wilson_interval(successes, len(episodes))),
        "mean_return": float(np.mean([e["return"] for e in episodes])),
        "mean_final_distance": mean_final_distance(episodes),
        "per_episode": [{k: e[k] for k in ("seed", "success", "return", "distance") if k in e} for e in episodes],
    }


def _make_policy(config: EvalConfig, env_id: str, env: Any, guard: Guard) -> tuple[Policy, Callable[[int], None]]:
    name = config.policy
    if name == "random":
        space = env.action_space
        rng = np.random.default_rng(0)

        def random_policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            return rng.uniform(space.low, space.high)

        return random_policy, lambda seed: None
    if name != "expert":
        from robot_rl.export.metadata import is_policy_dir

        if is_policy_dir(name):
            return _exported_actor(config, env_id, env, guard)  # onnxruntime: no torch
        import torch

        from robot_rl.policies import ChunkedActor, load_policy
        from robot_rl.policies.base import check_layout

        torch.set_num_threads(config.threads)
        from robot_rl.policies.checkpoint import read_config

        if read_config(name).get("policy_type") == "residual":
            return _residual_actor(name, env)
        policy = load_policy(name)
        check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
        if config.inference_steps is not None:
            if not hasattr(policy, "inference_steps"):
                raise ValueError(f"--inference-steps applies to diffusion policies; {name} is a {policy.kind} policy.")
            policy.inference_steps = config.inference_steps
        actor = ChunkedActor(policy, n_action_steps=config.n_action_steps)
        return actor, lambda seed: actor.reset(seed)
    if "/Quadrotor" in env_id:
        from robot_rl.envs.quadrotor.expert import QuadrotorExpert

        unwrapped = env.unwrapped
        quad_expert = QuadrotorExpert(unwrapped.params, unwrapped.ctrl_dt)
        return quad_expert, lambda seed: quad_expert.reset()
    from robot_rl.envs.franka.experts import make_expert

    expert = make_expert(env_id)
    return expert, lambda seed: expert.reset()


def _exported_actor(config: EvalConfig, env_id: str, env: Any, guard: Guard) -> tuple[Policy, Callable[[int], None]]:
    """An exported policy folder on onnxruntime, run by the runtime Controller (the hardware code path).

    The controller's clock is the simulated time ``k * ctrl_dt`` at step ``k`` of the episode. With the
    safety chain on, the controller sees the observation merged with the measured robot state (as the
    ROS 2 node gives it) and the chain is its filter; with the monitor on, the monitor is its monitor.
    """
    from robot_rl.deploy import build_stack
    from robot_rl.policies.layout import check_layout
    from robot_rl.runtime import ControllerConfig, OnnxPolicy

    policy = OnnxPolicy(config.policy)
    check_layout(policy.layout, env.observation_space, policy.action_dim, env.action_space)
    if config.inference_steps is not None and config.inference_steps != policy.inference_steps:
        if policy.inference_steps is None:
            raise ValueError(
                f"--inference-steps applies to diffusion policies; {config.policy} is a {policy.kind} policy."
            )
        raise ValueError(
            f"{config.policy} has {policy.inference_steps} denoising steps built into its graph; re-export the run "
            f"with `robot-rl export --run {policy.metadata.base.run_dir} --inference-steps {config.inference_steps} "
            "--out NEW_DIR` to evaluate another number."
        )
    ctrl_dt = float(env.unwrapped.ctrl_dt)
    monitor = None
    if config.monitor == "on":
        monitor, guard.monitor_state = load_monitor(config.policy, policy, config.monitor_detector)
        guard.monitor = monitor
    chain = guard.chain
    # The stack the ROS 2 node runs (robot_rl.deploy): the chain as filter, its chunk validator and the failure
    # monitor as monitors, the chain's fallback.
    stack = build_stack(
        policy,
        env_id,
        safety=chain if chain is not None else False,
        monitor=monitor,
        controller_config=ControllerConfig(
            blend=config.blend,
            n_action_steps=config.n_action_steps,
            ctrl_dt=ctrl_dt,
            prefetch=config.prefetch_lead > 0,
            lead=max(config.prefetch_lead, 1),
            prefetch_sync=True,
        ),
    )
    controller = stack.controller
    clock = {"step": 0}

    def act(obs: dict[str, np.ndarray]) -> np.ndarray:
        output = controller.step(guard.observation(obs) if chain is not None else obs, clock["step"] * ctrl_dt)
        clock["step"] += 1
        status = output.status
        if chain is not None:
            guard.count_report(status.filter_reports[-1] if status.filter_reports else None)
        if stack.monitor_alarm(status):  # the failure monitor's alarm (a refused chunk is counted by the chain)
            guard.alarm()
        return output.action

    def reset(seed: int) -> None:
        clock["step"] = 0
        controller.reset(seed)
        if stack.monitor is not None:
            stack.monitor.reset()

    guard.in_controller = True

    return act, reset


def _exported_report(meta: PolicyMetadata, config: EvalConfig) -> dict[str, Any]:
    """``policy_run`` of the report for an exported policy: the run's keys plus where the graph came from."""
    options = dict(meta.base.options)
    options["blend"] = config.blend
    options["prefetch_lead"] = config.prefetch_lead
    if config.n_action_steps is not None:
        options["n_action_steps"] = config.n_action_steps
    return {
        "policy_type": meta.base.policy_type,
        "options": options,
        "train_steps": meta.base.train_steps,
        "deployed_step": meta.base.deployed_step,
        "data": {"path": meta.training_data.path, "sha256": meta.training_data.sha256},
        "demos": meta.training_data.demos,
        "exported": True,
        "run_dir": meta.base.run_dir,
        "weights_sha256": meta.base.weights_sha256,
        "onnx_sha256": meta.onnx_sha256,
        "residual": meta.residual,
    }


def evaluate(
    config: EvalConfig,
    device: Teleoperator | None = None,
    randomization: DomainRandomization | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Run ``config.episodes`` episodes and return the eval report (see ARCHITECTURE.md).

    Args:
        config: What to evaluate.
        device: A connected takeover device (default with ``config.takeover``: that device, made,
            connected and closed here). Needs ``config.takeover`` other than ``none``.
        randomization: Use this randomization instead of ``config.randomize`` (the robustness suite).
        label: What the report's ``randomize`` says with ``randomization`` (the family's name).

    Raises:
        DeviceNotFoundError: the takeover device is not connected (a RuntimeError).
    """
    resolved = _resolve(config)
    env_id = resolved.env_id
    if device is not None and config.takeover == "none":
        raise ValueError("a takeover `device` needs `takeover` set to keyboard, gamepad or spacemouse. Got 'none'.")
    want_video = config.video is not None
    if want_video:
        os.environ.setdefault("MUJOCO_GL", "osmesa")
    randomize = config.randomize if randomization is None else randomization
    env = make(env_id, randomize=randomize, render_mode="rgb_array" if want_video else None)
    try:
        guard = Guard(env_id, env, safety=config.safety == "on")
        policy, reset_policy = _make_policy(config, env_id, env, guard)
    except BaseException:
        env.close()
        raise
    frames: list[np.ndarray] = []
    per_episode = []
    sent = getattr(policy, "sent", None)
    try:
        hil = _HumanInTheLoop(config, env, env_id, device, resolved.seed)
    except BaseException:
        env.close()
        raise
    start = time.perf_counter()
    iterator = range(config.episodes)
    if config.progress and hil.takeover is None:
        from tqdm import tqdm

        policy_label = config.policy
        if resolved.run is not None:
            policy_label = f"{resolved.run['policy_type']} {Path(config.policy).name}"
        elif resolved.exported is not None:
            policy_label = f"onnx {resolved.exported.policy_type} {Path(config.policy).name}"
        where = f" under {label}" if randomization is not None and label else ""
        iterator = tqdm(iterator, desc=f"eval {env_id.split('/')[-1]} ({policy_label}){where}", unit="ep")
    try:
        for k in iterator:
            seed = resolved.seed + k
            obs, reset_info = env.reset(seed=seed)
            guard.start_episode()
            reset_policy(seed)
            hil.start_episode(seed, reset_info)
            filming = want_video and k < config.video_episodes
            if filming:
                frames.append(env.render())
            total, length, human, info = 0.0, 0, 0, {"is_success": 0.0}
            done = False
            while not done:
                proposed = policy(obs)
                if not guard.in_controller:
                    proposed = guard.filter(proposed)
                action, intervened = hil.act(obs, proposed)
                if sent is not None:
                    sent(action)  # a policy with observation features learns what was actually sent
                if hil.quit:
                    break
                state = hil.state()
                next_obs, reward, terminated, truncated, info = env.step(action)
                guard.after_step()
                total += float(reward)
                length += 1
                human += intervened
                done = terminated or truncated
                hil.record(obs, action, float(reward), done, next_obs, state, intervened)
                hil.show(k, length, intervened, info)
                obs = next_obs
                if filming:
                    frames.append(env.render())
            if hil.quit:
                break  # the episode in progress is neither reported nor recorded
            hil.end_episode(bool(info["is_success"]))
            episode = {
                "seed": seed,
                "success": bool(info["is_success"]),
                "return": total,
                "length": length,
                "first_alarm_step": guard.first_alarm_step,
                "intervention_steps": human,
                "safety_interventions": guard.episode_interventions if guard.chain is not None else None,
                "safety_violations": guard.episode_violations,
            }
            for key in EPISODE_EXTRAS:
                if key in info:
                    episode[key] = info[key]
            per_episode.append(episode)
    finally:
        hil.close()
    elapsed = time.perf_counter() - start
    env.close()
    successes = sum(e["success"] for e in per_episode)
    n = len(per_episode)  # fewer than asked when the operator quit
    report = {
        "env": env_id,
        "policy": config.policy,
        "episodes": n,
        "seed": resolved.seed,
        "randomize": config.randomize if randomization is None else (label or "custom"),
        "success_rate": successes / n if n else None,
        "success_ci95": list(wilson_interval(successes, n)),
        "mean_return": float(np.mean([e["return"] for e in per_episode])) if n else None,
        "mean_episode_length": float(np.mean([e["length"] for e in per_episode])) if n else None,
        "mean_final_distance": mean_final_distance(per_episode),
        "safety": config.safety,
        "safety_interventions": guard.interventions if guard.chain is not None else None,
        "safety_fallbacks": guard.fallbacks if guard.chain is not None else None,
        "safety_violations": guard.violation_steps,
        "safety_violations_by_constraint": dict(guard.by_constraint),
        "monitor": guard.monitor_state,
        "monitor_alarms": (
            sum(e["first_alarm_step"] is not None for e in per_episode) if guard.monitor is not None else None
        ),
        "wall_time_s": elapsed,
        "takeover": config.takeover,
        "intervention_steps": sum(e["intervention_steps"] for e in per_episode),
        "quit": hil.quit,
        "per_episode": per_episode,
    }
    if config.record is not None:
        report["record"] = str(config.record)
    if resolved.exported is not None:
        report["policy_run"] = _exported_report(resolved.exported, config)
    if resolved.run is not None:
        from robot_rl.policies.checkpoint import deployed_step

        run = resolved.run
        policy_options = dict(run.get("policy", {}))
        if config.inference_steps is not None:
            policy_options["inference_steps"] = config.inference_steps
        if config.n_action_steps is not None:
            policy_options["n_action_steps"] = config.n_action_steps
        if run["policy_type"] == "residual":
            seeds = [e["seed"] for e in per_episode]
            base_env = make(env_id, randomize=randomize)
            try:
                report["base_alone"] = _base_alone(config.policy, base_env, seeds)
            finally:
                base_env.close()
            report["policy_run"] = {
                "policy_type": "residual",
                "algo": run["algo"],
                "options": run["options"],
                "base": run["base"],
            }
        else:
            report["policy_run"] = {
                "policy_type": run["policy_type"],
                "options": policy_options,
                "train_steps": run["train"]["steps"],
                "deployed_step": deployed_step(config.policy),
                "data": {k: run["data"][k] for k in ("path", "sha256")},
                "demos": len(run["data"]["train_demos"]) + len(run["data"]["valid_demos"]),
            }
        if config.plot is not None:
            from robot_rl.policies.plots import plot_training

            report["plot"] = str(plot_training(config.policy, config.plot, title=f"{env_id} {run['policy_type']}"))
    if want_video and frames:
        import imageio.v2 as imageio

        config.video.parent.mkdir(parents=True, exist_ok=True)
        fps = round(1.0 / env.unwrapped.ctrl_dt)
        imageio.mimwrite(config.video, frames, fps=fps, macro_block_size=8)
        report["video"] = str(config.video)
    if config.json is not None:
        import json

        config.json.parent.mkdir(parents=True, exist_ok=True)
        config.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


class _HumanInTheLoop:
    """The optional parts of an eval rollout: a takeover device with its live view, and a recorder."""

    def __init__(self, config: EvalConfig, env: Any, env_id: str, device: Teleoperator | None, seed: int) -> None:
        self.takeover: Any = None
        self.view: Any = None
        self.recorder: Any = None
        self._owned: Teleoperator | None = None
        try:
            if config.takeover != "none":
                from robot_rl.teleop.intervention import HumanTakeover
                from robot_rl.teleop.view import LiveView

                if device is None:
                    from robot_rl.teleop import make_teleoperator

                    device = make_teleoperator(config.takeover)
                    device.connect()
                    self._owned = device
                self.takeover = HumanTakeover(device, env, hold_s=config.takeover_hold, realtime=config.realtime)
                self.view = LiveView(f"{config.policy}+{device.name}", env, viewer=config.view)
            if config.record is not None:
                from robot_rl.data.collect import file_env_kwargs
                from robot_rl.data.recorder import DemoRecorder, StateReader

                source = f"policy:{config.policy}" + (f"+{device.name}" if device is not None else "")
                unwrapped = env.unwrapped
                self.recorder = DemoRecorder(
                    config.record,
                    env_id,
                    file_env_kwargs(env, {"randomize": config.randomize}),
                    unwrapped.ctrl_dt,
                    source,
                    seed=seed,
                    randomization=unwrapped.randomization,
                    action_bounds=(env.action_space.low, env.action_space.high),
                )
                self._read_state = StateReader(env)
        except BaseException:
            self.close()
            raise

    @property
    def quit(self) -> bool:
        """The operator asked to stop."""
        return self.takeover is not None and self.takeover.quit

    def start_episode(self, seed: int, reset_info: dict[str, Any]) -> None:
        if self.takeover is not None:
            self.takeover.reset()
        if self.recorder is not None:
            self.recorder.start_episode(seed, reset_info.get("randomization"))

    def act(self, obs: dict[str, np.ndarray], action: np.ndarray) -> tuple[np.ndarray, bool]:
        """The action to apply (the policy's or the device's) and whether a human gave it."""
        return (action, False) if self.takeover is None else self.takeover(obs, action)

    def state(self) -> np.ndarray | None:
        """The MuJoCo state before the step (when recording)."""
        return self._read_state() if self.recorder is not None else None

    def record(self, obs: Any, action: Any, reward: float, done: bool, next_obs: Any, state: Any, human: bool) -> None:
        if self.recorder is not None:
            self.recorder.add_step(obs, action, reward, done, next_obs, state, human)

    def show(self, episode: int, step: int, human: bool, info: dict[str, Any]) -> None:
        if self.view is not None:
            saved = len(self.recorder.committed) if self.recorder is not None else None
            self.view.show(episode, step, "HUMAN" if human else "POLICY", info, saved)

    def end_episode(self, success: bool) -> None:
        if self.recorder is not None:
            self.recorder.commit(success=success)

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.discard()  # an episode cut short (quit, error) is not recorded
            self.recorder.close()
            self.recorder = None
        if self.view is not None:
            self.view.close()
            self.view = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None
