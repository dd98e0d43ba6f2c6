"""Networks: MLP and Nature CNN trunks, actor-critic with categorical or diagonal Gaussian heads.

The probability distributions are written as a few tensor functions instead of
``torch.distributions`` objects: a PPO minibatch update on small MLPs is bound by per-op
overhead, and the distribution classes add argument validation and object creation to every call.
For the same reason an MLP runs as one autograd node with its backward pass written out
(:class:`MLP`), and tanh is computed from the CPU's much faster sigmoid kernel (:func:`tanh`).
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------- activations
_NEG_ONE = torch.tensor(-1.0)  # a 0-d tensor operand: a Python scalar costs a conversion on every call


def _tanh_half(z: torch.Tensor) -> torch.Tensor:
    """tanh(z / 2) = 2 sigmoid(z) - 1, overwriting ``z``."""
    return torch.add(_NEG_ONE, z.sigmoid_(), alpha=2)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _tanh_half(x + x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)  # grad * (1 - y^2), what torch.tanh's backward runs


def tanh(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: within 2e-7 of ``torch.tanh``, with the same gradient 1 - tanh(x)^2.

    PyTorch's CPU tanh kernel is several times slower than its sigmoid kernel (~45 us against
    ~8 us on a [256, 64] float32 tensor on the AMD EPYC machines of DESIGN.md), which made tanh
    the largest single cost of a small-MLP PPO update there.
    """
    if x.requires_grad and torch.is_grad_enabled():
        return _Tanh.apply(x)
    return _tanh_half(x + x)


