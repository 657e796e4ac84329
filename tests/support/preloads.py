"""``dask worker --preload`` modules that put a worker under real memory pressure, for the watchdog's tests.

``paused(path)``: the worker holds 90 % of its memory limit (above distributed's pause threshold, 80 %, below its
restart one, 95 %), so distributed pauses it and it never starts another task. ``restarting(path)``: the worker
joins paused and stays paused (the scheduler gives it no task), then grows over 95 % and its nanny restarts it, over and
over: a restart loop in which no task dies, so distributed's allowed-failures never ends it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

PAUSED_AT = 0.9

_BALLAST = """\
    import psutil

    HELD = []


    def ballast(worker, fraction):
        need = int(fraction * worker.memory_manager.memory_limit) - psutil.Process().memory_info().rss
        HELD.append(b"\\x01" * max(0, need))  # written, so resident
    """


def paused(path: Path) -> Path:
    path.write_text(textwrap.dedent(_BALLAST) + textwrap.dedent(f"""\


        def dask_setup(worker):
            ballast(worker, {PAUSED_AT})
        """))
    return path


def restarting(path: Path, after: float = 2.0) -> Path:
    path.write_text(textwrap.dedent(_BALLAST) + textwrap.dedent(f"""\
        from distributed.core import Status


        def stays_paused(worker):
            # its status never goes back to running (registering sets it running, and the memory monitor would
            # pause it again only up to 100 ms later: time enough for the scheduler to hand it a task)
            base = type(worker)

            class Paused(base):
                @property
                def status(self):
                    return base.status.fget(self)

                @status.setter
                def status(self, value):
                    base.status.fset(self, Status.paused if value == Status.running else value)

            worker.__class__ = Paused


        def dask_setup(worker):
            ballast(worker, {PAUSED_AT})
            stays_paused(worker)
            worker.status = Status.paused  # registers paused, and stays so: the scheduler gives it no task
            worker.loop.call_later({after}, ballast, worker, 0.99)  # then over 95 %: its nanny restarts it
        """))
    return path
