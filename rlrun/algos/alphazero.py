"""AlphaZero (Silver et al. 2017, 2018): actor-critic with Monte Carlo tree search on two-player board games.

The network f(s) = (p, v) gives the search its priors and leaf values; the search improves on p, and the network
learns to predict the search's policy pi and the game's outcome z:

    loss = -sum_a pi(a) log p(a|s) + (z - v(s))^2   (+ weight decay as L2 on the weights)

The search is :func:`rlrun.search.mcts.search` (``algo.search=puct`` or ``gumbel``); self-play, the replay of
positions and the schedule of updates are :func:`rlrun.loops.run_search`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import torch
import torch.nn.functional as F

from rlrun.checks import check, choice, positive, unit
from rlrun.envs.games import GameSpace
from rlrun.envs.wrappers import EnvSwitches
from rlrun.search.games import GAMES
from rlrun.search.mcts import RULES, SearchConfig, SearchResult, search
from rlrun.search.networks import GameMLP, GameResNet


@dataclass
class AlphaZeroConfig:
    """Search, self-play and learning settings."""

    name: str = "alphazero"
    """Algorithm name (set by the algo/ config file)."""
    gamma: float = 1.0
    """Games are scored by their outcome only: no discounting."""
    search: str = SearchConfig.rule
    """Root rule: puct (Dirichlet noise, visit-count targets) or gumbel (Gumbel-top-k, Sequential Halving,
    completed-Q targets)."""
    num_simulations: int = SearchConfig.num_simulations
    """Simulations per move in self-play."""
    eval_simulations: int | None = None
    """Simulations per move in evaluation (null: num_simulations)."""
    c_puct: float = SearchConfig.c_puct
    """PUCT's exploration constant."""
    dirichlet_alpha: float = SearchConfig.dirichlet_alpha
    """puct: Dirichlet noise concentration at the root in self-play (AlphaZero: 0.3 chess, 0.03 Go)."""
    dirichlet_fraction: float = SearchConfig.dirichlet_fraction
    """puct: share of the root prior replaced by the noise."""
    temperature_moves: int = 4
    """puct: the first this many moves of a self-play game are sampled in proportion to the root's visits, later
    ones take the most visited (gumbel samples through its Gumbel noise instead)."""
    max_considered: int = SearchConfig.max_considered
    """gumbel: root actions sampled for Sequential Halving in self-play."""
    eval_max_considered: int | None = None
    """gumbel: root actions Sequential Halving considers in evaluation (null: every legal move; nothing to explore
    there, and evaluation usually searches with more simulations)."""
    c_visit: float = SearchConfig.c_visit
    """gumbel: sigma's visit offset (mctx's default)."""
    c_scale: float = SearchConfig.c_scale
    """gumbel: sigma's scale (mctx's default)."""
    network: str = "mlp"
    """mlp (hidden_sizes) or resnet (channels, blocks)."""
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 128])
    channels: int = 64
    blocks: int = 4
    lr: float = 1e-3
    """Adam learning rate."""
    anneal_lr: bool = False
    """Anneal the learning rate linearly to 0 over ``total_steps``."""
    weight_decay: float = 1e-4
    """L2 penalty on the weights (the loss's c ||theta||^2)."""
    batch_size: int = 256
    """Positions per gradient step."""
    replay_size: int = 100000
    """Positions kept (the newest)."""
    learning_starts: int = 1000
    """Positions in the replay before the first update."""
    moves_per_update: int = 1
    """Self-play moves (of every env) between training phases."""
    gradient_steps: int = 1
    """Gradient steps per training phase."""
    value_target_q: float = 0.0
    """Share w of the search's root value q in the value target (1 - w) z + w q; 0 trains on the outcome z only,
    as AlphaZero does; 0.5 averages the two (Oracle's Connect Four series, "Lessons from AlphaZero, part 4", 2018,
    reports targets mixing z and q beating z alone)."""
    mirror: bool = False
    """Also store each finished game's positions mirrored left-right (with their policies mirrored): the games
    are symmetric under it, so this doubles the data for free."""
    log_every: int = 1000
    """Env steps (moves, all envs together) between logged iterations."""

    def __post_init__(self) -> None:
        choice("algo.search", self.search, RULES)
        choice("algo.network", self.network, ("mlp", "resnet"))
        check(self.num_simulations >= 1, "algo.num_simulations", self.num_simulations, "an integer >= 1")
        if self.eval_simulations is not None:
            check(self.eval_simulations >= 1, "algo.eval_simulations", self.eval_simulations, "an integer >= 1 or null")
        positive("algo.c_puct", self.c_puct)
        positive("algo.dirichlet_alpha", self.dirichlet_alpha)
        unit("algo.dirichlet_fraction", self.dirichlet_fraction)
        check(self.temperature_moves >= 0, "algo.temperature_moves", self.temperature_moves, "an integer >= 0")
        check(self.max_considered >= 1, "algo.max_considered", self.max_considered, "an integer >= 1")
        if self.eval_max_considered is not None:
            check(self.eval_max_considered >= 1, "algo.eval_max_considered", self.eval_max_considered,
                  "an integer >= 1 or null")
        check(len(self.hidden_sizes) >= 1 and all(h >= 1 for h in self.hidden_sizes),
              "algo.hidden_sizes", self.hidden_sizes, "a non-empty list of positive integers")
        check(self.channels >= 1, "algo.channels", self.channels, "an integer >= 1")
        check(self.blocks >= 0, "algo.blocks", self.blocks, "an integer >= 0")
        positive("algo.lr", self.lr)
        unit("algo.value_target_q", self.value_target_q)
        check(self.weight_decay >= 0, "algo.weight_decay", self.weight_decay, "a number >= 0")
        for key in ("batch_size", "replay_size", "moves_per_update", "gradient_steps", "log_every"):
            check(getattr(self, key) >= 1, f"algo.{key}", getattr(self, key), "an integer >= 1")
        check(self.learning_starts >= 0, "algo.learning_starts", self.learning_starts, "an integer >= 0")

    def env_switches(self) -> EnvSwitches:
        return EnvSwitches(False, None, False, None, self.gamma)

    def search_config(self, evaluation: bool = False) -> SearchConfig:
        if evaluation:
            sims = self.eval_simulations or self.num_simulations
            considered = self.eval_max_considered  # None: every legal move
        else:
            sims, considered = self.num_simulations, self.max_considered
        return SearchConfig(sims, self.search, self.c_puct, self.dirichlet_alpha, self.dirichlet_fraction,
                            considered, self.c_visit, self.c_scale)


