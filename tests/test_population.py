"""Population training: the stacked network and optimisers against the single-run ones, members that never
mix, members that are full runs (folders, checkpoints that resume alone, failures that stay their own)."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import pytest
import torch

from rlrun.algos.a2c import A2C, A2CConfig
from rlrun.algos.ppo import PPO, PPOConfig
from rlrun.algos.vpg import VPG, VPGConfig
from rlrun.checkpoint import load_newest
from rlrun.population import group_key, why_not_batchable
from rlrun.population.algos import PopulationA2C, PopulationPPO, PopulationVPG
from rlrun.population.stacked import StackedAdam, clip_member_grads
from rlrun.population.train import train_population
from rlrun.train import train
from tests.conftest import tiny_config

OBS, ACT = gym.spaces.Box(-1.0, 1.0, (4,)), gym.spaces.Discrete(2)
CPU = torch.device("cpu")


def batch(P: int | None, B: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (P, B) if P else (B,)
    return {"obs": torch.randn(*lead, 4, generator=g), "actions": torch.randint(0, 2, lead, generator=g),
            "logp": torch.full(lead, -0.69), "values": torch.randn(*lead, generator=g),
            "advantages": torch.randn(*lead, generator=g), "returns": torch.randn(*lead, generator=g)}


def test_stacked_adam_is_torch_adam_per_member():
    """Two members with different learning rates and epsilons follow torch.optim.Adam each."""
    torch.manual_seed(0)
    start = torch.randn(2, 5)
    lr, eps = torch.tensor([1e-2, 3e-3]), torch.tensor([1e-8, 1e-5])
    stacked = StackedAdam(start.clone(), lr, eps)
    singles = [torch.nn.Parameter(start[p].clone()) for p in range(2)]
    optims = [torch.optim.Adam([singles[p]], lr=float(lr[p]), eps=float(eps[p])) for p in range(2)]
    for _ in range(5):
        grad = torch.randn(2, 5)
        stacked.step(grad)
        for p in range(2):
            singles[p].grad = grad[p].clone()
            optims[p].step()
    for p in range(2):
        torch.testing.assert_close(stacked.param[p], singles[p].detach(), rtol=1e-6, atol=1e-7)


def test_clip_member_grads_by_hand():
    """g_p * min(1, c_p / ||g_p||): member 0 (norm 5) clipped to 1, member 1 (norm 0.5) untouched, inf = off."""
    grad = torch.tensor([[3.0, 4.0], [0.3, 0.4], [30.0, 40.0]])
    norms = clip_member_grads(grad, torch.tensor([1.0, 1.0, math.inf]))
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5, 50.0]))
    torch.testing.assert_close(grad, torch.tensor([[0.6, 0.8], [0.3, 0.4], [30.0, 40.0]]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "vpg", "npg", "trpo", "ppo-gaussian", "trpo-gaussian"])
def test_one_member_updates_as_its_single_run(algo):
    """A population of one, started from the single run's parameters, makes the single run's updates
    (plain torch path on both sides: nn.Tanh, torch.optim); ppo-gaussian: continuous actions."""
    action_space = gym.spaces.Box(-1.0, 1.0, (2,)) if algo == "ppo-gaussian" else ACT
    algo = algo.split("-")[0]
    if algo == "ppo":
        cfg = PPOConfig(fused=False, update_epochs=3, minibatch_size=64, ent_coef=0.01, clip_vloss=True)
        single_cls, pop_cls = PPO, PopulationPPO
    elif algo == "a2c":
        cfg = A2CConfig(fused=False, ent_coef=0.01)
        single_cls, pop_cls = A2C, PopulationA2C
    elif algo == "vpg":
        cfg = VPGConfig(fused=False, ent_coef=0.01, batch_mode="steps", vf_epochs=2, vf_minibatch_size=64)
        single_cls, pop_cls = VPG, PopulationVPG
    else:
        from rlrun.algos.npg import NPG, NPGConfig
        from rlrun.algos.trpo import TRPO, TRPOConfig
        from rlrun.population.algos import PopulationNPG, PopulationTRPO

        config_cls, single_cls, pop_cls = (NPGConfig, NPG, PopulationNPG) if algo == "npg" else \
            (TRPOConfig, TRPO, PopulationTRPO)
        cfg = config_cls(fused=False, vf_epochs=2, vf_minibatch_size=64, max_kl=0.05)
    torch.manual_seed(1)
    single = single_cls(cfg, OBS, action_space, CPU)
    torch.manual_seed(1)
    population = pop_cls([cfg], OBS, action_space, CPU)
    torch.testing.assert_close(population.policy.member(0), single.policy.state_dict())
    for i in range(3):
        single.set_progress(i / 10)
        population.set_progress(i / 10)
        b = {**batch(None, seed=i), "weights": None}
        if action_space is not ACT:
            b["actions"] = torch.randn(64, 2, generator=torch.Generator().manual_seed(i))
        torch.manual_seed(i)
        single_metrics = single.update(b)
        torch.manual_seed(i)  # the critic's minibatch order (VPG)
        pop_metrics = population.update({k: v.unsqueeze(0) if v is not None else v for k, v in b.items()})
    for name, value in single.policy.state_dict().items():
        torch.testing.assert_close(population.policy.member(0)[name], value, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pop_metrics["losses/policy_loss"][0], single_metrics["losses/policy_loss"],
                               rtol=1e-4, atol=1e-5)
    if algo in ("npg", "trpo"):  # the natural step moved the policy, by the single run's step size
        single_step = torch.as_tensor(single_metrics["charts/step_size"])
        torch.testing.assert_close(pop_metrics["charts/step_size"][0], single_step, rtol=1e-3, atol=1e-6)


def test_members_never_mix():
    """Member 0's parameters after several updates do not depend on member 1's learning rate (bitwise), and a
    frozen member (one that stopped) does not move."""
    results = []
    for lr, freeze in ((1e-6, True), (1e-1, False)):
        torch.manual_seed(0)
        cfgs = [PPOConfig(lr=3e-4, update_epochs=2, minibatch_size=32), PPOConfig(lr=lr, update_epochs=2,
                                                                                 minibatch_size=32)]
        population = PopulationPPO(cfgs, OBS, ACT, CPU)
        start = population.policy.member(1)
        if freeze:
            population.freeze(1)
        torch.manual_seed(5)
        for i in range(3):
            population.set_progress(0.0)
            population.update(batch(2, seed=i))
        results.append((population.policy.member(0), population.policy.member(1), start))
    (first0, frozen1, start1), (second0, moved1, _) = results
    for name in first0:
        assert torch.equal(first0[name], second0[name]), name
        assert torch.equal(frozen1[name], start1[name]), name
    assert any(not torch.equal(moved1[n], start1[n]) for n in moved1)


def test_group_key_batches_only_shape_free_values(tmp_path):
    base = tiny_config(tmp_path / "a", "algo=ppo", "seed=0")
    other_seed_lr = tiny_config(tmp_path / "b", "algo=ppo", "seed=3", "algo.lr=1e-3", "algo.gamma=0.9")
    other_shape = tiny_config(tmp_path / "c", "algo=ppo", "algo.num_steps=64")
    assert group_key(base) == group_key(other_seed_lr)
    assert group_key(base) != group_key(other_shape)
    rainbow = tiny_config(tmp_path / "d", "algo=rainbow")
    assert group_key(rainbow) is None and "rainbow" in why_not_batchable(rainbow)
    per = tiny_config(tmp_path / "d", "algo=dqn", "algo.prioritized=true")
    assert group_key(per) is None and "prioritized" in why_not_batchable(per)
    dqn = [tiny_config(tmp_path / "d", "algo=dqn", *extra) for extra in ((), ("algo.eps_end=0.1", "seed=2"),
                                                                          ("algo.gamma=0.9",))]
    assert group_key(dqn[0]) == group_key(dqn[1]) != group_key(dqn[2])  # DQN's replay holds one gamma
    episodes = tiny_config(tmp_path / "e", "algo=vpg")
    assert group_key(episodes) is None and "batch_mode" in why_not_batchable(episodes)


def members(tmp_path, *per_member: list[str], common: tuple[str, ...] = ()) -> list:
    return [tiny_config(tmp_path / f"m{p}", f"seed={p}", *common, *extra) for p, extra in enumerate(per_member)]


ALGO_SETTINGS = {"ppo": ("algo=ppo",), "a2c": ("algo=a2c", "algo.num_steps=32"),
                 "vpg": ("algo=vpg", "algo.batch_mode=steps", "algo.num_steps=32"),
                 "trpo": ("algo=trpo", "algo.num_steps=64"),
                 "dqn": ("algo=dqn", "algo.learning_starts=256", "algo.double=true", "algo.n_step=3",
                         "algo.target_update_interval=256")}


@pytest.mark.parametrize("algo", sorted(ALGO_SETTINGS))
def test_population_members_are_full_runs(tmp_path, algo):
    """Each member has its folder, events, summary and a checkpoint that resumes and evaluates as a single run."""
    common = (*ALGO_SETTINGS[algo], "total_steps=1024")
    cfgs = members(tmp_path, [], ["algo.lr=1e-3"], common=common)
    summaries = train_population(cfgs)
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    assert [s["seed"] for s in summaries] == [0, 1]
    for p, summary in enumerate(summaries):
        folder = tmp_path / f"m{p}"
        assert json.loads((folder / "summary.json").read_text()) == summary
        assert summary["steps"] == 1024 and summary["final_eval_return"] is not None
        assert list(folder.glob("events.out.tfevents.*"))
        state = load_newest(folder, CPU)
        assert state["step"] == 1024 and state["config"]["seed"] == p
    # member 1 resumed alone, as an ordinary run, to twice the steps
    resumed = train(tiny_config(tmp_path / "m1", "seed=1", *common, "algo.lr=1e-3", "total_steps=2048",
                                f"resume={tmp_path / 'm1'}"))
    assert resumed["status"] == "completed" and resumed["steps"] == 2048
    assert resumed["segments"][0]["end_step"] == 1024


def test_a_member_that_diverges_fails_alone(tmp_path):
    """An absurd learning rate makes member 1's losses non-finite: it fails with error.txt, member 0 completes."""
    cfgs = members(tmp_path, [], ["algo.lr=1e30", "algo.max_grad_norm=null"],
                   common=("algo=a2c", "total_steps=2048", "algo.optimizer=adam"))
    summaries = train_population(cfgs)
    assert summaries[0]["status"] == "completed" and summaries[0]["steps"] >= 2048
    assert summaries[1]["status"] == "failed" and summaries[1]["steps"] < 2048
    assert "diverged" in (tmp_path / "m1" / "error.txt").read_text()
    assert not (tmp_path / "m0" / "error.txt").exists()


