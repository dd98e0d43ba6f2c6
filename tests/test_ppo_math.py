"""PPO's loss terms against hand-computed numbers, the distribution helpers against torch.distributions,
and one PPO.update on a tiny random batch."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos.ppo import PPO, PPOConfig, clipped_surrogate
from rlrun.losses import approx_kl, clipped_value_loss, explained_variance
from rlrun.networks import (
    categorical_log_prob,
    categorical_log_prob_entropy,
    categorical_sample,
    gaussian_entropy,
    gaussian_log_prob,
)

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


# ----------------------------------------------------------------- loss terms
def test_clipped_surrogate_hand_computed():
    # eps = 0.2, so ratios are clipped to [0.8, 1.2]; per sample min(r A, clip(r) A):
    #   r=0.5, A= 1:  min(0.5,  0.8)  = 0.5
    #   r=1.0, A=-1:  min(-1,  -1)    = -1.0
    #   r=1.5, A= 2:  min(3.0,  2.4)  = 2.4   (clipped: no credit past 1 + eps)
    #   r=1.1, A=-2:  min(-2.2, -2.2) = -2.2  (inside the range)
    #   r=0.7, A=-1:  min(-0.7, -0.8) = -0.8  (clipped side is the pessimistic one)
    # mean = (0.5 - 1 + 2.4 - 2.2 - 0.8) / 5 = -1.1 / 5 = -0.22, loss = +0.22
    ratio = torch.tensor([0.5, 1.0, 1.5, 1.1, 0.7], dtype=F64)
    adv = torch.tensor([1.0, -1.0, 2.0, -2.0, -1.0], dtype=F64)
    loss = clipped_surrogate(ratio, adv, 0.2)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(0.22, abs=1e-12)


def test_clipped_surrogate_at_ratio_one_is_minus_mean_advantage():
    adv = torch.tensor([0.3, -1.2, 2.0])
    assert clipped_surrogate(torch.ones(3), adv, 0.1).item() == pytest.approx(-adv.mean().item())


def test_clipped_value_loss_hand_computed():
    # V = [1, 2, 0], V_old = [0.5, 2, 1], R = [2, 1, 0.5], eps = 0.2
    #   unclipped (V - R)^2:              [1, 1, 0.25]
    #   V_clip = V_old + clip(V - V_old):  [0.5 + 0.2, 2 + 0, 1 - 0.2] = [0.7, 2.0, 0.8]
    #   clipped (V_clip - R)^2:           [1.69, 1, 0.09]
    #   max:                               [1.69, 1, 0.25]  -> mean 2.94 / 3 = 0.98 -> loss 0.49
    # without clipping: 0.5 * (1 + 1 + 0.25) / 3 = 0.375
    values = torch.tensor([1.0, 2.0, 0.0], dtype=F64)
    old = torch.tensor([0.5, 2.0, 1.0], dtype=F64)
    returns = torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    assert clipped_value_loss(values, old, returns, 0.2).item() == pytest.approx(0.49, abs=1e-12)
    assert clipped_value_loss(values, old, returns, None).item() == pytest.approx(0.375, abs=1e-12)


def test_approx_kl_hand_computed():
    # k3 = (r - 1) - log r:  r=1: 0;  r=2: 1 - ln 2 = 0.30685;  r=1/2: -1/2 + ln 2 = 0.19315
    # mean = (0 + 1 - ln 2 - 1/2 + ln 2) / 3 = 0.5 / 3
    log_ratio = torch.tensor([0.0, math.log(2.0), -math.log(2.0)], dtype=F64)
    assert approx_kl(log_ratio).item() == pytest.approx(0.5 / 3, abs=1e-12)
    assert approx_kl(torch.zeros(5)).item() == 0.0
    assert approx_kl(torch.randn(100, generator=torch.Generator().manual_seed(0))).item() > 0


def test_explained_variance_hand_computed():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=F64)
    # perfect critic -> 1; a constant -> 0
    assert explained_variance(target.clone(), target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(target, 2.5), target).item() == pytest.approx(0.0)
    # pred = [1, 2, 3, 5]: residual [0, 0, 0, -1] has (unbiased) variance 0.75 / 3 = 0.25,
    # target has 5 / 3; EV = 1 - 0.25 / (5/3) = 1 - 0.15 = 0.85
    pred = torch.tensor([1.0, 2.0, 3.0, 5.0], dtype=F64)
    assert explained_variance(pred, target).item() == pytest.approx(0.85, abs=1e-12)
    # a constant target has no variance to explain
    assert math.isnan(explained_variance(target, torch.ones(4, dtype=F64)).item())


# ----------------------------------------------------------------- distributions
def test_categorical_helpers_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 5, generator=g) * 3
    action = torch.randint(0, 5, (64,), generator=g)
    ref = torch.distributions.Categorical(logits=logits)
    torch.testing.assert_close(categorical_log_prob(logits, action), ref.log_prob(action))
    logp, entropy = categorical_log_prob_entropy(logits, action)
    torch.testing.assert_close(logp, ref.log_prob(action))
    torch.testing.assert_close(entropy, ref.entropy())


def test_categorical_sample_follows_softmax():
    torch.manual_seed(0)
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    samples = categorical_sample(logits.expand(40000, 4))
    freq = torch.bincount(samples, minlength=4).float() / samples.numel()
    torch.testing.assert_close(freq, torch.softmax(logits, -1), atol=0.01, rtol=0)


def test_gaussian_helpers_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(32, 3, generator=g)
    log_std = torch.randn(3, generator=g) * 0.5
    action = torch.randn(32, 3, generator=g) * 2
    ref = torch.distributions.Normal(mean, log_std.exp())
    torch.testing.assert_close(gaussian_log_prob(mean, log_std, action), ref.log_prob(action).sum(-1))
    entropy = gaussian_entropy(log_std, 32)
    assert entropy.shape == (32,)
    torch.testing.assert_close(entropy, ref.entropy().sum(-1))


# ----------------------------------------------------------------- PPO.update
DIAGNOSTICS = {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl",
               "losses/clipfrac", "losses/explained_variance"}


def _agent(discrete: bool = True, **cfg) -> PPO:
    torch.manual_seed(0)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    act_space = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    return PPO(PPOConfig(**{"minibatch_size": 16, "update_epochs": 3, **cfg}), obs_space, act_space, CPU)


def _batch(agent: PPO, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """A rollout-shaped batch whose actions and log-probabilities come from the agent's own policy."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(size, 4, generator=g)
    action, logp = agent.policy.act(obs)
    with torch.no_grad():
        values = agent.policy.value(obs)
    advantages = torch.randn(size, generator=g)
    return {"obs": obs, "actions": action, "logp": logp, "values": values,
            "advantages": advantages, "returns": advantages + values}


