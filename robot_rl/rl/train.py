"""``robot-rl train residual``: RL on top of a frozen base with stable-baselines3.

The formulation is ours (:mod:`robot_rl.rl.wrappers`); the algorithms are stable-baselines3's SAC
(``sac``, and ``dsrl`` over the noise action space) and PPO (``ppo``, over vectorized envs). The
agent's output layer starts near zero, so the first evaluation is the base's own performance.

A residual run directory::

    RUN_DIR/
      config.json              resolved options, the base (path, type, its env and demo seeds), the env
      agent.json               the agent's networks (algorithm, spaces, hidden layers)
      agent.safetensors        the agent deployed (eval, export): the latest evaluated, or with ``keep_best``
                               the best evaluation so far
      best.safetensors         the agent of the best evaluation so far
      checkpoint.safetensors   the whole training state at the last evaluation (``--resume``)
      metrics.jsonl            one line per evaluation: env steps, success rate, mean return, episodes, wall time
                               (the first also the base alone on the same seeds: base_success_rate, base_mean_return)
      losses.jsonl             stable-baselines3's training scalars per log dump (robot_rl.rl.train_log)
      tb/                      TensorBoard (stable-baselines3's scalars and ours)

No file of a run is a pickle (:mod:`robot_rl.rl.agent_io`): stable-baselines3 trains the agent, but its
zip format, which unpickles on load, is neither written nor read.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_rl.deploy import open_policy
from robot_rl.rl import agent_io
from robot_rl.rl.config import TrainResidual
from robot_rl.rl.train_log import LOSSES_FILE, LossLog


def open_base(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """A frozen base (Policy protocol) and how the run records it (``base``: path, source, type, env, seeds).

    Opened by :func:`robot_rl.deploy.open_policy`: an exported base folder or a bc|diffusion run.

    Raises:
        ValueError: neither, a residual (residuals do not stack), or files their readers refuse (one line).
    """
    opened = open_policy(path, ("exported", "run"), base_only=True, what="--base")
    return opened.load_policy(), opened.base_info()


def make_env(config: TrainResidual, base: Any, env_id: str, seed_offset: int = 0) -> Any:
    """The wrapped env of ``config.algo`` (a Monitor around it for episode statistics)."""
    from stable_baselines3.common.monitor import Monitor

    from robot_rl.envs.registry import make
    from robot_rl.rl.wrappers import NoiseEnv, ResidualEnv

    env = make(env_id, randomize=config.randomize)
    if config.algo == "dsrl":
        wrapped: Any = NoiseEnv(env, base, config.noise_bound)
    else:
        wrapped = ResidualEnv(env, base, config.scale, base_seed=config.seed + seed_offset, feedback=config.feedback)
    return Monitor(wrapped, info_keywords=("is_success",))


def _near_zero_output(model: Any, algo: str) -> None:
    """Shrink the agent's output layer so its first actions are close to zero (start at the base)."""
    import torch

    with torch.no_grad():
        if algo == "ppo":
            model.policy.action_net.weight.mul_(0.01)
            model.policy.action_net.bias.zero_()
        else:
            model.actor.mu.weight.mul_(0.01)
            model.actor.mu.bias.zero_()


def evaluate_agent(model: Any | None, env: Any, seeds: list[int]) -> dict[str, Any]:
    """Deterministic rollouts of ``model`` (None: zero correction, i.e. the base alone)."""
    successes, returns, lengths = [], [], []
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for seed in seeds:
        obs, _ = env.reset(seed=int(seed))
        done, total, length, info = False, 0.0, 0, {}
        while not done:
            action = zero if model is None else model.predict(obs, deterministic=True)[0]
            obs, reward, terminated, truncated, info = env.step(action)
            total += float(reward)
            length += 1
            done = terminated or truncated
        successes.append(bool(info.get("is_success", 0.0)))
        returns.append(total)
        lengths.append(length)
    return {
        "success_rate": float(np.mean(successes)),
        "mean_return": float(np.mean(returns)),
        "episodes": len(seeds),
        "per_episode": [
            {"seed": int(s), "success": ok, "return": r} for s, ok, r in zip(seeds, successes, returns, strict=True)
        ],
    }


