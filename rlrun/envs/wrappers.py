"""Tensor wrappers for the observation and reward details of Engstrom et al. 2020.

They sit on any backend (the contract of :mod:`rlrun.envs.base`), run on the env's device,
and leave the episode statistics alone: those always count the raw reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlrun.envs.base import StepResult, VecEnv


class RunningMeanStd:
    """Mean and variance of a stream of batches, merged with Chan et al.'s parallel update.

    ``groups`` > 1 keeps one set of statistics per group of consecutive envs (the members of a population,
    :mod:`rlrun.population`): ``mean`` and ``var`` are then [groups, *shape] and ``count`` [groups].
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4, groups: int = 1):
        lead = (groups,) if groups > 1 else ()
        self.groups, self.ndim = groups, len(shape)
        self.mean = torch.zeros((*lead, *shape), dtype=torch.float64, device=device)
        self.var = torch.ones((*lead, *shape), dtype=torch.float64, device=device)
        self.count = torch.full(lead, epsilon, dtype=torch.float64, device=device)

    def grouped(self, x: torch.Tensor) -> torch.Tensor:
        """[B, *shape] -> [groups, B / groups, *shape] (unchanged for one group)."""
        return x if self.groups == 1 else x.reshape(self.groups, -1, *x.shape[1:])

    def update(self, batch: torch.Tensor) -> None:
        """Fold in ``batch`` [B, *shape] (B envs, ``groups`` consecutive groups of them)."""
        batch = self.grouped(batch.to(torch.float64))
        dim = 0 if self.groups == 1 else 1
        b_mean, b_var, b_count = batch.mean(dim), batch.var(dim, unbiased=False), batch.shape[dim]
        count = self.count.reshape(tuple(self.count.shape) + (1,) * self.ndim)  # broadcasts over *shape
        delta = b_mean - self.mean
        total = count + b_count
        self.mean += delta * b_count / total
        m2 = self.var * count + b_var * b_count + delta.pow(2) * count * b_count / total
        self.var = m2 / total
        self.count = total.reshape(self.count.shape)

    def per_env(self, x: torch.Tensor) -> torch.Tensor:
        """Statistics ``x`` [groups, *shape] for a batch of envs: [groups, 1, *shape] (as they are for one group)."""
        return x if self.groups == 1 else x.unsqueeze(1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean.clone(), "var": self.var.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.mean.copy_(state["mean"])
        self.var.copy_(state["var"])
        self.count.copy_(state["count"])


class VecEnvWrapper(VecEnv):
    """Forwards everything to ``env``; subclasses change what they need."""

    def __init__(self, env: VecEnv):
        self.env = env
        self.num_envs = env.num_envs
        self.device = env.device
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return self.env.reset(seed)

    def step(self, actions: torch.Tensor) -> StepResult:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()

    @property
    def unwrapped(self) -> VecEnv:
        return self.env.unwrapped

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.env.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state["env"])

    def evaluation_metrics(self, returns: torch.Tensor, policy: Any) -> dict[str, float]:
        return self.env.evaluation_metrics(returns, policy)


