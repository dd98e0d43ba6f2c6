"""Two-player tensor board games for AlphaZero: the batch of games is one int8 tensor, the rules pure functions."""

from rlrun.search.games.base import TensorGame
from rlrun.search.games.connect_four import ConnectFour
from rlrun.search.games.tictactoe import TicTacToe

GAMES: dict[str, type[TensorGame]] = {"TicTacToe": TicTacToe, "ConnectFour": ConnectFour}
"""env.id -> game class."""

__all__ = ["GAMES", "ConnectFour", "TensorGame", "TicTacToe"]
