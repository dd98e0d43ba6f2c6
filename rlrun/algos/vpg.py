"""Vanilla policy gradient / REINFORCE (Williams 1992), and the base the policy-gradient family shares.

    grad J(theta) = E[ sum_t w_t * grad log pi_theta(a_t|s_t) * (G_t - b(s_t)) ]

with G_t the reward-to-go (or the whole return R(tau) with ``reward_to_go=false``), b(s) = V(s) a
learned baseline (or none) and w_t = gamma^t (``gamma_weighting``; off by default, as in most
implementations). Batches are whole episodes (every batch starts from reset envs and drops the
episode each env has not finished) or fixed-horizon rollouts (the return is bootstrapped from V
where the rollout cuts an episode, or cut off there without a baseline).

:class:`PolicyGradient` is what VPG, A2C, NPG and TRPO share: the actor-critic, learning-rate
annealing, the critic regression and checkpoints. Collection is :func:`rlrun.loops.run_on_policy`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from rlrun.algos.base import OnPolicyConfig
from rlrun.checks import ConfigError, check, choice, positive
from rlrun.losses import approx_kl, explained_variance, normalize_advantages, value_loss
from rlrun.networks import ActorCritic
from rlrun.returns import discount_weights, episode_return, episode_steps, reward_to_go


@dataclass
class PolicyGradientConfig(OnPolicyConfig):
    """Settings shared by vpg, npg and trpo: advantage normalisation and the critic's regression."""

    name: str = "vpg"
    norm_adv: bool = True
    """Normalise the advantages of each batch to mean 0, std 1."""
    vf_epochs: int = 5
    """Critic regression: passes over each batch fitting V(s) to the return targets."""
    vf_minibatch_size: int = 256
    """Critic regression: transitions per gradient step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.vf_epochs >= 1, "algo.vf_epochs", self.vf_epochs, "an integer >= 1")
        check(self.vf_minibatch_size >= 1, "algo.vf_minibatch_size", self.vf_minibatch_size, "an integer >= 1")


BATCH_MODES = ("episodes", "steps")
BASELINES = ("none", "value")


@dataclass
class VPGConfig(PolicyGradientConfig):
    """REINFORCE's switches on top of the shared policy-gradient ones (``lr`` is the policy's Adam rate)."""

    name: str = "vpg"
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


def policy_params_autograd(policy: ActorCritic, obs: torch.Tensor) -> torch.Tensor:
    """The actor's output [B, A] through plain autograd ops (each layer a module call).

    :class:`rlrun.networks.MLP` runs as one autograd node whose backward pass is written out: right
    for first derivatives, but not differentiable twice. Fisher-vector products need this path.
    """
    if policy.image:
        return policy.actor(policy.trunk(obs))
    return nn.Sequential.forward(policy.actor, policy._mlp_input(obs))


def kept_steps(done: torch.Tensor) -> torch.Tensor:
    """[T, N] bool: True where the step's episode ends inside the rollout (at this step or later)."""
    return done.flip(0).cummax(0).values.flip(0)


