"""DQN and the Rainbow components: the math against hand-computed values, the networks, bad configs,
and tiny end-to-end runs of every switch (checkpoint with the replay buffer and resume included)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun import checkpoint
from rlrun.algos.dqn import (
    DQN,
    DQNConfig,
    categorical_loss,
    epsilon_greedy,
    greedy_next_action,
    linear_schedule,
    td_loss,
    td_target,
)
from rlrun.config import ConfigError, load
from rlrun.networks import NoisyLinear, QNetwork, dueling_aggregate
from rlrun.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------- targets and losses
def test_double_q_target_online_picks_target_evaluates():
    # online prefers action 0, the target net action 1: double DQN evaluates the online choice with the target net
    q_online = torch.tensor([[5.0, 1.0]])
    q_target = torch.tensor([[2.0, 3.0]])
    returns, discounts = torch.tensor([1.0]), torch.tensor([0.5])
    double = greedy_next_action(q_online, q_target, double=True)
    plain = greedy_next_action(q_online, q_target, double=False)
    assert double.tolist() == [0] and plain.tolist() == [1]
    assert td_target(returns, discounts, q_target, double).item() == 1.0 + 0.5 * 2.0  # 2
    assert td_target(returns, discounts, q_target, plain).item() == 1.0 + 0.5 * 3.0  # 2.5 (max: overestimates)


def test_terminal_target_is_the_return():
    y = td_target(torch.tensor([3.0]), torch.tensor([0.0]), torch.tensor([[100.0, 100.0]]), torch.tensor([1]))
    assert y.item() == 3.0


def test_td_loss_huber_and_mse_weighted():
    q, y, w = torch.tensor([0.0, 0.0]), torch.tensor([0.5, 3.0]), torch.tensor([1.0, 0.5])
    # Huber: 0.5 * 0.5^2 = 0.125 and 3 - 0.5 = 2.5 (weighted 1.25): mean 0.6875
    assert td_loss(q, y, w, "huber").item() == pytest.approx(0.6875)
    # MSE: 0.25 and 9 * 0.5 = 4.5: mean 2.375
    assert td_loss(q, y, w, "mse").item() == pytest.approx(2.375)


def test_categorical_loss_is_cross_entropy():
    log_p = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    m = torch.tensor([[0.0, 1.0, 0.0]])
    assert categorical_loss(log_p, m).item() == pytest.approx(math.log(4.0))


def test_epsilon_schedule_and_greedy_choice():
    assert linear_schedule(1.0, 0.1, 0.5, 0.0) == 1.0
    assert linear_schedule(1.0, 0.1, 0.5, 0.25) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 0.5, 0.9) == pytest.approx(0.1)
    q = torch.tensor([[0.0, 2.0, 1.0]]).expand(1000, 3)
    assert (epsilon_greedy(q, 0.0) == 1).all()
    torch.manual_seed(0)
    random_share = (epsilon_greedy(q, 0.3) != 1).float().mean().item()
    assert random_share == pytest.approx(0.3 * 2 / 3, abs=0.04)  # a random action is the greedy one 1/3 of the time


# ----------------------------------------------------------------- networks
def test_dueling_aggregation_hand_computed():
    value = torch.tensor([[[10.0]]])  # [B=1, 1, K=1]
    adv = torch.tensor([[[1.0], [2.0], [6.0]]])  # mean 3
    q = dueling_aggregate(value, adv)
    assert q.view(-1).tolist() == [8.0, 9.0, 13.0]


def test_noisy_linear_sigma_init_and_noise_changes_outputs():
    torch.manual_seed(0)
    layer = NoisyLinear(16, 4, sigma_0=0.5)
    assert torch.allclose(layer.weight_sigma, torch.full((4, 16), 0.5 / 4.0))  # sigma_0 / sqrt(16)
    assert torch.allclose(layer.bias_sigma, torch.full((4,), 0.125))
    assert layer.weight_mu.abs().max() <= 0.25 and layer.bias_mu.abs().max() <= 0.25  # U[-1/sqrt(p), 1/sqrt(p)]
    x = torch.randn(3, 16)
    a = layer(x)
    assert torch.equal(a, layer(x))  # the same noise until it is resampled
    layer.reset_noise()
    b = layer(x)
    assert not torch.allclose(a, b)
    mean = torch.nn.functional.linear(x, layer.weight_mu, layer.bias_mu)
    assert torch.equal(layer(x, noise=False), mean)
    # factorised: the weight noise is the outer product of f(eps_out) and f(eps_in)
    w = layer.weight_mu + layer.weight_sigma * torch.outer(layer.eps_out, layer.eps_in)
    assert torch.allclose(b, x @ w.t() + layer.bias_mu + layer.bias_sigma * layer.eps_out, atol=1e-6)


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("atoms", [1, 5])
def test_qnetwork_heads_in_one_module(dueling, noisy, atoms):
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    net = QNetwork(space, 3, [32, 16], dueling=dueling, noisy=noisy, atoms=atoms)
    out = net(torch.randn(7, 4))
    assert out.shape == ((7, 3) if atoms == 1 else (7, 3, atoms))
    assert any(isinstance(m, NoisyLinear) for m in net.modules()) == noisy
    assert hasattr(net, "value_stream") == dueling


def test_qnetwork_nature_cnn_for_frames():
    space = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
    net = QNetwork(space, 6, [512], dueling=True, noisy=True, atoms=51)
    out = net(torch.randint(0, 255, (2, 4, 84, 84), dtype=torch.uint8))
    assert out.shape == (2, 6, 51)


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("override", "key"),
    [("algo.v_min=200", "algo.v_min"), ("algo.n_step=0", "algo.n_step"), ("algo.buffer_size=8", "algo.buffer_size"),
     ("algo.tau=0", "algo.tau"), ("algo.atoms=1", "algo.atoms"), ("algo.loss=l1", "algo.loss"),
     ("algo.per_beta=2", "algo.per_beta")],
)
def test_bad_dqn_values_are_refused_with_key_and_range(compose, override, key):
    with pytest.raises(ConfigError) as info:
        load(compose("algo=rainbow", override))
    message = str(info.value)
    assert key in message and "expected" in message, message


def test_prioritized_without_replay_is_refused(compose):
    with pytest.raises(ConfigError, match=r"algo.prioritized=true is not accepted with algo.replay=false"):
        load(compose("algo=rainbow", "algo.replay=false"))
    assert not load(compose("algo=rainbow", "algo.replay=false", "algo.prioritized=false")).algo.replay


def test_rainbow_is_dqn_with_six_flags_on(compose):
    cfg = load(compose("algo=rainbow", "env=Pong")).algo
    assert isinstance(cfg, DQNConfig) and cfg.name == "rainbow"
    assert (cfg.double, cfg.prioritized, cfg.dueling, cfg.distributional, cfg.noisy) == (True,) * 5
    # Hessel et al. 2018 Table 1 (the Atari preset)
    assert (cfg.n_step, cfg.atoms, cfg.v_min, cfg.v_max, cfg.per_alpha, cfg.per_beta) == (3, 51, -10, 10, 0.5, 0.4)
    assert (cfg.lr, cfg.adam_eps, cfg.target_update_interval, cfg.learning_starts) == (6.25e-5, 1.5e-4, 8000, 20000)
    assert cfg.epsilon_range == (0.0, 0.0)
    assert load(compose("algo=dqn")).algo.epsilon_range == (1.0, 0.04)


def test_continuous_actions_are_refused_before_any_work(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        train(tiny_cfg("algo=dqn", "env=Pendulum"))
    message = str(info.value)
    assert "Box" in message and "ppo" in message and "Discrete" in message
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- tiny runs of every switch
TINY_DQN = ("algo.learning_starts=64", "algo.log_every=128", "algo.batch_size=16", "algo.buffer_size=512",
            "algo.train_frequency=16", "algo.gradient_steps=2", "algo.target_update_interval=64")

SWITCHES = ["", "algo.replay=false", "algo.target_network=false", "algo.replay=false,algo.target_network=false",
            "algo.double=true", "algo.prioritized=true", "algo.dueling=true", "algo.n_step=3",
            "algo.distributional=true", "algo.noisy=true", "algo.tau=0.01", "algo.loss=mse"]


@pytest.mark.parametrize("switch", SWITCHES)
def test_dqn_switch_runs_end_to_end(tiny_cfg, tmp_path, switch):
    extra = [s for s in switch.split(",") if s]
    summary = train(tiny_cfg("algo=dqn", *TINY_DQN, *extra))
    assert summary["status"] == "completed" and summary["steps"] >= 512
    assert summary["final_eval_return"] is not None


def test_rainbow_logs_its_tags_and_resumes_with_the_replay_buffer(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    first = train(tiny_cfg("algo=rainbow", *TINY_DQN, "checkpoint.replay=true"))
    state = checkpoint.load(checkpoint.latest(run_dir))
    assert state["replay"]["emitted"] > 0 and "tree" in state["replay"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"losses/td_loss", "losses/q_values", "charts/epsilon", "charts/beta", "charts/SPS",
            "eval/return_mean"} <= tags
    assert all(math.isfinite(e.value) for e in acc.Scalars("losses/td_loss"))
    second = train(tiny_cfg("algo=rainbow", *TINY_DQN, "checkpoint.replay=true", "total_steps=1024",
                            f"resume={run_dir}"))
    assert second["status"] == "completed" and second["steps"] >= 1024 > first["steps"]


def test_replay_buffer_left_out_of_checkpoints_by_default(tiny_cfg, tmp_path):
    train(tiny_cfg("algo=dqn", *TINY_DQN))
    state = checkpoint.load(checkpoint.latest(tmp_path / "run"))
    assert "replay" not in state and {"policy", "optimizer", "target"} <= set(state["agent"])


def test_agent_policy_acts_greedily_when_deterministic():
    space = gym.spaces.Box(-1, 1, (4,), np.float32)
    agent = DQN(DQNConfig(noisy=True, dueling=True), space, gym.spaces.Discrete(2), torch.device("cpu"))
    agent.policy.epsilon = 1.0
    obs = torch.randn(64, 4)
    a1, logp = agent.policy.act(obs, deterministic=True)
    a2, _ = agent.policy.act(obs, deterministic=True)
    assert torch.equal(a1, a2) and torch.equal(logp, torch.zeros(64))
    assert torch.equal(a1, agent.policy.q_values(obs, noise=False).argmax(-1))
