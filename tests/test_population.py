"""Population training: the stacked network and optimisers against the single-run ones, members that never
mix, members that are full runs (folders, checkpoints that resume alone, failures that stay their own)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

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


@pytest.mark.parametrize("name", ["adam", "radam"])
def test_stacked_adam_and_radam_are_torch_optimisers_per_member(name):
    """Members with different learning rates and epsilons follow torch.optim.Adam (RAdam: foreach, as PQN builds it,
    through its unrectified first steps, rho_t <= 5, into the rectified ones) each, moments in its layout; a frozen
    member (lr 0) does not move."""
    from rlrun.population.stacked import StackedRAdam

    stacked_cls, torch_cls = (StackedAdam, torch.optim.Adam) if name == "adam" else (StackedRAdam, torch.optim.RAdam)
    torch.manual_seed(0)
    start = torch.randn(3, 5)
    lr, eps = torch.tensor([1e-2, 3e-3, 0.0]), torch.tensor([1e-8, 1e-5, 1e-8])
    stacked = stacked_cls(start.clone(), lr, eps)
    singles = [torch.nn.Parameter(start[p].clone()) for p in range(2)]
    optims = [torch_cls([singles[p]], lr=float(lr[p]), eps=float(eps[p]), foreach=True) for p in range(2)]
    for _ in range(8):
        grad = torch.randn(3, 5)
        stacked.step(grad)
        for p in range(2):
            singles[p].grad = grad[p].clone()
            optims[p].step()
    for p in range(2):
        torch.testing.assert_close(stacked.param[p], singles[p].detach(), rtol=1e-6, atol=1e-7)
        state = optims[p].state[singles[p]]
        for key, value in stacked.member_state(p).items():
            torch.testing.assert_close(value, state[key].reshape(value.shape))
    assert torch.equal(stacked.param[2], start[2])


def test_stacked_layer_norm_q_network_is_each_members_network():
    """PQN's Q-network (Linear, LayerNorm, ReLU) stacked: each member's Q-values and gradients are its own
    network's, with LayerNorm scales and shifts that differ between members."""
    from rlrun.algos.pqn import pqn_network
    from rlrun.networks import QNetwork
    from rlrun.population.stacked import StackedQNetwork

    torch.manual_seed(0)
    nets = [pqn_network(OBS, 3, [16, 8], layer_norm=True, ortho=True) for _ in range(3)]
    for net in nets:  # LayerNorm starts at scale 1, shift 0: make them differ between members
        for module in net.modules():
            if isinstance(module, torch.nn.LayerNorm):
                torch.nn.init.normal_(module.weight)
                torch.nn.init.normal_(module.bias)
    stacked = StackedQNetwork(nets)
    assert stacked.norms is not None and all(norm is not None for norm in stacked.norms)
    obs = torch.randn(3, 20, 4)
    q = stacked.q_values(obs)  # [P, B, A]
    q.pow(2).sum().backward()
    for p, net in enumerate(nets):
        single = net(obs[p])
        torch.testing.assert_close(q[p], single, rtol=1e-5, atol=1e-6)
        single.pow(2).sum().backward()
        grads = {name: param.grad for name, param in net.named_parameters()}
        for name, (a, b) in stacked.columns.items():
            torch.testing.assert_close(stacked.flat.grad[p, a:b], grads[name].reshape(-1), rtol=1e-5, atol=1e-6)
    # DQN's networks: one hidden layer (an empty trunk) stacks without LayerNorm; noisy layers are refused
    assert len(StackedQNetwork([QNetwork(OBS, 2, [32])]).layers) == 2
    with pytest.raises(ValueError, match="NoisyLinear"):
        StackedQNetwork([QNetwork(OBS, 2, [32], noisy=True)])


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


@pytest.mark.parametrize("algo", ["ppo", "pqn"])
def test_members_never_mix(algo):
    """Member 0's parameters after several updates do not depend on member 1's learning rate (PQN: nor on its
    gamma, lambda and epsilon, through acting and targets too) (bitwise), and a frozen member (one that stopped)
    does not move."""
    from rlrun.algos.pqn import PQNConfig
    from rlrun.population.algos import PopulationPQN

    results = []
    for lr, freeze in ((1e-6, True), (1e-1, False)):
        torch.manual_seed(0)
        if algo == "ppo":
            cfgs = [PPOConfig(lr=3e-4, update_epochs=2, minibatch_size=32),
                    PPOConfig(lr=lr, update_epochs=2, minibatch_size=32)]
            population = PopulationPPO(cfgs, OBS, ACT, CPU)
        else:
            common = {"hidden_sizes": [16, 16], "update_epochs": 2, "minibatch_size": 8}
            other = {"gamma": 0.5, "q_lambda": 0.0, "eps_start": 0.1} if freeze else \
                {"gamma": 0.99, "q_lambda": 1.0, "eps_start": 1.0}
            cfgs = [PQNConfig(lr=1e-3, **common), PQNConfig(lr=lr, **other, **common)]
            population = PopulationPQN(cfgs, OBS, ACT, CPU)
        net = population.policy if algo == "ppo" else population.stacked_net
        start = net.member(1)
        if freeze:
            population.freeze(1)
        torch.manual_seed(5)
        for i in range(3):
            population.set_progress(i / 10)
            if algo == "ppo":
                population.update(batch(2, seed=i))
            else:
                buffer = rollout(4, 2 * 3, seed=i)  # 2 members x 3 envs
                population.policy.act(buffer.obs[0])
                population.update(population.targets(buffer))
        results.append((net.member(0), net.member(1), start))
    (first0, frozen1, start1), (second0, moved1, _) = results
    for name in first0:
        assert torch.equal(first0[name], second0[name]), name
        assert torch.equal(frozen1[name], start1[name]), name
    assert any(not torch.equal(moved1[n], start1[n]) for n in moved1)


