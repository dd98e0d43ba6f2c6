"""PQN, parallelised Q-learning (Gallici et al. 2024, "Simplifying Deep Temporal Difference Learning").

Naive online Q-learning has three problems the lecture names: consecutive samples are highly correlated,
each update sees a batch of one, and the target moves with every step. DQN answers with a replay buffer
and a target network. PQN answers without either: many parallel envs decorrelate the samples and make the
batch large, LayerNorm in the Q-network keeps bootstrapping from the online network stable, and Q(lambda)
returns over short rollouts (:func:`rlrun.returns.q_lambda_return`) take the place of n-step replay.

It rides the on-policy loop (:func:`rlrun.loops.run_on_policy`): epsilon-greedy collection of ``num_steps``
from every env into the rollout storage, the Q(lambda) targets of that rollout (:meth:`PQN.targets`), then
``update_epochs`` passes of shuffled minibatches of E[(Q(s, a) - G)^2] (:meth:`PQN.update`). This file holds
the network, the targets and the update; the schedules reuse DQN's :func:`linear_schedule` and
:func:`epsilon_greedy`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from rlrun.algos.base import OnPolicyAlgorithm
from rlrun.algos.dqn import epsilon_greedy, linear_schedule
from rlrun.checks import check, choice, positive, unit
from rlrun.envs.wrappers import EnvSwitches
from rlrun.losses import value_loss
from rlrun.networks import NatureCNN, layer_init, mlp
from rlrun.returns import q_lambda_return

OPTIMIZERS = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam}


@dataclass
class PQNConfig:
    """PQN's hyperparameters; the defaults are CleanRL's ``pqn.py`` (classic control) unless said otherwise."""

    name: str = "pqn"
    """Algorithm name (set by the algo/ config file)."""
    num_steps: int = 128
    """Rollout length per env: a batch holds num_steps * env.num_envs transitions."""
    gamma: float = 0.99
    """Discount factor."""
    q_lambda: float = 0.65
    """Q(lambda)'s lambda: 0 = one-step Q-learning targets, 1 = returns to the end of the rollout."""
    lr: float = 2.5e-4
    """Learning rate."""
    optimizer: str = "radam"
    """radam (the reference's, Liu et al. 2020) or adam."""
    adam_eps: float = 1e-8
    """The optimiser's epsilon (RAdam's and Adam's default)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to 0 over training."""
    update_epochs: int = 4
    """Passes over each rollout batch."""
    minibatch_size: int = 128
    """Transitions per gradient step (the batch is shuffled each epoch; CleanRL: 4 envs x 128 steps / 4)."""
    max_grad_norm: float | None = 10.0
    """Global gradient clipping (null: off)."""
    eps_start: float = 1.0
    """Epsilon-greedy: exploration rate at the start."""
    eps_end: float = 0.05
    """Exploration rate after the decay."""
    eps_fraction: float = 0.5
    """Fraction of training over which epsilon decays linearly from eps_start to eps_end."""
    eval_epsilon: float = 0.0
    """Exploration rate of deterministic evaluation (0: greedy; Atari papers use 0.001-0.05)."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of the Q-network (before its ReLU); false: the plain network."""
    hidden_sizes: list[int] = field(default_factory=lambda: [120, 84])
    """MLP hidden layer widths (vector observations; frames get the Nature CNN and its 512-unit layer)."""
    ortho_init: bool = True
    """Orthogonal initialisation (gain sqrt 2 for every layer, zero biases); false: PyTorch's default."""

    def __post_init__(self) -> None:
        check(self.num_steps >= 1, "algo.num_steps", self.num_steps, "an integer >= 1")
        unit("algo.gamma", self.gamma)
        unit("algo.q_lambda", self.q_lambda)
        positive("algo.lr", self.lr)
        choice("algo.optimizer", self.optimizer, tuple(OPTIMIZERS))
        positive("algo.adam_eps", self.adam_eps)
        check(self.update_epochs >= 1, "algo.update_epochs", self.update_epochs, "an integer >= 1")
        check(self.minibatch_size >= 1, "algo.minibatch_size", self.minibatch_size, "an integer >= 1")
        if self.max_grad_norm is not None:
            positive("algo.max_grad_norm", self.max_grad_norm)
        unit("algo.eps_start", self.eps_start)
        unit("algo.eps_end", self.eps_end)
        unit("algo.eps_fraction", self.eps_fraction, closed=False)
        unit("algo.eval_epsilon", self.eval_epsilon)
        check(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
              "algo.hidden_sizes", self.hidden_sizes, "a non-empty list of positive integers")

    def env_switches(self) -> EnvSwitches:
        """PQN takes the env as it is (Atari's reward clipping is the env's own ``env.clip_rewards``)."""
        return EnvSwitches(gamma=self.gamma)


