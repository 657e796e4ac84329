"""User-facing errors: one line naming the problem and the fix; the CLI prints them without traceback."""

import contextlib
import signal
import threading


class AstrodaskError(Exception):
    """A problem the user can fix (bad input, bad option, existing output). Message is one line."""


class ConfigError(AstrodaskError):
    """An invalid configuration field; the message names the field and how to fix it."""

    def __init__(self, field: str, problem: str, fix: str):
        self.field = field
        super().__init__(f"{field}: {problem}; {fix}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``scancel``, a CI timeout) received: unwinds like Ctrl-C, so clusters and batch jobs
    are closed and the staging area is kept for ``--resume``."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signum)


def terminate_as_interrupt() -> contextlib.AbstractContextManager:
    """Inside the block (main thread only), the first SIGTERM raises :class:`Terminated`; from then on SIGTERM has
    its default action again (ends the process at once), so a stuck clean-up can still be stopped."""
    return _TerminateAsInterrupt()


_RECEIVED: list[int] = []
"""The SIGTERM already turned into Terminated (at most one)."""


class _TerminateAsInterrupt(contextlib.AbstractContextManager):
    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread() and not _RECEIVED:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _RECEIVED.append(signum)
        raise Terminated(signum)

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if _RECEIVED else self.previous)
        return False
