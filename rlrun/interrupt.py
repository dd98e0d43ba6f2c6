"""Signals that stop a run: Ctrl-C (SIGINT), ``kill`` / ``docker stop`` / Ray / SLURM (SIGTERM), submitit's
preemption signal (SIGUSR2).

While :class:`StopSignals` is active, each of these raises :class:`Interrupted` in the main thread, at whatever
line it is running, as Ctrl-C raises ``KeyboardInterrupt``; ``train`` catches it, writes a checkpoint and an
``interrupted`` summary. Stop signals after the first are ignored: the run is already saving and ending (a
second Ctrl-C must not cut its last checkpoint short; ``kill -9`` still ends it at once). Inside
:meth:`StopSignals.deferred` (a checkpoint being written) a signal waits until the block has finished, so a
checkpoint is never abandoned half way by a signal. ``save_soon`` signals only ask
for a checkpoint at the next iteration end and let the run go on (SIGTERM inside a submitit job, where
submitit's own SIGUSR2 then requeues the job).

Handlers can only be set in the main thread; elsewhere (a thread-based launcher) the process's handlers stay
as they are.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, Self

EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
"""The shell's convention: 128 + the signal number."""


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to stop; ``signame`` says which (``SIGINT``, ``SIGTERM``, ``SIGUSR2``)."""

    def __init__(self, signum: int):
        self.signum = signum
        self.signame = signal.Signals(signum).name
        super().__init__(self.signame)


class StopSignals:
    """Context manager: ``stop`` signals raise :class:`Interrupted`, ``save_soon`` signals set :attr:`save_requested`."""

    def __init__(self, stop: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM), save_soon: tuple[int, ...] = (),
                 exit_after_stop: bool = False):
        self.stop, self.save_soon = stop, save_soon
        self.exit_after_stop = exit_after_stop  # the process ends after a stop: keep ignoring stop signals then
        self.save_requested = False
        self.pending: int | None = None  # a stop signal that arrived inside deferred()
        self.stopping = False  # a stop signal was raised: the run is saving and ending, later ones are ignored
        self._depth = 0
        self._entered = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Self:
        self._entered += 1  # re-entrant: the CLI holds it around train(), which enters it again
        if self._entered == 1 and threading.current_thread() is threading.main_thread():
            for signum in (*self.stop, *self.save_soon):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._entered -= 1
        if self._entered:
            return
        for signum, handler in self._previous.items():
            # After a stop in the CLI the process is on its way out: a late second Ctrl-C must not turn the clean
            # exit (130 or 143, everything saved) into a KeyboardInterrupt in Hydra's unwinding.
            ignore = self.stopping and self.exit_after_stop and signum in self.stop
            signal.signal(signum, signal.SIG_IGN if ignore else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in self.save_soon:
            self.save_requested = True
        elif self.stopping:
            return
        elif self._depth:
            self.pending = signum
        else:
            self.stopping = True
            raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self, then_raise: bool = True) -> Iterator[None]:
        """Hold stop signals until the block ends; then raise the first that came (unless ``then_raise`` is False)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            pending, self.pending = self.pending, None
            if pending is not None and then_raise and not self._depth:
                self.stopping = True
                raise Interrupted(pending)
