"""The base policies: BC-MLP (deterministic or Gaussian head) and the diffusion policy.

Both are torch modules that carry their normalization and observation layout and implement the
:class:`robot_rl.policies.base.Policy` protocol (``predict``). Training calls ``loss``;
``embed`` gives the observation embedding (the space the failure monitor watches).

Diffusion: DDPM training over ``train_timesteps`` with the squared-cosine noise schedule; DDIM
sampling (deterministic given the initial noise) with a configurable number of steps on
"trailing" timesteps (the first step starts from pure noise at ``t = T - 1``, which is what makes
1 to 3 steps work). The network predicts either the clean chunk (``sample``; the better choice
for few steps) or the noise (``epsilon``). Our own ~40-line sampler instead of a scheduler library:
it has to unroll into one static ONNX graph (the timesteps become constants), which schedulers
built around Python-side state and numpy indexing do not do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from robot_rl.policies.base import Normalizer, ObsLayout
from robot_rl.policies.config import BCConfig, ChunkConfig, DiffusionConfig
from robot_rl.policies.nets import ConditionalUnet1D, MLPDenoiser, mlp


class _ChunkPolicy(nn.Module):
    """Shared parts: layout, normalizer, sizes, numpy ``predict``."""

    kind = ""

    def __init__(self, config: ChunkConfig, layout: ObsLayout, action_dim: int) -> None:
        super().__init__()
        self.config = config
        self.layout = layout
        self.n_obs_steps = config.n_obs_steps
        self.horizon = config.horizon
        self.n_action_steps = config.n_action_steps
        self.action_dim = action_dim
        self.obs_dim = layout.dim
        self.normalizer = Normalizer(layout.dim, action_dim)

    def _chunk(self, obs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict_batch(self, histories: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
        """Chunks for raw histories (B, n_obs_steps, obs_dim) and initial noise (B, H, A). Shape: (B, H, A)."""
        obs = torch.as_tensor(histories, dtype=torch.float32)
        if isinstance(self, DiffusionPolicy):
            if noise is None:
                raise ValueError("a diffusion policy needs the initial noise, shape (B, horizon, action_dim).")
            noise_t = torch.as_tensor(noise, dtype=torch.float32)
        else:
            noise_t = None
        return self._chunk(obs, noise_t).double().numpy()

    @torch.no_grad()
    def predict(self, obs_history: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Action chunk for raw flattened observations (n_obs_steps, obs_dim). Shape: (horizon, A)."""
        obs = torch.as_tensor(obs_history, dtype=torch.float32).unsqueeze(0)
        noise = None
        if isinstance(self, DiffusionPolicy):
            rng = rng or np.random.default_rng()
            noise = torch.as_tensor(rng.standard_normal((1, self.horizon, self.action_dim)), dtype=torch.float32)
        return self._chunk(obs, noise)[0].double().numpy()


class BCPolicy(_ChunkPolicy):
    """Behaviour-cloning MLP; see :class:`BCConfig`."""

    kind = "bc"

    def __init__(self, config: BCConfig, layout: ObsLayout, action_dim: int) -> None:
        super().__init__(config, layout, action_dim)
        out = config.horizon * action_dim * (2 if config.head == "gaussian" else 1)
        layers = list(mlp(config.n_obs_steps * layout.dim, config.hidden, out))
        if config.dropout > 0:
            # After each hidden activation (every Mish), before the next Linear.
            with_dropout: list[nn.Module] = []
            for layer in layers:
                with_dropout.append(layer)
                if isinstance(layer, nn.Mish):
                    with_dropout.append(nn.Dropout(config.dropout))
            layers = with_dropout
        self.net = nn.Sequential(*layers)

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """Normalized, flattened observation history (B, n_obs_steps * obs_dim)."""
        return self.normalizer.normalize_obs(obs).flatten(1)

    def _heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = self.net(self.embed(obs))
        shape = (obs.shape[0], self.horizon, self.action_dim)
        if self.config.head == "gaussian":
            mean, log_std = out.chunk(2, dim=-1)
            return mean.view(shape), log_std.clamp(-5.0, 1.0).view(shape)
        return out.view(shape), None

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Training loss on raw obs (B, n_obs, D) and raw action chunks (B, H, A)."""
        target = self.normalizer.normalize_action(actions)
        mean, log_std = self._heads(obs)
        if log_std is None:
            return F.mse_loss(mean, target)
        return (0.5 * ((target - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).mean()

    def _chunk(self, obs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        mean, _ = self._heads(obs)
        return self.normalizer.unnormalize_action(mean.clamp(-1.0, 1.0))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Raw obs history (B, n_obs, D) -> raw action chunk (B, H, A) (the Gaussian mean)."""
        return self._chunk(obs, None)


