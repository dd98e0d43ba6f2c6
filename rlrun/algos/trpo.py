"""Trust Region Policy Optimization (Schulman et al. 2015).

    maximise_theta  E[ pi_theta(a|s) / pi_old(a|s) * A ]   subject to   E[ KL(pi_old || pi_theta) ] <= delta

The natural-gradient direction of :class:`rlrun.algos.npg.NPG`, then a backtracking line search
(:func:`rlrun.trust_region.backtracking_line_search`) that accepts the first shrunken step which
improves the surrogate and keeps the mean KL within delta; the critic is fitted by regression on
the GAE returns, as in NPG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlrun.algos.npg import NPG, NPGConfig
from rlrun.checks import check
from rlrun.trust_region import backtracking_line_search


@dataclass
class TRPOConfig(NPGConfig):
    """The line search's settings on top of NPG's."""

    name: str = "trpo"
    gae_lambda: float = 0.95  # SB3-contrib's TRPO (NPG's other shared defaults are baselines' trpo_mpi's)
    backtrack_coef: float = 0.8
    """Each rejected step is shrunk by this factor (exponential backtracking)."""
    max_backtracks: int = 10
    """Candidate steps tried before giving up (the parameters then stay where they were)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0.0 < self.backtrack_coef < 1.0, "algo.backtrack_coef", self.backtrack_coef, "a number in (0, 1)")
        check(self.max_backtracks >= 1, "algo.max_backtracks", self.max_backtracks, "an integer >= 1")


class TRPO(NPG):
    """NPG's step direction with a line search on the surrogate under the KL limit."""

    Config = TRPOConfig

    def apply_step(self, batch: dict[str, torch.Tensor], advantages: torch.Tensor, old: tuple, start: torch.Tensor,
                   full_step: torch.Tensor) -> dict[str, Any]:
        """Backtracking line search from ``start`` along ``full_step``; diagnostics for the log."""
        cfg = self.cfg
        obs, actions, old_logp = batch["obs"], batch["actions"], batch["logp"]
        before = float(self.surrogate(obs, actions, old_logp, advantages))

        def evaluate(candidate: torch.Tensor) -> tuple[float, float]:
            self.set_flat(candidate)
            with torch.no_grad():
                kl = self.mean_kl(old, self.policy.policy_params(obs))
            improvement = self.surrogate(obs, actions, old_logp, advantages)
            return float(improvement) - before, float(kl)

        result = backtracking_line_search(evaluate, start, full_step, cfg.max_kl, cfg.backtrack_coef,
                                          cfg.max_backtracks)
        self.set_flat(result.params)
        fraction = cfg.backtrack_coef ** (result.steps - 1) if result.accepted else 0.0
        return {"step_fraction": fraction, "charts/line_search_steps": float(result.steps),
                "charts/line_search_accepted": float(result.accepted)}