@dataclasses.dataclass
class _Progress:
    """Where a run stands: restored from metrics.jsonl on --resume."""

    next_eval: int
    best: float | None = None
    last_eval: int = -1
    wall_time_s: float = 0.0

    @classmethod
    def of(cls, config: TrainResidual, out: Path, resumed_steps: int) -> _Progress:
        if not resumed_steps:
            return cls(next_eval=config.eval_every)
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        rates = [m["success_rate"] for m in lines if "success_rate" in m]
        last = lines[-1] if lines else {"env_steps": resumed_steps, "wall_time_s": 0.0}
        return cls(
            next_eval=int(last["env_steps"]) + config.eval_every,
            best=max(rates) if rates else None,
            last_eval=int(last["env_steps"]),
            wall_time_s=float(last.get("wall_time_s", 0.0)),
        )


def _callback(config: TrainResidual, eval_env: Any, out: Path, env_steps_per_rl_step: int, progress: _Progress) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class EvalAndSave(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = progress.next_eval
            self.best = progress.best
            self.last_eval = progress.last_eval
            self.started = time.perf_counter() - progress.wall_time_s
            self.bar: Any = None

        def _on_training_start(self) -> None:
            # stable-baselines3's training scalars (losses, entropy coefficient) into the run folder too
            self.model.logger.output_formats.append(LossLog(out / LOSSES_FILE, env_steps_per_rl_step))
            steps = self._env_steps()
            self.warming = config.algo != "ppo" and config.actor_warmup > 0 and steps < self._warmup_end()
            if self.warming:
                self.model.actor.requires_grad_(False)  # Adam skips parameters without gradients
            if config.progress:
                from tqdm import tqdm

                self.bar = tqdm(total=config.steps, initial=steps, desc=f"train residual ({config.algo})", unit="step")
            if steps == 0:
                self._evaluate(0)

        def _warmup_end(self) -> int:
            return config.learning_starts + config.actor_warmup

        def _env_steps(self) -> int:
            return self.num_timesteps * env_steps_per_rl_step

        def _on_step(self) -> bool:
            steps = self._env_steps()
            if self.warming and steps >= self._warmup_end():
                self.model.actor.requires_grad_(True)
                self.warming = False
            if self.bar is not None and steps > self.bar.n:
                self.bar.update(min(steps, config.steps) - self.bar.n)  # redraws at tqdm's own pace
            if steps >= self.next_eval:
                self.next_eval += config.eval_every
                self._evaluate(steps)
            return True

        def _on_training_end(self) -> None:
            if self._env_steps() != self.last_eval:
                self._evaluate(self._env_steps())
            if self.bar is not None:
                self.bar.close()

        def _evaluate(self, steps: int) -> None:
            import torch

            if not all(bool(torch.isfinite(p).all()) for p in self.model.policy.parameters()):
                raise RuntimeError(
                    f"the agent's weights became non-finite (nan or inf) by env step {steps}; the last finite agent "
                    f"stays in {out} (step {max(self.last_eval, 0)}). Lower --learning-rate or check the env's rewards."
                )
            self.last_eval = steps
            metrics: dict[str, Any] = {"env_steps": steps, "wall_time_s": round(time.perf_counter() - self.started, 2)}
            if config.eval_episodes:
                seeds = list(range(config.eval_seed, config.eval_seed + config.eval_episodes))
                result = evaluate_agent(self.model, eval_env, seeds)
                metrics.update(
                    success_rate=result["success_rate"], mean_return=result["mean_return"], eval_episodes=len(seeds)
                )
                if steps == 0:  # the reference: the base alone (zero correction; DSRL: zero noise) on the same seeds
                    alone = evaluate_agent(None, eval_env, seeds)
                    metrics.update(base_success_rate=alone["success_rate"], base_mean_return=alone["mean_return"])
                self.logger.record("eval/success_rate", result["success_rate"])
                self.logger.record("eval/mean_return", result["mean_return"])
                self.logger.dump(self.num_timesteps)
                if self.bar is not None:
                    self.bar.set_postfix(success=f"{result['success_rate']:.2f}")
            best = self.best is None or metrics.get("success_rate", 0.0) >= self.best
            if best:
                self.best = metrics.get("success_rate", 0.0)
                agent_io.save_weights(self.model, out / agent_io.BEST, num_timesteps=self.num_timesteps)
            deploy = best or not config.keep_best
            if deploy:
                agent_io.save_weights(self.model, out / agent_io.DEPLOYED, num_timesteps=self.num_timesteps)
            metrics["best"] = best
            metrics["deployed"] = deploy
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            # the checkpoint last: a run killed before it resumes from the previous one and repeats this evaluation
            agent_io.save_weights(
                self.model,
                out / agent_io.CHECKPOINT,
                training_state=True,
                num_timesteps=self.num_timesteps,
                total_timesteps=max(1, config.steps // env_steps_per_rl_step),
            )

    return EvalAndSave()


def _resumed_config(config: TrainResidual) -> TrainResidual:
    """The options the run in ``config.out`` was started with (threads and progress from ``config``)."""
    path = config.out / "config.json"
    if not path.is_file():
        raise ValueError(f"--resume: {config.out} holds no residual run (no config.json); start one without --resume.")
    saved = json.loads(path.read_text())
    if saved.get("policy_type") != "residual":
        raise ValueError(f"--resume: {config.out} is a {saved.get('policy_type')} run, not a residual run.")
    options = dict(saved["options"])
    if config.base is not None and Path(config.base) != Path(options["base"]):
        raise ValueError(
            f"--resume: {config.out} was started on the base {options['base']}; --base is {config.base} (leave it out "
            "to resume, or choose a new --out for another base)."
        )
    fields = {f.name for f in dataclasses.fields(TrainResidual)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ValueError(f"--resume: {path} has options this version does not know: {unknown}.")
    for name in ("base", "out", "demos"):
        if options.get(name) is not None:
            options[name] = Path(options[name])
    for name in ("scale", "net"):
        options[name] = tuple(options[name])
    options.update(threads=config.threads, progress=config.progress, resume=True)
    return TrainResidual(**options)


def _build_model(config: TrainResidual, base: Any, env_id: str, out: Path) -> Any:
    """The stable-baselines3 agent of ``config`` on its training env(s), output layer near zero."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    policy_kwargs: dict[str, Any] = {"net_arch": list(config.net)}
    if config.algo == "ppo":
        vec = DummyVecEnv([lambda i=i: make_env(config, base, env_id, 1000 * i) for i in range(config.n_envs)])
        vec.seed(config.seed)
        policy_kwargs["log_std_init"] = PPO_LOG_STD_INIT
        model: Any = PPO(
            "MlpPolicy",
            vec,
            learning_rate=config.learning_rate,
            n_steps=config.n_steps,
            batch_size=config.batch_size,
            gamma=config.gamma,
            policy_kwargs=policy_kwargs,
            tensorboard_log=str(out / "tb"),
            seed=config.seed,
            device="cpu",
        )
    else:
        from robot_rl.rl.sac_policy import ResidualSAC, ResidualSACPolicy

        policy_kwargs["critic_layer_norm"] = config.critic_layer_norm
        model = ResidualSAC(
            ResidualSACPolicy,
            make_env(config, base, env_id),
            actor_lr_scale=config.actor_lr_scale,
            learning_rate=config.learning_rate,
            buffer_size=config.buffer_size,
            learning_starts=config.learning_starts,
            batch_size=config.batch_size,
            train_freq=config.train_freq,
            gradient_steps=config.gradient_steps,
            gamma=config.gamma,
            n_steps=config.n_step,
            ent_coef=config.ent_coef if config.ent_coef.startswith("auto") else float(config.ent_coef),
            policy_kwargs=policy_kwargs,
            tensorboard_log=str(out / "tb"),
            seed=config.seed,
            device="cpu",
        )
    _near_zero_output(model, config.algo)
    return model


PPO_LOG_STD_INIT = -1.0
"""PPO's initial log standard deviation of the residual (exploration about a tenth of the scale's reach)."""


def train_residual(config: TrainResidual) -> dict[str, Any]:
    """Train a residual (or noise-space) agent on a frozen base; returns the last evaluation.

    Everything that can refuse the configuration (the base, the env and its randomization, the demos) runs
    before the run folder is written, so a refused command leaves nothing behind.
    """
    import torch

    torch.set_num_threads(config.threads)
    if config.resume:
        config = _resumed_config(config)
    elif (config.out / "config.json").exists():
        raise ValueError(f"{config.out} already holds a run; pass --resume to continue it or choose a new --out.")
    assert config.base is not None  # checked by TrainResidual
    base, info = open_base(config.base)
    env_id = config.env or info["env_id"]
    if env_id.replace("Dense", "") != info["env_id"].replace("Dense", ""):
        raise ValueError(
            f"the base was trained on {info['env_id']}; --env is {env_id} (its sparse or dense variant is allowed)."
        )
    if config.algo == "dsrl" and info["policy_type"] != "diffusion":
        raise ValueError(f"dsrl steers a diffusion policy's noise; the base {config.base} is a {info['policy_type']}.")
    if config.demos is not None and config.algo != "sac":
        raise ValueError("--demos seeds the replay buffer of the off-policy residual; use it with --algo sac.")
    overlap = set(range(config.eval_seed, config.eval_seed + config.eval_episodes)) & set(info["seeds"])
    if overlap:
        raise ValueError(f"evaluation seeds overlap the base's demo seeds (e.g. {sorted(overlap)[:3]}).")
    if config.algo != "dsrl":
        from robot_rl.policies.residual import resolve_scale

        resolve_scale(config.scale, base.action_dim)
    out = config.out
    model = _build_model(config, base, env_id, out)
    if config.demos is not None:
        from robot_rl.rl.demos import add_demos_to_buffer

        add_demos_to_buffer(model, config.demos, base, config.scale, feedback=config.feedback)
    eval_env = make_env(config, base, env_id, seed_offset=999)
    env_steps_per_rl_step = base.n_action_steps if config.algo == "dsrl" else 1

    resumed = 0
    if config.resume and (out / agent_io.CHECKPOINT).is_file():
        resumed = agent_io.restore_training_state(model, out / agent_io.CHECKPOINT)
        model.num_timesteps = resumed
        if config.algo != "ppo":  # refill the (empty) replay buffer before updating again
            model.learning_starts = resumed + config.learning_starts
    else:
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.jsonl", LOSSES_FILE, agent_io.DEPLOYED, agent_io.BEST):
            (out / stale).unlink(missing_ok=True)  # a resumed run that never reached its first checkpoint
        resolved = {
            "policy_type": "residual",
            "algo": config.algo,
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(config).items()
                if k not in ("resume", "progress", "threads")
            },
            "base": info,
            "env_id": env_id,
            "env_kwargs": {"randomize": config.randomize},
            "data": {"seeds": info["seeds"]},
        }
        (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
        log_std = PPO_LOG_STD_INIT if config.algo == "ppo" else None
        agent_io.write_description(
            out, agent_io.describe(model, config.algo, list(config.net), config.critic_layer_norm, log_std)
        )
    total = max(1, config.steps // env_steps_per_rl_step)
    if resumed < total:
        callback = _callback(config, eval_env, out, env_steps_per_rl_step, _Progress.of(config, out, resumed))
        model.learn(
            total_timesteps=total - resumed, callback=callback, tb_log_name="residual", reset_num_timesteps=not resumed
        )
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def rebuild_model(run_dir: str | os.PathLike[str]) -> tuple[Any, Any, TrainResidual]:
    """(stable-baselines3 agent, base, options) of a residual run as its last checkpoint left it, pickle-free.

    The agent is rebuilt from the run's options and loaded with the checkpoint's networks, optimizer moments
    and entropy coefficient (what ``--resume`` continues from); its replay buffer is empty.
    """
    config = _resumed_config(TrainResidual(out=Path(run_dir), resume=True, progress=False, threads=1))
    assert config.base is not None
    base, info = open_base(config.base)
    model = _build_model(config, base, config.env or info["env_id"], Path(run_dir))
    model.num_timesteps = agent_io.restore_training_state(model, Path(run_dir) / agent_io.CHECKPOINT)
    return model, base, config


def finished(run_dir: str | os.PathLike[str]) -> bool:
    """True when the residual run in ``run_dir`` reached its configured steps (its last checkpoint says so)."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(run_dir) / agent_io.CHECKPOINT), framework="pt") as f:
            metadata = f.metadata() or {}
        return int(metadata["num_timesteps"]) >= int(metadata["total_timesteps"])
    except (OSError, ValueError, KeyError):
        return False


def load_residual(run_dir: str | os.PathLike[str]) -> tuple[Any, Any, dict[str, Any]]:
    """(agent, base, config) of a residual run (:func:`robot_rl.deploy.open_policy`); nothing is unpickled.

    Evaluation runs a residual run through :meth:`robot_rl.deploy.OpenedPolicy.actor`, which builds the same.
    ``config["options"]["feedback"]`` is set (False for runs from before the option existed), so callers
    can build :class:`robot_rl.rl.wrappers.ResidualActor` from it.

    Raises:
        AgentFileError: the agent's files are missing, damaged or of the old pickled format (with how to
            convert them).
        ValueError: not a residual run, or its config or base refused (one line).
    """
    opened = open_policy(run_dir, ("residual",))
    assert opened.base is not None and opened.config is not None
    config = {**opened.config, "options": opened.residual_options()}
    return opened.load_agent(), opened.base.load_policy(), config
