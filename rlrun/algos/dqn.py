"""DQN (Mnih et al. 2015) with every Rainbow component (Hessel et al. 2018) as an independent switch:
double Q-learning, prioritized replay, dueling heads, n-step returns, distributional (C51) values
and noisy nets. ``algo=rainbow`` is this class with all six on.

The lecture's ablation is switches too: ``replay=false`` is the naive online update on the
newest transitions only, ``target_network=false`` bootstraps from the online network itself.
Collection, the n-step window and the replay buffer live in :mod:`rlrun.loops` and
:mod:`rlrun.buffers`; this file holds the targets, the losses and the update.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Optional

import gymnasium as gym
import torch
from torch import nn

from rlrun.algos.base import OffPolicyUpdate
from rlrun.checks import ConfigError, check, choice, positive, unit
from rlrun.distributional import categorical_projection, categorical_projection_dense
from rlrun.envs.wrappers import EnvSwitches
from rlrun.networks import QNetwork


@dataclass
class DQNConfig:
    """DQN's hyperparameters and the six Rainbow switches."""

    name: str = "dqn"
    """Algorithm name (dqn or rainbow; set by the algo/ config file)."""
    gamma: float = 0.99
    """Discount factor."""
    lr: float = 2.5e-4
    """Adam learning rate."""
    adam_eps: float = 1e-8
    """Adam epsilon (Rainbow: 1.5e-4)."""
    batch_size: int = 32
    """Transitions per gradient step."""
    buffer_size: int = 100000
    """Replay capacity in transitions (all envs together)."""
    learning_starts: int = 1000
    """Env steps collected before the first gradient step."""
    train_frequency: int = 4
    """Env steps (all envs together) between training phases."""
    gradient_steps: int = 1
    """Gradient steps per training phase."""
    replay: bool = True
    """Experience replay; false: the naive online update on the newest transition of each env."""
    target_network: bool = True
    """A separate target network; false: bootstrap from the online network."""
    target_update_interval: int = 1000
    """Env steps (all envs together) between target updates."""
    tau: float = 1.0
    """Target update every target_update_interval: theta' <- tau theta + (1 - tau) theta' (1: hard copy)."""
    eps_start: Optional[float] = None
    """Epsilon-greedy: exploration rate at the start (null: 1.0, or 0 with noisy nets)."""
    eps_end: Optional[float] = None
    """Exploration rate after the decay (null: 0.05, or 0 with noisy nets)."""
    eps_fraction: float = 0.1
    """Fraction of training over which epsilon decays linearly from eps_start to eps_end."""
    eval_epsilon: float = 0.0
    """Exploration rate of deterministic evaluation (0: greedy; Atari papers use 0.001-0.05)."""
    loss: str = "huber"
    """TD loss of scalar Q-learning: huber (smooth L1) or mse (C51 uses cross-entropy)."""
    max_grad_norm: Optional[float] = 10.0
    """Global gradient clipping (null: off)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    """MLP widths (vectors); the last is each head stream's hidden layer (Atari: [512])."""
    log_every: int = 1000
    """Env steps between logged iterations (evaluation and checkpoints are checked then too)."""
    # ---- Rainbow components
    double: bool = False
    """Double Q-learning: the online net picks a', the target net evaluates it."""
    prioritized: bool = False
    """Proportional prioritized replay (sum tree) with importance-sampling weights."""
    per_alpha: float = 0.6
    """Priority exponent: P(i) ~ p_i^alpha."""
    per_beta: float = 0.4
    """Importance-sampling exponent at the start, annealed linearly to 1 over training."""
    per_eps: float = 1e-6
    """Added to |TD error| so no transition gets priority 0."""
    dueling: bool = False
    """Dueling head: Q = V + A - mean(A)."""
    n_step: int = 1
    """n-step returns (1: one-step TD)."""
    distributional: bool = False
    """C51: a categorical return distribution over fixed atoms, cross-entropy loss."""
    atoms: int = 51
    """Number of atoms of the C51 support."""
    v_min: float = -10.0
    """Lowest atom."""
    v_max: float = 10.0
    """Highest atom."""
    noisy: bool = False
    """Noisy nets: factorised Gaussian NoisyLinear head layers, noise resampled every step."""
    sigma_0: float = 0.5
    """NoisyLinear initial noise scale (sigma = sigma_0 / sqrt(fan_in))."""

    def __post_init__(self) -> None:
        unit("algo.gamma", self.gamma)
        positive("algo.lr", self.lr)
        positive("algo.adam_eps", self.adam_eps)
        check(self.batch_size >= 1, "algo.batch_size", self.batch_size, "an integer >= 1")
        check(not self.replay or self.buffer_size >= self.batch_size, "algo.buffer_size", self.buffer_size,
              f"an integer >= algo.batch_size ({self.batch_size})")
        check(self.learning_starts >= 0, "algo.learning_starts", self.learning_starts, "an integer >= 0")
        check(self.train_frequency >= 1, "algo.train_frequency", self.train_frequency, "an integer >= 1")
        check(self.gradient_steps >= 1, "algo.gradient_steps", self.gradient_steps, "an integer >= 1")
        check(self.target_update_interval >= 1, "algo.target_update_interval", self.target_update_interval,
              "an integer >= 1")
        unit("algo.tau", self.tau, closed=False)
        for key in ("eps_start", "eps_end"):
            if getattr(self, key) is not None:
                unit(f"algo.{key}", getattr(self, key))
        unit("algo.eps_fraction", self.eps_fraction, closed=False)
        unit("algo.eval_epsilon", self.eval_epsilon)
        choice("algo.loss", self.loss, ("huber", "mse"))
        if self.max_grad_norm is not None:
            positive("algo.max_grad_norm", self.max_grad_norm)
        check(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
              "algo.hidden_sizes", self.hidden_sizes, "a non-empty list of positive integers")
        check(self.log_every >= 1, "algo.log_every", self.log_every, "an integer >= 1")
        check(self.per_alpha >= 0, "algo.per_alpha", self.per_alpha, "a number >= 0")
        unit("algo.per_beta", self.per_beta)
        positive("algo.per_eps", self.per_eps)
        check(self.n_step >= 1, "algo.n_step", self.n_step, "an integer >= 1")
        check(self.atoms >= 2, "algo.atoms", self.atoms, "an integer >= 2")
        check(self.v_min < self.v_max, "algo.v_min", self.v_min, f"a number < algo.v_max ({self.v_max})")
        check(self.sigma_0 >= 0, "algo.sigma_0", self.sigma_0, "a number >= 0")
        if self.prioritized and not self.replay:  # priorities pick stored transitions; without replay none are kept
            raise ConfigError(
                "algo.prioritized=true is not accepted with algo.replay=false: prioritized replay chooses which "
                "stored transitions to learn from, and without replay every update uses the newest transitions. "
                "Set algo.replay=true, or algo.prioritized=false for the naive online update.")

    def env_switches(self) -> EnvSwitches:
        """DQN takes the env as it is (Atari's reward clipping is the env's own ``env.clip_rewards``)."""
        return EnvSwitches(gamma=self.gamma)

    @property
    def epsilon_range(self) -> tuple[float, float]:
        """(start, end) of the epsilon schedule: unset values are 1.0 -> 0.05, or 0 -> 0 with noisy nets."""
        start = self.eps_start if self.eps_start is not None else (0.0 if self.noisy else 1.0)
        end = self.eps_end if self.eps_end is not None else (0.0 if self.noisy else 0.05)
        return start, end


