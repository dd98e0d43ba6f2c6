"""Batched Monte Carlo tree search on tensor board games: one tree per game, all trees advanced together.

Each tree is a set of preallocated tensors over ``num_simulations + 1`` nodes (node 0 is the root; simulation
``i`` adds node ``i + 1``): the node's game state, its children (-1: not expanded), parent, visit count, value
sum, the network's prior logits and value. One simulation is

1. selection: from the root, pick an action at each node until an action leads to an unexpanded child (or to a
   finished game);
2. expansion: play that action, and evaluate the new positions of every tree in **one** network call;
3. backup: add the leaf's value to the nodes on its path, the sign alternating with the side to move.

Values are from the side to move at each node, so a parent sees a child's value negated: ``Q(s, a) =
-W(child) / N(child)``.

Two rules at the root (``rule``):

* ``puct`` (Silver et al. 2017/2018): PUCT at every node, with Dirichlet noise on the root's priors in self-play;
  the policy target is the root's visit distribution.
* ``gumbel`` (Danihelka et al. 2022, "Policy improvement by planning with Gumbel"): sample ``k`` root actions
  without replacement by Gumbel-top-k, share the simulations among them by Sequential Halving, pick the survivor
  with the largest ``g + logits + sigma(q)``; inside the tree, select deterministically to match the improved
  policy. The policy target is ``softmax(logits + sigma(completed q))``, an improvement over the prior even with
  a handful of simulations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rlrun.search.games.base import TensorGame

Evaluator = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""states [B, D] -> (logits [B, A] over all actions, values [B] in [-1, 1] from the side to move)."""

RULES = ("puct", "gumbel")


# ----------------------------------------------------------------- the formulas
def puct_scores(q: torch.Tensor, prior: torch.Tensor, parent_visits: torch.Tensor, child_visits: torch.Tensor,
                c_puct: float) -> torch.Tensor:
    """AlphaZero's selection score (Silver et al. 2018):

        U(s, a) = Q(s, a) + c_puct * P(s, a) * sqrt(N(s)) / (1 + N(s, a))

    ``q``, ``prior``, ``child_visits``: [..., A]; ``parent_visits``: [...] (N(s) = sum of the children's visits).
    An unvisited action has Q = 0 here.
    """
    return q + c_puct * prior * parent_visits.unsqueeze(-1).sqrt() / (1 + child_visits)


