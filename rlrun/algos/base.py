"""What every on-policy algorithm shares: the rollout settings and the env details around it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlrun.checks import check, choice, positive, unit
from rlrun.networks import ACTIVATIONS


@dataclass
class OnPolicyConfig:
    """Rollout, network and Engstrom et al. (2020) env-side switches shared by the policy-gradient family."""

    name: str = "ppo"
    """Algorithm name (picks the algorithm; set by the algo/ config file)."""
    num_steps: int = 128
    """Rollout length per env: a batch holds num_steps * env.num_envs transitions."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda: 1 = Monte Carlo advantages, 0 = one-step TD error."""
    lr: float = 3e-4
    """Adam learning rate."""
    adam_eps: float = 1e-5
    """Adam epsilon (1e-5 as in the PPO reference code, not PyTorch's 1e-8)."""
    anneal_lr: bool = True
    """Learning-rate annealing: decay lr linearly to 0 over training."""
    max_grad_norm: Optional[float] = 0.5
    """Global gradient clipping: clip the norm of all gradients together (null: off)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [64, 64])
    """MLP hidden layer widths (vector observations)."""
    activation: str = "tanh"
    """tanh activations (the reference choice) or relu."""
    ortho_init: bool = True
    """Orthogonal initialisation with layer scaling (sqrt 2 hidden, 0.01 policy, 1 value)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of the Gaussian policy (continuous actions)."""
    norm_obs: bool = False
    """Observation normalisation by running mean and variance."""
    clip_obs: Optional[float] = None
    """Observation clipping to [-clip_obs, clip_obs] (after normalisation when that is on; null: off)."""
    norm_reward: bool = False
    """Reward scaling: divide by the running std of the discounted return."""
    clip_reward: Optional[float] = None
    """Reward clipping to [-clip_reward, clip_reward] (after scaling; null: off)."""

    def __post_init__(self) -> None:
        check(self.num_steps >= 1, "algo.num_steps", self.num_steps, "an integer >= 1")
        unit("algo.gamma", self.gamma)
        unit("algo.gae_lambda", self.gae_lambda)
        positive("algo.lr", self.lr)
        positive("algo.adam_eps", self.adam_eps)
        if self.max_grad_norm is not None:
            positive("algo.max_grad_norm", self.max_grad_norm)
        check(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
              "algo.hidden_sizes", self.hidden_sizes, "a non-empty list of positive integers")
        choice("algo.activation", self.activation, tuple(ACTIVATIONS))
        if self.clip_obs is not None:
            positive("algo.clip_obs", self.clip_obs)
        if self.clip_reward is not None:
            positive("algo.clip_reward", self.clip_reward)
