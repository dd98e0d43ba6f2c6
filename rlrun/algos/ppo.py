"""Proximal Policy Optimization (Schulman et al. 2017) with the code-level details of
Engstrom et al. 2020 ("Implementation Matters") as switches.

The rollout, GAE and the env-side details (observation/reward normalisation and clipping) live
in :mod:`rlrun.loops` and :mod:`rlrun.envs.wrappers`; this file holds the loss and the update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import gymnasium as gym
import torch

from rlrun.algos.base import OnPolicyConfig
from rlrun.config import _check, _positive
from rlrun.networks import ActorCritic


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO's own hyperparameters on top of the shared on-policy ones."""

    name: str = "ppo"
    update_epochs: int = 4
    """Passes over each rollout batch."""
    minibatch_size: int = 256
    """Transitions per gradient step (the batch is shuffled each epoch)."""
    clip_coef: float = 0.2
    """Surrogate clipping epsilon."""
    anneal_clip: bool = False
    """Decay clip_coef linearly to 0 over training (RL Zoo's lin_0.2)."""
    clip_vloss: bool = True
    """Value clipping: clip V(s) to within clip_coef of the value at collection time."""
    norm_adv: bool = True
    """Normalise advantages per minibatch to mean 0, std 1."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_coef: float = 0.5
    """Value loss weight."""
    target_kl: Optional[float] = None
    """KL early stop: skip the remaining epochs once the approximate KL exceeds this (null: off)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.update_epochs >= 1, "algo.update_epochs", self.update_epochs, "an integer >= 1")
        _check(self.minibatch_size >= 1, "algo.minibatch_size", self.minibatch_size, "an integer >= 1")
        _positive("algo.clip_coef", self.clip_coef)
        _check(self.ent_coef >= 0, "algo.ent_coef", self.ent_coef, "a number >= 0")
        _check(self.vf_coef >= 0, "algo.vf_coef", self.vf_coef, "a number >= 0")
        if self.target_kl is not None:
            _positive("algo.target_kl", self.target_kl)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped objective as a loss to minimise:

        L = -E[ min( r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t ) ],   r_t = pi(a_t|s_t) / pi_old(a_t|s_t)
    """
    unclipped = ratio * advantages  # [B]
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages  # [B]
    return -torch.minimum(unclipped, clipped).mean()


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       clip: float | None) -> torch.Tensor:
    """Value loss, optionally clipped around the values at collection time:

        L_V = 1/2 E[ max( (V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2 ) ]

    With ``clip=None`` it is the plain 1/2 E[(V - R)^2].
    """
    loss = (values - returns).pow(2)  # [B]
    if clip is not None:
        v_clipped = old_values + (values - old_values).clamp(-clip, clip)
        loss = torch.maximum(loss, (v_clipped - returns).pow(2))
    return 0.5 * loss.mean()


def approx_kl(log_ratio: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi) estimated from samples of pi_old: E[(r - 1) - log r] (Schulman's k3, always >= 0)."""
    return ((log_ratio.exp() - 1.0) - log_ratio).mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - pred] / Var[target]: 1 is a perfect critic, 0 no better than a constant."""
    var = target.var()
    return torch.where(var > 0, 1.0 - (target - pred).var() / var, torch.full_like(var, float("nan")))


class PPO:
    """Owns the actor-critic and its optimiser; ``update(batch)`` is one PPO iteration."""

    Config = PPOConfig

    def __init__(self, cfg: PPOConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.cfg = cfg
        self.device = device
        self.policy = ActorCritic(observation_space, action_space, cfg.hidden_sizes, cfg.activation,
                                  cfg.ortho_init, cfg.log_std_init).to(device)
        self.params = list(self.policy.parameters())
        fused = device.type == "cpu" or device.type == "cuda"
        self.optimizer = torch.optim.Adam(self.params, lr=cfg.lr, eps=cfg.adam_eps, fused=fused)
        self.clip = cfg.clip_coef

    def set_progress(self, fraction: float) -> dict[str, float]:
        """Anneal the learning rate (and clip range) for the iteration starting at ``fraction`` of training."""
        lr = self.cfg.lr * (1.0 - fraction) if self.cfg.anneal_lr else self.cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.clip = self.cfg.clip_coef * (1.0 - fraction) if self.cfg.anneal_clip else self.cfg.clip_coef
        return {"charts/learning_rate": lr, "charts/clip_coef": self.clip}

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor,
             advantages: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor):
        """The PPO loss on one minibatch and its diagnostics (all 0-d tensors)."""
        cfg = self.cfg
        logp, entropy, values = self.policy.evaluate(obs, actions)
        log_ratio = logp - old_logp  # [B]
        ratio = log_ratio.exp()
        if cfg.norm_adv:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        policy_loss = clipped_surrogate(ratio, advantages, self.clip)
        value_loss = clipped_value_loss(values, old_values, returns, self.clip if cfg.clip_vloss else None)
        entropy = entropy.mean()
        total = policy_loss - cfg.ent_coef * entropy + cfg.vf_coef * value_loss
        with torch.no_grad():
            kl = approx_kl(log_ratio)
            clipfrac = ((ratio - 1.0).abs() > self.clip).float().mean()
        return total, {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                       "entropy": entropy.detach(), "approx_kl": kl, "clipfrac": clipfrac}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Several epochs of shuffled minibatch steps on a flattened rollout ``batch`` ([B, ...] tensors)."""
        cfg = self.cfg
        size = batch["obs"].shape[0]
        mb = min(cfg.minibatch_size, size)
        keys = ("obs", "actions", "logp", "advantages", "returns", "values")
        sums: dict[str, torch.Tensor] = {}
        steps = 0
        for _epoch in range(cfg.update_epochs):
            order = torch.randperm(size, device=self.device) if mb < size else None
            epoch_kl = torch.zeros((), device=self.device)
            for start in range(0, size, mb):
                if order is None:
                    parts = [batch[k] for k in keys]
                else:
                    idx = order[start:start + mb]
                    parts = [batch[k][idx] for k in keys]
                total, info = self.loss(*parts)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if cfg.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                for k, v in info.items():
                    sums[k] = sums[k] + v if k in sums else v
                epoch_kl += info["approx_kl"]
                steps += 1
            if cfg.target_kl is not None and (epoch_kl / -(-size // mb)).item() > cfg.target_kl:
                break
        out = {f"losses/{k}": v / steps for k, v in sums.items()}
        out["losses/explained_variance"] = explained_variance(batch["values"], batch["returns"])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
