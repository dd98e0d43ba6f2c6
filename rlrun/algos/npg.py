"""Natural policy gradient (Kakade 2001; the truncated form of Schulman et al. 2015 / Rajeswaran et al. 2017).

    theta <- theta + sqrt( 2 delta / (g^T F^-1 g) ) * F^-1 g

g is the gradient of the surrogate E[pi_theta(a|s) / pi_old(a|s) * A], F the Fisher matrix of the
policy (the Hessian of the mean KL), F^-1 g found by conjugate gradient from Fisher-vector products;
no line search (that is TRPO). Advantages are GAE(lambda) from the shared rollout
(:func:`rlrun.loops.run_on_policy`); the critic is fitted by regression on the GAE returns. The math
is in :mod:`rlrun.trust_region`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

from rlrun.algos.base import PolicyGradient, PolicyGradientConfig
from rlrun.checks import check, positive
from rlrun.losses import explained_variance, normalize_advantages
from rlrun.trust_region import (
    categorical_kl,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    gaussian_kl,
    natural_step_size,
)


@dataclass
class NPGConfig(PolicyGradientConfig):
    """Natural-gradient settings on top of the shared ones (``lr`` is the critic's Adam rate here)."""

    name: str = "npg"
    # The shared keys at the trust-region references' values (openai/baselines trpo_mpi, Rajeswaran et al.
    # 2017): 1024-step batches, GAE 0.97, the critic's Adam at 1e-3 with torch's epsilon, no annealing, no
    # clipping (the policy step size comes from max_kl).
    num_steps: int = 1024
    gae_lambda: float = 0.97
    lr: float = 1e-3
    adam_eps: float = 1e-8
    anneal_lr: bool = False
    max_grad_norm: float | None = None
    max_kl: float = 0.01
    """delta: the step is scaled so that the quadratic model of the mean KL equals delta."""
    damping: float = 0.1
    """Added to the Fisher matrix's diagonal, (F + damping I) v, so conjugate gradient stays stable."""
    cg_iters: int = 10
    """Conjugate-gradient iterations (Fisher-vector products) for F^-1 g."""
    cg_residual_tol: float = 1e-10
    """Stop conjugate gradient once the squared residual is below this."""
    fvp_subsample: float = 1.0
    """Fraction of the batch the Fisher-vector products use (0.1 to 0.2 is common on large batches)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive("algo.max_kl", self.max_kl)
        check(self.damping >= 0, "algo.damping", self.damping, "a number >= 0")
        check(self.cg_iters >= 1, "algo.cg_iters", self.cg_iters, "an integer >= 1")
        positive("algo.cg_residual_tol", self.cg_residual_tol)
        check(0.0 < self.fvp_subsample <= 1.0, "algo.fvp_subsample", self.fvp_subsample, "a number in (0, 1]")


class NPG(PolicyGradient):
    """A natural-gradient step on the policy, then the critic's regression; TRPO adds a line search."""

    Config = NPGConfig

    def __init__(self, cfg: NPGConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        super().__init__(cfg, observation_space, action_space, device)
        self.add_optimizer("critic", torch.optim.Adam(self.critic_params, lr=cfg.lr, eps=cfg.adam_eps))
        self.max_kl = cfg.max_kl

    # ------------------------------------------------------------- the policy as a function of a flat vector
    def get_flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.actor_params])

    @torch.no_grad()
    def set_flat(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self.actor_params:
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()

    @torch.no_grad()
    def snapshot(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """pi_old, frozen: the policy's outputs on ``obs`` [B, A] and its log std (None for discrete actions)."""
        log_std = None if self.policy.discrete else self.policy.log_std.detach().clone()
        return self.policy.policy_params(obs), log_std

    def mean_kl(self, old: tuple[torch.Tensor, torch.Tensor | None], new: torch.Tensor) -> torch.Tensor:
        """Mean KL(pi_old || pi) over the batch from a :meth:`snapshot` and the current policy's outputs [B, A]."""
        if self.policy.discrete:
            return categorical_kl(old[0], new).mean(-1)
        return gaussian_kl(old[0], old[1], new, self.policy.log_std).mean(-1)

    @torch.no_grad()
    def surrogate(self, obs: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor,
                  advantages: torch.Tensor) -> torch.Tensor:
        """L(theta) = E[ pi_theta(a|s) / pi_old(a|s) * A ] at the current parameters."""
        logp, _ = self.policy.log_prob_entropy(self.policy.policy_params(obs), actions)
        return ((logp - old_logp).exp() * advantages).mean(-1)

    def policy_gradient(self, surrogate: torch.Tensor) -> torch.Tensor:
        """g = d surrogate / d theta over the policy's parameters, flat [D]."""
        return flat_grad(surrogate, self.actor_params)

    def fisher_product(self, mean_kl, damping: float):
        """v -> (F + damping I) v for the policy's parameters (:func:`rlrun.trust_region.fisher_vector_product`)."""
        return fisher_vector_product(mean_kl, self.actor_params, damping)

    def step_direction(self, batch: dict[str, torch.Tensor], advantages: torch.Tensor):
        """g, x = F^-1 g (conjugate gradient) and the full natural step beta x; also the policy outputs before it."""
        cfg = self.cfg
        obs, actions = batch["obs"], batch["actions"]
        params = self.policy.policy_params(obs)  # [B, A]; first derivatives only
        logp, entropy = self.policy.log_prob_entropy(params, actions)
        surrogate = ((logp - batch["logp"]).exp() * advantages).mean(-1)  # ratio = 1 at theta_old; its gradient is g
        g = self.policy_gradient(surrogate)  # [D]
        fvp_obs = obs
        if cfg.fvp_subsample < 1.0:
            size = batch["logp"].shape[-1]
            fvp_obs = self.take(obs, self.shuffle(size)[..., :max(1, int(size * cfg.fvp_subsample))])
        old = self.snapshot(fvp_obs)
        fvp = self.fisher_product(lambda: self.mean_kl(old, self.policy.policy_params_autograd(fvp_obs)), cfg.damping)
        x = conjugate_gradient(fvp, g, cfg.cg_iters, cfg.cg_residual_tol)  # [D] ~ F^-1 g
        beta = natural_step_size(x, fvp(x), self.max_kl)
        return beta.unsqueeze(-1) * x, beta, surrogate.detach(), entropy.mean(-1).detach()

    def apply_step(self, batch: dict[str, torch.Tensor], advantages: torch.Tensor, old: tuple, start: torch.Tensor,
                   full_step: torch.Tensor) -> dict[str, Any]:
        """NPG takes the full natural step, no line search; returns diagnostics (``step_fraction``: of the full step)."""
        self.set_flat(start + full_step)
        return {"step_fraction": 1.0}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Natural-gradient step on the surrogate (:meth:`apply_step`), then the critic regression."""
        cfg = self.cfg
        obs, actions = batch["obs"], batch["actions"]
        advantages = normalize_advantages(batch["advantages"]) if cfg.norm_adv else batch["advantages"]
        old = self.snapshot(obs)
        full_step, beta, surrogate_before, entropy = self.step_direction(batch, advantages)
        start = self.get_flat()
        out = self.apply_step(batch, advantages, old, start, full_step)
        with torch.no_grad():
            out["losses/kl"] = self.mean_kl(old, self.policy.policy_params(obs))
            out["losses/surrogate_improvement"] = self.surrogate(obs, actions, batch["logp"], advantages) - surrogate_before
        out["charts/step_size"] = beta * out.pop("step_fraction")
        out.update({
            "losses/policy_loss": -surrogate_before, "losses/entropy": entropy,
            "losses/value_loss": self.fit_critic(obs, batch["returns"], cfg.vf_epochs, cfg.vf_minibatch_size),
            "losses/explained_variance": explained_variance(batch["values"], batch["returns"]),
        })
        return out
