"""Typed configuration of residual RL (no torch import: the CLI parses it)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from robot_rl.policies.residual import check_scale

MAX_STEPS = 10_000_000
"""Largest --steps accepted."""


@dataclasses.dataclass(frozen=True)
class TrainResidual:
    """Improve a frozen base policy with RL from the env's sparse reward (sac, ppo or dsrl)."""

    out: Path
    """Run directory for the residual (created; with --resume, the run to continue)."""
    base: Path | None = None
    """The frozen base: a training run (`robot-rl train ...`) or an exported policy folder (required unless
    --resume)."""
    algo: Literal["sac", "ppo", "dsrl"] = "sac"
    """sac: off-policy per-step residual (ResFiT-like); ppo: on-policy residual over vectorized envs
    (ResiP-like); dsrl: SAC over the diffusion sampler's initial noise (DSRL-like)."""
    env: str | None = None
    """Environment id (default: the base's env)."""
    steps: int = 100_000
    """Env steps of interaction (control periods; for dsrl each RL step counts its executed actions)."""
    scale: tuple[float, ...] = (0.2,)
    """sac/ppo: the correction's reach, applied = base + scale * correction: one number in (0, 2] for every
    action dimension, or one per dimension in [0, 2] (0 leaves that dimension to the base), e.g.
    ``--scale 0.5 0 0 0`` corrects only a quadrotor's thrust."""
    feedback: bool = False
    """sac/ppo: the residual also observes the previous step's applied action (base + scale * correction, after
    the clip; the current base action at an episode's first step), so it knows what it added last step and can
    integrate an error, e.g. cancel the steady offset of an unobserved mass. The exported graph then takes a third
    residual input, ``previous_action``. Not for dsrl (its agent outputs noise, not actions)."""
    noise_bound: float = 1.5
    """dsrl: largest magnitude of each noise entry, in (0, 3]."""
    randomize: str = "nominal"
    """Domain randomization during training (nominal, train or a YAML file)."""
    learning_rate: float = 3e-4
    """Adam learning rate."""
    batch_size: int = 256
    """sac/dsrl: minibatch size; ppo: minibatch size."""
    gradient_steps: int = 1
    """sac/dsrl: gradient steps per `train_freq` env steps (the update-to-data ratio is their quotient)."""
    train_freq: int = 1
    """sac/dsrl: env steps between updates."""
    buffer_size: int = 300_000
    """sac/dsrl: replay buffer size."""
    learning_starts: int = 1_000
    """sac/dsrl: env steps before the first update."""
    gamma: float = 0.98
    """Discount."""
    n_step: int = 1
    """sac/dsrl: n-step returns in the critic's target (stable-baselines3's NStepReplayBuffer when > 1). A return
    stops at an episode's end, a demo's included."""
    ent_coef: str = "auto_0.01"
    """sac/dsrl: entropy coefficient: ``auto`` (learned, starting at 1), ``auto_X`` (learned, starting at X) or a
    fixed number. A small start keeps early exploration noise from pushing the base off its successes."""
    actor_warmup: int = 10_000
    """sac/dsrl: env steps after ``learning_starts`` during which only the critic learns (the actor stays at its
    near-zero start), so the first actor updates follow a critic that has seen the base's returns (ResiP)."""
    actor_lr_scale: float = 1.0
    """sac/dsrl: the actor's learning rate as a multiple of ``learning_rate`` (the critic's), in (0, 1]."""
    critic_layer_norm: bool = False
    """sac/dsrl: LayerNorm after each hidden layer of the critics (ResFiT's critic); the actor is unchanged."""
    net: tuple[int, ...] = (256, 256)
    """Actor and critic hidden layers."""
    n_envs: int = 8
    """ppo: parallel envs (one process)."""
    n_steps: int = 256
    """ppo: rollout length per env per update."""
    demos: Path | None = None
    """sac: seed the replay buffer with these demonstrations (their actions as corrections of the base)."""
    eval_every: int = 10_000
    """Evaluate (and checkpoint) every N env steps."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    eval_seed: int = 900_000
    """First seed of the evaluations during training (the final report uses 1000000 on)."""
    keep_best: bool = False
    """Deploy (``agent.safetensors``) the agent of the best evaluation during training instead of the final one.
    Off by default: with 30-episode evaluations the pick was the noise's, measured on 200 fresh seeds
    (3000000...): PandaPush best 0.79 / final 0.87, PandaPickAndPlace best 0.92 / final 0.96 (100k SAC
    steps each). ``best.safetensors`` keeps the best either way."""
    seed: int = 0
    """RL seed."""
    threads: int = 2
    """torch CPU threads."""
    progress: bool = True
    """Show a progress bar."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint (written at every evaluation): networks, optimizer
    moments, entropy coefficient and env steps are restored, the replay buffer starts again (refilled with
    --demos and fresh experience before updates resume). The run's own options apply; only --threads and
    --progress are taken from this command."""

    def __post_init__(self) -> None:
        if self.base is None and not self.resume:
            raise ValueError(
                "`base` is required: the frozen base, a training run or an exported policy folder (or pass "
                "--resume to continue the run in --out)."
            )
        from robot_rl.limits import check_seed

        check_seed("seed", self.seed)
        check_seed("eval_seed", self.eval_seed)
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"`steps` must be in [1, {MAX_STEPS}]. Got {self.steps}.")
        if isinstance(self.scale, int | float):
            object.__setattr__(self, "scale", (float(self.scale),))
        values = tuple(float(v) for v in self.scale)
        check_scale(values)
        object.__setattr__(self, "scale", values)
        if not 0.0 < self.actor_lr_scale <= 1.0:
            raise ValueError(f"`actor_lr_scale` must be in (0, 1]. Got {self.actor_lr_scale}.")
        if self.actor_warmup < 0:
            raise ValueError(f"`actor_warmup` must be >= 0. Got {self.actor_warmup}.")
        if self.ent_coef != "auto" and not self.ent_coef.startswith("auto_"):
            try:
                float(self.ent_coef)
            except ValueError:
                raise ValueError(
                    f"`ent_coef` must be 'auto', 'auto_X' or a number (e.g. 0.01). Got {self.ent_coef!r}."
                ) from None
        if self.feedback and self.algo == "dsrl":
            raise ValueError(
                "`feedback` (the previous applied action in the residual's observation) is for the per-step residuals "
                "sac and ppo; dsrl's agent picks the sampler's noise per chunk. Got algo='dsrl' with feedback=True."
            )
        if not 0.0 < self.noise_bound <= 3.0:
            raise ValueError(f"`noise_bound` must be in (0, 3]. Got {self.noise_bound}.")
        names = ("batch_size", "gradient_steps", "train_freq", "buffer_size", "n_envs", "n_steps", "n_step", "threads")
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1. Got {getattr(self, name)}.")
        if self.eval_every < 1 or self.eval_episodes < 0:
            raise ValueError("`eval_every` must be >= 1 and `eval_episodes` >= 0.")
