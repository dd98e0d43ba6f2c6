"""The policy-gradient family (vpg, a2c, npg, trpo): return math against hand-computed values, whole-episode
batches, config errors naming key and range, one smoke run per algorithm and action space, the logged tags."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlrun.algos.vpg import VPG, VPGConfig, kept_steps
from rlrun.config import ConfigError, load
from rlrun.loops import RolloutBuffer, run_on_policy
from rlrun.returns import discount_weights, episode_return, episode_steps, gae, reward_to_go
from rlrun.train import build, resolve_device, train

F64 = torch.float64
PG_ALGOS = ["vpg", "a2c", "npg", "trpo"]


def _t(rows, dtype=F64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


# --------------------------------------------------------------------------- return math
def test_reward_to_go_hand_computed_termination_truncation_and_rollout_end():
    # T=3, N=3, gamma=0.5. env 0 terminates at t=1; env 1 is truncated at t=1 (bootstrap 10 there);
    # env 2 never ends (the rollout's last row bootstraps from bootstrap[2, 2] = 8).
    gamma = 0.5
    rewards = _t([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]])
    bootstrap = _t([[9.0, 9.0, 9.0], [6.0, 10.0, 9.0], [7.0, 3.0, 8.0]])
    terminated = torch.tensor([[False, False, False], [True, False, False], [False, False, False]])
    truncated = torch.tensor([[False, False, False], [False, True, False], [False, False, False]])
    # env 0: G_2 = 4 + 0.5*7 = 7.5 (rollout end); G_1 = 2 (terminal, no bootstrap); G_0 = 1 + 0.5*2 = 2
    # env 1: G_2 = 4 + 0.5*3 = 5.5; G_1 = 2 + 0.5*10 = 7 (time limit: bootstrap); G_0 = 1 + 0.5*7 = 4.5
    # env 2: G_2 = 4 + 0.5*8 = 8; G_1 = 2 + 0.5*8 = 6; G_0 = 1 + 0.5*6 = 4
    expected = _t([[2.0, 4.5, 4.0], [2.0, 7.0, 6.0], [7.5, 5.5, 8.0]])
    out = reward_to_go(rewards, bootstrap, terminated, truncated, gamma)
    torch.testing.assert_close(out, expected)
    # with zero bootstrap (plain REINFORCE): G_t = sum_k gamma^k r_{t+k} up to the episode's end
    zeros = torch.zeros_like(rewards)
    out = reward_to_go(rewards, zeros, terminated, truncated, gamma)
    torch.testing.assert_close(out[:, 2], _t([1 + 0.5 * 2 + 0.25 * 4, 2 + 0.5 * 4, 4.0]))


def test_reward_to_go_equals_gae_lambda_one_plus_values():
    g = torch.Generator().manual_seed(0)
    T, N = 7, 3
    rewards, values = torch.randn(T, N, generator=g, dtype=F64), torch.randn(T, N, generator=g, dtype=F64)
    next_values = torch.cat([values[1:], torch.randn(1, N, generator=g, dtype=F64)])
    terminated = torch.rand(T, N, generator=g) < 0.2
    truncated = (torch.rand(T, N, generator=g) < 0.2) & ~terminated
    next_values = torch.where(terminated | truncated, torch.randn(T, N, generator=g, dtype=F64), next_values)
    adv = gae(rewards, values, next_values, terminated, truncated, 0.9, 1.0)
    torch.testing.assert_close(reward_to_go(rewards, next_values, terminated, truncated, 0.9), adv + values)


def test_episode_return_broadcasts_the_whole_return_over_each_episode():
    rtg = _t([[3.0], [2.0], [5.0], [1.0]])
    starts = torch.tensor([[True], [False], [True], [False]])
    torch.testing.assert_close(episode_return(rtg, starts), _t([[3.0], [3.0], [5.0], [5.0]]))


def test_episode_steps_and_gamma_k_weights_hand_computed():
    done = torch.tensor([[False, False], [True, False], [False, False], [False, True]])
    steps = episode_steps(done, start=torch.tensor([0, 4]))
    assert steps.tolist() == [[0, 4], [1, 5], [0, 6], [1, 7]]
    w = discount_weights(steps, 0.9)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.9**4], [0.9, 0.9**5], [1.0, 0.9**6], [0.9, 0.9**7]]))


def test_kept_steps_drops_each_envs_unfinished_episode():
    done = torch.tensor([[False, False], [True, False], [False, False], [False, False]])
    assert kept_steps(done).tolist() == [[True, False], [True, False], [False, False], [False, False]]


class _FakeEnv:
    num_envs, device = 2, torch.device("cpu")
    single_observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    single_action_space = gym.spaces.Discrete(2)


def _vpg(**kw) -> VPG:
    torch.manual_seed(0)
    return VPG(VPGConfig(gamma=0.5, **kw), _FakeEnv.single_observation_space, _FakeEnv.single_action_space,
               torch.device("cpu"))


def _filled_buffer() -> RolloutBuffer:
    buffer = RolloutBuffer(3, _FakeEnv())
    buffer.rewards.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]))
    buffer.terminated[1, 0] = True  # env 0: one episode of 2 steps, then an unfinished one; env 1: unfinished
    buffer.obs.copy_(torch.arange(6.0).reshape(3, 2, 1))
    return buffer


def test_vpg_whole_episode_batches_keep_finished_episodes_only():
    batch = _vpg(baseline="none", norm_adv=False, batch_mode="episodes").targets(_filled_buffer())
    assert batch["obs"].squeeze(-1).tolist() == [0.0, 2.0]  # env 0's steps 0 and 1
    torch.testing.assert_close(batch["advantages"], torch.tensor([1 + 0.5 * 2, 2.0]))


def test_vpg_total_return_and_gamma_weighting_switches():
    agent = _vpg(baseline="none", batch_mode="steps", reward_to_go=False, gamma_weighting=True)
    batch = agent.targets(_filled_buffer())  # flattened [T * N]: (t0 e0, t0 e1, t1 e0, t1 e1, t2 e0, t2 e1)
    # env 0: R(tau) = 1 + 0.5*2 = 2 for both steps of its episode; t=2 starts a new (cut) episode: 4
    # env 1: one episode cut at the rollout's end (zero bootstrap): 1 + 0.5*2 + 0.25*4 = 3 for every step
    torch.testing.assert_close(batch["advantages"], torch.tensor([2.0, 3.0, 2.0, 3.0, 4.0, 3.0]))
    torch.testing.assert_close(batch["weights"], torch.tensor([1.0, 1.0, 0.5, 0.5, 1.0, 0.25]))
    # the next rollout continues the step count: env 0 is at step 1 of its episode, env 1 at step 3
    assert agent.episode_step.tolist() == [1, 3]


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("algo", "override", "key", "accepted"),
    [
        ("npg", "algo.max_kl=0", "algo.max_kl", "> 0"),
        ("trpo", "algo.max_kl=-0.01", "algo.max_kl", "> 0"),
        ("trpo", "algo.cg_iters=0", "algo.cg_iters", ">= 1"),
        ("npg", "algo.damping=-1", "algo.damping", ">= 0"),
        ("trpo", "algo.backtrack_coef=1.0", "algo.backtrack_coef", "(0, 1)"),
        ("trpo", "algo.max_backtracks=0", "algo.max_backtracks", ">= 1"),
        ("a2c", "algo.gae_lambda=1.5", "algo.gae_lambda", "[0, 1]"),
        ("vpg", "algo.gae_lambda=-0.1", "algo.gae_lambda", "[0, 1]"),
        ("a2c", "algo.optimizer=sgd", "algo.optimizer", "rmsprop, adam"),
        ("vpg", "algo.baseline=mean", "algo.baseline", "none, value"),
        ("vpg", "algo.batch_mode=tokens", "algo.batch_mode", "episodes, steps"),
        ("vpg", "algo.vf_epochs=0", "algo.vf_epochs", ">= 1"),
        ("npg", "algo.fvp_subsample=0", "algo.fvp_subsample", "(0, 1]"),
    ],
)
def test_bad_values_name_the_key_and_the_accepted_range(compose, algo, override, key, accepted):
    with pytest.raises(ConfigError) as err:
        load(compose(f"algo={algo}", override))
    assert key in str(err.value) and accepted in str(err.value)


@pytest.mark.parametrize("algo", PG_ALGOS)
def test_an_action_space_without_a_head_is_refused_with_a_config_error(algo):
    from rlrun.algos import ALGOS

    obs = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    cfg = ALGOS[algo].Config()
    with pytest.raises(ConfigError, match=f"algo={algo}.*Box"):
        ALGOS[algo](cfg, obs, gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32), torch.device("cpu"))


# --------------------------------------------------------------------------- smoke runs
SMOKE = {
    "vpg": ("env.num_envs=2", "algo.num_steps=200"),
    "a2c": (),
    "npg": ("algo.num_steps=32",),
    "trpo": ("algo.num_steps=32",),
}


@pytest.mark.parametrize("env", ["CartPole", "Pendulum"])
@pytest.mark.parametrize("algo", PG_ALGOS)
def test_smoke_run_discrete_and_continuous(tiny_cfg, algo, env):
    summary = train(tiny_cfg(f"algo={algo}", f"env={env}", *SMOKE[algo]))
    assert summary["status"] == "completed" and summary["algo"] == algo
    assert summary["steps"] >= 512 and np.isfinite(summary["final_eval_return"])


@pytest.mark.parametrize("overrides", [
    ("algo=vpg", "algo.baseline=none", "algo.batch_mode=steps", "algo.num_steps=32", "algo.gamma_weighting=true"),
    ("algo=vpg", "algo.reward_to_go=false", "env.num_envs=2", "algo.num_steps=200", "algo.ent_coef=0.01"),
    ("algo=a2c", "algo.shared_network=true", "algo.optimizer=adam", "algo.gae_lambda=0.9", "algo.ent_coef=0.01"),
    ("algo=a2c", "algo.shared_network=true", "env=Pendulum", "algo.norm_obs=true", "algo.norm_reward=true"),
])
def test_smoke_run_switches(tiny_cfg, overrides):
    assert train(tiny_cfg(*overrides))["status"] == "completed"


class _OneIteration:
    """RunHooks for one iteration of run_on_policy; keeps the metrics."""

    step, total_steps, members = 0, 10**9, 1

    def __init__(self):
        self.metrics = None

    def record_episodes(self, info):
        pass

    def end_iteration(self, metrics):
        self.metrics = metrics
        return True


@pytest.mark.parametrize(("algo", "tags"), [
    ("vpg", {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/approx_kl"}),
    ("a2c", {"losses/policy_loss", "losses/value_loss", "losses/entropy", "losses/explained_variance"}),
    ("npg", {"losses/kl", "losses/surrogate_improvement", "charts/step_size", "losses/value_loss"}),
    ("trpo", {"losses/kl", "losses/surrogate_improvement", "charts/line_search_steps", "charts/step_size"}),
])
def test_each_algorithm_logs_its_tags_and_trpo_respects_the_kl_limit(compose, algo, tags):
    from rlrun.config import load as load_cfg

    cfg = load_cfg(compose(f"algo={algo}", "env=CartPole", "device=cpu", "algo.num_steps=64"))
    torch.manual_seed(0)
    env, eval_env, agent = build(cfg, resolve_device("cpu"))
    run = _OneIteration()
    run_on_policy(agent, env, env.reset(seed=0), run)
    assert tags <= set(run.metrics), set(run.metrics)
    assert all(torch.isfinite(torch.as_tensor(v)).all() for v in run.metrics.values())
    if algo == "trpo":
        assert float(run.metrics["losses/kl"]) <= cfg.algo.max_kl + 1e-6
        assert float(run.metrics["losses/surrogate_improvement"]) >= 0
    env.close()
    eval_env.close()


def test_resume_restores_every_optimizer(tiny_cfg, tmp_path):
    first = train(tiny_cfg("algo=trpo", "algo.num_steps=32"))
    again = train(tiny_cfg("algo=trpo", "algo.num_steps=32", f"resume={tmp_path / 'run'}", "total_steps=1024"))
    assert first["status"] == again["status"] == "completed" and again["steps"] >= 1024


# --------------------------------------------------------------------------- MuJoCo
MUJOCO_ENVS = ["HalfCheetah", "Hopper", "Walker2d", "Ant"]


@pytest.mark.parametrize("env", MUJOCO_ENVS)
def test_mujoco_env_without_the_extra_names_the_pip_command(compose, monkeypatch, env):
    import rlrun.envs.gym as gym_backend

    def missing(*args, **kwargs):
        raise gym.error.DependencyNotInstalled("No module named 'mujoco'")

    monkeypatch.setattr(gym_backend, "SyncVectorEnv", missing)
    cfg = load(compose("algo=trpo", f"env={env}"))
    assert cfg.algo.norm_obs and cfg.algo.norm_reward  # the MuJoCo presets apply by themselves
    with pytest.raises(ConfigError, match=r'pip install "gymnasium\[mujoco\]"'):
        gym_backend.GymVecEnv(cfg.env, 1, torch.device("cpu"))


@pytest.mark.parametrize("algo", ["ppo", "trpo", "a2c"])
def test_halfcheetah_smoke_headless(tiny_cfg, algo, tmp_path, monkeypatch):
    pytest.importorskip("mujoco")
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the working directory
    summary = train(tiny_cfg(f"algo={algo}", "env=HalfCheetah", "algo.num_steps=64", "env.max_episode_steps=50",
                             "total_steps=256", "eval.every_steps=0", "eval.episodes=1"))
    assert summary["status"] == "completed" and np.isfinite(summary["final_eval_return"])