class PolicyGradient:
    """The policy-gradient family's common part; subclasses add ``update(batch)``."""

    loop = "on_policy"  # rlrun.loops.LOOPS
    whole_episodes = False  # run_on_policy resets the envs before each batch when True

    def __init__(self, cfg: OnPolicyConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.cfg, self.device = cfg, device
        try:
            self.policy = self.build_policy(observation_space, action_space).to(device)
        except ValueError as exc:
            raise ConfigError(f"algo={cfg.name} has categorical (Discrete) and diagonal Gaussian (1-D Box) "
                              f"policy heads; this env's action space is {action_space}.") from exc
        self.critic_params = list(self.policy.critic.parameters())
        critic_ids = {id(p) for p in self.critic_params}
        self.actor_params = [p for p in self.policy.parameters() if id(p) not in critic_ids]
        self.optimizers: dict[str, torch.optim.Optimizer] = {}

    def build_policy(self, observation_space: gym.Space, action_space: gym.Space) -> ActorCritic:
        cfg = self.cfg
        return ActorCritic(observation_space, action_space, cfg.hidden_sizes, cfg.activation, cfg.ortho_init,
                           cfg.log_std_init)

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        for group in optimizer.param_groups:
            group["initial_lr"] = group["lr"]
        self.optimizers[name] = optimizer

    def set_progress(self, fraction: float) -> dict[str, float]:
        """Anneal every optimiser's learning rate linearly to 0 over training (``anneal_lr``)."""
        scale = 1.0 - fraction if self.cfg.anneal_lr else 1.0
        out = {}
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * scale
            out[f"charts/learning_rate{'' if name == 'policy' else '_' + name}"] = optimizer.param_groups[0]["lr"]
        return out

    def gradient_step(self, optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        """zero_grad, backward, global gradient clipping (max_grad_norm), optimiser step."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, self.cfg.max_grad_norm)
        optimizer.step()

    def fit_critic(self, obs: torch.Tensor, targets: torch.Tensor, epochs: int, minibatch_size: int) -> torch.Tensor:
        """Critic regression: ``epochs`` passes of shuffled minibatch steps on E[(V(s) - target)^2]; mean loss.

        The mean squared error of Spinning Up's VPG, baselines' trpo_mpi and SB3-contrib's TRPO.
        """
        size = obs.shape[0]
        mb = min(minibatch_size, size)
        losses = []
        for _ in range(epochs):
            order = torch.randperm(size, device=obs.device)
            for start in range(0, size, mb):
                idx = order[start:start + mb]
                loss = value_loss(self.policy.value(obs[idx]), targets[idx])
                self.gradient_step(self.optimizers["critic"], loss, self.critic_params)
                losses.append(loss.detach())
        return torch.stack(losses).mean()

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])


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
        T, N = buffer.rewards.shape
        flat = lambda x: x.reshape(T * N, *x.shape[2:])
        done = buffer.terminated | buffer.truncated  # [T, N]
        if self.use_baseline:
            values = self.policy.value(flat(buffer.obs)).reshape(T, N)  # [T, N]
            next_values = self.policy.value(flat(buffer.next_obs)).reshape(T, N)  # [T, N]
        else:
            values = next_values = torch.zeros_like(buffer.rewards)
        returns = reward_to_go(buffer.rewards, next_values, buffer.terminated, buffer.truncated, cfg.gamma)  # [T, N]
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
            "weights": flat(discount_weights(steps, cfg.gamma)) if cfg.gamma_weighting else None,
        }
        if self.whole_episodes:
            keep = flat(kept_steps(done))  # [T * N]
            batch = {k: (v[keep] if v is not None else None) for k, v in batch.items()}
        return batch

    def update(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One step on -E[w_t log pi(a_t|s_t) A_t] - ent_coef H, then the critic's regression."""
        cfg = self.cfg
        obs, actions, advantages = batch["obs"], batch["actions"], batch["advantages"]
        if cfg.norm_adv:
            advantages = normalize_advantages(advantages)
        if batch["weights"] is not None:
            advantages = batch["weights"] * advantages
        logp, entropy = self.policy.log_prob_entropy(self.policy.policy_params(obs), actions)
        policy_loss = -(logp * advantages).mean()
        entropy = entropy.mean()
        self.gradient_step(self.optimizers["policy"], policy_loss - cfg.ent_coef * entropy, self.actor_params)
        out = {"losses/policy_loss": policy_loss.detach(), "losses/entropy": entropy.detach(),
               "charts/batch_size": torch.tensor(float(obs.shape[0]))}
        with torch.no_grad():
            new_logp, _ = self.policy.log_prob_entropy(self.policy.policy_params(obs), actions)
            out["losses/approx_kl"] = approx_kl(new_logp - batch["logp"])
        if self.use_baseline:
            out["losses/value_loss"] = self.fit_critic(obs, batch["returns"], cfg.vf_epochs, cfg.vf_minibatch_size)
            out["losses/explained_variance"] = explained_variance(batch["values"], batch["returns"])
        return out
