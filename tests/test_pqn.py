"""PQN: its targets from a rollout, the schedules by hand, the update, the LayerNorm switch, bad configs, tiny
end-to-end runs (resume included), and (slow) solving CartPole with the shipped preset.

Measured with preset/pqn_CartPole.yaml (evaluation every 2k steps), env steps to the first evaluation >= 475:
seed 0: 6,144, seed 1: 4,096, seed 2: 28,160 (under 4 s of training each on one CPU thread).
"""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from rlrun.algos.pqn import PQN, PQNConfig, pqn_network
from rlrun.config import ConfigError, load
from rlrun.returns import q_lambda_return
from rlrun.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

BOX4 = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
FRAMES = gym.spaces.Box(0, 255, (4, 84, 84), np.uint8)
CPU = torch.device("cpu")


def agent(**overrides) -> PQN:
    return PQN(PQNConfig(**overrides), BOX4, gym.spaces.Discrete(2), CPU)


# ----------------------------------------------------------------- targets, schedules, acting
def test_targets_are_q_lambda_returns_bootstrapped_from_max_q_of_the_next_observation():
    torch.manual_seed(0)
    pqn = agent(gamma=0.9, q_lambda=0.5)
    T, N = 3, 2
    buffer = SimpleNamespace(
        obs=torch.randn(T, N, 4), next_obs=torch.randn(T, N, 4), actions=torch.randint(0, 2, (T, N)),
        rewards=torch.randn(T, N), terminated=torch.tensor([[False, False], [True, False], [False, False]]),
        truncated=torch.tensor([[False, False], [False, True], [False, False]]))
    batch = pqn.targets(buffer)
    with torch.no_grad():
        next_q = pqn.policy.net(buffer.next_obs).max(-1).values  # [T, N]
    expected = q_lambda_return(buffer.rewards, next_q, buffer.terminated, buffer.truncated, 0.9, 0.5)
    torch.testing.assert_close(batch["returns"], expected.reshape(T * N))
    assert torch.equal(batch["obs"], buffer.obs.reshape(T * N, 4))
    assert torch.equal(batch["actions"], buffer.actions.reshape(T * N))
    # the terminated step is its reward alone; the truncated one bootstraps from its final observation
    assert batch["returns"][2].item() == pytest.approx(buffer.rewards[1, 0].item())
    assert batch["returns"][3].item() == pytest.approx(buffer.rewards[1, 1].item() + 0.9 * next_q[1, 1].item())


def test_epsilon_and_learning_rate_schedules_by_hand():
    pqn = agent(eps_start=1.0, eps_end=0.1, eps_fraction=0.5, lr=1e-3, anneal_lr=True)
    # fraction 0.25 of training: epsilon 1 + (0.1 - 1) * 0.25 / 0.5 = 0.55, lr 1e-3 * (1 - 0.25) = 7.5e-4
    out = pqn.set_progress(0.25)
    assert out["charts/epsilon"] == pytest.approx(0.55) and pqn.policy.epsilon == pytest.approx(0.55)
    assert out["charts/learning_rate"] == pytest.approx(7.5e-4)
    assert pqn.optimizer.param_groups[0]["lr"] == pytest.approx(7.5e-4)
    # past eps_fraction epsilon stays at eps_end; the learning rate keeps falling to 0
    out = pqn.set_progress(0.9)
    assert out["charts/epsilon"] == pytest.approx(0.1) and out["charts/learning_rate"] == pytest.approx(1e-4)
    assert agent(lr=1e-3, anneal_lr=False).set_progress(0.9)["charts/learning_rate"] == 1e-3


def test_acting_is_epsilon_greedy_and_greedy_when_deterministic():
    torch.manual_seed(0)
    pqn = agent()
    obs = torch.randn(2000, 4)
    greedy = pqn.policy.net(obs).argmax(-1)
    pqn.policy.epsilon = 1.0
    action, logp = pqn.policy.act(obs, deterministic=True)
    assert torch.equal(action, greedy) and torch.equal(logp, torch.zeros(2000))
    pqn.policy.epsilon = 0.4
    action, _ = pqn.policy.act(obs)
    assert (action != greedy).float().mean().item() == pytest.approx(0.4 / 2, abs=0.04)  # half the random ones differ


# ----------------------------------------------------------------- the update and the network
@pytest.mark.parametrize("optimizer", ["radam", "adam"])
def test_update_reduces_the_td_error_on_a_fixed_batch(optimizer):
    torch.manual_seed(0)
    pqn = agent(optimizer=optimizer, lr=1e-3, minibatch_size=64, update_epochs=10)
    batch = {"obs": torch.randn(256, 4), "actions": torch.randint(0, 2, (256,)), "returns": torch.randn(256) + 3.0}

    def td_error() -> float:
        with torch.no_grad():
            q = pqn.policy.net(batch["obs"]).gather(-1, batch["actions"].unsqueeze(-1)).squeeze(-1)
        return (q - batch["returns"]).pow(2).mean().item()

    before = td_error()
    metrics = pqn.update(batch)
    assert set(metrics) == {"losses/td_loss", "losses/q_values"}
    assert td_error() < 0.5 * before
    assert torch.isfinite(metrics["losses/td_loss"]) and metrics["losses/td_loss"].dim() == 0


