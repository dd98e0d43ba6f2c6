"""rlrun: a config-driven deep reinforcement learning runner."""

__version__ = "0.1.0"
