"""Where the worker functions run: on a Dask cluster, or in this process (the estimator on a pandas frame).

Both backends offer the same four operations, so the training code is written once:

``map(fn, items, **kw)``      one task per item; handles to the results (futures, or the results themselves)
``gather(handles)``           the results on the client (only ever small records: summaries, counts)
``tree_sum(fn, handles)``     a fixed-order two-level tree of ``fn`` over the handles (groups of FAN, then the
                              groups' results): the same additions in the same order on any number of workers,
                              or in this process, so the model does not depend on where it was trained
``memory()``                  the workers' total memory limit (0: unknown), for the cache policy

The cluster backend never gathers rows or blocks: ``map`` leaves the results on the workers.
"""

from __future__ import annotations

from ..console import track
from .watch import as_done

FAN = 16
"""Handles added by one task of the first level of ``tree_sum``."""


class InProcess:
    """Runs every task here, in item order."""

    def map(self, fn, items, desc: str | None = None, **kw) -> list:
        return [fn(item, **kw) for item in items]

    def gather(self, handles, desc: str | None = None) -> list:
        return list(handles)

    def tree_sum(self, fn, handles, desc: str = "training"):
        handles = list(handles)
        return fn(*[fn(*handles[i:i + FAN]) for i in range(0, len(handles), FAN)])

    def memory(self) -> int:
        return 0


class OnCluster:
    """Submits every task to the workers of ``client``; only the results of ``gather`` and ``tree_sum`` come
    back."""

    def __init__(self, client, quiet: bool = False):
        self.client, self.quiet = client, quiet

    def map(self, fn, items, desc: str | None = None, **kw) -> list:
        futs = self.client.map(fn, list(items), pure=False, **kw)
        if desc:  # wait with a progress bar; errors surface here
            track(futs, desc, self.quiet, gather=False)
        return futs

    def gather(self, handles, desc: str | None = None) -> list:
        return track(list(handles), desc or "gather", self.quiet or desc is None)

    def tree_sum(self, fn, handles, desc: str = "training"):
        handles = list(handles)
        level = [self.client.submit(fn, *handles[i:i + FAN], pure=False) for i in range(0, len(handles), FAN)]
        top = self.client.submit(fn, *level, pure=False)
        for fut in as_done([*level, top], desc):  # bounded: a cluster that cannot run it ends the wait
            if fut.status == "error" or fut is top:
                break
        return top.result()

    def memory(self) -> int:
        from ..cluster import worker_memory

        return worker_memory(self.client)
