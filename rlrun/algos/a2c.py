"""Advantage actor-critic, synchronous (A2C: the batched form of Mnih et al. 2016's A3C).

    L = -E[ log pi(a_t|s_t) A_t ] + vf_coef * E[ (V(s_t) - R_t)^2 ] - ent_coef * E[ H(pi(.|s_t)) ]

one gradient step per rollout of ``num_steps`` over the vector env. A_t is GAE(lambda) from the
shared rollout (:func:`rlrun.loops.run_on_policy`): lambda = 1 gives the classic n-step A2C
advantage (returns bootstrapped from V at the rollout's end, i.e. Monte Carlo within the rollout),
lambda = 0 the one-step TD error. Actor and critic are separate MLPs or one shared trunk. The value
term is the mean squared error, as in openai/baselines' a2c and Stable-Baselines3 (whose defaults
``conf/algo/a2c.yaml`` takes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from rlrun.algos.base import OnPolicyConfig, PolicyGradient
from rlrun.checks import check, choice, unit
from rlrun.losses import explained_variance, normalize_advantages, value_loss
from rlrun.networks import ACTIVATIONS, ActorCritic, layer_init, mlp

OPTIMIZERS = ("rmsprop", "adam")


@dataclass
class A2CConfig(OnPolicyConfig):
    """A2C's own hyperparameters on top of the shared on-policy ones."""

    name: str = "a2c"
    # The shared keys at openai/baselines' a2c values (as Stable-Baselines3 has them): 5-step rollouts,
    # n-step returns (lambda 1), lr 7e-4 without annealing; Adam/RMSprop epsilon 1e-5 and clipping at 0.5
    # are the shared defaults already.
    num_steps: int = 5
    gae_lambda: float = 1.0
    lr: float = 7e-4
    anneal_lr: bool = False
    optimizer: str = "rmsprop"
    """rmsprop (as in Mnih et al. 2016) or adam."""
    rmsprop_alpha: float = 0.99
    """RMSprop's smoothing constant."""
    shared_network: bool = False
    """One MLP trunk with a policy head and a value head (true) or two separate MLPs (false)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    norm_adv: bool = False
    """Normalise the advantages of each batch to mean 0, std 1."""

    def __post_init__(self) -> None:
        super().__post_init__()
        choice("algo.optimizer", self.optimizer, OPTIMIZERS)
        unit("algo.rmsprop_alpha", self.rmsprop_alpha)
        check(self.ent_coef >= 0, "algo.ent_coef", self.ent_coef, "a number >= 0")
        check(self.vf_coef >= 0, "algo.vf_coef", self.vf_coef, "a number >= 0")


class SharedActorCritic(ActorCritic):
    """:class:`ActorCritic` whose vector-observation actor and critic share one MLP trunk: the hidden layers
    feed a linear policy head and a linear value head (the layout ActorCritic uses for images)."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, hidden_sizes: list[int],
                 activation: str = "tanh", ortho_init: bool = True, log_std_init: float = 0.0, fused: bool = False):
        super().__init__(observation_space, action_space, hidden_sizes, activation, ortho_init, log_std_init, fused)
        if self.shared_trunk:
            return  # images already share the CNN trunk
        obs_dim = int(math.prod(observation_space.shape))
        act_dim = self.actor[-1].out_features
        trunk = mlp(obs_dim, hidden_sizes[:-1], hidden_sizes[-1], activation, math.sqrt(2), ortho_init, fused)
        self.trunk = nn.Sequential(nn.Flatten() if len(observation_space.shape) > 1 else nn.Identity(), trunk,
                                   ACTIVATIONS[activation]())
        self.actor = layer_init(nn.Linear(hidden_sizes[-1], act_dim), 0.01, ortho_init)
        self.critic = layer_init(nn.Linear(hidden_sizes[-1], 1), 1.0, ortho_init)
        self.shared_trunk = True


class A2C(PolicyGradient):
    """One gradient step on the actor-critic loss per rollout."""

    Config = A2CConfig

    def __init__(self, cfg: A2CConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        super().__init__(cfg, observation_space, action_space, device)
        self.params = list(self.policy.parameters())
        if cfg.optimizer == "rmsprop":
            optimizer = torch.optim.RMSprop(self.params, lr=cfg.lr, alpha=cfg.rmsprop_alpha, eps=cfg.adam_eps)
        else:
            optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.adam_eps)
        self.add_optimizer("policy", optimizer)

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space) -> ActorCritic:
        if not self.cfg.shared_network:
            return super().build_policy(observation_space, action_space)
        cfg = self.cfg
        return SharedActorCritic(observation_space, action_space, cfg.hidden_sizes, cfg.activation,
                                 cfg.ortho_init, cfg.log_std_init, cfg.fused)

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        cfg = self.cfg
        logp, entropy, values = self.policy.evaluate(batch["obs"], batch["actions"])
        advantages = normalize_advantages(batch["advantages"]) if cfg.norm_adv else batch["advantages"]
        policy_loss = -(logp * advantages).mean(-1)  # means over the samples (a population's: one per member)
        critic_loss = value_loss(values, batch["returns"])
        entropy = entropy.mean(-1)
        loss = policy_loss + cfg.vf_coef * critic_loss - cfg.ent_coef * entropy
        self.gradient_step(self.optimizers["policy"], loss, self.params)
        return {"losses/policy_loss": policy_loss.detach(), "losses/value_loss": critic_loss.detach(),
                "losses/entropy": entropy.detach(),
                "losses/explained_variance": explained_variance(batch["values"], batch["returns"])}