def _grad_steps(agent: PPO) -> int:
    """Adam's step counter: the number of optimiser steps taken (0 before the first)."""
    steps = [int(state["step"]) for state in agent.optimizer.state.values() if "step" in state]
    return max(steps, default=0)


@pytest.mark.parametrize("discrete", [True, False], ids=["categorical", "gaussian"])
def test_update_returns_finite_named_diagnostics_and_changes_parameters(discrete):
    agent = _agent(discrete)
    batch = _batch(agent)
    before = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    out = agent.update(batch)
    assert set(out) == DIAGNOSTICS
    for key, value in out.items():
        assert torch.as_tensor(value).shape == (), key
        assert math.isfinite(float(value)), key
    assert 0.0 <= float(out["losses/clipfrac"]) <= 1.0
    assert float(out["losses/approx_kl"]) >= 0.0
    assert float(out["losses/value_loss"]) >= 0.0
    after = agent.policy.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert _grad_steps(agent) == 3 * (64 // 16)  # epochs x minibatches


def test_target_kl_stops_the_epochs_early():
    full = _agent(update_epochs=5)
    full.update(_batch(full))
    assert _grad_steps(full) == 5 * 4
    # A tiny KL limit is crossed during the first epoch: the remaining four are skipped.
    stopped = _agent(update_epochs=5, target_kl=1e-12)
    stopped.update(_batch(stopped))
    assert _grad_steps(stopped) == 4


def test_set_progress_anneals_lr_and_clip():
    agent = _agent(lr=1e-3, anneal_lr=True, anneal_clip=True, clip_coef=0.2)
    sched = agent.set_progress(0.25)
    assert sched["charts/learning_rate"] == pytest.approx(7.5e-4)
    assert agent.optimizer.param_groups[0]["lr"] == pytest.approx(7.5e-4)
    assert agent.clip == pytest.approx(0.15) and sched["charts/clip_coef"] == pytest.approx(0.15)
    fixed = _agent(lr=1e-3, anneal_lr=False, anneal_clip=False)
    assert fixed.set_progress(0.9) == {"charts/learning_rate": 1e-3, "charts/clip_coef": 0.2,
                                       "charts/vf_clip_coef": 0.2}
    both = _agent(anneal_clip=True, anneal_vf_clip=True, clip_coef=0.2, vf_clip_coef=1.0)
    sched = both.set_progress(0.5)
    assert sched["charts/clip_coef"] == pytest.approx(0.1) and sched["charts/vf_clip_coef"] == pytest.approx(0.5)
    assert "charts/vf_clip_coef" not in _agent(clip_vloss=False).set_progress(0.5)


@pytest.mark.filterwarnings("ignore:std\\(\\)")
def test_update_with_a_one_sample_trailing_minibatch_stays_finite():
    agent = _agent(update_epochs=1, minibatch_size=8)
    agent.update(_batch(agent, size=9))  # minibatches of 8 and 1
    assert all(torch.isfinite(p).all() for p in agent.policy.parameters())