class SearchPolicy:
    """Acts by searching from the position (the observation is the game's state row)."""

    def __init__(self, agent: AlphaZero):
        self.agent = agent

    @torch.no_grad()
    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        agent = self.agent
        result = agent.search(obs, agent.cfg.search_config(evaluation=True), explore=not deterministic)
        if deterministic:
            action = result.action
        else:
            action = torch.multinomial(result.policy, 1).squeeze(-1)
        return action, torch.zeros(obs.shape[0], device=obs.device)


class AlphaZero:
    """AlphaZero's network, its optimiser and its update; self-play moves through :meth:`self_play`."""

    Config: ClassVar[type] = AlphaZeroConfig
    loop: ClassVar[str] = "search"
    action_spaces: ClassVar[tuple[type[gym.Space], ...]] = (gym.spaces.Discrete,)

    def __init__(self, cfg: AlphaZeroConfig, obs_space: gym.Space, action_space: gym.Space, device: torch.device):
        if not isinstance(obs_space, GameSpace):
            raise TypeError(f"alphazero plays two-player board games ({', '.join(GAMES)}), not {obs_space}")
        self.cfg, self.device, self.game = cfg, torch.device(device), obs_space.game
        planes, actions = self.game.obs_shape, self.game.num_actions
        if cfg.network == "mlp":
            self.net = GameMLP(planes, actions, cfg.hidden_sizes).to(self.device)
        else:
            self.net = GameResNet(planes, actions, cfg.channels, cfg.blocks).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.policy = SearchPolicy(self)
        self.gradient_steps_done = 0

    @torch.no_grad()
    def evaluate(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's (logits [B, A], value [B]) at game states [B, D], in inference mode."""
        self.net.eval()
        logits, value = self.net(self.game.observation(states))
        return logits.float(), value.float()

    def search(self, states: torch.Tensor, cfg: SearchConfig, explore: bool) -> SearchResult:
        return search(self.game, self.evaluate, states, cfg, explore)

    @torch.no_grad()
    def self_play(self, states: torch.Tensor) -> SearchResult:
        """One self-play move of every game: the search's result, its ``action`` the move to play (for puct,
        sampled by visit count during the first ``temperature_moves`` moves)."""
        result = self.search(states, self.cfg.search_config(), explore=True)
        if self.cfg.search == "puct":
            early = self.game.moves_played(states) < self.cfg.temperature_moves
            sampled = torch.multinomial(result.visits / result.visits.sum(-1, keepdim=True), 1).squeeze(-1)
            result.action = torch.where(early, sampled, result.action)
        return result

    def set_progress(self, fraction: float) -> dict[str, float]:
        """The learning rate: constant, or linear to 0 over training with ``anneal_lr``."""
        lr = self.cfg.lr * (1.0 - fraction) if self.cfg.anneal_lr else self.cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return {"charts/learning_rate": lr}

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """One gradient step on replay positions: policy cross-entropy to the search policy, value MSE to the value
        target z (the outcome, or its mix with the root value)."""
        self.net.train()
        states, target, z = batch["states"], batch["policies"], batch["z"]
        logits, value = self.net(self.game.observation(states))
        legal = self.game.legal(states)
        log_p = F.log_softmax(logits.masked_fill(~legal, -1e9), dim=-1)
        policy_loss = -(target * log_p).sum(-1).mean()
        value_loss = F.mse_loss(value, z)
        loss = policy_loss + value_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.gradient_steps_done += 1
        entropy = -(log_p.exp() * log_p.masked_fill(~legal, 0.0)).sum(-1).mean()
        return {"losses/policy_loss": policy_loss.detach(), "losses/value_loss": value_loss.detach(),
                "losses/entropy": entropy.detach()}

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "gradient_steps_done": self.gradient_steps_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gradient_steps_done = state["gradient_steps_done"]

