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
from typing import Any

import torch
from torch import nn

from rlrun.networks import (
    ActorCritic,
    categorical_log_prob,
    categorical_log_prob_entropy,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
)

Layer = tuple[int, int, int, int, int, int]
"""One linear layer's place in a member's row of ``flat``: (weight start, weight stop, bias start, bias stop,
out features, in features)."""

Norm = tuple[int, int, int, int, float]
"""One LayerNorm's place in a member's row of ``flat``: (weight start, weight stop, bias start, bias stop, eps)."""


class Stacked(nn.Module):
    """P copies of one network's parameters as rows of one tensor ``flat`` [P, D], in ``order`` (names)."""

    def __init__(self, members: list[nn.Module], order: list[str]):
        super().__init__()
        shapes = {name: p.shape for name, p in members[0].named_parameters()}
        self.num_members = len(members)
        self.shapes = {name: shapes[name] for name in order}
        self.columns: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, shape in self.shapes.items():
            self.columns[name] = (offset, offset + math.prod(shape))
            offset += math.prod(shape)
        rows = []
        for member in members:
            params = dict(member.named_parameters())
            rows.append(torch.cat([params[name].detach().reshape(-1) for name in order]))
        self.flat = nn.Parameter(torch.stack(rows))  # [P, D]: member p's parameters in ``order``

    def layout(self, prefix: str = "") -> tuple[Layer, ...]:
        """The Linear layers (weight, bias pairs in order) whose names start with ``prefix``."""
        names = [n for n in self.shapes if n.startswith(prefix)]
        return tuple((*self.columns[w], *self.columns[b], *self.shapes[w]) for w, b in zip(names[0::2], names[1::2]))

    def view(self, name: str) -> torch.Tensor:
        """Parameter ``name`` of every member: a view [P, *shape] into ``flat``."""
        start, stop = self.columns[name]
        return self.flat[:, start:stop].view(self.num_members, *self.shapes[name])

    def member(self, p: int, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Member ``p``'s parameters (of ``flat``, default its own) as the member network's state dict (copies)."""
        flat = (self.flat if flat is None else flat).detach()
        return {name: flat[p, a:b].reshape(self.shapes[name]).clone() for name, (a, b) in self.columns.items()}

    def load_member(self, p: int, state: dict[str, torch.Tensor]) -> None:
        """Put a member network's state dict into member ``p``."""
        with torch.no_grad():
            for name, (a, b) in self.columns.items():
                self.flat[p, a:b] = state[name].reshape(-1)


class StackedActorCritic(Stacked):
    """P actor-critics (vector observations, MLP actor and critic) as one module over [P, B, ...] batches.

    Built from P initialised :class:`ActorCritic` members (so each starts as a single run would); ``member(p)``
    gives member p's parameters back as an ``ActorCritic`` state dict. Inputs and outputs carry the member
    dimension first; :meth:`act` also takes the flat [P * N, ...] batch of a population's vector env.

    ``fused=False`` runs each layer as ``torch.baddbmm`` on views of ``flat`` under autograd (the reading
    path); ``fused=True`` runs actor and critic as one autograd node, :class:`StackedMLPs`, whose backward
    pass is written out, with tanh computed from sigmoid in place (the ``algo.fused`` speed path; a test keeps
    the two equal).
    """

    def __init__(self, members: list[ActorCritic], activation: str, fused: bool = False):
        first = members[0]
        if first.shared_trunk or not isinstance(first.trunk, nn.Identity):
            raise ValueError("population training stacks MLP actor-critics over vector observations only")
        # The actor's parameters (its MLP, then the Gaussian's log std) first, the critic's after them, so each
        # part is a contiguous block of columns that an optimiser of its own can step (VPG's two learning rates).
        names = [name for name, _ in first.named_parameters()]
        super().__init__(members, sorted(names, key=lambda name: name.startswith("critic.")))  # stable sort
        self.discrete, self.activation, self.fused = first.discrete, activation, fused
        critic = self.columns[next(n for n in self.shapes if n.startswith("critic."))][0]
        self.critic_columns = slice(critic, self.flat.shape[1])
        self.actor_columns = slice(0, critic)
        self.layouts = (self.layout("actor."), self.layout("critic."))

    def mlps(self, x: torch.Tensor, actor: bool = True, critic: bool = True) -> list[torch.Tensor]:
        """The actor's and/or the critic's outputs [P, B, out] for x [P, B, in]."""
        layouts = [lay for lay, on in zip(self.layouts, (actor, critic)) if on]
        if self.fused:
            return list(StackedMLPs.apply(layouts, self.activation, x, self.flat))
        return [plain_mlp(self.flat, layout, self.activation, x) for layout in layouts]

    @property
    def log_std(self) -> torch.Tensor:
        return self.view("log_std")  # [P, A] (continuous actions)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(s): obs [P, B, obs_dim] -> [P, B]."""
        return self.mlps(obs, actor=False)[0].squeeze(-1)

    def policy_params(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits or Gaussian means [P, B, A]."""
        return self.mlps(obs, critic=False)[0]

    def policy_params_autograd(self, obs: torch.Tensor) -> torch.Tensor:
        """:meth:`policy_params` on the plain path, differentiable twice (Fisher-vector products need that)."""
        return plain_mlp(self.flat, self.layouts[0], self.activation, obs)

    def log_prob_entropy(self, params: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and the entropy of pi(.|s), [P, B] each, from the policy parameters [P, B, A]."""
        if self.discrete:
            return categorical_log_prob_entropy(params, action)
        log_prob = gaussian_log_prob(params, self.log_std.unsqueeze(1), action)  # log_std [P, 1, A]
        return log_prob, gaussian_entropy(self.log_std, params.shape[1])

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """log pi(a|s), entropy and V(s), [P, B] each, with gradients, from one pass over obs."""
        params, value = self.mlps(obs)
        logp, entropy = self.log_prob_entropy(params, action)
        return logp, entropy, value.squeeze(-1)

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


class StackedQNetwork(Stacked):
    """P plain MLP Q-networks as one module: obs [P, B, obs_dim] -> Q-values [P, B, A]. A member is
    :class:`rlrun.networks.QNetwork` without dueling, noisy or C51 heads (DQN), or PQN's
    :func:`rlrun.algos.pqn.pqn_network`: Linear layers with ReLU between them and, optionally, an
    ``nn.LayerNorm`` after each hidden Linear (before its ReLU). A target network is a second tensor like
    ``flat``, evaluated with :meth:`q_values` ``(obs, target)``."""

    def __init__(self, members: list[nn.Module]):
        super().__init__(members, [name for name, _ in members[0].named_parameters()])
        self.layers, self.norms = self.q_layout(members[0])

    def q_layout(self, member: nn.Module) -> tuple[tuple[Layer, ...], tuple[Norm | None, ...] | None]:
        """The Linear layers in order, and the LayerNorm after each hidden one (None: no LayerNorm at all)."""
        names, norms = [], []
        for name, module in member.named_modules():
            prefix = f"{name}." if name else ""
            if isinstance(module, nn.Linear):
                names += [f"{prefix}weight", f"{prefix}bias"]
                norms.append(None)
            elif isinstance(module, nn.LayerNorm):
                over_features = module.elementwise_affine and len(module.normalized_shape) == 1
                if not norms or norms[-1] is not None or not over_features:
                    raise ValueError("population training stacks a LayerNorm over features right after a Linear only")
                norms[-1] = (*self.columns[f"{prefix}weight"], *self.columns[f"{prefix}bias"], module.eps)
            elif next(module.children(), None) is None \
                    and not isinstance(module, (nn.ReLU, nn.Identity, nn.Sequential, nn.ModuleList)):
                raise ValueError(f"population training stacks Linear, LayerNorm and ReLU Q-networks, not {module}")
        layers = tuple((*self.columns[w], *self.columns[b], *self.shapes[w]) for w, b in zip(names[0::2], names[1::2]))
        return layers, (tuple(norms[:-1]) if any(n is not None for n in norms) else None)

    def q_values(self, obs: torch.Tensor, flat: torch.Tensor | None = None) -> torch.Tensor:
        """Q(s, .) [P, B, A] of the online parameters, or of ``flat`` (a target network's, no gradient).
        With LayerNorm the layers run on the plain autograd path (the fused one has no LayerNorm)."""
        if flat is not None or self.norms is not None:
            return plain_mlp(self.flat if flat is None else flat, self.layers, "relu", obs, self.norms)
        return StackedMLPs.apply([self.layers], "relu", obs, self.flat)[0]


def plain_mlp(flat: torch.Tensor, layout: tuple[Layer, ...], activation: str, x: torch.Tensor,
              norms: tuple[Norm | None, ...] | None = None) -> torch.Tensor:
    """x [P, B, in] -> [P, B, out]: h_l = f(h_{l-1} W_l^T + b_l) for every member at once, no f after the last;
    with ``norms``, h_l = f(LayerNorm_l(h_{l-1} W_l^T + b_l)) where hidden layer l has one."""
    P = flat.shape[0]
    for i, (w0, w1, b0, b1, out, inp) in enumerate(layout):
        weight = flat[:, w0:w1].view(P, out, inp)
        bias = flat[:, b0:b1].view(P, 1, out)
        x = torch.baddbmm(bias, x, weight.transpose(1, 2))  # [P, B, out]
        if i < len(layout) - 1:
            if norms is not None and norms[i] is not None:
                x = stacked_layer_norm(flat, norms[i], x)
            x = torch.tanh(x) if activation == "tanh" else torch.relu(x)
    return x


def stacked_layer_norm(flat: torch.Tensor, norm: Norm, x: torch.Tensor) -> torch.Tensor:
    """``nn.LayerNorm`` over the last dimension with each member's own scale and shift, x [P, B, H] -> [P, B, H]:

        y = (x - E[x]) / sqrt(Var[x] + eps) * gamma_p + beta_p     (E, Var over the H features, Var biased)
    """
    w0, w1, b0, b1, eps = norm
    P, H = flat.shape[0], x.shape[-1]
    normed = nn.functional.layer_norm(x, (H,), eps=eps)  # [P, B, H], no affine part
    return torch.addcmul(flat[:, b0:b1].view(P, 1, H), normed, flat[:, w0:w1].view(P, 1, H))


class StackedMLPs(torch.autograd.Function):
    """Several stacked MLPs on one input as one autograd node, the backward pass written out (as
    :class:`rlrun.fused.FusedMLP` does for one network), gradients straight into a [P, D] tensor:

        forward:   a_l = h_{l-1} W_l^T + b_l,   h_l = f(a_l)   (tanh(a) = 2 sigmoid(2a) - 1, in place)
        backward:  d_L = dLoss/dy,   dW_l = d_l^T h_{l-1},   db_l = sum_B d_l,   d_{l-1} = (d_l W_l) * f'(a_{l-1})
    """

    @staticmethod
    def forward(ctx, layouts: list[tuple[Layer, ...]], activation: str, x: torch.Tensor, flat: torch.Tensor):
        P, outputs, saved = flat.shape[0], [], []
        for layout in layouts:
            h = x
            for i, (w0, w1, b0, b1, out, inp) in enumerate(layout):
                saved.append(h)
                weight = flat[:, w0:w1].view(P, out, inp)
                bias = flat[:, b0:b1].view(P, 1, out)
                if i == len(layout) - 1:
                    h = torch.baddbmm(bias, h, weight.transpose(1, 2))
                elif activation == "tanh":  # 2a from the product itself, then 2 sigmoid(2a) - 1 in place
                    h = torch.baddbmm(bias, h, weight.transpose(1, 2), beta=2, alpha=2).sigmoid_().mul_(2).sub_(1)
                else:
                    h = torch.baddbmm(bias, h, weight.transpose(1, 2)).relu_()
            outputs.append(h)
        ctx.layouts, ctx.activation = layouts, activation
        ctx.save_for_backward(flat, *saved)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor):
        flat, *saved = ctx.saved_tensors
        P = flat.shape[0]
        grad_flat = torch.zeros_like(flat)
        grad_x = None
        k = 0
        for layout, grad in zip(ctx.layouts, grads):
            inputs = saved[k:k + len(layout)]
            k += len(layout)
            for i in range(len(layout) - 1, -1, -1):
                w0, w1, b0, b1, out, inp = layout[i]
                h_in = inputs[i]
                if out > inp:  # a widening layer (obs -> 64): dW^T = h^T d is several times faster than d^T h
                    grad_w = torch.bmm(h_in.transpose(1, 2), grad).transpose(1, 2)
                else:
                    grad_w = torch.bmm(grad.transpose(1, 2), h_in)  # [P, out, in]
                grad_flat[:, w0:w1].view(P, out, inp).copy_(grad_w)
                grad_flat[:, b0:b1].copy_(grad.sum(1))
                if i > 0 or ctx.needs_input_grad[2]:
                    grad = torch.bmm(grad, flat[:, w0:w1].view(P, out, inp))  # [P, B, in]
                    if i > 0:
                        if ctx.activation == "tanh":
                            grad = torch.ops.aten.tanh_backward(grad, h_in)  # * (1 - h^2)
                        else:
                            grad = torch.ops.aten.threshold_backward(grad, h_in, 0)
                    else:
                        grad_x = grad if grad_x is None else grad_x + grad
        return None, None, grad_x, grad_flat


def relative(columns: slice | None, own: slice) -> slice:
    """``columns`` of the stacked parameters as columns of an optimiser's own block ``own`` (all of it: None)."""
    if columns is None:
        return slice(None)
    start = own.start or 0
    return slice(columns.start - start, columns.stop - start)


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

    as ``torch.optim.Adam`` computes it, so a member follows the arithmetic of the run it would be alone.
    ``lr`` is set per member before a step: a [P, 1] column (0 freezes a member).
    """

    def __init__(self, param: torch.Tensor, lr: torch.Tensor, eps: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), columns: slice = slice(None)):
        self.columns = columns  # the columns of the stacked parameters [P, D] it steps
        self.param, self.betas = param[:, columns], betas
        self.lr = lr.reshape(-1, 1).to(param)  # [P, 1]
        self.eps = eps.reshape(-1, 1).to(param)  # [P, 1]
        self.exp_avg = torch.zeros_like(self.param)
        self.exp_avg_sq = torch.zeros_like(self.param)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        """One step with the gradient of the stacked parameters [P, D] (its own columns of it)."""
        grad = grad[:, self.columns]
        b1, b2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bias1, bias2_sqrt = 1 - b1 ** self.steps, math.sqrt(1 - b2 ** self.steps)
        denom = (self.exp_avg_sq.sqrt() / bias2_sqrt).add_(self.eps)
        self.param.sub_(self.exp_avg / denom * (self.lr / bias1))  # lr_p / (1 - b1^t): [P, 1]

    def member_state(self, p: int, columns: slice | None = None) -> dict[str, Any]:
        """Member ``p``'s moments (over ``columns`` of the stacked parameters) in ``torch.optim.Adam``'s layout."""
        cols = relative(columns, self.columns)
        return {"step": torch.tensor(float(self.steps)), "exp_avg": self.exp_avg[p, cols].clone(),
                "exp_avg_sq": self.exp_avg_sq[p, cols].clone()}

    def load_member_state(self, p: int, state: dict[str, Any], columns: slice | None = None) -> None:
        cols = relative(columns, self.columns)
        self.exp_avg[p, cols] = state["exp_avg"].reshape(-1)
        self.exp_avg_sq[p, cols] = state["exp_avg_sq"].reshape(-1)
        self.steps = int(state["step"])


class StackedRMSprop:
    """RMSprop (Tieleman & Hinton 2012, as ``torch.optim.RMSprop`` without momentum or centring) per member:

        v <- alpha_p v + (1 - alpha_p) g^2,    theta <- theta - lr_p * g / (sqrt(v) + eps_p)
    """

    def __init__(self, param: torch.Tensor, lr: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor,
                 columns: slice = slice(None)):
        self.columns = columns
        self.param = param[:, columns]
        self.lr = lr.reshape(-1, 1).to(param)
        self.eps = eps.reshape(-1, 1).to(param)
        self.alpha = alpha.reshape(-1, 1).to(param)
        self.square_avg = torch.zeros_like(self.param)
        self.steps = 0

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        grad = grad[:, self.columns]
        self.steps += 1
        self.square_avg.mul_(self.alpha).addcmul_(grad, grad * (1 - self.alpha))
        self.param.sub_(grad / self.square_avg.sqrt().add_(self.eps) * self.lr)

    def member_state(self, p: int, columns: slice | None = None) -> dict[str, Any]:
        cols = relative(columns, self.columns)
        return {"step": torch.tensor(float(self.steps)), "square_avg": self.square_avg[p, cols].clone()}

    def load_member_state(self, p: int, state: dict[str, Any], columns: slice | None = None) -> None:
        cols = relative(columns, self.columns)
        self.square_avg[p, cols] = state["square_avg"].reshape(-1)
        self.steps = int(state["step"])


class StackedRAdam(StackedAdam):
    """RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond") on stacked parameters
    [P, D] with a learning rate and epsilon per member, as ``torch.optim.RAdam`` computes it (no weight decay):

        m <- b1 m + (1 - b1) g,    v <- b2 v + (1 - b2) g^2,    m_hat = m / (1 - b1^t)
        rho_inf = 2 / (1 - b2) - 1,    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
        rho_t > 5:  r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
                    theta <- theta - lr_p * m_hat * r_t * sqrt(1 - b2^t) / (sqrt(v) + eps_p)
        otherwise:  theta <- theta - lr_p * m_hat      (the variance of the adaptive rate is not yet tractable)

    The members step together, so t, rho_t and r_t are shared; the moments and the checkpoint layout are Adam's.
    """

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        grad = grad[:, self.columns]
        b1, b2 = self.betas
        self.steps += 1
        t = self.steps
        self.exp_avg.lerp_(grad, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        bias1, bias2 = 1 - b1 ** t, 1 - b2 ** t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * t * b2 ** t / bias2
        step = self.exp_avg / bias1 * self.lr  # m_hat * lr_p: [P, D]
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            step.mul_(math.sqrt(bias2) / self.exp_avg_sq.sqrt().add_(self.eps)).mul_(rect)
        self.param.sub_(step)