# ----------------------------------------------------------------- the math, one equation each
def linear_schedule(start: float, end: float, duration: float, progress: float) -> float:
    """epsilon(p) = start + (end - start) * min(1, p / duration): linear decay, then constant."""
    return start + (end - start) * min(1.0, progress / duration)


def epsilon_greedy(q_values: torch.Tensor, epsilon: float | torch.Tensor) -> torch.Tensor:
    """a = argmax_a Q(s, a) with probability 1 - epsilon, else uniform.  q_values [B, A] -> [B]; epsilon a
    float or one per sample [B] (a population's members)."""
    greedy = q_values.argmax(-1)  # [B]
    if not isinstance(epsilon, torch.Tensor) and epsilon <= 0:
        return greedy
    random = torch.randint_like(greedy, q_values.shape[-1])
    explore = torch.rand(greedy.shape, device=greedy.device) < epsilon
    return torch.where(explore, random, greedy)


def greedy_next_action(q_next_online: torch.Tensor, q_next_target: torch.Tensor, double: bool) -> torch.Tensor:
    """a* = argmax_a Q_online(s', a) (double Q-learning) or argmax_a Q_target(s', a).  [B, A] -> [B]."""
    return (q_next_online if double else q_next_target).argmax(-1)


def td_target(returns: torch.Tensor, discounts: torch.Tensor, q_next_target: torch.Tensor,
              next_action: torch.Tensor) -> torch.Tensor:
    """y = G + gamma_n Q_target(s', a*), with gamma_n = gamma^m (0 after a terminal state).  [B] ([P, B])."""
    return returns + discounts * q_next_target.gather(-1, next_action.unsqueeze(-1)).squeeze(-1)


