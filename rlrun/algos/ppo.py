"""Proximal Policy Optimization (Schulman et al. 2017) with the code-level details of
Engstrom et al. 2020 ("Implementation Matters") as switches.

The rollout, GAE and the env-side details (observation/reward normalisation and clipping) live
in :mod:`rlrun.loops` and :mod:`rlrun.envs.wrappers`; this file holds the loss and the update.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

import gymnasium as gym
import torch
from torch import nn

from rlrun.algos.base import OnPolicyAlgorithm, OnPolicyConfig
from rlrun.checks import check, positive
from rlrun.fused import FlatAdam
from rlrun.losses import approx_kl, clipped_value_loss, explained_variance, normalize_advantages
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
    """Decay clip_coef linearly to 0 over training (RL Zoo's lin_0.2); the value clipping range is apart."""
    clip_vloss: bool = True
    """Value clipping: clip V(s) to within vf_clip_coef of the value at collection time."""
    vf_clip_coef: Optional[float] = None
    """Value clipping range (null: clip_coef's starting value)."""
    anneal_vf_clip: bool = False
    """Decay the value clipping range linearly to 0 too (baselines ppo2 with a cliprange schedule)."""
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
        check(self.update_epochs >= 1, "algo.update_epochs", self.update_epochs, "an integer >= 1")
        check(self.minibatch_size >= 1, "algo.minibatch_size", self.minibatch_size, "an integer >= 1")
        positive("algo.clip_coef", self.clip_coef)
        if self.vf_clip_coef is not None:
            positive("algo.vf_clip_coef", self.vf_clip_coef)
        check(self.ent_coef >= 0, "algo.ent_coef", self.ent_coef, "a number >= 0")
        check(self.vf_coef >= 0, "algo.vf_coef", self.vf_coef, "a number >= 0")
        if self.target_kl is not None:
            positive("algo.target_kl", self.target_kl)


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    """PPO's clipped objective as a loss to minimise:

        L = -E[ min( r_t A_t, clip(r_t, 1 - eps, 1 + eps) A_t ) ],   r_t = pi(a_t|s_t) / pi_old(a_t|s_t)

    E is the mean over the last dimension ([B] -> 0-d; a population's [P, B] with eps [P, 1] -> [P]).
    """
    unclipped = ratio * advantages  # [B]
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages  # [B]
    return -torch.minimum(unclipped, clipped).mean(-1)


def clip_fraction(ratio: torch.Tensor, clip: float | torch.Tensor) -> torch.Tensor:
    """Fraction of samples whose ratio lies outside [1 - eps, 1 + eps], where the clipped objective has no gradient."""
    return ((ratio - 1.0).abs() > clip).float().mean(-1)


def mean_over_steps(fn: Callable[[torch.Tensor], torch.Tensor], per_step: list[torch.Tensor]) -> torch.Tensor:
    """The mean over gradient steps of ``fn(per_step[i])``, a mean over the samples' (last) dimension: one call
    when all steps had the same number of samples (on the stacked [steps, ..., B])."""
    if all(x.shape == per_step[0].shape for x in per_step):
        return fn(torch.stack(per_step)).mean(0)
    return torch.stack([fn(x) for x in per_step]).mean(0)


class LossTerms(NamedTuple):
    """One gradient step's loss terms (0-d) and log-ratios log pi/pi_old ([B]), detached: the diagnostics' inputs."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    log_ratio: torch.Tensor


class PPO(OnPolicyAlgorithm):
    """Owns the actor-critic and its optimiser; ``update(batch)`` is one PPO iteration on a GAE batch."""

    Config = PPOConfig

    def __init__(self, cfg: PPOConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.cfg = cfg
        self.device = device
        self.policy = ActorCritic(observation_space, action_space, cfg.hidden_sizes, cfg.activation,
                                  cfg.ortho_init, cfg.log_std_init, cfg.fused).to(device)
        if cfg.fused:  # rlrun/fused.py: all parameters in one flat tensor, one op per zero_grad, clip and Adam
            self.optimizer = FlatAdam(self.policy, cfg.lr, cfg.adam_eps)
        else:
            self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.clip = cfg.clip_coef
        self.vf_clip = cfg.vf_clip_coef if cfg.vf_clip_coef is not None else cfg.clip_coef
        self.entropy_bonus = bool(cfg.ent_coef)

    def set_progress(self, fraction: float) -> dict[str, float]:
        """Anneal the learning rate and clip ranges, as switched on, for the iteration starting at ``fraction``."""
        cfg = self.cfg
        remaining = 1.0 - fraction
        lr = cfg.lr * remaining if cfg.anneal_lr else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.clip = cfg.clip_coef * remaining if cfg.anneal_clip else cfg.clip_coef
        vf_clip = cfg.vf_clip_coef if cfg.vf_clip_coef is not None else cfg.clip_coef
        self.vf_clip = vf_clip * remaining if cfg.anneal_vf_clip else vf_clip
        out = {"charts/learning_rate": lr, "charts/clip_coef": self.clip}
        if cfg.clip_vloss:
            out["charts/vf_clip_coef"] = self.vf_clip
        return out

    def loss(self, obs: torch.Tensor, actions: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             returns: torch.Tensor, old_values: torch.Tensor, norm_adv: bool) -> tuple[torch.Tensor, LossTerms]:
        """The PPO loss on one minibatch, L_clip + vf_coef L_V - ent_coef H, and its terms for :meth:`diagnostics`."""
        cfg = self.cfg
        logp, entropy, values = self.policy.evaluate(obs, actions)
        log_ratio = logp - old_logp  # [B]
        if norm_adv:
            advantages = normalize_advantages(advantages)
        policy_loss = clipped_surrogate(log_ratio.exp(), advantages, self.clip)
        value_loss = clipped_value_loss(values, old_values, returns, self.vf_clip if cfg.clip_vloss else None)
        entropy = entropy.mean(-1)
        total = policy_loss + cfg.vf_coef * value_loss
        if self.entropy_bonus:  # with ent_coef = 0 the entropy stays out of the graph that backward walks
            total = total - cfg.ent_coef * entropy
        return total, LossTerms(policy_loss.detach(), value_loss.detach(), entropy.detach(), log_ratio.detach())

    def diagnostics(self, terms: list[LossTerms]) -> dict[str, torch.Tensor]:
        """Loss terms, approximate KL and clip fraction averaged over gradient steps (0-d tensors).

        Computed once from all steps' terms instead of on every step: ~15 small ops per step that
        are a measurable share of a small-MLP update.
        """
        losses = torch.stack([torch.stack(t[:3]) for t in terms]).mean(0)  # [3] (a population's: [3, P])
        log_ratios = [t.log_ratio for t in terms]
        return {
            "policy_loss": losses[0], "value_loss": losses[1], "entropy": losses[2],
            "approx_kl": mean_over_steps(approx_kl, log_ratios),
            "clipfrac": mean_over_steps(lambda log_ratio: clip_fraction(log_ratio.exp(), self.clip), log_ratios),
        }

    def gradient_step(self, loss: torch.Tensor) -> None:
        """One gradient step on ``loss``: backward, global norm clipping, Adam."""
        if self.cfg.fused:
            self.optimizer.minimize(loss, self.cfg.max_grad_norm)
            return
        self.optimizer.zero_grad()
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()

    def stop_early(self, epoch_kl: torch.Tensor) -> bool:
        """KL early stop (``target_kl``): True skips the remaining epochs."""
        return epoch_kl.item() > self.cfg.target_kl

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Several epochs of shuffled minibatch steps on a flattened rollout ``batch`` ([B, ...] tensors)."""
        cfg = self.cfg
        size = batch["logp"].shape[-1]
        mb = min(cfg.minibatch_size, size)
        keys = ("obs", "actions", "logp", "advantages", "returns", "values")
        norm_adv = cfg.norm_adv
        if norm_adv and mb == size:  # every step sees the whole batch: normalise its advantages once
            batch = {**batch, "advantages": normalize_advantages(batch["advantages"])}
            norm_adv = False
        terms: list[LossTerms] = []
        for _epoch in range(cfg.update_epochs):
            order = self.shuffle(size) if mb < size else None
            epoch_start = len(terms)
            for start in range(0, size, mb):
                if order is None:
                    parts = [batch[k] for k in keys]
                else:
                    parts = [self.take(batch[k], order[..., start:start + mb]) for k in keys]
                total, step_terms = self.loss(*parts, norm_adv)
                self.gradient_step(total)
                terms.append(step_terms)
            if cfg.target_kl is not None:
                epoch_kl = mean_over_steps(approx_kl, [t.log_ratio for t in terms[epoch_start:]])
                if self.stop_early(epoch_kl):
                    break
        out = {f"losses/{k}": v for k, v in self.diagnostics(terms).items()}
        out["losses/explained_variance"] = explained_variance(batch["values"], batch["returns"])
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
