"""PPO, A2C, VPG, NPG, TRPO, DQN and PQN for P members at once: the single-run algorithms with the stacked
network and optimiser.

Each class subclasses the single-run algorithm and keeps its loss and its update: the formulas in
:mod:`rlrun.losses` and :mod:`rlrun.algos.ppo` take means over the samples' (last) dimension, so on the
member-major batches [P, B] of a population they give one loss per member [P]. What changes is where the
numbers live: the networks are a :class:`~rlrun.population.stacked.StackedActorCritic`, the optimiser
steps every member with its own learning rate, a minibatch is drawn per member, and the values that may
differ between members (learning rate, clip range, gamma, ...) are tensors [P].

A member's checkpoint is exactly the checkpoint its single run would write (:meth:`member_state_dict`), so
``rlrun train resume=<member folder>`` and ``rlrun eval <member folder>`` treat it as an ordinary run.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import torch

from rlrun.algos.a2c import A2C
from rlrun.algos.base import OffPolicyUpdate
from rlrun.algos.dqn import DQN, epsilon_greedy, linear_schedule
from rlrun.algos.npg import NPG
from rlrun.algos.ppo import PPO
from rlrun.algos.pqn import PQN, pqn_network
from rlrun.algos.trpo import TRPO
from rlrun.algos.vpg import VPG
from rlrun.fused import FlatAdam
from rlrun.networks import ActorCritic, QNetwork
from rlrun.population.stacked import (
    StackedActorCritic,
    StackedAdam,
    StackedQNetwork,
    StackedRAdam,
    StackedRMSprop,
    clip_member_grads,
)
from rlrun.returns import gae, q_lambda_return
from rlrun.trust_region import categorical_kl, fisher_vector_product, gaussian_kl


def member_values(cfgs: list[Any], key: str, device: torch.device) -> torch.Tensor:
    """The members' values of config field ``key`` as a float tensor [P] (None -> inf, for max_grad_norm)."""
    values = [getattr(c, key) for c in cfgs]
    return torch.tensor([float("inf") if v is None else float(v) for v in values], device=device)


def shared_or_members(cfgs: list[Any], key: str, device: torch.device) -> float | torch.Tensor:
    """``key``'s value when every member has the same one (a float keeps the arithmetic cheap), else [P]."""
    values = {getattr(c, key) for c in cfgs}
    return values.pop() if len(values) == 1 else member_values(cfgs, key, device)


