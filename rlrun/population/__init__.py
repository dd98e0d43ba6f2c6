"""Population training: the jobs of a sweep that differ only in batchable values train in one process.

Each member of a population is a full run (its own folder, TensorBoard events, checkpoints, summary and
sweep row); only the arithmetic is shared: the members' parameters are stacked along a leading member
dimension and every forward pass, backward pass and optimiser step serves all of them at once.

- :func:`group_key` says which composed job configs may share a process;
- :func:`train_population` trains one such group;
- ``hydra_plugins.rlrun_population.population_launcher`` is the Hydra launcher (``hydra/launcher=population``)
  that groups a sweep.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rlrun.population.groups import ALGOS, BATCHABLE, BATCHABLE_PER_ALGO, group_key, why_not_batchable

__all__ = ["ALGOS", "BATCHABLE", "BATCHABLE_PER_ALGO", "group_key", "train_population", "why_not_batchable"]


def train_population(cfgs: list[DictConfig], signals: Any = None) -> list[dict[str, Any]]:
    """Train the jobs ``cfgs`` (composed configs with ``run_dir`` set, all with one :func:`group_key`) as one
    population; returns each member's summary (also written to its folder). ``signals``: a
    :class:`rlrun.interrupt.StopSignals` (default SIGINT and SIGTERM). See :mod:`rlrun.population.train`."""
    from rlrun.population.train import train_population as train

    return train(cfgs, signals)
