"""One file per algorithm; ``ALGOS`` maps the names ``algo=<name>`` accepts to their classes."""

from rlrun.algos.ppo import PPO

ALGOS = {"ppo": PPO}

__all__ = ["ALGOS", "PPO"]
