"""Vanilla policy gradient / REINFORCE (Williams 1992).

    grad J(theta) = E[ sum_t w_t * grad log pi_theta(a_t|s_t) * (G_t - b(s_t)) ]

with G_t the reward-to-go (or the whole return R(tau) with ``reward_to_go=false``), b(s) = V(s) a
learned baseline (or none) and w_t = gamma^t (``gamma_weighting``; off by default, as in most
implementations). Batches are whole episodes (every batch starts from reset envs and drops the
episode each env has not finished) or fixed-horizon rollouts (the return is bootstrapped from V
where the rollout cuts an episode, or cut off there without a baseline).

What VPG shares with A2C, NPG and TRPO (the actor-critic, learning-rate annealing, the critic regression,
checkpoints) is :class:`rlrun.algos.base.PolicyGradient`. Collection is :func:`rlrun.loops.run_on_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

from rlrun.algos.base import PolicyGradient, PolicyGradientConfig
from rlrun.checks import check, choice, positive
from rlrun.losses import approx_kl, explained_variance, normalize_advantages
from rlrun.returns import discount_weights, episode_return, episode_steps, reward_to_go

BATCH_MODES = ("episodes", "steps")
BASELINES = ("none", "value")


@dataclass
class VPGConfig(PolicyGradientConfig):
    """REINFORCE's switches on top of the shared policy-gradient ones (``lr`` is the policy's Adam rate)."""

    name: str = "vpg"
    # The shared keys at REINFORCE's values, as in Spinning Up's VPG: whole-episode batches of at least a
    # 500-step time limit, no GAE (the advantage is reward-to-go minus the baseline), torch's Adam epsilon,
    # no learning-rate annealing, no gradient clipping.
    num_steps: int = 500
    gae_lambda: float = 1.0
    adam_eps: float = 1e-8
    anneal_lr: bool = False
    max_grad_norm: float | None = None
    batch_mode: str = "episodes"
    """episodes: each batch starts from reset envs and keeps whole episodes only (num_steps should be at
    least the env's time limit); steps: fixed-horizon rollouts of num_steps, bootstrapped where cut."""
    reward_to_go: bool = True
    """Weight grad log pi(a_t|s_t) by the return from t on (true) or by the whole episode's return (false)."""
    baseline: str = "value"
    """none | value: subtract a learned V(s_t) from the return (the critic is fitted by regression)."""
    gamma_weighting: bool = False
    """Multiply step t's term by gamma^t, as the discounted policy gradient theorem has it (most code drops it)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""
    vf_lr: float = 1e-3
    """Adam learning rate of the critic (baseline=value)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        choice("algo.batch_mode", self.batch_mode, BATCH_MODES)
        choice("algo.baseline", self.baseline, BASELINES)
        check(self.ent_coef >= 0, "algo.ent_coef", self.ent_coef, "a number >= 0")
        positive("algo.vf_lr", self.vf_lr)



def kept_steps(done: torch.Tensor) -> torch.Tensor:
    """[T, N] bool: True where the step's episode ends inside the rollout (at this step or later)."""
    return done.flip(0).cummax(0).values.flip(0)


class VPG(PolicyGradient):
    """REINFORCE with switches: one policy-gradient step per batch, then the baseline's regression."""

    Config = VPGConfig

    def __init__(self, cfg: VPGConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        super().__init__(cfg, observation_space, action_space, device)
        self.whole_episodes = cfg.batch_mode == "episodes"
        self.use_baseline = cfg.baseline == "value"
        self.add_optimizer("policy", torch.optim.Adam(self.actor_params, lr=cfg.lr, eps=cfg.adam_eps))
        if self.use_baseline:
            self.add_optimizer("critic", torch.optim.Adam(self.critic_params, lr=cfg.vf_lr, eps=cfg.adam_eps))
        self.episode_step = None  # [N] step index within the episode at the start of the next rollout

    @torch.no_grad()
    def targets(self, buffer) -> dict[str, torch.Tensor]:
        """Reward-to-go (or episode return), baseline, gamma^t weights; whole-episode batches drop unfinished episodes."""
        cfg = self.cfg
        N = buffer.rewards.shape[1]
        flat = self.batch_layout
        gamma = self.rollout_gamma(N)
        done = buffer.terminated | buffer.truncated  # [T, N]
        if self.use_baseline:
            values, next_values = self.rollout_values(buffer)  # [T, N] each
        else:
            values = next_values = torch.zeros_like(buffer.rewards)
        returns = reward_to_go(buffer.rewards, next_values, buffer.terminated, buffer.truncated, gamma)  # [T, N]
        weighted = returns
        if not cfg.reward_to_go:
            starts = torch.cat([torch.ones_like(done[:1]), done[:-1]])  # [T, N]
            weighted = episode_return(returns, starts)
        if self.whole_episodes or self.episode_step is None:
            self.episode_step = torch.zeros(N, dtype=torch.int64, device=done.device)
        steps = episode_steps(done, self.episode_step)  # [T, N]
        self.episode_step = torch.where(done[-1], torch.zeros_like(steps[-1]), steps[-1] + 1)
        batch = {
            "obs": flat(buffer.obs), "actions": flat(buffer.actions), "logp": flat(buffer.logp),
            "values": flat(values), "returns": flat(returns), "advantages": flat(weighted - values),
            "weights": flat(discount_weights(steps, gamma)) if cfg.gamma_weighting else None,
        }
        if self.whole_episodes:
            keep = flat(kept_steps(done))  # [T * N]
            batch = {k: (v[keep] if v is not None else None) for k, v in batch.items()}
        return batch

    @staticmethod
    def batch_layout(x: torch.Tensor) -> torch.Tensor:
        """A rollout tensor [T, N, ...] as the update's batch [T * N, ...]."""
        return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    def rollout_gamma(self, num_envs: int) -> float | torch.Tensor:
        """The discount of each env's rollout (one for all here)."""
        return self.cfg.gamma

    def rollout_values(self, buffer) -> tuple[torch.Tensor, torch.Tensor]:
        """V(s_t) and V(s_{t+1}) of the rollout, [T, N] each."""
        T, N = buffer.rewards.shape
        values = self.policy.value(self.batch_layout(buffer.obs)).reshape(T, N)
        return values, self.policy.value(self.batch_layout(buffer.next_obs)).reshape(T, N)

    def update(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One step on -E[w_t log pi(a_t|s_t) A_t] - ent_coef H, then the critic's regression."""
        cfg = self.cfg
        obs, actions, advantages = batch["obs"], batch["actions"], batch["advantages"]
        if cfg.norm_adv:
            advantages = normalize_advantages(advantages)
        if batch["weights"] is not None:
            advantages = batch["weights"] * advantages
        logp, entropy = self.policy.log_prob_entropy(self.policy.policy_params(obs), actions)
        policy_loss = -(logp * advantages).mean(-1)  # means over the samples (a population's: one per member)
        entropy = entropy.mean(-1)
        self.gradient_step(self.optimizers["policy"], policy_loss - cfg.ent_coef * entropy, self.actor_params)
        out = {"losses/policy_loss": policy_loss.detach(), "losses/entropy": entropy.detach(),
               "charts/batch_size": torch.tensor(float(advantages.shape[-1]))}
        with torch.no_grad():
            new_logp, _ = self.policy.log_prob_entropy(self.policy.policy_params(obs), actions)
            out["losses/approx_kl"] = approx_kl(new_logp - batch["logp"])
        if self.use_baseline:
            out["losses/value_loss"] = self.fit_critic(obs, batch["returns"], cfg.vf_epochs, cfg.vf_minibatch_size)
            out["losses/explained_variance"] = explained_variance(batch["values"], batch["returns"])
        return out
