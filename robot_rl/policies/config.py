"""Typed configuration of the base policies and their training (no torch import: the CLI parses it).

Every field is a command-line option of ``robot-rl train bc|diffusion`` (nested policy options as
``--policy.<name>``), documented by its docstring.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from robot_rl.limits import MAX_COUNT, check_counts, check_range, check_seed


@dataclasses.dataclass(frozen=True)
class ChunkConfig:
    """Observation history and action chunk sizes."""

    obs_keys: tuple[str, ...] = ("observation", "desired_goal")
    """Observation entries the policy reads, concatenated in this order; NAME or a slice NAME[i:j]."""
    relative_goal: bool = True
    """Also read ``desired_goal - achieved_goal`` (needs both keys in the observation)."""
    n_obs_steps: int = 2
    """Observations the policy conditions on (current and previous)."""
    horizon: int = 16
    """Actions predicted per chunk."""
    n_action_steps: int = 8
    """Actions executed per chunk before re-planning."""
    features: tuple[str, ...] = ()
    """Observation features with memory appended to each observation, computed from the observation stream
    and the commands sent, in training and by the runtime: ``quadrotor_disturbance`` (a disturbance
    observer: what the vehicle's acceleration says about an unknown mass, motor constant or wind)."""

    def __post_init__(self) -> None:
        if not self.obs_keys:
            raise ValueError("`obs_keys` must name at least one observation key.")
        from robot_rl.policies.features import feature_from_json

        for name in self.features:
            feature_from_json({"name": name}, "--policy.features")
        check_counts(self, 1, "n_obs_steps", "horizon")
        if not 1 <= self.n_action_steps <= self.horizon:
            raise ValueError(f"`n_action_steps` must be in [1, horizon={self.horizon}]. Got {self.n_action_steps}.")


@dataclasses.dataclass(frozen=True)
class BCConfig(ChunkConfig):
    """BC-MLP: an MLP from the observation history to an action chunk."""

    n_obs_steps: int = 2
    """Observations the policy conditions on (current and previous)."""
    horizon: int = 4
    """Actions predicted per chunk."""
    n_action_steps: int = 2
    """Actions executed per chunk before re-planning."""
    head: Literal["deterministic", "gaussian"] = "deterministic"
    """Deterministic (MSE) or Gaussian (negative log-likelihood, state-dependent std) output head."""
    hidden: tuple[int, ...] = (512, 512, 512)
    """Hidden layer widths."""
    dropout: float = 0.0
    """Dropout after each hidden layer (0 = off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for width in self.hidden:
            check_range("hidden", width, 1, MAX_COUNT)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1). Got {self.dropout}.")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(ChunkConfig):
    """Diffusion policy over action chunks (DDPM training, DDIM sampling).

    Defaults measured on 100 expert demos (bench/results/policy_push_diffusion.md): one observation,
    8-action chunks, 4 executed (0.16 s at 25 Hz) beat two observations and 16/8 chunks on PandaPush
    (0.82 vs 0.70) and PandaPickAndPlace (0.78 vs 0.62) over 200 held-out seeds.
    """

    n_obs_steps: int = 1
    """Observations the policy conditions on (1: the current one)."""
    horizon: int = 8
    """Actions predicted per chunk."""
    n_action_steps: int = 4
    """Actions executed per chunk before re-planning."""
    denoiser: Literal["unet", "mlp"] = "mlp"
    """Temporal 1-D U-Net (FiLM-conditioned) or residual MLP denoiser."""
    embed_dim: int = 128
    """Observation embedding size (an MLP encoder of the normalized history)."""
    unet_dims: tuple[int, ...] = (64, 128, 256)
    """U-Net channels per level (horizon divisible by 2**(levels-1))."""
    unet_kernel: int = 5
    """U-Net convolution kernel size."""
    mlp_hidden: int = 256
    """MLP denoiser width."""
    mlp_blocks: int = 3
    """MLP denoiser residual blocks."""
    train_timesteps: int = 100
    """DDPM diffusion steps T."""
    inference_steps: int = 10
    """DDIM steps at inference (1 to T)."""
    prediction: Literal["sample", "epsilon"] = "sample"
    """What the denoiser predicts: the clean chunk or the noise."""
    clip_sample: bool = True
    """Clip the predicted clean chunk to the normalized action range [-1, 1]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_counts(self, 1, "embed_dim", "unet_kernel", "mlp_hidden", "mlp_blocks", "train_timesteps")
        if self.unet_kernel % 2 == 0:
            raise ValueError(f"`unet_kernel` must be odd (the chunk keeps its length). Got {self.unet_kernel}.")
        if not self.unet_dims or any(d < 8 or d % 8 or d > MAX_COUNT for d in self.unet_dims):
            raise ValueError(
                f"`unet_dims` must be one or more channel counts, each a multiple of 8 (GroupNorm's 8 groups). "
                f"Got {self.unet_dims}."
            )
        if not 1 <= self.inference_steps <= self.train_timesteps:
            raise ValueError(
                f"`inference_steps` must be in [1, train_timesteps={self.train_timesteps}]. Got {self.inference_steps}."
            )
        if self.denoiser == "unet" and self.horizon % 2 ** (len(self.unet_dims) - 1):
            raise ValueError(
                f"the U-Net halves the horizon {len(self.unet_dims) - 1} times: `horizon` must be divisible by "
                f"{2 ** (len(self.unet_dims) - 1)}. Got {self.horizon}."
            )


EVAL_SEED = 900_000
"""Default first seed of the rollouts during training: far above any seed `robot-rl collect` hands
out, and below 1,000,000 where `robot-rl eval` of a trained policy starts, so the checkpoint chosen
on these seeds is reported on others."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options shared by every policy type."""

    data: Path
    """Demonstration file (robomimic HDF5 from `robot-rl collect`)."""
    out: Path
    """Run directory (created; with --resume, the run to continue)."""
    steps: int = 20_000
    """Gradient steps."""
    batch_size: int = 256
    """Windows per batch."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 1e-6
    """AdamW weight decay."""
    warmup_steps: int = 500
    """Linear learning-rate warm-up; cosine decay to 0 afterwards."""
    ema_decay: float = 0.999
    """EMA of the weights (evaluated and deployed); 0 turns it off."""
    val_fraction: float = 0.1
    """Fraction of demos held out for the validation loss (unless the file has a mask/ split)."""
    max_demos: int | None = None
    """Use only the first N successful demos."""
    eval_every: int = 2_000
    """Evaluation rollouts and a checkpoint every N steps (and at the end)."""
    eval_episodes: int = 20
    """Rollouts per evaluation (0 = no rollouts, checkpoints only)."""
    eval_seed: int = EVAL_SEED
    """First seed of evaluation rollouts; must not overlap the demos' seeds."""
    eval_randomize: str = "nominal"
    """Domain randomization of the evaluation rollouts (nominal, train or a YAML file), whatever the
    demos were collected under (e.g. with action noise for DART-style coverage)."""
    log_every: int = 100
    """TensorBoard training scalars every N steps."""
    seed: int = 0
    """Seed of initialization, batching and the validation split."""
    threads: int = 2
    """torch CPU threads."""
    keep_best: bool = True
    """Deploy (policy.safetensors) the checkpoint with the best evaluation success so far, not the last;
    the final report then uses other seeds (`robot-rl eval` starts at 1000000)."""
    resume: bool = False
    """Continue the run in --out from its latest checkpoint (same config; --steps may grow)."""
    progress: bool = True
    """Show a progress bar."""

    def __post_init__(self) -> None:
        check_counts(self, 1, "steps", "batch_size", "eval_every", "log_every", "threads", "max_demos")
        check_counts(self, 0, "eval_episodes", "warmup_steps")
        check_seed("seed", self.seed)
        check_seed("eval_seed", self.eval_seed)
        if not 0.0 < self.lr < math.inf:
            raise ValueError(f"`lr` must be a number > 0. Got {self.lr}.")
        if not 0.0 <= self.weight_decay < math.inf:
            raise ValueError(f"`weight_decay` must be a number >= 0. Got {self.weight_decay}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1). Got {self.ema_decay}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1). Got {self.val_fraction}.")


@dataclasses.dataclass(frozen=True)
class TrainBC(TrainConfig):
    """Train a BC-MLP policy on demonstrations."""

    lr: float = 1e-3
    """Peak learning rate (AdamW)."""
    ema_decay: float = 0.0
    """EMA of the weights (evaluated and deployed); 0 turns it off."""
    policy: BCConfig = dataclasses.field(default_factory=BCConfig)
    """Policy architecture."""


@dataclasses.dataclass(frozen=True)
class TrainDiffusion(TrainConfig):
    """Train a diffusion policy on demonstrations."""

    policy: DiffusionConfig = dataclasses.field(default_factory=DiffusionConfig)
    """Policy architecture and sampler."""