class NormalizeObservation(VecEnvWrapper):
    """obs -> clip((obs - mean) / sqrt(var + eps), -clip, clip) with running statistics.

    ``rms`` may be shared with another env (evaluation envs read the training statistics);
    ``update=False`` freezes them.
    """

    def __init__(self, env: VecEnv, clip: float | None = 10.0, rms: RunningMeanStd | None = None,
                 update: bool = True, eps: float = 1e-8, groups: int = 1):
        super().__init__(env)
        self.rms = rms or RunningMeanStd(env.single_observation_space.shape, env.device, groups=groups)
        self.clip, self.update, self.eps = clip, update, eps

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        rms = self.rms
        grouped = rms.grouped(obs)
        out = ((grouped - rms.per_env(rms.mean)) / torch.sqrt(rms.per_env(rms.var) + self.eps)).to(torch.float32)
        out = out.reshape(obs.shape)
        return out.clamp(-self.clip, self.clip) if self.clip else out

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs = self.env.reset(seed)
        if self.update:
            self.rms.update(obs)
        return self.normalize(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.update:
            self.rms.update(obs)
        info = dict(info, final_obs=self.normalize(info["final_obs"]))
        return self.normalize(obs), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.env.state_dict(), "obs_rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state["env"])
        self.rms.load_state_dict(state["obs_rms"])


class ClipObservation(VecEnvWrapper):
    """obs -> clip(obs, -clip, clip), for raw observations (with normalisation, it clips itself)."""

    def __init__(self, env: VecEnv, clip: float):
        super().__init__(env)
        self.clip = clip

    def reset(self, seed: int | None = None) -> torch.Tensor:
        return self.env.reset(seed).clamp(-self.clip, self.clip)

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        info = dict(info, final_obs=info["final_obs"].clamp(-self.clip, self.clip))
        return obs.clamp(-self.clip, self.clip), reward, terminated, truncated, info


class ScaleReward(VecEnvWrapper):
    """Return-based reward scaling: r_t / std(R), R_t = gamma * R_{t-1} + r_t (reset at episode ends and reset()).

    The reward is divided by the running standard deviation of the discounted return, not
    centred, so its sign is kept (Engstrom et al. 2020, "reward scaling").
    """

    def __init__(self, env: VecEnv, gamma: float | torch.Tensor, eps: float = 1e-8, groups: int = 1):
        super().__init__(env)
        self.gamma, self.eps = gamma, eps  # gamma: a float, or one per env [N] (a population's members)
        self.rms = RunningMeanStd((), env.device, groups=groups)
        self.ret = torch.zeros(env.num_envs, dtype=torch.float64, device=env.device)

    def reset(self, seed: int | None = None) -> torch.Tensor:
        self.ret = torch.zeros_like(self.ret)  # every episode starts again, and so does its discounted return
        return self.env.reset(seed)

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.ret = self.ret * self.gamma + reward
        self.rms.update(self.ret)
        self.ret = self.ret * ~(terminated | truncated)
        std = torch.sqrt(self.rms.per_env(self.rms.var) + self.eps)  # 0-d, or [groups, 1]
        scaled = (self.rms.grouped(reward) / std).to(torch.float32).reshape(reward.shape)
        return obs, scaled, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"env": self.env.state_dict(), "return_rms": self.rms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state["env"])
        self.rms.load_state_dict(state["return_rms"])


class ClipReward(VecEnvWrapper):
    """r -> clip(r, -clip, clip)."""

    def __init__(self, env: VecEnv, clip: float):
        super().__init__(env)
        self.clip = clip

    def step(self, actions: torch.Tensor) -> StepResult:
        obs, reward, terminated, truncated, info = self.env.step(actions)
        return obs, reward.clamp(-self.clip, self.clip), terminated, truncated, info


@dataclass(frozen=True)
class EnvSwitches:
    """The observation and reward switches an algorithm's config turns on (all off: the env as it is)."""

    norm_obs: bool = False
    clip_obs: float | None = None
    norm_reward: bool = False
    clip_reward: float | None = None
    gamma: float | Any = 0.99
    """The discount of the return whose running std scales the reward (norm_reward); one per env [N] for a
    population whose members' gammas differ."""


def wrap(env: VecEnv, switches: EnvSwitches, training: bool, obs_rms: RunningMeanStd | None = None,
         groups: int = 1) -> VecEnv:
    """Apply ``switches`` in Engstrom et al.'s order: normalise (or clip) observations, scale, then clip rewards.

    Evaluation envs (``training=False``) share the training observation statistics ``obs_rms``, frozen, and
    get the raw reward. ``groups`` > 1: the envs are that many consecutive groups (a population's members), each
    with statistics of its own.
    """
    if switches.norm_obs:
        env = NormalizeObservation(env, clip=switches.clip_obs, rms=obs_rms, update=training, groups=groups)
    elif switches.clip_obs:
        env = ClipObservation(env, switches.clip_obs)
    if training and switches.norm_reward:
        env = ScaleReward(env, switches.gamma, groups=groups)
    if training and switches.clip_reward:
        env = ClipReward(env, switches.clip_reward)
    return env


def observation_statistics(env: VecEnv) -> RunningMeanStd | None:
    """The running observation statistics of ``env``'s NormalizeObservation wrapper, if it has one."""
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, NormalizeObservation):
            return env.rms
        env = env.env
    return None


def member_state(state: Any, p: int) -> Any:
    """Group ``p``'s part of a grouped env ``state_dict()``: each running statistic's ``[p]`` (the layout of the
    same wrappers with one group, what a single run's checkpoint holds)."""
    if isinstance(state, dict):
        if set(state) == {"mean", "var", "count"} and state["count"].dim() == 1:
            return {key: value[p].clone() for key, value in state.items()}
        return {key: member_state(value, p) for key, value in state.items()}
    return state

