"""Stop a run cleanly on SIGTERM (SLURM preemption, ``kill``) or SIGINT (Ctrl-C).

The first signal only sets a flag: the runner finishes the batch in flight,
appends its records, and raises :class:`RunInterrupted` between batches, so
nothing is left half-written and a restart resumes where the run stopped. A
second signal of either kind while the first is pending stops at once
(``KeyboardInterrupt``; the records already on disk stay valid).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

__all__ = ["GracefulStop", "RunInterrupted"]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class RunInterrupted(Exception):  # noqa: N818 - it is an event, not an error
    """A run stopped between batches on a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, message: str = ""):
        super().__init__(message or f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class GracefulStop:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing).

    ``check()`` raises :class:`RunInterrupted` when a signal arrived. Previous handlers
    are restored on exit.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a signal arrived since entering."""
        if self.signum is not None:
            raise RunInterrupted(self.signum)
