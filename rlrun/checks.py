"""ConfigError and the range checks that every config dataclass runs in ``__post_init__``.

A leaf module: it imports nothing of rlrun, so the config, the algorithms and the env backends can all
use it without importing each other. Each check raises a :class:`ConfigError` whose message names the
key, the bad value and what would be accepted.
"""

from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A config value that cannot work; the message is meant for the user as it is."""


def check(ok: bool, key: str, value: Any, accepted: str) -> None:
    """Refuse ``key=value`` unless ``ok``, saying what is ``accepted``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} is not accepted: expected {accepted}.")


def positive(key: str, value: Any) -> None:
    check(value is not None and value > 0, key, value, "a number > 0")


def unit(key: str, value: float, *, closed: bool = True) -> None:
    """A number in [0, 1] (``closed``) or in (0, 1]."""
    ok = 0.0 <= value <= 1.0 if closed else 0.0 < value <= 1.0
    check(ok, key, value, "a number in [0, 1]" if closed else "a number in (0, 1]")


def choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    check(value in choices, key, value, "one of " + ", ".join(choices))
