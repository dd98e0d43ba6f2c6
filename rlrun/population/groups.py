"""Which jobs of a sweep may train together as one population (:func:`group_key`), and why a job may not."""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

ALGOS = ("ppo", "a2c", "vpg", "npg", "trpo", "dqn", "pqn")
"""Algorithms that train as populations (the others run as ordinary jobs)."""

BATCHABLE = {
    "seed", "run_dir", "progress", "logger", "env.reward_threshold", "eval.stop_at_threshold",
    "algo.lr", "algo.adam_eps", "algo.max_grad_norm",
}
"""Keys whose values may differ between the members of any population: none of them changes a shape."""

BATCHABLE_PER_ALGO = {
    "ppo": {"algo.gamma", "algo.gae_lambda", "algo.ent_coef", "algo.vf_coef", "algo.clip_coef", "algo.vf_clip_coef"},
    "a2c": {"algo.gamma", "algo.gae_lambda", "algo.ent_coef", "algo.vf_coef", "algo.rmsprop_alpha"},
    "vpg": {"algo.gamma", "algo.ent_coef", "algo.vf_lr"},
    "npg": {"algo.gamma", "algo.gae_lambda", "algo.max_kl"},
    "trpo": {"algo.gamma", "algo.gae_lambda", "algo.max_kl"},
    # DQN's gamma stays shared: the replay computes the n-step returns at insertion, with one gamma.
    "dqn": {"algo.eps_start", "algo.eps_end"},
    # PQN computes its Q(lambda) returns per rollout, so gamma and lambda may differ (each env its member's).
    "pqn": {"algo.gamma", "algo.q_lambda", "algo.eps_start", "algo.eps_end"},
}
"""And the keys each algorithm batches on top of :data:`BATCHABLE`."""

RAINBOW_SWITCHES = ("prioritized", "dueling", "noisy", "distributional")
"""DQN's switches that population training does not stack yet (those jobs run alone)."""


def why_not_batchable(cfg: DictConfig | dict[str, Any]) -> str | None:
    """Why the job ``cfg`` cannot train as a member of a population (None if it can)."""
    algo = cfg["algo"]
    if algo["name"] not in ALGOS:
        return f"algo={algo['name']} does not train as a population yet (covered: {', '.join(ALGOS)})"
    if cfg.get("resume"):
        return "a resumed run continues alone"
    env_id = str(cfg["env"]["id"])
    if env_id.startswith("ALE/") or env_id.endswith("NoFrameskip-v4"):
        return "image observations (Atari) are not stacked yet: populations take vector observations"
    if algo["name"] == "vpg" and algo.get("batch_mode", "episodes") != "steps":
        return "vpg's whole-episode batches (algo.batch_mode=episodes) differ in size between members"
    if algo["name"] == "dqn" and (on := [k for k in RAINBOW_SWITCHES if algo.get(k)]):
        return f"algo.{on[0]}=true is not stacked yet (DQN populations: replay, target network, double, n-step)"
    if algo["name"] == "a2c" and algo.get("shared_network"):
        return "algo.shared_network=true is not stacked yet"
    return None


def group_key(cfg: DictConfig | dict[str, Any]) -> str | None:
    """A key that two jobs share exactly when they can train in one population; None for a job that cannot.

    The key is the resolved config without the :data:`BATCHABLE` keys.
    """
    if why_not_batchable(cfg) is not None:
        return None
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    plain.pop("hydra", None)
    for key in BATCHABLE | BATCHABLE_PER_ALGO[cfg["algo"]["name"]]:
        node, *path = key.split(".")
        if path:
            plain.get(node, {}).pop(path[0], None)
        else:
            plain.pop(node, None)
    return json.dumps(plain, sort_keys=True, default=str)