def td_loss(q: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, kind: str) -> torch.Tensor:
    """L = mean_i w_i l(y_i - Q(s_i, a_i)), l = Huber (delta 1) or squared error.  [B] -> 0-d ([P, B] -> [P])."""
    if kind == "huber":
        per = nn.functional.smooth_l1_loss(q, target, reduction="none")  # [B]
    else:
        per = (q - target).pow(2)  # [B]
    return (weights * per).mean(-1)


def categorical_loss(log_probs: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """C51 cross-entropy per sample: -sum_k m_k log p_k(s, a).  [B, K] -> [B]."""
    return -(target_probs * log_probs).sum(-1)


# ----------------------------------------------------------------- the acting policy
class QPolicy(nn.Module):
    """Acts with the online Q-network: epsilon-greedy while training, greedy (noise off) when deterministic."""

    def __init__(self, net: QNetwork, support: torch.Tensor | None):
        super().__init__()
        self.net = net
        self.register_buffer("support", support if support is not None else torch.zeros(0), persistent=False)
        self.epsilon = 1.0
        self.eval_epsilon = 0.0

    def q_values(self, obs: torch.Tensor, noise: bool = True) -> torch.Tensor:
        """Q(s, .) [B, A]: the network's output, or sum_k z_k p_k(s, .) for C51."""
        out = self.net(obs, noise)
        if self.net.atoms == 1:
            return out
        return (out.softmax(-1) * self.support).sum(-1)  # [B, A]

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if deterministic:
            action = epsilon_greedy(self.q_values(obs, noise=False), self.eval_epsilon)
        else:
            self.net.reset_noise()  # noisy nets: new noise for every env step
            action = epsilon_greedy(self.q_values(obs), self.epsilon)
        return action, torch.zeros(action.shape, device=action.device)


class DQN:
    """Owns the online and target Q-networks, the optimiser and the update; ``update(batch)`` is one gradient step.

    The replay buffer is the off-policy loop's (:func:`rlrun.loops.run_off_policy`), which samples it and hands
    the batches in.
    """

    Config = DQNConfig
    loop = "off_policy"  # rlrun.loops.LOOPS: act, store, sample, update, log
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self, cfg: DQNConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.cfg, self.device = cfg, device
        atoms = cfg.atoms if cfg.distributional else 1
        net = QNetwork(observation_space, int(action_space.n), cfg.hidden_sizes, cfg.dueling, cfg.noisy, atoms,
                       cfg.sigma_0)
        support = torch.linspace(cfg.v_min, cfg.v_max, cfg.atoms) if cfg.distributional else None
        self.policy = QPolicy(net, support).to(device)
        self.policy.eval_epsilon = cfg.eval_epsilon
        self.target = copy.deepcopy(net).requires_grad_(False) if cfg.target_network else None
        fused = device.type in ("cpu", "cuda")  # one kernel for all parameters instead of a few per tensor
        self.optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=cfg.adam_eps, fused=fused)
        self.gradient_steps_done = 0
        self.last_target_update = 0

    # ----------------------------------------------------------------- schedules
    def set_progress(self, fraction: float) -> dict[str, float]:
        """Epsilon (linear decay) for the steps starting at ``fraction`` of training (PER's beta is the loop's)."""
        start, end = self.cfg.epsilon_range
        self.policy.epsilon = linear_schedule(start, end, self.cfg.eps_fraction, fraction)
        return {"charts/epsilon": self.policy.epsilon}

    # ----------------------------------------------------------------- the update
    def _bootstrap_net(self) -> QNetwork:
        return self.target if self.target is not None else self.policy.net

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The weighted loss, the per-sample errors (new priorities) and the mean Q(s, a) of the batch."""
        cfg, policy = self.cfg, self.policy
        actions = batch["actions"]
        with torch.no_grad():
            boot = self._bootstrap_net()
            if boot is not policy.net:
                boot.reset_noise()
            out_next = boot(batch["next_obs"])  # [B, A] or [B, A, K]
            q_next_target = out_next if boot.atoms == 1 else (out_next.softmax(-1) * policy.support).sum(-1)
            q_next_online = policy.q_values(batch["next_obs"]) if cfg.double else q_next_target  # [B, A]
            next_action = greedy_next_action(q_next_online, q_next_target, cfg.double)  # [B]
        out = policy.net(batch["obs"])  # [B, A] or [B, A, K]
        if not cfg.distributional:
            q = out.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [B] (a population's [P, B])
            target = td_target(batch["returns"], batch["discounts"], q_next_target, next_action)  # [B]
            loss = td_loss(q, target, batch["weights"], cfg.loss)
            return loss, (target - q).detach(), q.detach().mean(-1)
        log_probs = out.log_softmax(-1)  # [B, A, K]
        chosen = log_probs[torch.arange(actions.shape[0], device=actions.device), actions]  # [B, K]
        with torch.no_grad():
            next_probs = out_next.softmax(-1)[torch.arange(actions.shape[0], device=actions.device), next_action]
            project = categorical_projection_dense if torch.are_deterministic_algorithms_enabled() \
                else categorical_projection  # deterministic=true: no scattered sums
            target = project(next_probs, batch["returns"], batch["discounts"], policy.support)
        per_sample = categorical_loss(chosen, target)  # [B]
        q = (chosen.detach().exp() * policy.support).sum(-1)  # [B]
        return (batch["weights"] * per_sample).mean(), per_sample.detach(), q.mean()

    def update(self, batch: dict[str, torch.Tensor]) -> OffPolicyUpdate:
        """One gradient step on a replay ``batch``; returns the metrics and each sample's error (TD error, or the
        C51 cross-entropy), from which prioritized replay takes its new priorities."""
        self.policy.net.reset_noise()
        loss, errors, q_mean = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.net.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.gradient_steps_done += 1
        return OffPolicyUpdate({"losses/td_loss": loss.detach(), "losses/q_values": q_mean}, errors)

    @torch.no_grad()
    def update_target(self, step: int) -> None:
        """Every ``target_update_interval`` env steps: theta' <- tau theta + (1 - tau) theta' (tau = 1: a hard copy).

        Polyak averaging (tau < 1) happens on the same schedule, as in CleanRL and SB3 (``target_update_interval=1``
        averages after every training phase).
        """
        interval = self.cfg.target_update_interval
        if self.target is None or step // interval <= self.last_target_update // interval:
            return
        if self.cfg.tau < 1.0:
            for target, online in zip(self.target.parameters(), self.policy.net.parameters()):
                target.lerp_(online, self.cfg.tau)
        else:
            self.target.load_state_dict(self.policy.net.state_dict())
        self.last_target_update = step

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state = {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "last_target_update": self.last_target_update, "gradient_steps_done": self.gradient_steps_done}
        if self.target is not None:
            state["target"] = self.target.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.last_target_update = int(state["last_target_update"])
        self.gradient_steps_done = int(state["gradient_steps_done"])
        if self.target is not None:
            self.target.load_state_dict(state["target"])