class Tanh(nn.Module):
    """``nn.Tanh`` computed by :func:`tanh`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU}


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = math.sqrt(2), ortho: bool = True) -> nn.Module:
    """Orthogonal weights scaled by ``std`` and zero biases (Engstrom et al. 2020, "layer scaling").

    With ``ortho=False`` the layer keeps PyTorch's default initialisation.
    """
    if ortho:
        nn.init.orthogonal_(layer.weight, std)
        nn.init.zeros_(layer.bias)
    return layer


# ----------------------------------------------------------------- MLP with written-out backpropagation
def _mlp_forward(activation: str, x: torch.Tensor, params: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, list]:
    """y = MLP(x) for ``params`` = (W_1, b_1, ..., W_L, b_L), no autograd; also returns [h_0 = x, ..., h_{L-1}]."""
    outs = [x]
    for weight, bias in zip(params[0:-2:2], params[1:-2:2]):
        if activation == "tanh":  # a_l computed as 2 a_l in the matrix product (exact): tanh(a) = 2 sigmoid(2a) - 1
            outs.append(_tanh_half(torch.addmm(bias, outs[-1], weight.t(), beta=2, alpha=2)))
        else:
            outs.append(torch.addmm(bias, outs[-1], weight.t()).relu_())
    return torch.addmm(params[-1], outs[-1], params[-2].t()), outs


def _mlp_backward(activation: str, grad: torch.Tensor, outs: tuple | list, params: tuple[torch.Tensor, ...],
                  input_grad: bool) -> tuple[torch.Tensor | None, list]:
    """Backpropagation through :func:`_mlp_forward` from ``grad`` = dLoss/dy; returns dLoss/dx and [dLoss/dW_1, dLoss/db_1, ...].

        d_L = dLoss/dy,   d_l = (d_{l+1} W_{l+1}) * f'(a_l),   f'(a) = 1 - h^2 (tanh) or [h > 0] (relu)
        dLoss/dW_l = d_l^T h_{l-1},   dLoss/db_l = sum over the batch of d_l
    """
    grads: list = [None] * len(params)
    for l in range(len(outs) - 1, -1, -1):  # grad = d_{l+1} in the 1-based notation above
        weight, h_in = params[2 * l], outs[l]
        if weight.shape[1] < weight.shape[0]:  # a widening layer (obs -> 64): this orientation is ~4x faster
            grads[2 * l] = h_in.t().mm(grad).t()
        else:
            grads[2 * l] = grad.t().mm(h_in)
        grads[2 * l + 1] = grad.sum(0)
        if l > 0:
            grad = grad.mm(weight)
            if activation == "tanh":
                grad = torch.ops.aten.tanh_backward(grad, h_in)
            else:
                grad = torch.ops.aten.threshold_backward(grad, h_in, 0)
    return (grad.mm(params[0]) if input_grad else None), grads


class _MLPFunction(torch.autograd.Function):
    """Several MLPs on the same input as one autograd node (``sizes``: parameter tensors per MLP).

    Autograd would record three nodes per layer (addmm, transpose, activation) and run each
    through its engine; one node with the backward pass written out costs about half as much
    outside the matrix products.
    """

    @staticmethod
    def forward(ctx, activation: str, sizes: tuple[int, ...], x: torch.Tensor, *params: torch.Tensor):
        ys, saved, start = [], [], 0
        for n in sizes:
            y, outs = _mlp_forward(activation, x, params[start:start + n])
            ys.append(y)
            saved += outs
            start += n
        ctx.activation, ctx.sizes = activation, sizes
        ctx.save_for_backward(*saved, *params)
        return tuple(ys)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        n_outs = sum(ctx.sizes) // 2  # one saved h_{l-1} per layer
        outs, params = saved[:n_outs], saved[n_outs:]
        grad_x, param_grads, o, p = None, [], 0, 0
        for n, grad in zip(ctx.sizes, grads):
            gx, g = _mlp_backward(ctx.activation, grad, outs[o:o + n // 2], params[p:p + n], ctx.needs_input_grad[2])
            grad_x = gx if grad_x is None else grad_x + gx
            param_grads += g
            o, p = o + n // 2, p + n
        return (None, None, grad_x, *param_grads)


class MLP(nn.Sequential):
    """Linear layers with ``activation`` between them: an ``nn.Sequential`` (same modules, same
    ``state_dict`` keys) whose forward runs as one autograd node with the backward pass written
    out (:class:`_MLPFunction`) instead of calling each submodule (so hooks on the submodules
    do not fire; hooks on the MLP itself do).
    """

    def __init__(self, layers: list[nn.Module], activation: str):
        super().__init__(*layers)
        self.activation = activation
        self._params = tuple(p for m in layers if isinstance(m, nn.Linear) for p in (m.weight, m.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MLP.parallel(x, self)[0]

    @staticmethod
    def parallel(x: torch.Tensor, *mlps: MLP) -> tuple[torch.Tensor, ...]:
        """``tuple(m(x) for m in mlps)`` for MLPs with one activation, as a single autograd node."""
        if x.dim() != 2:  # [..., in] -> [-1, in] -> [..., out]
            ys = MLP.parallel(x.reshape(-1, x.shape[-1]), *mlps)
            return tuple(y.reshape(*x.shape[:-1], -1) for y in ys)
        activation = mlps[0].activation
        if torch.is_grad_enabled():
            params = tuple(p for m in mlps for p in m._params)
            return _MLPFunction.apply(activation, tuple(len(m._params) for m in mlps), x, *params)
        return tuple(_mlp_forward(activation, x, m._params)[0] for m in mlps)


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
    return MLP(layers, activation)


def flatten_parameters(module: nn.Module) -> nn.Parameter:
    """Put every parameter of ``module`` and its gradient into one contiguous tensor; return it as a Parameter.

    Afterwards each parameter's ``data`` and ``grad`` are views into the returned tensor and its
    ``grad``, so gradient zeroing, clipping and an optimiser step over the whole network are one
    op each instead of one per parameter. Backward accumulates into the gradient views in place:
    zero the flat gradient between steps, never set a gradient to ``None``.
    """
    params = list(module.parameters())
    if len({(p.device, p.dtype) for p in params}) != 1:
        raise ValueError("flatten_parameters needs all parameters on one device with one dtype")
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    grad = torch.zeros_like(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.data = flat[offset:offset + n].view_as(p)
        p.grad = grad[offset:offset + n].view_as(p)
        offset += n
    flat = nn.Parameter(flat)  # shares the storage the views point into
    flat.grad = grad
    return flat


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
    """H = sum_i (log sigma_i + (1 + log 2 pi) / 2), the same for every state: [batch]."""
    return (log_std + 0.5 * (1.0 + LOG_2PI)).sum(-1).expand(batch)


# ----------------------------------------------------------------- actor-critic
class ActorCritic(nn.Module):
    """Policy pi(a|s) and value V(s) for discrete (categorical) or continuous (diagonal Gaussian) actions.

    Vector observations get two separate MLPs (actor, critic); image observations share one
    Nature CNN trunk with two linear heads (``shared_trunk``; a subclass may share an MLP trunk the same way). Output layers are scaled as in the PPO literature:
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
        self.shared_trunk = len(obs_shape) == 3  # one trunk (the CNN) feeding two linear heads
        if self.shared_trunk:
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

    def _mlp_input(self, obs: torch.Tensor) -> torch.Tensor:
        """What the vector trunk (Identity or Flatten) returns, without the module calls (~2 us each)."""
        return obs.flatten(1) if obs.dim() > 2 else obs

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): obs [B, ...] -> [B]."""
        if self.shared_trunk:
            return self.critic(self.trunk(obs)).squeeze(-1)
        return MLP.parallel(self._mlp_input(obs), self.critic)[0].squeeze(-1)

    def policy_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits [B, A] (discrete) or Gaussian means [B, A] (continuous)."""
        if self.shared_trunk:
            return self.actor(self.trunk(obs))
        return MLP.parallel(self._mlp_input(obs), self.actor)[0]

    def policy_params_autograd(self, obs: torch.Tensor) -> torch.Tensor:
        """:meth:`policy_params` through plain autograd ops, each layer a module call.

        :class:`MLP` runs as one autograd node whose backward pass is written out: right for first derivatives,
        but not differentiable twice. Fisher-vector products (NPG, TRPO) need this path.
        """
        if self.shared_trunk:
            return self.actor(self.trunk(obs))
        return nn.Sequential.forward(self.actor, self._mlp_input(obs))

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
        if self.shared_trunk:  # one trunk pass for both heads
            features = self.trunk(obs)
            return self.actor(features), self.critic(features).squeeze(-1)
        params, value = MLP.parallel(self._mlp_input(obs), self.actor, self.critic)  # one autograd node
        return params, value.squeeze(-1)

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