def _squared_cosine_alphas_cumprod(steps: int, max_beta: float = 0.999) -> torch.Tensor:
    def alpha_bar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / steps) / alpha_bar(i / steps), max_beta) for i in range(steps)]
    return torch.cumprod(1.0 - torch.tensor(betas, dtype=torch.float64), dim=0).float()


def ddim_timesteps(train_timesteps: int, steps: int) -> list[int]:
    """The DDIM timesteps, trailing spacing: e.g. T=100, 3 steps -> [99, 66, 32]."""
    return [int(round(train_timesteps - i * train_timesteps / steps)) - 1 for i in range(steps)]


class DiffusionPolicy(_ChunkPolicy):
    """Diffusion policy over action chunks; see :class:`DiffusionConfig`."""

    kind = "diffusion"

    def __init__(self, config: DiffusionConfig, layout: ObsLayout, action_dim: int) -> None:
        super().__init__(config, layout, action_dim)
        self.obs_encoder = mlp(config.n_obs_steps * layout.dim, (config.embed_dim,), config.embed_dim)
        if config.denoiser == "unet":
            self.denoiser: nn.Module = ConditionalUnet1D(
                action_dim, config.embed_dim, config.unet_dims, kernel=config.unet_kernel
            )
        else:
            self.denoiser = MLPDenoiser(
                config.horizon, action_dim, config.embed_dim, hidden=config.mlp_hidden, blocks=config.mlp_blocks
            )
        self.register_buffer("alphas_cumprod", _squared_cosine_alphas_cumprod(config.train_timesteps))
        self.inference_steps = config.inference_steps

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation embedding (B, embed_dim) of raw histories (B, n_obs, D)."""
        return self.obs_encoder(self.normalizer.normalize_obs(obs).flatten(1))

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """DDPM loss on raw obs (B, n_obs, D) and raw action chunks (B, H, A)."""
        x0 = self.normalizer.normalize_action(actions)
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.config.train_timesteps, (x0.shape[0],), device=x0.device)
        ab = self.alphas_cumprod[t].view(-1, 1, 1)
        noisy = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        out = self.denoiser(noisy, t, self.embed(obs))
        return F.mse_loss(out, x0 if self.config.prediction == "sample" else noise)

    def sample(self, obs: torch.Tensor, noise: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """DDIM from ``noise`` (B, H, A), deterministic; returns raw action chunks (B, H, A)."""
        steps = steps or self.inference_steps
        cond = self.embed(obs)
        x = noise
        timesteps = ddim_timesteps(self.config.train_timesteps, steps)
        for i, t in enumerate(timesteps):
            ab = self.alphas_cumprod[t]
            ab_prev = self.alphas_cumprod[timesteps[i + 1]] if i + 1 < len(timesteps) else torch.ones_like(ab)
            t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            out = self.denoiser(x, t_batch, cond)
            if self.config.prediction == "sample":
                x0 = out
            else:
                x0 = (x - (1 - ab).sqrt() * out) / ab.sqrt()
            if self.config.clip_sample:
                x0 = x0.clamp(-1.0, 1.0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return self.normalizer.unnormalize_action(x)

    def _chunk(self, obs: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        assert noise is not None
        return self.sample(obs, noise)

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Raw obs history (B, n_obs, D) and initial noise (B, H, A) -> raw action chunk (B, H, A)."""
        return self.sample(obs, noise)


POLICY_TYPES: dict[str, tuple[type[_ChunkPolicy], type[ChunkConfig]]] = {
    "bc": (BCPolicy, BCConfig),
    "diffusion": (DiffusionPolicy, DiffusionConfig),
}


def build_policy(kind: str, config: Any, layout: ObsLayout, action_dim: int) -> _ChunkPolicy:
    """Construct a policy of ``kind`` (``bc`` or ``diffusion``)."""
    if kind not in POLICY_TYPES:
        raise ValueError(f"unknown policy type {kind!r}; valid: {', '.join(POLICY_TYPES)}.")
    cls, config_cls = POLICY_TYPES[kind]
    if isinstance(config, dict):
        config = config_from_json(config_cls, config)
    return cls(config, layout, action_dim)


def config_from_json(config_cls: type, value: dict[str, Any]) -> Any:
    """Rebuild a frozen config dataclass from its JSON dict (lists back to tuples)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise ValueError(f"unknown {config_cls.__name__} options {unknown}; valid: {sorted(fields)}.")
    return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