@pytest.mark.parametrize("space", [BOX4, FRAMES], ids=["mlp", "cnn"])
def test_layer_norm_switch_adds_and_removes_the_layer_norms(space):
    with_ln = pqn_network(space, 3, [120, 84], layer_norm=True, ortho=True)
    without = pqn_network(space, 3, [120, 84], layer_norm=False, ortho=True)
    count = lambda net: sum(isinstance(m, nn.LayerNorm) for m in net.modules())
    assert count(with_ln) == (2 if space is BOX4 else 4) and count(without) == 0
    x = torch.randint(0, 255, (2, *space.shape), dtype=torch.uint8) if space is FRAMES else torch.randn(2, 4)
    assert with_ln(x).shape == without(x).shape == (2, 3)
    if space is BOX4:  # LayerNorm: zero mean per sample, and (zero biases at init) blind to the input's scale
        normed = with_ln[:2]  # Linear, LayerNorm
        assert torch.allclose(normed(x).mean(-1), torch.zeros(2), atol=1e-5)
        torch.testing.assert_close(normed(10.0 * x), normed(x), rtol=0, atol=1e-3)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a, b = agent(), agent(ortho_init=False)
    a.update({"obs": torch.randn(64, 4), "actions": torch.randint(0, 2, (64,)), "returns": torch.randn(64)})
    b.load_state_dict(a.state_dict())
    obs = torch.randn(8, 4)
    assert torch.equal(a.policy.net(obs), b.policy.net(obs))
    assert b.optimizer.state_dict()["state"].keys() == a.optimizer.state_dict()["state"].keys()


# ----------------------------------------------------------------- configs
@pytest.mark.parametrize(("override", "key"), [("algo.q_lambda=1.5", "algo.q_lambda"),
                                               ("algo.optimizer=sgd", "algo.optimizer"),
                                               ("algo.eps_fraction=0", "algo.eps_fraction"),
                                               ("algo.minibatch_size=0", "algo.minibatch_size")])
def test_bad_pqn_values_are_refused_with_key_and_range(compose, override, key):
    with pytest.raises(ConfigError) as info:
        load(compose("algo=pqn", override))
    assert key in str(info.value) and "expected" in str(info.value), str(info.value)


def test_presets_compose_with_their_sources_values(compose):
    cartpole = load(compose("algo=pqn", "env=CartPole"))
    assert (cartpole.env.num_envs, cartpole.algo.num_steps, cartpole.algo.update_epochs, cartpole.total_steps) == (
        8, 64, 8, 100_000)
    pong = load(compose("algo=pqn", "env=Pong"))  # CleanRL's pqn_atari_envpool.py
    assert (pong.env.num_envs, pong.algo.num_steps, pong.algo.minibatch_size, pong.algo.update_epochs) == (8, 128, 256, 4)
    assert (pong.algo.lr, pong.algo.q_lambda, pong.algo.eps_end, pong.algo.eps_fraction) == (2.5e-4, 0.65, 0.01, 0.1)
    assert load(compose("algo=pqn", "env=Breakout")).algo == pong.algo


def test_continuous_actions_are_refused_before_any_work(tiny_cfg, tmp_path):
    with pytest.raises(ConfigError) as info:
        train(tiny_cfg("algo=pqn", "env=Pendulum"))
    message = str(info.value)
    assert "algo=pqn" in message and "Discrete" in message and "Box" in message and "ppo" in message
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------- tiny runs
def test_smoke_run_logs_its_tags_and_resumes(tiny_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    tiny = ("env.num_envs=4", "algo.num_steps=32", "algo.minibatch_size=64", "algo.update_epochs=2")
    first = train(tiny_cfg("algo=pqn", *tiny))
    assert first["status"] == "completed" and first["steps"] >= 512 and first["final_eval_return"] is not None
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"losses/td_loss", "losses/q_values", "charts/epsilon", "charts/learning_rate", "charts/SPS",
            "eval/return_mean"} <= tags
    second = train(tiny_cfg("algo=pqn", *tiny, "total_steps=1024", f"resume={run_dir}"))
    assert second["status"] == "completed" and second["steps"] >= 1024 > first["steps"]


def test_smoke_run_without_layer_norm_and_with_lambda_zero(tiny_cfg):
    summary = train(tiny_cfg("algo=pqn", "env.num_envs=4", "algo.num_steps=32", "algo.layer_norm=false",
                             "algo.q_lambda=0", "algo.optimizer=adam"))
    assert summary["status"] == "completed"


# ----------------------------------------------------------------- learning (slow)
@pytest.mark.slow
def test_solves_cartpole_within_100k_steps(compose, tmp_path):
    # preset/pqn_CartPole.yaml applies by itself; training stops at the first evaluation >= 475.
    cfg = compose("algo=pqn", "env=CartPole", "seed=0", "total_steps=100000", "eval.stop_at_threshold=true",
                  "progress=false", "device=cpu", f"run_dir={tmp_path / 'run'}")
    summary = train(cfg)
    assert summary["status"] == "completed"
    assert summary["best_eval_return"] >= 475, summary
    assert summary["steps_to_threshold"] is not None and summary["steps_to_threshold"] <= 100_000, summary
