"""What the loops, ``train`` and ``rlrun eval`` may use of an algorithm, and the parts the on-policy family shares.

The interface is declared here and nowhere else: :class:`Algorithm` is what every algorithm offers,
:class:`OnPolicy` and :class:`OffPolicy` what each family's loop (:mod:`rlrun.loops`) calls on top. Nothing
outside an algorithm's module uses a member that is not listed here; :class:`Searching` is the third family's
(AlphaZero).

An algorithm owns its networks, its optimisers and its update; the loops own the data (rollout storage,
the replay buffer) and hand it over as batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Optional, Protocol, runtime_checkable

import gymnasium as gym
import torch
from torch import nn

from rlrun.checks import ConfigError, check, choice, positive, unit
from rlrun.envs.wrappers import EnvSwitches
from rlrun.losses import value_loss
from rlrun.networks import ACTIVATIONS, ActorCritic


# ----------------------------------------------------------------- the interface
@runtime_checkable
class Policy(Protocol):
    """What acts in the env: training's collection, evaluation and ``rlrun eval``."""

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions [N, ...] for observations [N, ...], and their log-probabilities [N] (zeros where none)."""


@runtime_checkable
class AlgorithmConfig(Protocol):
    name: str
    gamma: float

    def env_switches(self) -> EnvSwitches:
        """The observation and reward wrappers this config turns on (Engstrom et al. 2020's switches)."""


@runtime_checkable
class Algorithm(Protocol):
    """What every algorithm offers ``train``, the loops and ``rlrun eval``."""

    Config: ClassVar[type]
    """The config dataclass (``algo=<name>`` is built into it)."""
    loop: ClassVar[str]
    """The loop that trains it: a key of :data:`rlrun.loops.LOOPS`."""
    action_spaces: ClassVar[tuple[type[gym.Space], ...]]
    """The action spaces it can act in."""
    cfg: Any
    device: torch.device
    policy: Policy

    def set_progress(self, fraction: float) -> dict[str, float]:
        """Set the schedules (learning rate, clip range, epsilon, ...) for ``fraction`` of training done; returns
        the values to log."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class OnPolicy(Algorithm, Protocol):
    """The policy-gradient family, trained by :func:`rlrun.loops.run_on_policy`."""

    whole_episodes: bool
    """Every batch starts from freshly reset envs (VPG with whole-episode batches)."""

    def targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """A collected rollout (:class:`rlrun.loops.RolloutBuffer`) -> the batch :meth:`update` takes."""

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One iteration's update; returns the metrics to log (``losses/...``)."""


class OffPolicyUpdate(NamedTuple):
    """What one off-policy gradient step returns: the metrics to log, and each sample's error [B] (the
    replay's new priorities, when it has them)."""

    metrics: dict[str, torch.Tensor]
    errors: torch.Tensor


@runtime_checkable
class OffPolicy(Algorithm, Protocol):
    """The DQN family, trained by :func:`rlrun.loops.run_off_policy` (which owns the replay buffer)."""

    gradient_steps_done: int

    def update(self, batch: dict[str, torch.Tensor]) -> OffPolicyUpdate:
        """One gradient step on a replay batch."""

    def update_target(self, step: int) -> None:
        """Update the target network if one is due at env step ``step``."""


@runtime_checkable
class Searching(Algorithm, Protocol):
    """AlphaZero, trained by :func:`rlrun.loops.run_search`: self-play with a tree search, learning from the
    search's policies and the games' outcomes."""

    game: Any
    """The :class:`rlrun.search.games.TensorGame` it plays."""
    gradient_steps_done: int

    def self_play(self, states: torch.Tensor) -> Any:
        """Search every game's position [N, D]; a :class:`rlrun.search.mcts.SearchResult` whose ``action`` is the
        move to play and ``policy`` the training target."""

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One gradient step on replay positions (``states``, ``policies``, ``z``)."""


# ----------------------------------------------------------------- what the on-policy family shares
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
    fused: bool = True
    """CPU speed path for small MLPs (rlrun/fused.py): one autograd node per MLP, tanh from sigmoid, and for PPO
    all parameters in one flat tensor with a fused Adam step. false: nn.Sequential, nn.Tanh, optimizer.step()."""

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

    def env_switches(self) -> EnvSwitches:
        return EnvSwitches(self.norm_obs, self.clip_obs, self.norm_reward, self.clip_reward, self.gamma)


class OnPolicyAlgorithm:
    """The defaults of the on-policy family: GAE targets from the rollout, batches that run on across resets."""

    loop: ClassVar[str] = "on_policy"
    action_spaces: ClassVar[tuple[type[gym.Space], ...]] = (gym.spaces.Discrete, gym.spaces.Box)
    whole_episodes = False
    cfg: OnPolicyConfig
    policy: ActorCritic

    def targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """GAE(lambda) advantages and returns of the rollout, flattened to [T * N, ...]."""
        return buffer.compute(self.policy.value, self.cfg.gamma, self.cfg.gae_lambda)

    def shuffle(self, size: int) -> torch.Tensor:
        """A random order of a batch's ``size`` samples (for one epoch of minibatches)."""
        return torch.randperm(size, device=self.device)

    @staticmethod
    def take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The minibatch ``idx`` (a slice of :meth:`shuffle`'s order) of a batch tensor ``x``."""
        return x[idx]


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


class PolicyGradient(OnPolicyAlgorithm):
    """The policy-gradient family's common part; subclasses add ``update(batch)``."""

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
                           cfg.log_std_init, cfg.fused)

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
        size = targets.shape[-1]
        mb = min(minibatch_size, size)
        losses = []
        for _ in range(epochs):
            order = self.shuffle(size)
            for start in range(0, size, mb):
                idx = order[..., start:start + mb]
                loss = value_loss(self.policy.value(self.take(obs, idx)), self.take(targets, idx))
                self.gradient_step(self.optimizers["critic"], loss, self.critic_params)
                losses.append(loss.detach())
        return torch.stack(losses).mean(0)

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(),
                "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