def pqn_network(observation_space: gym.Space, num_actions: int, hidden_sizes: list[int], layer_norm: bool,
                ortho: bool) -> nn.Sequential:
    """Q(s, .): an MLP of ``hidden_sizes`` with ReLU (vectors) or the Nature CNN (uint8 frames [C, 84, 84]), then a
    linear layer to one value per action; ``layer_norm`` puts a LayerNorm after every hidden layer (for the CNN,
    over each conv layer's whole [C, H, W] output), as the reference networks do."""
    shape = observation_space.shape
    if len(shape) == 3:
        trunk = NatureCNN(shape[0], ortho, layer_norm)
        return nn.Sequential(trunk, layer_init(nn.Linear(trunk.out_dim, num_actions), math.sqrt(2), ortho))
    flatten = [nn.Flatten()] if len(shape) > 1 else []
    q = mlp(int(math.prod(shape)), hidden_sizes, num_actions, "relu", math.sqrt(2), ortho, layer_norm=layer_norm)
    return nn.Sequential(*flatten, *q)


class EpsilonGreedyQ(nn.Module):
    """Acts with the Q-network: epsilon-greedy while training, greedy (or ``eval_epsilon``) when deterministic."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.epsilon = 1.0
        self.eval_epsilon = 0.0

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.net(obs)  # [N, A]
        action = epsilon_greedy(q, self.eval_epsilon if deterministic else self.epsilon)  # [N]
        return action, torch.zeros(action.shape, device=action.device)


class PQN(OnPolicyAlgorithm):
    """Owns the Q-network and its optimiser; ``targets`` turns a rollout into Q(lambda) returns, ``update`` fits
    Q(s, a) to them. No replay buffer, no target network. The on-policy loop (rlrun.loops.run_on_policy: collect
    num_steps, targets, update) and its minibatch hooks (``shuffle``, ``take``) come from OnPolicyAlgorithm."""

    Config = PQNConfig
    action_spaces = (gym.spaces.Discrete,)

    def __init__(self, cfg: PQNConfig, observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.cfg, self.device = cfg, device
        net = pqn_network(observation_space, int(action_space.n), cfg.hidden_sizes, cfg.layer_norm, cfg.ortho_init)
        self.policy = EpsilonGreedyQ(net).to(device)
        self.policy.eval_epsilon = cfg.eval_epsilon
        # one kernel for all parameters (Adam) or one op per step over the list (RAdam) instead of a few per tensor:
        # on the CartPole network (batch 128, one thread) Adam's step takes ~50 us fused against ~180 us, RAdam's
        # ~170 us with foreach against ~300 us
        speed = {"fused": True} if cfg.optimizer == "adam" and device.type in ("cpu", "cuda") else {"foreach": True}
        self.optimizer = OPTIMIZERS[cfg.optimizer](net.parameters(), lr=cfg.lr, eps=cfg.adam_eps, **speed)

    def set_progress(self, fraction: float) -> dict[str, float]:
        """Epsilon (linear decay over ``eps_fraction`` of training) and the learning rate (linear to 0 with
        ``anneal_lr``) for the rollout starting at ``fraction`` of training."""
        cfg = self.cfg
        self.policy.epsilon = linear_schedule(cfg.eps_start, cfg.eps_end, cfg.eps_fraction, fraction)
        lr = cfg.lr * (1.0 - fraction) if cfg.anneal_lr else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return {"charts/epsilon": self.policy.epsilon, "charts/learning_rate": lr}

    @torch.no_grad()
    def targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """The rollout's Q(lambda) returns, bootstrapped from max_a Q(s_{t+1}, a) of the current network (the one
        that collected it), flattened to [T * N, ...] with the observations and actions."""
        T, N = buffer.rewards.shape
        flat = lambda x: x.reshape(T * N, *x.shape[2:])
        next_q = self.policy.net(flat(buffer.next_obs)).amax(-1).reshape(T, N)  # max_a Q(s_{t+1}, a) [T, N]
        returns = q_lambda_return(buffer.rewards, next_q, buffer.terminated, buffer.truncated, self.cfg.gamma,
                                  self.cfg.q_lambda)  # [T, N]
        return {"obs": flat(buffer.obs), "actions": flat(buffer.actions), "returns": flat(returns)}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """``update_epochs`` passes of shuffled minibatch steps on L = E[(Q(s, a) - G)^2], with gradient clipping;
        returns the mean TD loss and mean Q(s, a) over the steps. (A population runs this same loop on member-major
        batches [P, B, ...] through its own ``shuffle``, ``take``, ``chosen_q`` and ``gradient_step``.)"""
        obs, actions, returns = batch["obs"], batch["actions"], batch["returns"]
        size = returns.shape[-1]
        mb = min(self.cfg.minibatch_size, size)
        losses, q_means = [], []
        for _epoch in range(self.cfg.update_epochs):
            order = self.shuffle(size)
            for start in range(0, size, mb):
                idx = order[..., start:start + mb]
                q = self.chosen_q(self.take(obs, idx), self.take(actions, idx))  # Q(s, a) [(P,) mb]
                loss = value_loss(q, self.take(returns, idx))
                self.gradient_step(loss)
                losses.append(loss.detach())
                q_means.append(q.detach().mean(-1))
        return {"losses/td_loss": torch.stack(losses).mean(0), "losses/q_values": torch.stack(q_means).mean(0)}

    def chosen_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of the actions taken [B]."""
        return self.policy.net(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def gradient_step(self, loss: torch.Tensor) -> None:
        """zero_grad, backward, gradient clipping (max_grad_norm), optimiser step."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.policy.net.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