def considered_visits(k: int, n: int) -> list[int]:
    """Sequential Halving's schedule for ``k`` root actions and ``n`` simulations (Danihelka et al. 2022):
    entry ``i`` is the visit count that simulation ``i`` gives to one more considered action.

    Phase by phase, each of the ``m`` actions still considered gets ``max(1, floor(n / (ceil(log2 k) * m)))``
    more visits, then ``m`` halves (never below 2), until ``n`` visits are spent. With k = 4, n = 8: phase 1
    visits each of 4 once (0 0 0 0), phase 2 gives the best 2 two visits each (1 1 2 2).
    """
    if k <= 1:
        return list(range(n))
    phases = math.ceil(math.log2(k))
    out: list[int] = []
    visits = [0] * k
    m = k
    while len(out) < n:
        for _ in range(max(1, n // (phases * m))):
            out.extend(visits[:m])
            visits[:m] = [v + 1 for v in visits[:m]]
        m = max(2, m // 2)
    return out[:n]


def sigma(q: torch.Tensor, max_visits: torch.Tensor, c_visit: float, c_scale: float) -> torch.Tensor:
    """The monotone transform of Gumbel AlphaZero, for q already scaled to [0, 1]:

        sigma(q) = (c_visit + max_b N(b)) * c_scale * q

    ``max_visits``: [...] broadcast over the actions of ``q`` [..., A].
    """
    return (c_visit + max_visits.unsqueeze(-1)) * c_scale * q


def completed_q(q: torch.Tensor, visits: torch.Tensor, prior: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Q for every action, the unvisited ones completed with the mixed value estimate (Danihelka et al. 2022, eq. 33):

        v_mix = (v + sum_b N(b) / sum_{b: N(b)>0} pi(b) * sum_{b: N(b)>0} pi(b) q(b)) / (1 + sum_b N(b))

    ``q``, ``visits``, ``prior`` (pi): [..., A]; ``value`` (the network's v at the node): [...].
    """
    seen = visits > 0
    total = visits.sum(-1)
    seen_prior = (prior * seen).sum(-1)
    weighted = (prior * q * seen).sum(-1) / seen_prior.clamp_min(1e-12)
    v_mix = torch.where(total > 0, (value + total * weighted) / (1 + total), value)
    return torch.where(seen, q, v_mix.unsqueeze(-1))


def improved_policy(logits: torch.Tensor, q_completed: torch.Tensor, visits: torch.Tensor, c_visit: float,
                    c_scale: float) -> torch.Tensor:
    """Gumbel AlphaZero's policy target: ``pi' = softmax(logits + sigma(completed q))``, q mapped from [-1, 1] to
    [0, 1] (the known bounds of a game's value). Illegal actions must carry -inf logits."""
    scaled = (q_completed + 1) / 2
    return torch.softmax(logits + sigma(scaled, visits.amax(-1), c_visit, c_scale), dim=-1)


# ----------------------------------------------------------------- the search
@dataclass
class SearchConfig:
    """The search's settings; AlphaZeroConfig (``algo.``) takes its defaults from here and documents them."""

    num_simulations: int = 32
    rule: str = "gumbel"
    c_puct: float = 1.25
    dirichlet_alpha: float = 0.3
    dirichlet_fraction: float = 0.25
    max_considered: int | None = 16
    """gumbel: root actions Sequential Halving considers (None: every legal move)."""
    c_visit: float = 50.0
    c_scale: float = 0.1


@dataclass
class SearchResult:
    action: torch.Tensor
    """[B] the search's move: gumbel's survivor, or for puct the most visited root action."""
    policy: torch.Tensor
    """[B, A] the policy target: visit distribution (puct) or softmax(logits + sigma(completed q)) (gumbel)."""
    visits: torch.Tensor
    """[B, A] the root's children's visit counts."""
    value: torch.Tensor
    """[B] the root's mean value from the side to move."""


class Tree:
    """The preallocated tensors of ``B`` trees of ``nodes`` nodes each over ``game`` positions."""

    def __init__(self, game: TensorGame, roots: torch.Tensor, nodes: int):
        b, device, a = roots.shape[0], roots.device, game.num_actions
        self.game, self.rows = game, torch.arange(b, device=device)
        self.state = roots.new_zeros(b, nodes, roots.shape[1])
        self.state[:, 0] = roots
        self.children = torch.full((b, nodes, a), -1, dtype=torch.long, device=device)
        self.parent = torch.full((b, nodes), -1, dtype=torch.long, device=device)
        self.visits = torch.zeros(b, nodes, device=device)
        self.value_sum = torch.zeros(b, nodes, device=device)
        self.logits = torch.zeros(b, nodes, a, device=device)
        self.net_value = torch.zeros(b, nodes, device=device)
        self.terminal = torch.zeros(b, nodes, dtype=torch.bool, device=device)

    def child_stats(self, node: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Visits [B, A] and Q [B, A] (from ``node``'s side to move; 0 where unvisited) of ``node``'s children."""
        child = self.children[self.rows, node]
        safe = child.clamp_min(0)
        visits = torch.where(child >= 0, self.visits.gather(1, safe), 0.0)
        value_sum = torch.where(child >= 0, self.value_sum.gather(1, safe), 0.0)
        return visits, -value_sum / visits.clamp_min(1)

    def expand(self, index: int, parent: torch.Tensor, action: torch.Tensor, evaluate: Evaluator,
               live: torch.Tensor) -> torch.Tensor:
        """Node ``index`` := ``parent`` after ``action`` where ``live``; its value from its side to move [B]."""
        rows = self.rows
        state = self.game.step(self.state[rows, parent], torch.where(live, action, self.first_legal(parent)))
        logits, value = evaluate(state)
        done = self.game.terminal(state)
        value = torch.where(done, self.game.terminal_value(state), value)
        legal = self.game.legal(state)
        self.state[:, index] = state
        self.logits[:, index] = logits.masked_fill(~legal, -torch.inf)
        self.net_value[:, index] = value
        self.terminal[:, index] = done
        self.parent[:, index] = torch.where(live, parent, -1)
        link = self.children[rows, parent, action]
        self.children[rows, parent, action] = torch.where(live, index, link)
        return value

    def first_legal(self, node: torch.Tensor) -> torch.Tensor:
        """A legal action of each ``node`` (a placeholder move for trees that expand nothing this simulation)."""
        return self.game.legal(self.state[self.rows, node]).float().argmax(-1)

    def backup(self, leaf: torch.Tensor, value: torch.Tensor, live: torch.Tensor) -> None:
        """Add ``value`` (from ``leaf``'s side to move) along the path to the root, negated at each step up."""
        node, v = torch.where(live, leaf, -1), value
        while bool((node >= 0).any()):
            on = node >= 0
            at = node.clamp_min(0)
            self.visits[self.rows, at] += on.float()
            self.value_sum[self.rows, at] += torch.where(on, v, 0.0)
            node = torch.where(on, self.parent[self.rows, at], -1)
            v = -v


def search(game: TensorGame, evaluate: Evaluator, roots: torch.Tensor, cfg: SearchConfig,
           explore: bool = True) -> SearchResult:
    """Run ``cfg.num_simulations`` simulations from each of ``roots`` [B, D] (games not over) at once.

    ``explore``: Dirichlet noise at the root (puct) or Gumbel noise on the root sample (gumbel); without it the
    search is deterministic (evaluation). Random numbers come from torch's global generator.
    """
    n, a = cfg.num_simulations, game.num_actions
    tree = Tree(game, roots, n + 1)
    rows, b = tree.rows, roots.shape[0]
    logits, value = evaluate(roots)
    legal = game.legal(roots)
    if not bool(legal.any(-1).all()):
        raise ValueError("search: every root must be a game that is not over")
    tree.logits[:, 0] = logits.masked_fill(~legal, -torch.inf)
    tree.net_value[:, 0] = value
    tree.visits[:, 0], tree.value_sum[:, 0] = 1.0, value
    root_prior = torch.softmax(tree.logits[:, 0], -1)
    if cfg.rule == "puct" and explore:
        noise = torch.distributions.Gamma(torch.full((b, a), cfg.dirichlet_alpha, device=roots.device), 1.0).sample()
        noise = noise * legal
        noise = noise / noise.sum(-1, keepdim=True)
        root_prior = (1 - cfg.dirichlet_fraction) * root_prior + cfg.dirichlet_fraction * noise
    gumbel = -torch.log(-torch.log(torch.rand(b, a, device=roots.device).clamp(1e-20, 1.0)))
    if not explore:
        gumbel = torch.zeros_like(gumbel)
    root_score = (gumbel + tree.logits[:, 0]).masked_fill(~legal, -torch.inf)
    k = legal.sum(-1) if cfg.max_considered is None else torch.clamp(legal.sum(-1), max=cfg.max_considered)
    order = root_score.argsort(-1, descending=True)
    considered = torch.zeros_like(legal)
    considered[rows[:, None], order] = torch.arange(a, device=roots.device)[None] < k[:, None]
    schedule = torch.tensor([considered_visits(kk, n) for kk in range(a + 1)], device=roots.device)[k]  # [B, n]

    for i in range(n):
        node = torch.zeros(b, dtype=torch.long, device=roots.device)
        leaf_parent, leaf_action = node.clone(), node.clone()
        leaf_node = torch.full_like(node, -1)  # a finished game reached again
        stopped = torch.zeros(b, dtype=torch.bool, device=roots.device)
        at_root = True
        while True:
            if at_root and cfg.rule == "gumbel":
                visits, q = tree.child_stats(node)
                cq = completed_q(q, visits, root_prior, tree.net_value[:, 0])
                score = root_score + sigma((cq + 1) / 2, visits.amax(-1), cfg.c_visit, cfg.c_scale)
                pick = considered & (visits == schedule[:, i : i + 1])
                action = score.masked_fill(~pick, -torch.inf).argmax(-1)
            else:
                action = select(tree, node, root_prior if at_root else None, cfg)
            at_root = False
            child = tree.children[rows, node, action]
            new = (child < 0) & ~stopped
            leaf_parent = torch.where(new, node, leaf_parent)
            leaf_action = torch.where(new, action, leaf_action)
            stopped |= new
            go = ~stopped
            node = torch.where(go, child, node)
            finished = go & tree.terminal[rows, node]
            leaf_node = torch.where(finished, node, leaf_node)
            stopped |= finished
            if bool(stopped.all()):
                break
        expanding = leaf_node < 0
        new_value = tree.expand(i + 1, leaf_parent, leaf_action, evaluate, expanding)
        reached = leaf_node.clamp_min(0)
        leaf_value = torch.where(expanding, new_value, tree.net_value[rows, reached])
        tree.backup(torch.where(expanding, i + 1, reached), leaf_value, torch.ones_like(expanding))

    visits, q = tree.child_stats(torch.zeros(b, dtype=torch.long, device=roots.device))
    if cfg.rule == "gumbel":
        cq = completed_q(q, visits, root_prior, tree.net_value[:, 0])
        policy = improved_policy(tree.logits[:, 0], cq, visits, cfg.c_visit, cfg.c_scale)
        score = root_score + sigma((cq + 1) / 2, visits.amax(-1), cfg.c_visit, cfg.c_scale)
        best = considered & (visits == visits.masked_fill(~considered, -1).amax(-1, keepdim=True))
        action = score.masked_fill(~best, -torch.inf).argmax(-1)
    else:
        policy = visits / visits.sum(-1, keepdim=True)
        action = visits.masked_fill(~legal, -1).argmax(-1)
    return SearchResult(action, policy, visits, tree.value_sum[:, 0] / tree.visits[:, 0])


def select(tree: Tree, node: torch.Tensor, root_prior: torch.Tensor | None, cfg: SearchConfig) -> torch.Tensor:
    """The action taken at ``node`` [B] below the root (or at a puct root, with its noisy ``root_prior``)."""
    visits, q = tree.child_stats(node)
    logits = tree.logits[tree.rows, node]
    legal = torch.isfinite(logits)
    prior = root_prior if root_prior is not None else torch.softmax(logits, -1)
    if cfg.rule == "puct":
        score = puct_scores(q, prior, visits.sum(-1), visits, cfg.c_puct)
    else:  # match the improved policy: argmax pi'(a) - N(a) / (1 + sum_b N(b))
        cq = completed_q(q, visits, prior, tree.net_value[tree.rows, node])
        target = improved_policy(logits, cq, visits, cfg.c_visit, cfg.c_scale)
        score = target - visits / (1 + visits.sum(-1, keepdim=True))
    return score.masked_fill(~legal, -torch.inf).argmax(-1)


def random_rollouts(game: TensorGame) -> Evaluator:
    """Plain MCTS's evaluator: uniform priors, and the value of one random playout from each position (the result
    for its side to move: +1 win, 0 draw, -1 loss)."""

    def evaluate(states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mover = game.to_play(states)
        state = states
        while not bool(game.terminal(state).all()):
            legal = game.legal(state)
            moves = torch.multinomial(legal.float() + ~legal.any(-1, keepdim=True), 1).squeeze(-1)
            state = game.step(state, moves)
        # the last mover won, unless drawn: from the root position's side to move
        lost = game.terminal_value(state) < 0
        winner_is_mover = lost & (game.to_play(state) != mover)
        value = torch.where(lost, torch.where(winner_is_mover, 1.0, -1.0), 0.0)
        return torch.zeros(states.shape[0], game.num_actions, device=states.device), value

    return evaluate