def rollout(T: int, N: int, seed: int = 0):
    """A fake rollout storage [T, N] with terminations and time-limit truncations (what PQN.targets reads)."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(obs=torch.randn(T, N, 4, generator=g), next_obs=torch.randn(T, N, 4, generator=g),
                           actions=torch.randint(0, 2, (T, N), generator=g), rewards=torch.randn(T, N, generator=g),
                           terminated=torch.rand(T, N, generator=g) < 0.1,
                           truncated=torch.rand(T, N, generator=g) < 0.1)


@pytest.mark.parametrize("optimizer,layer_norm", [("radam", True), ("adam", True), ("radam", False)])
def test_one_pqn_member_updates_as_its_single_run(optimizer, layer_norm):
    """PQN (LayerNorm, RAdam or Adam, clipping, annealed lr, several epochs of shuffled minibatches): a population of
    one acts, computes Q(lambda) targets, updates and checkpoints as the single run (the same shuffles: the single
    run's torch.randperm stands in for the member's own draw)."""
    from rlrun.algos.pqn import PQN, PQNConfig
    from rlrun.population.algos import PopulationPQN

    cfg = PQNConfig(optimizer=optimizer, layer_norm=layer_norm, hidden_sizes=[32, 16], lr=1e-3, gamma=0.9,
                    q_lambda=0.7, update_epochs=2, minibatch_size=16, max_grad_norm=0.5, eps_fraction=0.5)
    torch.manual_seed(3)
    single = PQN(cfg, OBS, ACT, CPU)
    torch.manual_seed(3)
    population = PopulationPQN([cfg], OBS, ACT, CPU)
    population.shuffle = lambda size: torch.randperm(size).unsqueeze(0)  # [1, size]: the single run's order
    torch.testing.assert_close(population.stacked_net.member(0), single.policy.net.state_dict())
    for i in range(8):  # RAdam's first 5 steps are unrectified, the rest rectified
        single_schedule, pop_schedule = single.set_progress(i / 10), population.set_progress(i / 10)
        for key, value in single_schedule.items():
            torch.testing.assert_close(pop_schedule[key], torch.tensor([value]))
        buffer = rollout(4, 4, seed=i)
        torch.manual_seed(i)
        single_action, _ = single.policy.act(buffer.obs[0])
        torch.manual_seed(i)
        pop_action, _ = population.policy.act(buffer.obs[0])
        assert torch.equal(pop_action, single_action)
        single_batch, pop_batch = single.targets(buffer), population.targets(buffer)
        torch.testing.assert_close(pop_batch["returns"][0], single_batch["returns"], rtol=1e-5, atol=1e-6)
        torch.manual_seed(i)
        single_metrics = single.update(single_batch)
        torch.manual_seed(i)
        pop_metrics = population.update(pop_batch)
        for key, value in single_metrics.items():
            torch.testing.assert_close(pop_metrics[key][0], value, rtol=1e-4, atol=1e-5)
    state, expected = population.member_state_dict(0), single.state_dict()
    for name, value in expected["policy"].items():
        torch.testing.assert_close(state["policy"][name], value, rtol=1e-4, atol=1e-5)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(expected["optimizer"]["param_groups"][0]["lr"])
    for index, entry in expected["optimizer"]["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(state["optimizer"]["state"][index][key], value, rtol=1e-4, atol=1e-6)


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
    pqn = [tiny_config(tmp_path / "f", "algo=pqn", *extra) for extra in (
        (), ("seed=1", "algo.lr=1e-4", "algo.gamma=0.9", "algo.q_lambda=0.3", "algo.eps_start=0.5", "algo.eps_end=0.1",
             "algo.max_grad_norm=null"), ("algo.optimizer=adam",), ("algo.eps_fraction=0.3",))]
    assert group_key(pqn[0]) == group_key(pqn[1])  # Q(lambda) per rollout: gamma and lambda per member
    assert group_key(pqn[0]) != group_key(pqn[2]) and group_key(pqn[0]) != group_key(pqn[3])


def members(tmp_path, *per_member: list[str], common: tuple[str, ...] = ()) -> list:
    return [tiny_config(tmp_path / f"m{p}", f"seed={p}", *common, *extra) for p, extra in enumerate(per_member)]


ALGO_SETTINGS = {"ppo": ("algo=ppo",), "a2c": ("algo=a2c", "algo.num_steps=32"),
                 "vpg": ("algo=vpg", "algo.batch_mode=steps", "algo.num_steps=32"),
                 "trpo": ("algo=trpo", "algo.num_steps=64"),
                 "dqn": ("algo=dqn", "algo.learning_starts=256", "algo.double=true", "algo.n_step=3",
                         "algo.target_update_interval=256"),
                 "pqn": ("algo=pqn", "algo.num_steps=16", "algo.update_epochs=2")}


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

