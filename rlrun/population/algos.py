"""PPO and A2C for P members at once: the single-run algorithms with the stacked network and optimiser.

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
from rlrun.algos.ppo import PPO
from rlrun.fused import FlatAdam
from rlrun.networks import ActorCritic
from rlrun.population.stacked import StackedActorCritic, StackedAdam, StackedRMSprop, clip_member_grads
from rlrun.returns import gae


def member_values(cfgs: list[Any], key: str, device: torch.device) -> torch.Tensor:
    """The members' values of config field ``key`` as a float tensor [P] (None -> inf, for max_grad_norm)."""
    values = [getattr(c, key) for c in cfgs]
    return torch.tensor([float("inf") if v is None else float(v) for v in values], device=device)


def shared_or_members(cfgs: list[Any], key: str, device: torch.device) -> float | torch.Tensor:
    """``key``'s value when every member has the same one (a float keeps the arithmetic cheap), else [P]."""
    values = {getattr(c, key) for c in cfgs}
    return values.pop() if len(values) == 1 else member_values(cfgs, key, device)


class Population:
    """What PPO and A2C populations share: the stacked network, per-member settings, targets, checkpoints."""

    single: type  # the single-run algorithm (PPO, A2C)
    num_members: int
    policy: StackedActorCritic

    def setup(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
              device: torch.device) -> None:
        cfg = cfgs[0]
        if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
            raise ValueError(f"population training takes vector observations; this env has {observation_space}")
        self.cfgs, self.num_members, self.device = cfgs, len(cfgs), device
        self.spaces = (observation_space, action_space)
        # Each member is initialised as its single run would be (one after another from torch's generator).
        members = [ActorCritic(observation_space, action_space, c.hidden_sizes, c.activation, c.ortho_init,
                               c.log_std_init).to(device) for c in cfgs]
        self.policy = StackedActorCritic(members, cfg.activation, fast_tanh_on=cfg.fused)
        # The config the inherited loss reads: the first member's, with each coefficient that differs as [P].
        self.cfg = copy.copy(cfg)
        for key in ("vf_coef", "ent_coef"):
            if hasattr(cfg, key):
                setattr(self.cfg, key, shared_or_members(cfgs, key, device))
        self.base_lr = member_values(cfgs, "lr", device)  # [P]
        self.max_grad_norm = member_values(cfgs, "max_grad_norm", device)  # [P], inf where off
        self.active = torch.ones(self.num_members, device=device)  # 0: the member has stopped (frozen)
        self.rows = torch.arange(self.num_members, device=device).unsqueeze(1)  # [P, 1]
        self._templates: dict[int, Any] = {}

    # ----------------------------------------------------------------- members
    def freeze(self, p: int) -> None:
        """Stop updating member ``p`` (it reached its threshold or diverged): its learning rate is 0 from now."""
        self.active[p] = 0.0
        optimizer = self.stacked_optimizer
        optimizer.lr = optimizer.lr * self.active.unsqueeze(1)

    def lr_now(self, fraction: float) -> torch.Tensor:
        """The members' learning rates [P] for ``fraction`` of training done (annealed linearly to 0 if on)."""
        return self.base_lr * (1.0 - fraction) if self.cfg.anneal_lr else self.base_lr

    def gradient_step_stacked(self, loss: torch.Tensor) -> None:
        """One step for every member: backward of the summed losses [P], per-member clipping, the optimiser."""
        grad = self.policy.flat.grad
        grad.zero_()  # in place: the layer views' .grad point into it
        loss.sum().backward()
        if self.clips:
            clip_member_grads(grad, self.max_grad_norm)
        self.stacked_optimizer.step(grad)

    @property
    def clips(self) -> bool:
        return bool(torch.isfinite(self.max_grad_norm).any())

    # ----------------------------------------------------------------- targets
    @torch.no_grad()
    def targets(self, buffer: Any) -> dict[str, torch.Tensor]:
        """GAE(lambda) per member: the rollout [T, P * N] -> member-major batches [P, T * N, ...]."""
        T, PN = buffer.rewards.shape
        P = self.num_members
        N = PN // P

        def by_member(x: torch.Tensor) -> torch.Tensor:  # [T, P * N, ...] -> [P, T * N, ...]
            return x.reshape(T, P, N, *x.shape[2:]).transpose(0, 1).reshape(P, T * N, *x.shape[2:])

        def by_step(x: torch.Tensor) -> torch.Tensor:  # [P, T * N] -> [T, P * N]
            return x.reshape(P, T, N).transpose(0, 1).reshape(T, PN)

        obs = by_member(buffer.obs)
        values = self.policy.value(obs)  # [P, T * N]
        next_values = self.policy.value(by_member(buffer.next_obs))  # [P, T * N]
        gamma = self.per_env(self.cfgs, "gamma", N)
        lam = self.per_env(self.cfgs, "gae_lambda", N)
        advantages = by_member(gae(buffer.rewards, by_step(values), by_step(next_values), buffer.terminated,
                                   buffer.truncated, gamma, lam))  # [P, T * N]
        return {"obs": obs, "actions": by_member(buffer.actions), "logp": by_member(buffer.logp),
                "values": values, "advantages": advantages, "returns": advantages + values}

    def per_env(self, cfgs: list[Any], key: str, envs_per_member: int) -> float | torch.Tensor:
        """A per-member value for each env of the population's vector env: a float, or [P * N]."""
        value = shared_or_members(cfgs, key, self.device)
        return value.repeat_interleave(envs_per_member) if isinstance(value, torch.Tensor) else value

    # ----------------------------------------------------------------- checkpoints
    def template(self, p: int) -> Any:
        """A single-run agent of member ``p``'s config: the checkpoint layout to export into."""
        if p not in self._templates:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                self._templates[p] = self.single(self.cfgs[p], *self.spaces, self.device)
        return self._templates[p]

    def export_optimizer(self, p: int, single_optimizer: Any, policy: ActorCritic, lr: float) -> dict[str, Any]:
        """Member ``p``'s optimiser state in the layout of the single run's optimiser ``single_optimizer``."""
        state = single_optimizer.state_dict()
        for group in state["param_groups"]:
            group["lr"] = lr
        stacked = self.stacked_optimizer
        if stacked.steps == 0:
            return state
        if isinstance(single_optimizer, FlatAdam):  # one flat parameter: the member's row, in the same order
            state["state"] = {0: stacked.member_state(p)}
            return state
        names = {id(param): name for name, param in policy.named_parameters()}
        params = [q for group in single_optimizer.param_groups for q in group["params"]]
        state["state"] = {}
        for i, param in enumerate(params):
            start, stop = self.policy.columns[names[id(param)]]
            entry = stacked.member_state(p, slice(start, stop))
            state["state"][i] = {k: v.view(param.shape) if v.dim() else v for k, v in entry.items()}
        return state

    def member_state_dict(self, p: int) -> dict[str, Any]:
        """Member ``p`` as its single run's ``state_dict()`` (what a checkpoint of that run holds)."""
        raise NotImplementedError

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
        self.stacked_optimizer = StackedAdam(self.policy.flat.data, self.base_lr,
                                             member_values(cfgs, "adam_eps", device))
        self.entropy_bonus = any(c.ent_coef for c in cfgs)
        self.clip_coef = member_values(cfgs, "clip_coef", device).unsqueeze(1)  # [P, 1]
        self.vf_clip_coef = torch.tensor([[c.vf_clip_coef if c.vf_clip_coef is not None else c.clip_coef]
                                          for c in cfgs], device=device)  # [P, 1]
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> dict[str, Any]:
        """Each member's learning rate and clip ranges for ``fraction`` of training done; [P] tensors to log."""
        cfg, remaining = self.cfg, 1.0 - fraction
        lr = self.lr_now(fraction)
        self.stacked_optimizer.lr = (lr * self.active).unsqueeze(1)
        self.clip = self.clip_coef * remaining if cfg.anneal_clip else self.clip_coef
        self.vf_clip = self.vf_clip_coef * remaining if cfg.anneal_vf_clip else self.vf_clip_coef
        out = {"charts/learning_rate": lr, "charts/clip_coef": self.clip.squeeze(1)}
        if cfg.clip_vloss:
            out["charts/vf_clip_coef"] = self.vf_clip.squeeze(1)
        return out

    def shuffle(self, size: int) -> torch.Tensor:
        """An independent random order per member [P, size] (a fixed-size draw: members never shift each other)."""
        return torch.rand(self.num_members, size, device=self.device).argsort(1)

    def take(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Member p's minibatch ``idx[p]`` of ``x[p]``: [P, B, ...] -> [P, mb, ...]."""
        return x[self.rows, idx]

    def gradient_step(self, loss: torch.Tensor) -> None:
        self.gradient_step_stacked(loss)

    def stop_early(self, epoch_kl: torch.Tensor) -> bool:
        """KL early stop per member: a member over ``target_kl`` sits out the rest of this update."""
        optimizer = self.stacked_optimizer
        optimizer.lr = optimizer.lr.masked_fill((epoch_kl > self.cfg.target_kl).unsqueeze(1), 0.0)
        return bool((optimizer.lr == 0).all())

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        lr = self.stacked_optimizer.lr
        try:
            return super().update(batch)
        finally:
            self.stacked_optimizer.lr = lr * self.active.unsqueeze(1)  # after a KL early stop

    def member_state_dict(self, p: int) -> dict[str, Any]:
        single = self.template(p)
        single.policy.load_state_dict(self.policy.member(p))
        lr = float(self.stacked_optimizer.lr[p])
        return {"policy": single.policy.state_dict(),
                "optimizer": self.export_optimizer(p, single.optimizer, single.policy, lr)}


class PopulationA2C(Population, A2C):
    """A2C for P members: :meth:`A2C.update` on member-major batches, RMSprop (or Adam) per member."""

    single = A2C

    def __init__(self, cfgs: list[Any], observation_space: gym.Space, action_space: gym.Space,
                 device: torch.device):
        self.setup(cfgs, observation_space, action_space, device)
        eps = member_values(cfgs, "adam_eps", device)
        if self.cfg.optimizer == "rmsprop":
            self.stacked_optimizer = StackedRMSprop(self.policy.flat.data, self.base_lr, eps,
                                                    member_values(cfgs, "rmsprop_alpha", device))
        else:
            self.stacked_optimizer = StackedAdam(self.policy.flat.data, self.base_lr, eps)
        self.optimizers = {"policy": self.stacked_optimizer}
        self.params = []
        self.set_progress(0.0)

    def set_progress(self, fraction: float) -> dict[str, Any]:
        lr = self.lr_now(fraction)
        self.stacked_optimizer.lr = (lr * self.active).unsqueeze(1)
        return {"charts/learning_rate": lr}

    def gradient_step(self, optimizer: Any, loss: torch.Tensor, params: list[torch.Tensor]) -> None:
        self.gradient_step_stacked(loss)

    def member_state_dict(self, p: int) -> dict[str, Any]:
        single = self.template(p)
        single.policy.load_state_dict(self.policy.member(p))
        lr = float(self.stacked_optimizer.lr[p])
        optimizer = single.optimizers["policy"]
        return {"policy": single.policy.state_dict(),
                "optimizers": {"policy": self.export_optimizer(p, optimizer, single.policy, lr)}}


POPULATION_ALGOS = {"ppo": PopulationPPO, "a2c": PopulationA2C}
