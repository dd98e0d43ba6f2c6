"""The members' networks stacked along a leading member dimension, and optimisers with per-member settings.

P members' actor-critics are P copies of one :class:`rlrun.networks.ActorCritic` layout. Here their parameters
live in one tensor ``flat`` [P, D] (member p's row is its parameters in the module's order, the layout of
:func:`rlrun.fused.flatten_parameters`), and each layer's weight is a view ``[P, out, in]`` into it. A layer of
all members is one batched matrix product (``torch.baddbmm``), so a forward and backward pass costs the same
number of ops for 64 members as for one. The gradient lands in ``flat.grad`` [P, D]: gradient clipping and the
optimiser step are a few ops on that tensor, with each member's norm, learning rate and epsilon a column [P, 1].

Members never mix: member p's outputs depend only on row p of ``flat`` and on its own inputs, the loss the
population minimises is the sum of the members' losses (so member p's gradient is its own loss's), and every
random draw has a fixed size (one member's episodes never shift another's random stream).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from rlrun.fused import tanh as fast_tanh
from rlrun.networks import (
    ActorCritic,
    categorical_log_prob,
    categorical_log_prob_entropy,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
)

# The layer views' gradients are views into flat.grad with flat's strides, which autograd reports as not
# obeying its layout contract (a performance note: it then accumulates in place instead of stealing the buffer,
# which is exactly what is wanted here).
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class StackedActorCritic(nn.Module):
    """P actor-critics (vector observations, MLP actor and critic) as one module over [P, B, ...] batches.

    Built from P initialised :class:`ActorCritic` members (so each starts as a single run would); ``member(p)``
    gives member p's parameters back as an ``ActorCritic`` state dict. Inputs and outputs carry the member
    dimension first; :meth:`act` also takes the flat [P * N, ...] batch of a population's vector env.
    """

    def __init__(self, members: list[ActorCritic], activation: str, fast_tanh_on: bool = False):
        super().__init__()
        first = members[0]
        if first.shared_trunk or not isinstance(first.trunk, nn.Identity):
            raise ValueError("population training stacks MLP actor-critics over vector observations only")
        self.num_members, self.discrete = len(members), first.discrete
        self.names = [name for name, _ in first.named_parameters()]
        self.shapes = [p.shape for p in first.parameters()]
        rows = [torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for m in members]
        self.flat = nn.Parameter(torch.stack(rows))  # [P, D]
        self.flat.grad = torch.zeros_like(self.flat)
        self.views: dict[str, nn.Parameter] = {}
        offset = 0
        for name, shape in zip(self.names, self.shapes):
            n = math.prod(shape)
            view = nn.Parameter(torch.empty(0), requires_grad=True)
            view.data = self.flat.data[:, offset:offset + n].view(self.num_members, *shape)
            view.grad = self.flat.grad[:, offset:offset + n].view(self.num_members, *shape)
            self.views[name] = view
            offset += n
        self.columns = {name: (start, start + math.prod(shape))
                        for name, shape, start in zip(self.names, self.shapes, _offsets(self.shapes))}
        self.actor = self._layers("actor.")
        self.critic = self._layers("critic.")
        self.log_std = self.views.get("log_std")  # [P, A] (continuous actions)
        if activation == "tanh":
            self.activation = fast_tanh if fast_tanh_on else torch.tanh
        else:
            self.activation = torch.relu

    def _layers(self, prefix: str) -> list[tuple[nn.Parameter, nn.Parameter]]:
        names = [n for n in self.names if n.startswith(prefix)]
        return [(self.views[w], self.views[b]) for w, b in zip(names[0::2], names[1::2])]

    def columns_of(self, prefix: str) -> slice:
        """The columns of ``flat`` that hold the parameters whose names start with ``prefix`` (contiguous)."""
        spans = [self.columns[n] for n in self.names if n.startswith(prefix)]
        return slice(spans[0][0], spans[-1][1])

    def mlp(self, layers: list[tuple[nn.Parameter, nn.Parameter]], x: torch.Tensor) -> torch.Tensor:
        """x [P, B, in] -> [P, B, out]: h_l = f(h_{l-1} W_l^T + b_l) for every member at once, no f after the last."""
        for i, (weight, bias) in enumerate(layers):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))  # [P, B, out]
            if i < len(layers) - 1:
                x = self.activation(x)
        return x

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): obs [P, B, obs_dim] -> [P, B]."""
        return self.mlp(self.critic, obs).squeeze(-1)

    def policy_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits or Gaussian means [P, B, A]."""
        return self.mlp(self.actor, obs)

    def log_prob_entropy(self, params: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and the entropy of pi(.|s), [P, B] each, from the policy parameters [P, B, A]."""
        if self.discrete:
            return categorical_log_prob_entropy(params, action)
        log_std = self.log_std.unsqueeze(1)  # [P, 1, A]
        return gaussian_log_prob(params, log_std, action), gaussian_entropy(log_std, 1).expand(params.shape[:2])

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), entropy and V(s), [P, B] each, with gradients."""
        logp, entropy = self.log_prob_entropy(self.policy_params(obs), action)
        return logp, entropy, self.value(obs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions and log-probabilities for the population's flat batch obs [P * N, ...] (member-major)."""
        P = self.num_members
        params = self.policy_params(obs.reshape(P, -1, obs.shape[-1]))  # [P, N, A]
        if self.discrete:
            action = params.argmax(-1) if deterministic else categorical_sample(params)  # [P, N]
            logp = categorical_log_prob(params, action)
            return action.reshape(-1), logp.reshape(-1)
        log_std = self.log_std.unsqueeze(1)  # [P, 1, A]
        action = params if deterministic else params + torch.randn_like(params) * log_std.exp()
        logp = gaussian_log_prob(params, log_std, action)
        return action.reshape(-1, action.shape[-1]), logp.reshape(-1)

    def member(self, p: int) -> dict[str, torch.Tensor]:
        """Member ``p``'s parameters as an :class:`ActorCritic` state dict (copies)."""
        return {name: view[p].clone() for name, view in self.views.items()}

    def load_member(self, p: int, state: dict[str, torch.Tensor]) -> None:
        """Put an :class:`ActorCritic` state dict into member ``p``."""
        with torch.no_grad():
            for name, view in self.views.items():
                view[p].copy_(state[name])


