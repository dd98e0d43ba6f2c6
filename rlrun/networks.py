"""Networks: MLP and Nature CNN trunks, actor-critic with categorical or diagonal Gaussian heads, Q-networks.

Plain PyTorch: ``nn.Linear``, ``nn.Tanh``, ``nn.Sequential``. The probability distributions are a few tensor
functions, one formula each (the log-probability and entropy of a categorical and of a diagonal Gaussian),
which compute what ``torch.distributions`` computes without building an object per call: on a [256, 2]
batch, log-probability plus entropy, forward and backward, take ~74 us here against ~181 us with
``Categorical`` (~133 us without argument validation), an eighth of a PPO gradient step. The CPU speed
path for small MLPs (``algo.fused=true``) lives in :mod:`rlrun.fused`.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from rlrun.fused import FusedMLP, fused_mlp

LOG_2PI = math.log(2.0 * math.pi)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


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
    out_std: float = 1.0, ortho: bool = True, fused: bool = False, layer_norm: bool = False,
) -> nn.Sequential:
    """``in_dim -> hidden_sizes... -> out_dim`` with ``activation`` between layers, none after the last.

    ``fused``: the same layers as a :class:`rlrun.fused.FusedMLP` (one autograd node; ``algo.fused=true``).
    ``layer_norm``: ``nn.LayerNorm`` after each hidden Linear, before its activation (PQN's Q-network).
    """
    if fused and layer_norm:
        raise ValueError("the fused MLP has no LayerNorm: build it with fused=False")
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden_sizes:
        layers.append(layer_init(nn.Linear(last, size), math.sqrt(2), ortho))
        if layer_norm:
            layers.append(nn.LayerNorm(size))
        layers.append(ACTIVATIONS[activation]())
        last = size
    layers.append(layer_init(nn.Linear(last, out_dim), out_std, ortho))
    return fused_mlp(layers, activation) if fused else nn.Sequential(*layers)


class NatureCNN(nn.Module):
    """Mnih et al. 2015: three conv layers and a 512-unit layer over uint8 frames [B, C, 84, 84].

    ``layer_norm``: ``nn.LayerNorm`` over each layer's whole output ([C, H, W] for a conv layer) before its ReLU,
    as PQN's Atari network (Gallici et al. 2024) has it.
    """

    def __init__(self, in_channels: int, ortho: bool = True, layer_norm: bool = False):
        super().__init__()

        def block(layer: nn.Module, shape: tuple[int, ...]) -> list[nn.Module]:
            return [layer_init(layer, math.sqrt(2), ortho), *([nn.LayerNorm(shape)] if layer_norm else []), nn.ReLU()]

        self.net = nn.Sequential(
            *block(nn.Conv2d(in_channels, 32, 8, stride=4), (32, 20, 20)),
            *block(nn.Conv2d(32, 64, 4, stride=2), (64, 9, 9)),
            *block(nn.Conv2d(64, 64, 3, stride=1), (64, 7, 7)),
            nn.Flatten(),
            *block(nn.Linear(64 * 7 * 7, 512), (512,)),
        )
        self.out_dim = 512

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.float() / 255.0)  # [B, 512]


# ----------------------------------------------------------------- distributions
def categorical_log_prob(logits: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) = logits_a - logsumexp(logits).  logits [B, A], action [B] -> [B]."""
    log_p = logits.log_softmax(-1)  # [B, A]; one fused kernel (logsumexp is several on a CPU)
    return log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1)


