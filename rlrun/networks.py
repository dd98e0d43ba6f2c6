"""Networks: MLP and Nature CNN trunks, actor-critic with categorical or diagonal Gaussian heads.

The probability distributions are written as a few tensor functions instead of
``torch.distributions`` objects: a PPO minibatch update on small MLPs is bound by per-op
overhead, and the distribution classes add argument validation and object creation to every call.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
LOG_2PI = math.log(2.0 * math.pi)


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = math.sqrt(2), ortho: bool = True) -> nn.Module:
    """Orthogonal weights scaled by ``std`` and zero biases (Engstrom et al. 2020, "layer scaling").

    With ``ortho=False`` the layer keeps PyTorch's default initialisation.
    """
    if ortho:
        nn.init.orthogonal_(layer.weight, std)
        nn.init.zeros_(layer.bias)
    return layer


def mlp(
    in_dim: int, hidden_sizes: list[int], out_dim: int, activation: str = "tanh",
    out_std: float = 1.0, ortho: bool = True,
) -> nn.Sequential:
    """``in_dim -> hidden_sizes... -> out_dim`` with ``activation`` between layers, none after the last."""
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(last, size), math.sqrt(2), ortho), ACTIVATIONS[activation]()]
        last = size
    layers.append(layer_init(nn.Linear(last, out_dim), out_std, ortho))
    return nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """Mnih et al. 2015: three conv layers and a 512-unit layer over uint8 frames [B, C, 84, 84]."""

    def __init__(self, in_channels: int, ortho: bool = True):
        super().__init__()
        self.net = nn.Sequential(
            layer_init(nn.Conv2d(in_channels, 32, 8, stride=4), math.sqrt(2), ortho), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2), math.sqrt(2), ortho), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1), math.sqrt(2), ortho), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512), math.sqrt(2), ortho), nn.ReLU(),
        )
        self.out_dim = 512

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float() / 255.0)  # [B, 512]


# ----------------------------------------------------------------- distributions
def categorical_log_prob(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) = logits_a - logsumexp(logits).  logits [B, A], action [B] -> [B]."""
    log_p = logits - logits.logsumexp(-1, keepdim=True)  # [B, A]
    return log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)


def categorical_log_prob_entropy(logits: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a|s) and H = -sum_a p_a log p_a from one log-softmax.  logits [B, A], action [B] -> [B], [B]."""
    log_p = logits - logits.logsumexp(-1, keepdim=True)  # [B, A]
    return log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


def categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """Gumbel-max trick: argmax(logits + g), g ~ Gumbel(0, 1), is a sample of softmax(logits)."""
    u = torch.rand_like(logits)
    return (logits - torch.log(-torch.log(u))).argmax(-1)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian: log pi(a|s) = -sum_i [ (a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi)/2 ]."""
    z = (action - mean) * torch.exp(-log_std)  # [B, A]
    return -(0.5 * z.pow(2) + log_std + 0.5 * LOG_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """H = sum_i (log sigma_i + (1 + log 2 pi) / 2), the same for every state: [batch]."""
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1).expand(batch)


# ----------------------------------------------------------------- actor-critic
class ActorCritic(nn.Module):
    """Policy pi(a|s) and value V(s) for discrete (categorical) or continuous (diagonal Gaussian) actions.

    Vector observations get two separate MLPs (actor, critic); image observations share one
    Nature CNN trunk with two linear heads. Output layers are scaled as in the PPO literature:
    0.01 for the policy, 1.0 for the value.
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, hidden_sizes: list[int],
        activation: str = "tanh", ortho_init: bool = True, log_std_init: float = 0.0,
    ):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            act_dim = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            act_dim = action_space.shape[0]
        else:
            raise ValueError(f"actor-critic heads support Discrete or 1-D Box actions, not {action_space}")
        obs_shape = observation_space.shape
        self.image = len(obs_shape) == 3
        if self.image:
            self.trunk: nn.Module = NatureCNN(obs_shape[0], ortho_init)
            self.actor = layer_init(nn.Linear(self.trunk.out_dim, act_dim), 0.01, ortho_init)
            self.critic = layer_init(nn.Linear(self.trunk.out_dim, 1), 1.0, ortho_init)
        else:
            obs_dim = int(math.prod(obs_shape))
            self.trunk = nn.Flatten() if len(obs_shape) > 1 else nn.Identity()
            self.actor = mlp(obs_dim, hidden_sizes, act_dim, activation, 0.01, ortho_init)
            self.critic = mlp(obs_dim, hidden_sizes, 1, activation, 1.0, ortho_init)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): obs [B, ...] -> [B]."""
        return self.critic(self.trunk(obs)).squeeze(-1)

    def policy_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits [B, A] (discrete) or Gaussian means [B, A] (continuous)."""
        return self.actor(self.trunk(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) pi(.|s): returns action and its log-probability."""
        params = self.policy_params(obs)
        if self.discrete:
            action = params.argmax(-1) if deterministic else categorical_sample(params)
            return action, categorical_log_prob(params, action)
        action = params if deterministic else params + torch.randn_like(params) * self.log_std.exp()
        return action, gaussian_log_prob(params, self.log_std, action)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), entropy of pi(.|s) and V(s) for a batch, with gradients."""
        if self.image:  # one shared trunk pass for both heads
            features = self.trunk(obs)
            params, value = self.actor(features), self.critic(features).squeeze(-1)
        else:
            params, value = self.policy_params(obs), self.value(obs)
        if self.discrete:
            logp, entropy = categorical_log_prob_entropy(params, action)
        else:
            logp = gaussian_log_prob(params, self.log_std, action)
            entropy = gaussian_entropy(self.log_std, obs.shape[0])
        return logp, entropy, value
