"""AlphaZero's search: batched Monte Carlo tree search over tensor board games (:mod:`rlrun.search.games`)."""