def categorical_log_prob_entropy(logits: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log pi(a|s) and H = -sum_a p_a log p_a from one log-softmax.  logits [B, A], action [B] -> [B], [B]."""
    log_p = logits.log_softmax(-1)  # [B, A]
    return log_p.gather(-1, action.unsqueeze(-1)).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


def categorical_sample(logits: torch.Tensor) -> torch.Tensor:
    """Gumbel-max trick: argmax(logits + g), g ~ Gumbel(0, 1), is a sample of softmax(logits).

    g = -log(e) with e ~ Exponential(1) (the same as -log(-log(u)), u ~ U(0, 1), in fewer ops).
    """
    e = torch.empty_like(logits).exponential_()
    return (logits - e.log()).argmax(-1)


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Diagonal Gaussian: log pi(a|s) = -sum_i [ (a_i - mu_i)^2 / (2 sigma_i^2) + log sigma_i + log(2 pi)/2 ]."""
    z = (action - mean) * torch.exp(-log_std)  # [B, A]
    return -(0.5 * z.pow(2) + log_std + 0.5 * LOG_2PI).sum(-1)


def gaussian_entropy(log_std: torch.Tensor, batch: int) -> torch.Tensor:
    """H = sum_i (log sigma_i + (1 + log 2 pi) / 2), the same for every state: log_std [A] -> [batch]
    (a population's [P, A] -> [P, batch])."""
    entropy = (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1)
    return entropy.unsqueeze(-1).expand(*entropy.shape, batch)


# ----------------------------------------------------------------- actor-critic
class ActorCritic(nn.Module):
    """Policy pi(a|s) and value V(s) for discrete (categorical) or continuous (diagonal Gaussian) actions.

    Vector observations get two separate MLPs (actor, critic); image observations share one Nature CNN
    trunk with two linear heads (``shared_trunk``; a subclass may share an MLP trunk the same way). Output
    layers are scaled as in the PPO literature: 0.01 for the policy, 1.0 for the value. ``fused`` builds
    the MLPs as :class:`rlrun.fused.FusedMLP` (``algo.fused=true``).
    """

    def __init__(
        self, observation_space: gym.Space, action_space: gym.Space, hidden_sizes: list[int],
        activation: str = "tanh", ortho_init: bool = True, log_std_init: float = 0.0, fused: bool = False,
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
        self.shared_trunk = len(obs_shape) == 3  # one trunk (the CNN) feeding two linear heads
        if self.shared_trunk:
            self.trunk: nn.Module = NatureCNN(obs_shape[0], ortho_init)
            self.actor = layer_init(nn.Linear(self.trunk.out_dim, act_dim), 0.01, ortho_init)
            self.critic = layer_init(nn.Linear(self.trunk.out_dim, 1), 1.0, ortho_init)
        else:
            obs_dim = int(math.prod(obs_shape))
            self.trunk = nn.Flatten() if len(obs_shape) > 1 else nn.Identity()
            self.actor = mlp(obs_dim, hidden_sizes, act_dim, activation, 0.01, ortho_init, fused)
            self.critic = mlp(obs_dim, hidden_sizes, 1, activation, 1.0, ortho_init, fused)
        if not self.discrete:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): obs [B, ...] -> [B]."""
        return self.critic(self.trunk(obs)).squeeze(-1)

    def policy_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits [B, A] (discrete) or Gaussian means [B, A] (continuous)."""
        return self.actor(self.trunk(obs))

    def policy_params_autograd(self, obs: torch.Tensor) -> torch.Tensor:
        """:meth:`policy_params` with every layer a module call, differentiable twice (Fisher-vector products need
        that; a :class:`rlrun.fused.FusedMLP`'s written-out backward is not)."""
        actor = self.actor.forward_layers if isinstance(self.actor, FusedMLP) else self.actor
        return actor(self.trunk(obs))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) pi(.|s): returns action and its log-probability."""
        params = self.policy_params(obs)
        if self.discrete:
            action = params.argmax(-1) if deterministic else categorical_sample(params)
            return action, categorical_log_prob(params, action)
        action = params if deterministic else params + torch.randn_like(params) * self.log_std.exp()
        return action, gaussian_log_prob(params, self.log_std, action)

    def heads(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Policy parameters [B, A] and V(s) [B] with gradients, from one pass over obs [B, ...]."""
        features = self.trunk(obs)
        return self.actor(features), self.critic(features).squeeze(-1)

    def log_prob_entropy(self, params: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) [B] and the entropy of pi(.|s) [B] from the policy parameters [B, A]."""
        if self.discrete:
            return categorical_log_prob_entropy(params, action)
        return gaussian_log_prob(params, self.log_std, action), gaussian_entropy(self.log_std, params.shape[0])

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), entropy of pi(.|s) and V(s) for a batch, with gradients."""
        params, value = self.heads(obs)
        logp, entropy = self.log_prob_entropy(params, action)
        return logp, entropy, value



# ----------------------------------------------------------------- Q-networks (DQN and the Rainbow heads)
def scaled_noise(size: int, device: torch.device | None = None) -> torch.Tensor:
    """f(x) = sign(x) sqrt(|x|), x ~ N(0, 1): the noise of factorised Gaussian NoisyNets."""
    x = torch.randn(size, device=device)
    return x.sign() * x.abs().sqrt()