def test_a_member_at_its_threshold_stops_alone(tmp_path):
    """With eval.stop_at_threshold a member that reaches the threshold ends there; the other trains on."""
    cfgs = members(tmp_path, ["env.reward_threshold=-1"], ["env.reward_threshold=1e9"],
                   common=("algo=ppo", "total_steps=1024", "eval.stop_at_threshold=true"))
    summaries = train_population(cfgs)
    assert summaries[0]["steps"] < summaries[1]["steps"] == 1024
    assert summaries[0]["status"] == summaries[1]["status"] == "completed"


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_stacked_mlps_match_the_plain_path(activation):
    """StackedMLPs' written-out backward (algo.fused=true) gives the plain baddbmm path's outputs and gradients."""
    torch.manual_seed(0)
    from rlrun.networks import ActorCritic
    from rlrun.population.stacked import StackedActorCritic

    members = [ActorCritic(OBS, ACT, [64, 32], activation) for _ in range(3)]
    plain = StackedActorCritic(members, activation, fused=False)
    fused = StackedActorCritic(members, activation, fused=True)
    obs, actions = torch.randn(3, 50, 4), torch.randint(0, 2, (3, 50))
    results = []
    for net in (plain, fused):
        logp, entropy, value = net.evaluate(obs, actions)
        (logp.sum() + 0.1 * entropy.sum() + value.pow(2).sum()).backward()
        results.append((logp, entropy, value, net.flat.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_normalising_members_keep_statistics_of_their_own_and_resume_alone(tmp_path):
    """algo.norm_obs and algo.norm_reward per member (members with different gammas): each member's checkpoint
    holds its own statistics in a single run's layout, and resumes as an ordinary run."""
    common = ("algo=ppo", "algo.norm_obs=true", "algo.norm_reward=true", "algo.clip_obs=10", "total_steps=1024")
    cfgs = members(tmp_path, ["algo.gamma=0.9"], ["algo.gamma=0.99"], common=common)
    assert group_key(cfgs[0]) == group_key(cfgs[1])
    summaries = train_population(cfgs)
    assert [s["status"] for s in summaries] == ["completed", "completed"]
    states = [load_newest(tmp_path / f"m{p}", CPU)["env"] for p in range(2)]
    obs_rms = [s["env"]["obs_rms"] if "obs_rms" not in s else s["obs_rms"] for s in states]
    assert obs_rms[0]["mean"].shape == (4,) and obs_rms[0]["count"].dim() == 0
    assert not torch.equal(obs_rms[0]["mean"], obs_rms[1]["mean"])  # each member saw its own envs
    resumed = train(tiny_config(tmp_path / "m1", "seed=1", *common, "algo.gamma=0.99", "total_steps=2048",
                                f"resume={tmp_path / 'm1'}"))
    assert resumed["status"] == "completed" and resumed["steps"] == 2048


def test_one_dqn_member_updates_as_its_single_run():
    """DQN (double, target network, Huber loss, clipping): a population of one makes the single run's steps."""
    from rlrun.algos.dqn import DQN, DQNConfig
    from rlrun.population.algos import PopulationDQN

    cfg = DQNConfig(double=True, hidden_sizes=[32, 32], max_grad_norm=1.0, lr=1e-3)
    torch.manual_seed(3)
    single = DQN(cfg, OBS, ACT, CPU)
    torch.manual_seed(3)
    population = PopulationDQN([cfg], OBS, ACT, CPU)
    g = torch.Generator().manual_seed(0)
    for step in range(4):
        b = {"obs": torch.randn(32, 4, generator=g), "next_obs": torch.randn(32, 4, generator=g),
             "actions": torch.randint(0, 2, (32,), generator=g), "returns": torch.randn(32, generator=g),
             "discounts": torch.full((32,), 0.99), "weights": torch.ones(32)}
        single_out = single.update(b)
        pop_out = population.update({k: v.unsqueeze(0) for k, v in b.items()})
        single.update_target(1000 * (step + 1))
        population.update_target(1000 * (step + 1))
    torch.testing.assert_close(pop_out.errors[0], single_out.errors, rtol=1e-4, atol=1e-5)
    state = population.member_state_dict(0)
    for key in ("policy", "target"):
        for name, value in single.state_dict()[key].items():
            torch.testing.assert_close(state[key][name], value, rtol=1e-4, atol=1e-5)

