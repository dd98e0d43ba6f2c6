"""The bugs that changed results (issue 9), one test each: every test here failed before its fix."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlrun import checkpoint
from rlrun.algos.dqn import DQN, DQNConfig
from rlrun.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def _scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _gradient_steps(run_dir) -> int:
    return int(checkpoint.load(checkpoint.latest(run_dir))["agent"]["gradient_steps_done"])


# ----------------------------------------------------------------- 1. off-policy: every due training phase runs
@pytest.mark.parametrize("num_envs", [4, 16])
def test_gradient_steps_per_env_step_do_not_depend_on_num_envs(tiny_cfg, tmp_path, num_envs):
    # 8,000 env steps, one update every 4 from step 1,000 on: ~1,750 updates whatever the number of envs
    # (before the fix: 1,750 with 4 envs, 437 with 16, one training phase per vector step at most).
    run_dir = tmp_path / f"n{num_envs}"
    train(tiny_cfg("algo=dqn", f"env.num_envs={num_envs}", "total_steps=8000", "algo.learning_starts=1000",
                   "algo.train_frequency=4", "algo.gradient_steps=1", "algo.hidden_sizes=[16]",
                   "eval.every_steps=0", run_dir=run_dir))
    done = _gradient_steps(run_dir)
    assert 1745 <= done <= 1755, done
    logged = _scalars(run_dir, "charts/gradient_steps")
    assert logged[-1] == (8000, float(done))  # the count is a TensorBoard curve against env steps
    assert logged[0][1] <= 4  # the first log, at ~1,000 steps: learning has just started


def test_polyak_averaging_follows_the_target_update_interval():
    space = gym.spaces.Box(-1.0, 1.0, (3,))
    agent = DQN(DQNConfig(tau=0.5, target_update_interval=100, hidden_sizes=[4]), space, gym.spaces.Discrete(2),
                torch.device("cpu"))
    with torch.no_grad():
        for p in agent.policy.net.parameters():
            p.add_(1.0)
    before = copy.deepcopy(agent.target.state_dict())
    online = agent.policy.net.state_dict()
    agent.update_target(50)  # not due: CleanRL and SB3 average only every target_update_interval env steps
    assert all(torch.equal(agent.target.state_dict()[k], before[k]) for k in before)
    agent.update_target(100)
    for key, value in agent.target.state_dict().items():
        torch.testing.assert_close(value, 0.5 * before[key] + 0.5 * online[key])
    after = copy.deepcopy(agent.target.state_dict())
    agent.update_target(150)  # the next one is due at 200
    assert all(torch.equal(agent.target.state_dict()[k], after[k]) for k in after)


# ----------------------------------------------------------------- 3. PPO: anneal_clip leaves value clipping alone
def test_anneal_clip_does_not_shrink_the_value_clipping_range():
    from rlrun.algos.ppo import PPO, PPOConfig
    from rlrun.losses import clipped_value_loss

    torch.manual_seed(0)
    space = gym.spaces.Box(-1.0, 1.0, (4,))
    agent = PPO(PPOConfig(anneal_clip=True, clip_coef=0.2, clip_vloss=True), space, gym.spaces.Discrete(2),
                torch.device("cpu"))
    agent.set_progress(0.95)  # late in training: the policy's clip range is 0.01
    obs = torch.randn(16, 4)
    actions, logp = agent.policy.act(obs)
    with torch.no_grad():
        values = agent.policy.value(obs)
    old_values = values - 0.15  # the critic moved 0.15 since collection: inside 0.2, outside 0.01
    returns = values + 1.0
    _, terms = agent.loss(obs, actions, logp, torch.randn(16), returns, old_values, norm_adv=True)
    assert agent.clip == pytest.approx(0.01)
    expected = clipped_value_loss(values, old_values, returns, 0.2)  # the full range: nothing is clipped
    torch.testing.assert_close(terms.value_loss, expected)
    assert not torch.allclose(terms.value_loss, clipped_value_loss(values, old_values, returns, 0.01))


# ----------------------------------------------------------------- 4. critic losses as the cited references have them
def test_value_loss_is_the_mean_squared_error_hand_computed():
    from rlrun.losses import value_loss

    # ((1 - 0)^2 + (3 - 1)^2 + (-2 - 0)^2) / 3 = (1 + 4 + 4) / 3 = 3, no 1/2 (baselines a2c, trpo_mpi, SB3)
    assert value_loss(torch.tensor([1.0, 3.0, -2.0]), torch.tensor([0.0, 1.0, 0.0])).item() == pytest.approx(3.0)


def _pg_batch(agent, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(size, 4, generator=g)
    actions, logp = agent.policy.act(obs)
    with torch.no_grad():
        values = agent.policy.value(obs)
    returns = values + torch.randn(size, generator=g)
    return {"obs": obs, "actions": actions, "logp": logp, "values": values, "returns": returns,
            "advantages": returns - values, "weights": None}


@pytest.mark.parametrize("algo", ["a2c", "vpg", "trpo"])
def test_critic_loss_is_the_references_mean_squared_error(algo):
    from rlrun.algos import ALGOS

    torch.manual_seed(0)
    cls = ALGOS[algo]
    extra = {} if algo == "a2c" else {"vf_epochs": 1, "vf_minibatch_size": 32}  # one critic step: the loss before it
    agent = cls(cls.Config(name=algo, **extra), gym.spaces.Box(-1.0, 1.0, (4,)), gym.spaces.Discrete(2),
                torch.device("cpu"))
    batch = _pg_batch(agent)
    expected = (batch["values"] - batch["returns"]).pow(2).mean()  # V before the update
    out = agent.update(batch)
    torch.testing.assert_close(out["losses/value_loss"], expected)


# ----------------------------------------------------------------- 5. reward scaling: reset() starts the return again
def test_scale_reward_return_starts_again_at_reset():
    from rlrun.envs.cartpole import CartPoleVecEnv
    from rlrun.envs.wrappers import ScaleReward

    env = ScaleReward(CartPoleVecEnv(4, torch.device("cpu")), gamma=0.9)
    env.reset(seed=0)
    actions = torch.zeros(4, dtype=torch.int64)
    for _ in range(3):  # no CartPole episode ends within 3 steps: R = 1 + 0.9 + 0.81
        env.step(actions)
    env.reset(seed=1)  # VPG's whole-episode batches reset every batch
    _, _, terminated, truncated, _ = env.step(actions)
    assert not (terminated | truncated).any()
    torch.testing.assert_close(env.ret, torch.ones(4, dtype=torch.float64))  # R_1 = r_1 of the new episode


# ----------------------------------------------------------------- 6. evaluation never changes the training stream
@pytest.mark.parametrize("overrides", [("algo=dqn", "algo.eval_epsilon=0.1"), ("algo=ppo", "eval.deterministic=false")],
                         ids=["dqn-eval-epsilon", "ppo-sampled-eval"])
def test_the_eval_frequency_leaves_the_training_curve_unchanged(tiny_cfg, tmp_path, overrides):
    curves = []
    for every in (1024, 1536):
        run_dir = tmp_path / f"every{every}"
        train(tiny_cfg(*overrides, "total_steps=3072", f"eval.every_steps={every}", "algo.hidden_sizes=[16]",
                       run_dir=run_dir))
        tag = "losses/td_loss" if overrides[0] == "algo=dqn" else "losses/policy_loss"
        curves.append((_scalars(run_dir, tag), checkpoint.load(checkpoint.latest(run_dir))["agent"]["policy"]))
    (loss_a, params_a), (loss_b, params_b) = curves
    assert loss_a == loss_b and len(loss_a) >= 2
    assert all(torch.equal(params_a[k], params_b[k]) for k in params_a)


# ----------------------------------------------------------------- 7. a resume without the replay refills it first
def test_resume_without_replay_collects_learning_starts_transitions_before_updating(tiny_cfg, tmp_path):
    run_dir = tmp_path / "run"
    common = ("algo=dqn", "algo.learning_starts=1000", "algo.train_frequency=4", "algo.gradient_steps=1",
              "algo.log_every=500", "algo.hidden_sizes=[16]", "eval.every_steps=0")
    train(tiny_cfg(*common, "total_steps=3000", run_dir=run_dir))
    before = _gradient_steps(run_dir)
    assert before > 400
    train(tiny_cfg(*common, "total_steps=5000", f"resume={run_dir}", run_dir=run_dir))
    counts = dict(_scalars(run_dir, "charts/gradient_steps"))
    assert counts[3500] == before  # steps 3,000-4,000 refill the empty buffer: no update
    assert counts[4000] <= before + 1  # learning starts again at step 4,000
    assert counts[5000] >= before + 240
    assert "collecting 1,000 transitions" in (run_dir / "train.log").read_text()


# ----------------------------------------------------------------- deterministic=true
def test_deterministic_true_repeats_a_rainbow_run_and_restores_torch_flags(tiny_cfg, tmp_path, monkeypatch):
    import rlrun.algos.dqn as dqn_module

    used = []
    dense = dqn_module.categorical_projection_dense
    monkeypatch.setattr(dqn_module, "categorical_projection_dense", lambda *a: used.append(1) or dense(*a))
    common = ("algo=rainbow", "total_steps=1200", "algo.learning_starts=400", "eval.every_steps=600")
    first = train(tiny_cfg(*common, "deterministic=true", run_dir=tmp_path / "a"))
    second = train(tiny_cfg(*common, "deterministic=true", run_dir=tmp_path / "b"))
    assert used  # the C51 target went through the scatter-free projection
    assert not torch.are_deterministic_algorithms_enabled()  # put back after the run
    assert first["final_eval_return"] == second["final_eval_return"]
    policies = [checkpoint.load(checkpoint.latest(tmp_path / name))["agent"]["policy"] for name in ("a", "b")]
    assert policies[0].keys() == policies[1].keys()
    assert all(torch.equal(policies[0][k], policies[1][k]) for k in policies[0])


# ----------------------------------------------------------------- out of memory during training
def test_out_of_memory_mid_run_ends_with_a_resource_error_and_a_failed_summary(tiny_cfg, tmp_path, monkeypatch):
    import json

    from rlrun.algos.ppo import PPO
    from rlrun.resources import ResourceError

    real_update, calls = PPO.update, []

    def update_then_run_out(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 80 GiB total)")
        return real_update(self, batch)

    monkeypatch.setattr(PPO, "update", update_then_run_out)
    run_dir = tmp_path / "run"
    with pytest.raises(ResourceError) as info:
        train(tiny_cfg("total_steps=2048", "checkpoint.every_steps=256", run_dir=run_dir))
    message = str(info.value)
    assert message.startswith("Out of memory on cpu at step 768 (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "env.num_envs" in message and str(run_dir / "checkpoints") in message
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert [checkpoint.load(p)["step"] for p in checkpoint.list_checkpoints(run_dir)] == [256, 512]