class NoisyLinear(nn.Module):
    """Factorised Gaussian noisy linear layer (Fortunato et al. 2018):

        y = (mu_w + sigma_w * (f(eps_out) f(eps_in)^T)) x + mu_b + sigma_b * f(eps_out)

    Initialisation: mu ~ U[-1/sqrt(p), 1/sqrt(p)], sigma = sigma_0 / sqrt(p) with p the input size.
    :meth:`reset_noise` draws new eps; ``forward(x, noise=False)`` uses the mean weights only.
    """

    def __init__(self, in_features: int, out_features: int, sigma_0: float = 0.5):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features).uniform_(-bound, bound))
        self.weight_sigma = nn.Parameter(torch.full((out_features, in_features), sigma_0 * bound))
        self.bias_mu = nn.Parameter(torch.empty(out_features).uniform_(-bound, bound))
        self.bias_sigma = nn.Parameter(torch.full((out_features,), sigma_0 * bound))
        self.register_buffer("eps_in", torch.zeros(in_features))
        self.register_buffer("eps_out", torch.zeros(out_features))
        self.reset_noise()

    @torch.no_grad()
    def reset_noise(self) -> None:
        self.eps_in.copy_(scaled_noise(self.in_features, self.eps_in.device))
        self.eps_out.copy_(scaled_noise(self.out_features, self.eps_out.device))

    def forward(self, x: torch.Tensor, noise: bool = True) -> torch.Tensor:
        if not noise:
            return nn.functional.linear(x, self.weight_mu, self.bias_mu)
        weight = self.weight_mu + self.weight_sigma * torch.outer(self.eps_out, self.eps_in)  # [out, in]
        bias = self.bias_mu + self.bias_sigma * self.eps_out  # [out]
        return nn.functional.linear(x, weight, bias)


def dueling_aggregate(value: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """Dueling head (Wang et al. 2016): Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').

    value [B, 1, K], advantage [B, A, K] -> [B, A, K] (K = 1 for scalar Q, the atoms for C51 logits).
    """
    return value + advantage - advantage.mean(1, keepdim=True)


class QNetwork(nn.Module):
    """Q(s, .) for DQN and every Rainbow head combination in one module.

    trunk:  Nature CNN (uint8 images) or an MLP of ``hidden_sizes[:-1]`` (vectors), ReLU
    stream: [Noisy]Linear(trunk, hidden_sizes[-1]) -> ReLU -> [Noisy]Linear(hidden, outputs)
    head:   one stream with A * K outputs, or (dueling) a value stream (K outputs) and an advantage
            stream (A * K) combined by :func:`dueling_aggregate`.
    ``atoms`` = K > 1 makes the outputs C51 logits over a fixed support; K = 1 makes them Q-values.
    ``noisy`` makes the stream layers :class:`NoisyLinear` (the trunk stays deterministic, as in Rainbow).
    """

    def __init__(self, observation_space: gym.Space, num_actions: int, hidden_sizes: list[int],
                 dueling: bool = False, noisy: bool = False, atoms: int = 1, sigma_0: float = 0.5):
        super().__init__()
        self.num_actions, self.atoms, self.dueling, self.noisy = num_actions, atoms, dueling, noisy
        obs_shape = observation_space.shape
        if len(obs_shape) == 3:
            self.trunk: nn.Module = NatureCNN(obs_shape[0], ortho=False)
            self.trunk.net = self.trunk.net[:-2]  # conv layers only: the streams hold the 512-unit layers
            trunk_dim, hidden = 64 * 7 * 7, hidden_sizes[-1]
        else:
            layers: list[nn.Module] = [nn.Flatten()] if len(obs_shape) > 1 else []
            last = int(math.prod(obs_shape))
            for size in hidden_sizes[:-1]:
                layers += [nn.Linear(last, size), nn.ReLU()]
                last = size
            self.trunk = nn.Sequential(*layers)
            trunk_dim, hidden = last, hidden_sizes[-1]
        make = (lambda i, o: NoisyLinear(i, o, sigma_0)) if noisy else nn.Linear
        self.stream = nn.ModuleList([make(trunk_dim, hidden), make(hidden, num_actions * atoms)])
        if dueling:
            self.value_stream = nn.ModuleList([make(trunk_dim, hidden), make(hidden, atoms)])

    @staticmethod
    def _run(stream: nn.ModuleList, x: torch.Tensor, noise: bool) -> torch.Tensor:
        for i, layer in enumerate(stream):
            x = layer(x, noise) if isinstance(layer, NoisyLinear) else layer(x)
            if i < len(stream) - 1:
                x = torch.relu(x)
        return x

    def forward(self, obs: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Q-values [B, A] (atoms = 1) or C51 logits [B, A, K]; ``noise=False``: noisy layers use their means."""
        features = self.trunk(obs)  # [B, F]
        out = self._run(self.stream, features, noise).view(-1, self.num_actions, self.atoms)  # [B, A, K]
        if self.dueling:
            value = self._run(self.value_stream, features, noise).view(-1, 1, self.atoms)  # [B, 1, K]
            out = dueling_aggregate(value, out)
        return out.squeeze(-1) if self.atoms == 1 else out

    def reset_noise(self) -> None:
        """Draw new noise for every NoisyLinear layer (a no-op without noisy layers)."""
        if self.noisy:
            for stream in (self.stream, self.value_stream) if self.dueling else (self.stream,):
                for layer in stream:
                    layer.reset_noise()