def _offsets(shapes: list[torch.Size]) -> list[int]:
    out, offset = [], 0
    for shape in shapes:
        out.append(offset)
        offset += math.prod(shape)
    return out


def member_grad_norm(grad: torch.Tensor) -> torch.Tensor:
    """Each member's global gradient norm ||g_p||_2 from the stacked gradient [P, D]: [P]."""
    return torch.linalg.vector_norm(grad, dim=1)


def clip_member_grads(grad: torch.Tensor, max_norm: torch.Tensor) -> torch.Tensor:
    """Global gradient clipping per member, in place: g_p <- g_p * min(1, c_p / (||g_p||_2 + 1e-6)).

    ``grad`` [P, D], ``max_norm`` [P] (inf where a member does not clip). As ``torch.nn.utils.clip_grad_norm_``
    does for one network. Returns the norms before clipping [P].
    """
    norm = member_grad_norm(grad)
    grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0).unsqueeze(1))
    return norm


class StackedAdam:
    """Adam (Kingma & Ba 2015) on stacked parameters [P, D] with a learning rate and epsilon per member:

        m <- b1 m + (1 - b1) g,    v <- b2 v + (1 - b2) g^2
        theta <- theta - lr_p / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps_p)

    as ``torch.optim.Adam`` computes it, so a member follows the arithmetic of the run it would be alone. ``lr`` is set per member before a step: a [P, 1] column (0 freezes a member).
    """

    def __init__(self, param: torch.Tensor, lr: torch.Tensor, eps: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999)):
        self.param, self.betas = param, betas
        self.lr = lr.reshape(-1, 1).to(param)  # [P, 1]
        self.eps = eps.reshape(-1, 1).to(param)  # [P, 1]
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bias1, bias2_sqrt = 1 - b1 ** self.steps, math.sqrt(1 - b2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        self.param.sub_(self.exp_avg / denom * (self.lr / bias1))  # lr_p / (1 - b1^t): [P, 1]

    def member_state(self, p: int, columns: slice | None = None) -> dict[str, Any]:
        """Member ``p``'s moments (over ``columns``) in ``torch.optim.Adam``'s per-parameter state layout."""
        cols = columns or slice(None)
        return {"step": torch.tensor(float(self.steps)), "exp_avg": self.exp_avg[p, cols].clone(),
                "exp_avg_sq": self.exp_avg_sq[p, cols].clone()}

    def load_member_state(self, p: int, state: dict[str, Any], columns: slice | None = None) -> None:
        cols = columns or slice(None)
        self.exp_avg[p, cols] = state["exp_avg"].reshape(-1)
        self.exp_avg_sq[p, cols] = state["exp_avg_sq"].reshape(-1)
        self.steps = int(state["step"])


class StackedRMSprop:
    """RMSprop (Tieleman & Hinton 2012, as ``torch.optim.RMSprop`` without momentum or centring) per member:

        v <- alpha_p v + (1 - alpha_p) g^2,    theta <- theta - lr_p * g / (sqrt(v) + eps_p)
    """

    def __init__(self, param: torch.Tensor, lr: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor):
        self.param = param
        self.lr = lr.reshape(-1, 1).to(param)
        self.eps = eps.reshape(-1, 1).to(param)
        self.alpha = alpha.reshape(-1, 1).to(param)
        self.square_avg = torch.zeros_like(param)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        self.steps += 1
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad * (1 - self.alpha))
        self.param.sub_(grad / self.square_avg.sqrt().add_(self.eps) * self.lr)

    def member_state(self, p: int, columns: slice | None = None) -> dict[str, Any]:
        cols = columns or slice(None)
        return {"step": torch.tensor(float(self.steps)), "square_avg": self.square_avg[p, cols].clone()}

    def load_member_state(self, p: int, state: dict[str, Any], columns: slice | None = None) -> None:
        cols = columns or slice(None)
        self.square_avg[p, cols] = state["square_avg"].reshape(-1)
        self.steps = int(state["step"])
