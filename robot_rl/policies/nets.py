"""Networks: MLPs, and the two diffusion denoisers (a temporal 1-D U-Net and a residual MLP).

Both denoisers have the same signature, ``denoiser(x, t, cond) -> prediction`` with ``x`` the
noisy normalized action chunk (B, H, A), ``t`` the diffusion step (B,) and ``cond`` the
observation embedding (B, C). Everything is plain tensor math so that the sampler unrolls into
an ONNX graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, layer_norm: bool = True) -> nn.Sequential:
    """Linear -> (LayerNorm) -> Mish blocks, then a linear output layer."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers.append(nn.Linear(in_dim, width))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(nn.Mish())
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class SinusoidalEmbedding(nn.Module):
    """Transformer-style embedding of a scalar diffusion step. (B,) -> (B, dim)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """Embed the diffusion steps ``t``."""
        angles = t.float()[:, None] * self.freqs[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def step_encoder(dim: int) -> nn.Sequential:
    """Diffusion-step embedding followed by a small MLP."""
    return nn.Sequential(SinusoidalEmbedding(dim), nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))


class _ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_ch, out_ch, kernel, padding=kernel // 2), nn.GroupNorm(groups, out_ch), nn.Mish()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _FiLMResBlock(nn.Module):
    """Two conv blocks; the conditioning scales and shifts the first one's output (FiLM)."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.conv1 = _ConvBlock(in_ch, out_ch, kernel, groups)
        self.conv2 = _ConvBlock(out_ch, out_ch, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * out_ch))
        self.skip = nn.Conv1d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        scale, shift = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.conv2(h * (1 + scale) + shift)
        return h + self.skip(x)


class ConditionalUnet1D(nn.Module):
    """Temporal U-Net over the action chunk, conditioned (FiLM) on the step and the observation.

    Args:
        action_dim: A.
        cond_dim: Observation embedding size C.
        dims: Channels per resolution level; the horizon must be divisible by 2**(len(dims)-1).
        kernel: Convolution kernel size along time.
        groups: GroupNorm groups.
        step_dim: Diffusion-step embedding size.
    """

    def __init__(
        self,
        action_dim: int,
        cond_dim: int,
        dims: Sequence[int] = (64, 128, 256),
        kernel: int = 5,
        groups: int = 8,
        step_dim: int = 128,
    ) -> None:
        super().__init__()
        self.levels = len(dims)
        self.step_encoder = step_encoder(step_dim)
        film_dim = step_dim + cond_dim
        channels = [action_dim, *dims]
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
            last = i == len(dims) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        _FiLMResBlock(cin, cout, film_dim, kernel, groups),
                        _FiLMResBlock(cout, cout, film_dim, kernel, groups),
                        nn.Conv1d(cout, cout, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = dims[-1]
        self.mid = nn.ModuleList(
            [_FiLMResBlock(mid, mid, film_dim, kernel, groups), _FiLMResBlock(mid, mid, film_dim, kernel, groups)]
        )
        self.up = nn.ModuleList()
        for cin, cout in zip(reversed(dims[1:]), reversed(dims[:-1]), strict=True):
            self.up.append(
                nn.ModuleList(
                    [
                        _FiLMResBlock(2 * cin, cout, film_dim, kernel, groups),
                        _FiLMResBlock(cout, cout, film_dim, kernel, groups),
                        nn.ConvTranspose1d(cout, cout, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final = nn.Sequential(_ConvBlock(dims[0], dims[0], kernel, groups), nn.Conv1d(dims[0], action_dim, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict from the noisy chunk ``x`` (B, H, A). Returns (B, H, A)."""
        film = torch.cat([self.step_encoder(t), cond], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for block1, block2, downsample in self.down:
            h = block2(block1(h, film), film)
            skips.append(h)
            h = downsample(h)
        for block in self.mid:
            h = block(h, film)
        for block1, block2, upsample in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = upsample(block2(block1(h, film), film))
        return self.final(h).transpose(1, 2)


class MLPDenoiser(nn.Module):
    """Residual MLP over the flattened chunk, the step embedding and the observation embedding.

    Args:
        horizon: H.
        action_dim: A.
        cond_dim: Observation embedding size C.
        hidden: Width of the residual blocks.
        blocks: Number of residual blocks.
        step_dim: Diffusion-step embedding size.
    """

    def __init__(
        self, horizon: int, action_dim: int, cond_dim: int, hidden: int = 512, blocks: int = 3, step_dim: int = 64
    ) -> None:
        super().__init__()
        self.step_encoder = step_encoder(step_dim)
        self.inp = nn.Linear(horizon * action_dim + step_dim + cond_dim, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Mish(), nn.Linear(hidden, hidden))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Mish(), nn.Linear(hidden, horizon * action_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Predict from the noisy chunk ``x`` (B, H, A). Returns (B, H, A)."""
        h = self.inp(torch.cat([x.flatten(1), self.step_encoder(t), cond], dim=-1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).view_as(x)
