"""stable-baselines3's SAC with an optional LayerNorm in the critics (ResFiT's critic) and a slower actor.

stable-baselines3 builds its Q-networks with plain ``Linear -> ReLU`` layers; ``create_mlp`` already
takes ``post_linear_modules`` but ``ContinuousCritic`` does not pass them on. This subclass rebuilds
the Q-networks with ``Linear -> LayerNorm -> ReLU`` hidden layers and leaves everything else (actor,
targets, entropy tuning, saving and loading) to stable-baselines3. The actor is unchanged, so the
exported residual graph is the same either way.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3 import SAC
from stable_baselines3.common.policies import ContinuousCritic
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.sac.policies import SACPolicy
from torch import nn


class LayerNormCritic(ContinuousCritic):
    """``n_critics`` Q-networks whose hidden layers are ``Linear -> LayerNorm -> activation``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        features_dim = kwargs["features_dim"] if "features_dim" in kwargs else args[4]
        net_arch = kwargs["net_arch"] if "net_arch" in kwargs else args[2]
        activation_fn = kwargs.get("activation_fn", nn.ReLU)
        action_dim = get_action_dim(self.action_space)
        self.q_networks = []
        for idx in range(self.n_critics):
            layers = create_mlp(
                features_dim + action_dim, 1, list(net_arch), activation_fn, post_linear_modules=[nn.LayerNorm]
            )
            q_net = nn.Sequential(*layers)
            self.add_module(f"qf{idx}", q_net)  # replaces the plain network of the same name
            self.q_networks.append(q_net)


class ResidualSACPolicy(SACPolicy):
    """SAC's ``MlpPolicy`` with ``critic_layer_norm`` (default False: stable-baselines3's own critic)."""

    def __init__(self, *args: Any, critic_layer_norm: bool = False, **kwargs: Any) -> None:
        self.critic_layer_norm = critic_layer_norm  # read by make_critic, which SACPolicy.__init__ calls
        super().__init__(*args, **kwargs)

    def make_critic(self, features_extractor: Any = None) -> ContinuousCritic:
        """The critics: stable-baselines3's, or :class:`LayerNormCritic` with ``critic_layer_norm``."""
        if not self.critic_layer_norm:
            return super().make_critic(features_extractor)
        critic_kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        return LayerNormCritic(**critic_kwargs).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data["critic_layer_norm"] = self.critic_layer_norm
        return data


class ResidualSAC(SAC):
    """stable-baselines3's SAC whose actor learns at ``actor_lr_scale`` times the critic's learning rate.

    SAC sets every optimizer to the same rate before each round of updates; this scales the actor's
    after that. The saved agent is a plain SAC agent (``SAC.load`` reads it).
    """

    def __init__(self, *args: Any, actor_lr_scale: float = 1.0, **kwargs: Any) -> None:
        self.actor_lr_scale = actor_lr_scale
        super().__init__(*args, **kwargs)

    def _update_learning_rate(self, optimizers: Any) -> None:
        super()._update_learning_rate(optimizers)
        if self.actor_lr_scale != 1.0:
            for group in self.actor.optimizer.param_groups:
                group["lr"] = self.lr_schedule(self._current_progress_remaining) * self.actor_lr_scale