class Population:
    """What the populations share: the stacked network, per-member settings, targets, freezing, checkpoints."""

    single: type  # the single-run algorithm (PPO, A2C, VPG, NPG, TRPO, DQN, PQN)
    num_members: int
    stacked_net: Any  # the stacked network the optimisers step (StackedActorCritic, StackedQNetwork)
    stacked: dict[str, Any]  # the stacked optimisers, named as the single run's (policy, critic)

    def setup_members(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                      device: torch.device) -> None:
        """What every population keeps per member: settings, clipping, whether it still trains, optimisers."""
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"population training takes vector observations; this env has {observation_space}")
        self.cfgs, self.num_members, self.device = cfgs, len(cfgs), device
        self.spaces = (observation_space, action_space)
        self.max_grad_norm = member_values(cfgs, "max_grad_norm", device)  # [P], inf where off
        self.clips = bool(torch.isfinite(self.max_grad_norm).any())
        self.active = torch.ones(self.num_members, device=device)  # 0: the member has stopped (frozen)
        self.rows = torch.arange(self.num_members, device=device).unsqueeze(1)  # [P, 1]
        self.stacked, self.base_lrs = {}, {}
        self._templates: dict[int, Any] = {}

    def setup(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
              device: torch.device) -> None:
        """:meth:`setup_members` and the stacked actor-critic of the policy-gradient family."""
        self.setup_members(cfgs, observation_space, action_space, device)
        cfg = cfgs[0]
        # Each member is initialised as its single run would be (one after another from torch's generator).
        members = [ActorCritic(observation_space, action_space, c.hidden_sizes, c.activation, c.ortho_init,
                               c.log_std_init).to(device) for c in cfgs]
        self.policy = self.stacked_net = StackedActorCritic(members, cfg.activation, fused=cfg.fused)
        # The config the inherited loss reads: the first member's, with each coefficient that differs as [P].
        self.cfg = copy.copy(cfg)
        for key in ("vf_coef", "ent_coef"):
            if hasattr(cfg, key):
                setattr(self.cfg, key, shared_or_members(cfgs, key, device))

    def add_stacked(self, name: str, optimizer: Any, lr_key: str) -> None:
        """Register a stacked optimiser under the single run's name for it, with its members' learning rates."""
        self.stacked[name] = optimizer
        self.base_lrs[name] = member_values(self.cfgs, lr_key, self.device)  # [P]

    # ----------------------------------------------------------------- members
    def freeze(self, p: int) -> None:
        """Stop updating member ``p`` (it reached its threshold or diverged): its learning rates are 0 from now."""
        self.active[p] = 0.0
        for optimizer in self.stacked.values():
            optimizer.lr = optimizer.lr * self.active.unsqueeze(1)

    def set_learning_rates(self, fraction: float) -> dict[str, torch.Tensor]:
        """Each optimiser's member learning rates for ``fraction`` of training (annealed linearly to 0 if on);
        the values to log, [P] each."""
        scale = 1.0 - fraction if self.cfg.anneal_lr else 1.0
        out = {}
        for name, optimizer in self.stacked.items():
            lr = self.base_lrs[name] * scale
            optimizer.lr = (lr * self.active).unsqueeze(1)
            out[f"charts/learning_rate{'' if name == 'policy' else '_' + name}"] = lr
        return out

    def gradient_step_stacked(self, loss: torch.Tensor, optimizer: Any) -> None:
        """One step for every member: backward of the summed losses [P], per-member clipping, the optimiser."""
        flat = self.stacked_net.flat
        flat.grad = None  # backward then hands its [P, D] gradient over without a copy
        loss.sum().backward()
        if self.clips:
            clip_member_grads(flat.grad, self.max_grad_norm)
        optimizer.step(flat.grad)

    def shuffle(self, size: int) -> torch.Tensor:
        """An independent random order per member [P, size] (a fixed-size draw: members never shift each other)."""
        return torch.rand(self.num_members, size, device=self.device).argsort(1)

    def take(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Member p's minibatch ``idx[p]`` of ``x[p]``: [P, B, ...] -> [P, mb, ...]."""
        return x[self.rows, idx]

    # ----------------------------------------------------------------- targets
    def by_member(self, x: torch.Tensor) -> torch.Tensor:
        """A rollout tensor [T, P * N, ...] as member-major batches [P, T * N, ...]."""
        T, P = x.shape[0], self.num_members
        N = x.shape[1] // P
        return x.reshape(T, P, N, *x.shape[2:]).transpose(0, 1).reshape(P, T * N, *x.shape[2:])

    def by_step(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """Member-major values [P, T * N] back in the rollout's layout [T, P * N]."""
        P = self.num_members
        return x.reshape(P, T, -1).transpose(0, 1).reshape(T, -1)

    def per_env(self, key: str, num_envs: int) -> float | torch.Tensor:
        """A per-member config value for each env of the population's vector env: a float, or [P * N]."""
        value = shared_or_members(self.cfgs, key, self.device)
        return value.repeat_interleave(num_envs // self.num_members) if isinstance(value, torch.Tensor) else value

    @torch.no_grad()
    def rollout_values(self, buffer: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """V(s_t) and V(s_{t+1}) of the rollout [T, P * N], each member's envs by its own critic."""
        T = buffer.rewards.shape[0]
        values = self.policy.value(self.by_member(buffer.obs))
        return self.by_step(values, T), self.by_step(self.policy.value(self.by_member(buffer.next_obs)), T)

    @torch.no_grad()
    def gae_targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """GAE(lambda) per member: the rollout [T, P * N] -> member-major batches [P, T * N, ...]."""
        values, next_values = self.rollout_values(buffer)
        num_envs = buffer.rewards.shape[1]
        advantages = gae(buffer.rewards, values, next_values, buffer.terminated, buffer.truncated,
                         self.per_env("gamma", num_envs), self.per_env("gae_lambda", num_envs))
        values, advantages = self.by_member(values), self.by_member(advantages)
        return {"obs": self.by_member(buffer.obs), "actions": self.by_member(buffer.actions),
                "logp": self.by_member(buffer.logp), "values": values, "advantages": advantages,
                "returns": advantages + values}

    # ----------------------------------------------------------------- checkpoints
    def template(self, p: int) -> Any:
        """A single-run agent of member ``p``'s config: the checkpoint layout to export into."""
        if p not in self._templates:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self._templates[p] = self.single(self.cfgs[p], *self.spaces, self.device)
        return self._templates[p]

    def single_optimizers(self, single: Any) -> dict[str, Any]:
        """The single run's optimisers by the names of :attr:`stacked`."""
        return single.optimizers

    def member_state_dict(self, p: int) -> dict[str, Any]:
        """Member ``p`` as its single run's ``state_dict()`` (what a checkpoint of that run holds)."""
        single = self.template(p)
        single.policy.load_state_dict(self.policy.member(p))
        for name, optimizer in self.single_optimizers(single).items():
            optimizer.load_state_dict(self.export_optimizer(p, name, optimizer, single.policy))
        return single.state_dict()

    def export_optimizer(self, p: int, name: str, single_optimizer: Any, policy: ActorCritic) -> dict[str, Any]:
        """Member ``p``'s state of the stacked optimiser ``name`` in the layout of the single run's optimiser."""
        stacked = self.stacked[name]
        state = single_optimizer.state_dict()
        for group in state["param_groups"]:
            group["lr"] = float(stacked.lr[p])
        state["state"] = {}
        if stacked.steps == 0:
            return state
        names = {id(param): n for n, param in policy.named_parameters()}
        columns, width = self.stacked_net.columns, self.stacked_net.flat.shape[1]
        start, stop = stacked.columns.start or 0, stacked.columns.stop or width  # the optimiser's own columns
        per_name = {n: stacked.member_state(p, slice(*columns[n])) for n in names.values()
                    if columns[n][0] >= start and columns[n][1] <= stop}
        if isinstance(single_optimizer, FlatAdam):  # one flat parameter: every parameter in the module's order
            order = [per_name[n] for n, _ in policy.named_parameters()]
            state["state"] = {0: {k: order[0][k] if k == "step" else torch.cat([e[k] for e in order])
                                  for k in order[0]}}
            return state
        params = [q for group in single_optimizer.param_groups for q in group["params"]]
        for i, param in enumerate(params):
            entry = per_name[names[id(param)]]
            state["state"][i] = {k: v.view(param.shape) if v.dim() else v for k, v in entry.items()}
        return state

    def state_dict(self) -> dict[str, Any]:
        raise TypeError("a population is saved member by member (member_state_dict)")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise TypeError("a population starts fresh; resume a member's folder as an ordinary run")


class PopulationPPO(Population, PPO):
    """PPO for P members: :meth:`PPO.update` and :meth:`PPO.loss` on member-major batches [P, B]."""

    single = PPO

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup(cfgs, observation_space, action_space, device)
        self.add_stacked("policy", StackedAdam(self.policy.flat.data, member_values(cfgs, "lr", device),
                                               member_values(cfgs, "adam_eps", device)), "lr")
        self.entropy_bonus = any(c.ent_coef for c in cfgs)
        self.clip_coef = member_values(cfgs, "clip_coef", device).unsqueeze(1)  # [P, 1]
        self.vf_clip_coef = torch.tensor([[c.vf_clip_coef if c.vf_clip_coef is not None else c.clip_coef]
                                          for c in cfgs], device=device)  # [P, 1]
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> dict[str, Any]:
        """Each member's learning rate and clip ranges for ``fraction`` of training done; [P] tensors to log."""
        cfg, remaining = self.cfg, 1.0 - fraction
        out = self.set_learning_rates(fraction)
        self.clip = self.clip_coef * remaining if cfg.anneal_clip else self.clip_coef
        self.vf_clip = self.vf_clip_coef * remaining if cfg.anneal_vf_clip else self.vf_clip_coef
        out["charts/clip_coef"] = self.clip.squeeze(1)
        if cfg.clip_vloss:
            out["charts/vf_clip_coef"] = self.vf_clip.squeeze(1)
        return out

    targets = Population.gae_targets

    def gradient_step(self, loss: torch.Tensor) -> None:
        self.gradient_step_stacked(loss, self.stacked["policy"])

    def stop_early(self, epoch_kl: torch.Tensor) -> bool:
        """KL early stop per member: a member over ``target_kl`` sits out the rest of this update."""
        optimizer = self.stacked["policy"]
        optimizer.lr = optimizer.lr.masked_fill((epoch_kl > self.cfg.target_kl).unsqueeze(1), 0.0)
        return bool((optimizer.lr == 0).all())

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        optimizer = self.stacked["policy"]
        lr = optimizer.lr
        try:
            return super().update(batch)
        finally:
            optimizer.lr = lr * self.active.unsqueeze(1)  # as before a KL early stop

    def single_optimizers(self, single: Any) -> dict[str, Any]:
        return {"policy": single.optimizer}


class PopulationA2C(Population, A2C):
    """A2C for P members: :meth:`A2C.update` on member-major batches, RMSprop (or Adam) per member."""

    single = A2C

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup(cfgs, observation_space, action_space, device)
        lr, eps = member_values(cfgs, "lr", device), member_values(cfgs, "adam_eps", device)
        if self.cfg.optimizer == "rmsprop":
            optimizer = StackedRMSprop(self.policy.flat.data, lr, eps, member_values(cfgs, "rmsprop_alpha", device))
        else:
            optimizer = StackedAdam(self.policy.flat.data, lr, eps)
        self.add_stacked("policy", optimizer, "lr")
        self.optimizers = self.stacked
        self.params = []
        self.set_progress(0.0)

    set_progress = Population.set_learning_rates
    targets = Population.gae_targets

    def gradient_step(self, optimizer: Any, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        self.gradient_step_stacked(loss, optimizer)


class PopulationVPG(Population, VPG):
    """VPG with fixed-horizon batches (``batch_mode=steps``) for P members: the policy's and the baseline's
    Adam step their own columns of the stacked parameters, each with its members' learning rates."""

    single = VPG

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        if cfgs[0].batch_mode != "steps":
            raise ValueError("VPG populations need algo.batch_mode=steps (whole-episode batches differ in size "
                             "between members)")
        self.setup(cfgs, observation_space, action_space, device)
        self.whole_episodes, self.use_baseline, self.episode_step = False, cfgs[0].baseline == "value", None
        eps = member_values(cfgs, "adam_eps", device)
        flat = self.policy.flat.data
        self.add_stacked("policy", StackedAdam(flat, member_values(cfgs, "lr", device), eps,
                                               columns=self.policy.actor_columns), "lr")
        if self.use_baseline:
            self.add_stacked("critic", StackedAdam(flat, member_values(cfgs, "vf_lr", device), eps,
                                                   columns=self.policy.critic_columns), "vf_lr")
        self.optimizers = self.stacked
        self.actor_params = self.critic_params = []
        self.set_progress(0.0)

    set_progress = Population.set_learning_rates
    rollout_values = Population.rollout_values

    def rollout_gamma(self, num_envs: int) -> float | torch.Tensor:
        return self.per_env("gamma", num_envs)

    def batch_layout(self, x: torch.Tensor) -> torch.Tensor:
        return self.by_member(x)

    def gradient_step(self, optimizer: Any, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        self.gradient_step_stacked(loss, optimizer)


class PopulationNPG(Population, NPG):
    """NPG for P members: each member's conjugate gradient is a row of one batched CG (its own alpha and beta,
    :func:`rlrun.trust_region.conjugate_gradient`), its Fisher-vector products the rows of one double backward
    (the members' KLs are summed, so the Hessian is block-diagonal), its step size its own ``max_kl``."""

    single = NPG

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup(cfgs, observation_space, action_space, device)
        self.whole_episodes = False
        self.add_stacked("critic", StackedAdam(self.policy.flat.data, member_values(cfgs, "lr", device),
                                               member_values(cfgs, "adam_eps", device),
                                               columns=self.policy.critic_columns), "lr")
        self.optimizers = self.stacked
        self.actor_params = self.critic_params = []
        self.max_kl = member_values(cfgs, "max_kl", device)  # [P]
        self.set_progress(0.0)

    set_progress = Population.set_learning_rates
    targets = Population.gae_targets

    def gradient_step(self, optimizer: Any, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        self.gradient_step_stacked(loss, optimizer)

    # ------------------------------------------------------------- the policy as a function of flat rows [P, D]
    def get_flat(self) -> torch.Tensor:
        """Every member's parameters [P, D] (the steps are zero outside the actor's columns)."""
        return self.policy.flat.detach().clone()

    @torch.no_grad()
    def set_flat(self, flat: torch.Tensor) -> None:
        self.policy.flat[:, self.policy.actor_columns] = flat[:, self.policy.actor_columns]

    def mean_kl(self, old: tuple[torch.Tensor, torch.Tensor | None], new: torch.Tensor) -> torch.Tensor:
        """Each member's mean KL(pi_old || pi) [P] from policy outputs [P, B, A]."""
        if self.policy.discrete:
            return categorical_kl(old[0], new).mean(-1)
        return gaussian_kl(old[0], old[1].unsqueeze(1), new, self.policy.log_std.unsqueeze(1)).mean(-1)

    def policy_gradient(self, surrogate: torch.Tensor) -> torch.Tensor:
        """Each member's g [P, D]: the gradient of the summed surrogates is member p's in row p."""
        grad = torch.autograd.grad(surrogate.sum(), self.policy.flat)[0]
        grad[:, self.policy.critic_columns] = 0.0
        return grad

    def fisher_product(self, mean_kl, damping: float):
        """v [P, D] -> (F_p + damping I) v_p per row: one double backward through the summed mean KLs."""
        product = fisher_vector_product(lambda: mean_kl().sum(), [self.policy.flat], damping)
        return lambda v: product(v.reshape(-1)).reshape(v.shape)


class PopulationTRPO(PopulationNPG, TRPO):
    """TRPO for P members: NPG's batched direction, then one backtracking line search in which each member
    accepts its own first step that improves its surrogate within its KL limit."""

    single = TRPO

    def apply_step(self, batch: dict[str, torch.Tensor], advantages: torch.Tensor, old: tuple, start: torch.Tensor,
                   full_step: torch.Tensor) -> dict[str, Any]:
        cfg = self.cfg
        obs, actions, old_logp = batch["obs"], batch["actions"], batch["logp"]
        before = self.surrogate(obs, actions, old_logp, advantages)  # [P]
        accepted = torch.zeros(self.num_members, dtype=torch.bool, device=self.device)
        steps = torch.full((self.num_members,), cfg.max_backtracks, device=self.device)
        chosen = start.clone()
        for i in range(cfg.max_backtracks):  # theta_i = theta + coef^i full_step, as backtracking_line_search
            candidate = start + cfg.backtrack_coef ** i * full_step
            self.set_flat(candidate)
            with torch.no_grad():
                kl = self.mean_kl(old, self.policy.policy_params(obs))
            improvement = self.surrogate(obs, actions, old_logp, advantages) - before
            ok = torch.isfinite(improvement) & torch.isfinite(kl) & (improvement > 0) & (kl <= self.max_kl) & ~accepted
            chosen = torch.where(ok.unsqueeze(1), candidate, chosen)
            steps = torch.where(ok, float(i + 1), steps)
            accepted |= ok
            if bool(accepted.all()):
                break
        self.set_flat(chosen)  # a member that accepted nothing stays at start
        fraction = torch.where(accepted, cfg.backtrack_coef ** (steps - 1), 0.0)
        return {"step_fraction": fraction, "charts/line_search_steps": steps,
                "charts/line_search_accepted": accepted.float()}


class StackedQ:
    """What :meth:`DQN.loss` calls as a Q-network, for the stacked online parameters or a target's ``flat``."""

    atoms = 1

    def __init__(self, net: StackedQNetwork, flat: torch.Tensor | None = None):
        self.net, self.flat = net, flat

    def __call__(self, obs: torch.Tensor, noise: bool = True) -> torch.Tensor:
        return self.net.q_values(obs, self.flat)  # [P, B, A]

    def reset_noise(self) -> None:
        """No noisy layers here (noisy nets run alone)."""


class StackedQPolicy:
    """Epsilon-greedy over the members' Q-values, each member with its own epsilon."""

    def __init__(self, net: StackedQNetwork, eval_epsilon: float):
        self.net, self.eval_epsilon = StackedQ(net), eval_epsilon
        self.epsilon = torch.ones(net.num_members, device=net.flat.device)  # [P], set by the schedule

    def q_values(self, obs: torch.Tensor, noise: bool = True) -> torch.Tensor:
        return self.net(obs)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions for the population's flat batch obs [P * N, ...] (member-major)."""
        P = self.net.net.num_members
        q = self.net(obs.reshape(P, -1, *obs.shape[1:]))  # [P, N, A]
        epsilon = self.eval_epsilon if deterministic else self.epsilon.repeat_interleave(q.shape[1])  # [P * N]
        action = epsilon_greedy(q.reshape(-1, q.shape[-1]), epsilon)
        return action, torch.zeros(action.shape, device=action.device)


class PopulationDQN(Population, DQN):
    """DQN for P members (replay on or off, target network on or off, double Q-learning, n-step returns):
    :meth:`DQN.loss` on member-major batches [P, B] from a replay that samples each member's own envs. Rainbow's
    prioritized replay, dueling, noisy and C51 heads run alone."""

    single = DQN

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup_members(cfgs, observation_space, action_space, device)
        cfg = self.cfg = cfgs[0]
        nets = [QNetwork(observation_space, int(action_space.n), c.hidden_sizes).to(device) for c in cfgs]
        self.stacked_net = StackedQNetwork(nets)
        self.target_flat = self.stacked_net.flat.detach().clone() if cfg.target_network else None
        self.target = StackedQ(self.stacked_net, self.target_flat) if cfg.target_network else None
        self.policy = StackedQPolicy(self.stacked_net, cfg.eval_epsilon)
        self.add_stacked("optimizer", StackedAdam(self.stacked_net.flat.data, member_values(cfgs, "lr", device),
                                                  member_values(cfgs, "adam_eps", device)), "lr")
        ranges = [c.epsilon_range for c in cfgs]
        self.eps_start = torch.tensor([r[0] for r in ranges], device=device)  # [P]
        self.eps_end = torch.tensor([r[1] for r in ranges], device=device)  # [P]
        self.gradient_steps_done = 0
        self.last_target_update = 0

    def set_progress(self, fraction: float) -> dict[str, torch.Tensor]:
        """Each member's epsilon (linear decay from its eps_start to its eps_end)."""
        self.policy.epsilon = linear_schedule(self.eps_start, self.eps_end, self.cfg.eps_fraction, fraction)
        return {"charts/epsilon": self.policy.epsilon}

    def update(self, batch: dict[str, torch.Tensor]) -> OffPolicyUpdate:
        """One gradient step for every member on its own replay batch (``batch`` tensors [P, B, ...])."""
        loss, errors, q_mean = self.loss(batch)  # [P], [P, B], [P]
        self.gradient_step_stacked(loss, self.stacked["optimizer"])
        self.gradient_steps_done += 1
        return OffPolicyUpdate({"losses/td_loss": loss.detach(), "losses/q_values": q_mean}, errors)

    @torch.no_grad()
    def update_target(self, step: int) -> None:
        """As :meth:`DQN.update_target`, for every member's target at once."""
        interval = self.cfg.target_update_interval
        if self.target_flat is None or step // interval <= self.last_target_update // interval:
            return
        self.target_flat.lerp_(self.stacked_net.flat.detach(), self.cfg.tau)  # tau = 1: a copy
        self.last_target_update = step

    def member_state_dict(self, p: int) -> dict[str, Any]:
        single = self.template(p)
        single.policy.net.load_state_dict(self.stacked_net.member(p))
        if self.target_flat is not None:
            single.target.load_state_dict(self.stacked_net.member(p, self.target_flat))
        single.optimizer.load_state_dict(self.export_optimizer(p, "optimizer", single.optimizer, single.policy.net))
        single.gradient_steps_done, single.last_target_update = self.gradient_steps_done, self.last_target_update
        return single.state_dict()


class PopulationPQN(Population, PQN):
    """PQN for P members: the stacked Q-networks (LayerNorm per member), Q(lambda) targets of each member's own envs
    with its own gamma and lambda, epsilon-greedy with its own schedule, and RAdam (or Adam) per member."""

    single = PQN

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup_members(cfgs, observation_space, action_space, device)
        cfg = self.cfg = cfgs[0]
        # Each member is initialised as its single run would be (one after another from torch's generator).
        nets = [pqn_network(observation_space, int(action_space.n), c.hidden_sizes, c.layer_norm, c.ortho_init)
                .to(device) for c in cfgs]
        self.stacked_net = StackedQNetwork(nets)
        self.policy = StackedQPolicy(self.stacked_net, cfg.eval_epsilon)
        optimizer = {"radam": StackedRAdam, "adam": StackedAdam}[cfg.optimizer]
        self.add_stacked("policy", optimizer(self.stacked_net.flat.data, member_values(cfgs, "lr", device),
                                             member_values(cfgs, "adam_eps", device)), "lr")
        self.eps_start = member_values(cfgs, "eps_start", device)  # [P]
        self.eps_end = member_values(cfgs, "eps_end", device)  # [P]
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> dict[str, torch.Tensor]:
        """Each member's epsilon (linear decay from its eps_start to its eps_end) and learning rate."""
        self.policy.epsilon = linear_schedule(self.eps_start, self.eps_end, self.cfg.eps_fraction, fraction)
        return {"charts/epsilon": self.policy.epsilon, **self.set_learning_rates(fraction)}

    @torch.no_grad()
    def targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """:meth:`PQN.targets` per member: max_a Q(s_{t+1}, a) of each member's envs by its own network, the
        Q(lambda) returns of the rollout [T, P * N] with each env's member's gamma and lambda, then member-major
        batches [P, T * N, ...]."""
        T, num_envs = buffer.rewards.shape
        next_q = self.by_step(self.stacked_net.q_values(self.by_member(buffer.next_obs)).amax(-1), T)  # [T, P * N]
        returns = q_lambda_return(buffer.rewards, next_q, buffer.terminated, buffer.truncated,
                                  self.per_env("gamma", num_envs), self.per_env("q_lambda", num_envs))  # [T, P * N]
        return {"obs": self.by_member(buffer.obs), "actions": self.by_member(buffer.actions),
                "returns": self.by_member(returns)}

    def chosen_q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Each member's Q(s, a) of its minibatch [P, mb] (:meth:`PQN.update` runs the epochs)."""
        return self.stacked_net.q_values(obs).gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def gradient_step(self, loss: torch.Tensor) -> None:
        self.gradient_step_stacked(loss, self.stacked["policy"])

    def member_state_dict(self, p: int) -> dict[str, Any]:
        single = self.template(p)
        single.policy.net.load_state_dict(self.stacked_net.member(p))
        single.optimizer.load_state_dict(self.export_optimizer(p, "policy", single.optimizer, single.policy.net))
        return single.state_dict()


POPULATION_ALGOS = {"ppo": PopulationPPO, "a2c": PopulationA2C, "vpg": PopulationVPG, "npg": PopulationNPG,
                    "trpo": PopulationTRPO, "dqn": PopulationDQN, "pqn": PopulationPQN}
