"""One file per algorithm; ``ALGOS`` maps the names ``algo=<name>`` accepts to their classes."""

from rlrun.algos.a2c import A2C
from rlrun.algos.alphazero import AlphaZero
from rlrun.algos.dqn import DQN
from rlrun.algos.npg import NPG
from rlrun.algos.ppo import PPO
from rlrun.algos.pqn import PQN
from rlrun.algos.trpo import TRPO
from rlrun.algos.vpg import VPG

ALGOS = {"ppo": PPO, "vpg": VPG, "a2c": A2C, "npg": NPG, "trpo": TRPO, "dqn": DQN, "rainbow": DQN,
         "pqn": PQN, "alphazero": AlphaZero}

__all__ = ["A2C", "ALGOS", "DQN", "NPG", "PPO", "PQN", "TRPO", "VPG", "AlphaZero"]
