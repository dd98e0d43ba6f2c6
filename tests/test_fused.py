"""algo.fused=true (rlrun/fused.py) against the plain path, and the private torch API it calls.

The flat-parameter Adam step calls ``torch._fused_adam_`` and reads ``Optimizer._optimizer_step_pre_hooks``;
these tests fail when a torch release renames or changes them, instead of the speed path breaking silently.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlrun.algos.ppo import PPO, PPOConfig
from rlrun.fused import adam_step, flatten_parameters
from rlrun.networks import mlp


def test_the_private_torch_api_the_fused_step_calls_still_exists():
    assert callable(torch._fused_adam_)
    optimizer = torch.optim.Adam([nn.Parameter(torch.zeros(3))], fused=True)
    assert isinstance(optimizer._optimizer_step_pre_hooks, dict)
    assert isinstance(optimizer._optimizer_step_post_hooks, dict)


def test_adam_step_equals_torch_fused_adam_step():
    torch.manual_seed(0)
    nets = [mlp(4, [16], 2, fused=True) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    flats = [flatten_parameters(net) for net in nets]
    optimizers = [torch.optim.Adam([flat], lr=1e-2, eps=1e-5, fused=True) for flat in flats]
    for step in range(5):
        x = torch.randn(8, 4)
        for net, flat, optimizer, ours in zip(nets, flats, optimizers, (True, False)):
            flat.grad.zero_()
            net(x).pow(2).sum().backward()
            adam_step(optimizer) if ours else optimizer.step()
        assert torch.equal(flats[0], flats[1]), step  # the same kernel on the same state: bit for bit
    assert torch.equal(optimizers[0].state_dict()["state"][0]["exp_avg_sq"],
                       optimizers[1].state_dict()["state"][0]["exp_avg_sq"])


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)],
                         ids=["discrete", "continuous"])
def test_ppo_updates_agree_with_and_without_the_fused_path(action_space):
    obs_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    agents = []
    for fused in (True, False):
        torch.manual_seed(0)  # the same initial weights: the modules are built in the same order
        agents.append(PPO(PPOConfig(fused=fused, update_epochs=3, minibatch_size=32), obs_space, action_space,
                          torch.device("cpu")))
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(64, 4, generator=g)
    with torch.no_grad():
        actions, logp = agents[0].policy.act(obs)
        values = agents[0].policy.value(obs)
    batch = {"obs": obs, "actions": actions, "logp": logp, "values": values,
             "advantages": torch.randn(64, generator=g), "returns": values + torch.randn(64, generator=g)}
    metrics = []
    for agent in agents:
        torch.manual_seed(2)  # the same minibatch order
        metrics.append(agent.update(batch))
    for (name, a), b in zip(agents[0].policy.state_dict().items(), agents[1].policy.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    for key in ("losses/policy_loss", "losses/value_loss", "losses/approx_kl"):
        torch.testing.assert_close(metrics[0][key], metrics[1][key], rtol=1e-4, atol=1e-6)


def test_a_learning_rate_set_after_loading_a_state_reaches_the_flat_adam():
    space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    agent = PPO(PPOConfig(fused=True), space, gym.spaces.Discrete(2), torch.device("cpu"))
    obs = torch.randn(8, 4)
    agent.gradient_step(agent.policy.value(obs).pow(2).mean())  # creates Adam's state
    agent.optimizer.load_state_dict(agent.optimizer.state_dict())  # as a resume does: the param groups are new
    agent.set_progress(0.5)
    assert agent.optimizer.optimizer.param_groups[0]["lr"] == pytest.approx(agent.cfg.lr * 0.5)
