"""The speed path for small networks on a CPU, behind ``algo.fused=true``; the plain path is in networks.py.

A PPO minibatch update of two 64x64 MLPs is bound by per-op overhead, not arithmetic (DESIGN.md,
Performance). What this module does about it, each piece checked against plain PyTorch by
``tests/test_networks.py`` and ``tests/test_fused.py``:

* :class:`FusedMLP`: an ``nn.Sequential`` of the same Linear layers (same ``state_dict`` keys) that runs as
  one autograd node with its backward pass written out, and several MLPs on one input as one node
  (:meth:`FusedMLP.parallel`);
* :func:`tanh`: tanh(x) = 2 sigmoid(2x) - 1, because PyTorch's CPU tanh kernel is several times slower
  than its sigmoid kernel;
* :class:`FlatAdam`: every parameter and gradient of a network in one flat tensor, so zeroing, gradient
  clipping and Adam are one op each, and Adam's fused kernel called without ``Optimizer.step``'s Python
  bookkeeping. That kernel, ``torch._fused_adam_``, and ``Optimizer._optimizer_step_pre_hooks`` are private
  torch API: ``tests/test_fused.py`` fails if a torch release changes them.

Nothing here is needed to read an algorithm: with ``algo.fused=false`` the same algorithms run on
``nn.Linear``, ``nn.Tanh`` and ``optimizer.step()``. docs/benchmarks.md records what the switch is worth.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch
from torch import nn

# ----------------------------------------------------------------- tanh from sigmoid
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
    """``nn.Tanh`` computed by :func:`tanh` (what :func:`fused_mlp` puts between the layers of a tanh MLP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh(x)


# ----------------------------------------------------------------- an MLP with its backpropagation written out
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


class FusedMLP(nn.Sequential):
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
        return FusedMLP.parallel(x, self)[0]

    def forward_layers(self, x: torch.Tensor) -> torch.Tensor:
        """The layers called one by one, as ``nn.Sequential`` would: differentiable twice."""
        return nn.Sequential.forward(self, x)

    @staticmethod
    def parallel(x: torch.Tensor, *mlps: FusedMLP) -> tuple[torch.Tensor, ...]:
        """``tuple(m(x) for m in mlps)`` for MLPs with one activation, as a single autograd node."""
        if x.dim() != 2:  # [..., in] -> [-1, in] -> [..., out]
            ys = FusedMLP.parallel(x.reshape(-1, x.shape[-1]), *mlps)
            return tuple(y.reshape(*x.shape[:-1], -1) for y in ys)
        activation = mlps[0].activation
        if torch.is_grad_enabled():
            params = tuple(p for m in mlps for p in m._params)
            return _MLPFunction.apply(activation, tuple(len(m._params) for m in mlps), x, *params)
        return tuple(_mlp_forward(activation, x, m._params)[0] for m in mlps)


def fused_mlp(layers: list[nn.Module], activation: str) -> FusedMLP:
    """The layers of a plain MLP (Linear, activation, ..., Linear) as a :class:`FusedMLP`, tanh from sigmoid."""
    return FusedMLP([Tanh() if isinstance(m, nn.Tanh) else m for m in layers], activation)


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


def clip_grad_norm(grad: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Global gradient clipping: g <- g * min(1, max_norm / (||g||_2 + 1e-6)), in place; returns ||g||_2.

    ``torch.nn.utils.clip_grad_norm_`` for a single (flat) gradient tensor: a few ops instead of a few per tensor.
    """
    norm = torch.linalg.vector_norm(grad)
    grad.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
    return norm


def adam_step(optimizer: torch.optim.Adam) -> None:
    """``optimizer.step()`` for a fused Adam holding one parameter tensor (the flat parameters).

    Calls the kernel that ``torch.optim.Adam(fused=True).step()`` ends in, ``torch._fused_adam_``,
    on Adam's own state, so ``state_dict()`` is unchanged. On a CPU the Python bookkeeping around
    it in ``Optimizer.step`` (profiler and hook wrappers, grouping tensors by device and dtype,
    argument checks) costs ~75 us per step against ~10 us for the kernel, a tenth of a small-MLP
    PPO step. The first step (it creates the state) and any other setting go through ``optimizer.step()``.
    """
    group = optimizer.param_groups[0]
    state = optimizer.state.get(group["params"][0])
    plain = (len(optimizer.param_groups) == 1 and len(group["params"]) == 1 and group["fused"]
             and isinstance(group["lr"], float) and not group["capturable"]
             and not (group["amsgrad"] or group["weight_decay"] or group["maximize"] or group["differentiable"])
             and not (optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks))
    if not (plain and state and group["params"][0].grad is not None):
        optimizer.step()
        return
    param = group["params"][0]
    beta1, beta2 = group["betas"]
    state["step"].add_(1)
    torch._fused_adam_([param], [param.grad], [state["exp_avg"]], [state["exp_avg_sq"]], [], [state["step"]],
                       lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                       amsgrad=False, maximize=False)


class FlatAdam:
    """Adam over a network whose parameters live in one flat tensor (:func:`flatten_parameters`).

    :meth:`minimize` is zero_grad, backward, global gradient clipping and the Adam step, each one op.
    ``param_groups``, ``state``, ``state_dict`` and ``load_state_dict`` are the wrapped ``torch.optim.Adam``'s.
    """

    def __init__(self, module: nn.Module, lr: float, eps: float):
        self.params = [flatten_parameters(module)]
        self.grad = self.params[0].grad
        self.a_view = next(module.parameters())  # one of the views, to notice a zero_grad(set_to_none=True)
        fused = self.params[0].device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.Adam(self.params, lr=lr, eps=eps, fused=fused)

    def minimize(self, loss: torch.Tensor, max_grad_norm: float | None) -> None:
        """One gradient step on ``loss``: backward, global norm clipping, Adam."""
        if self.params[0].grad is None or self.a_view.grad is None:
            raise RuntimeError("FlatAdam keeps all gradients in one flat tensor that the parameters' .grad are views "
                               "into; a zero_grad(set_to_none=True) cut them loose. Leave zeroing to FlatAdam.")
        self.grad.zero_()  # in place: the parameters' .grad are views into this tensor
        loss.backward()
        if max_grad_norm is not None:
            clip_grad_norm(self.grad, max_grad_norm)
        adam_step(self.optimizer)

    @property
    def param_groups(self) -> list[dict]:
        return self.optimizer.param_groups  # looked up each time: load_state_dict replaces the list

    @property
    def state(self) -> dict:
        return self.optimizer.state

    def state_dict(self) -> dict:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state)


# ----------------------------------------------------------------- the allocator
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS; True if it took.

    Tensors above glibc's mmap threshold (128 KiB at first) are mapped fresh and unmapped on every allocation,
    and freed memory at the top of the heap is trimmed, so each new activation of a population's stacked
    batch ([16, 256, 64] float32 is 1 MiB) page-faults in again. Raising the mmap threshold to its maximum
    (32 MiB) and switching trimming off made a population of 16 PPO CartPole members train in 62 s instead of
    83 s on one thread of this machine (docs/benchmarks.md). It changes no result; it costs memory the
    process would have given back. The setting holds for the rest of the process; elsewhere than glibc it is
    a no-op (False).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))

