"""Where the worker functions run: on a Dask cluster, or in this process (the estimator on a pandas frame).

Both backends offer the same operations, so the training code is written once:

``map(fn, items, **kw)``      one task per item; handles to the results (futures, or the results themselves);
                              ``placed=True`` puts item i on the worker that ``group_sum`` gives its group
``gather(handles)``           the results on the client (only ever small records: summaries, counts)
``group_sum(fn, add, handles, **kw)``  ``add`` over every item of ``fn(item, **kw)``, in a fixed order: the items
                              are cut into :func:`groups` of consecutive items; each group's results are added in
                              item order, then the groups' sums in group order. The same additions in the same
                              order on any number of workers, or in this process, so the model does not depend
                              on where it was trained. On a cluster one task per worker thread computes the
                              sums of the groups it holds (one round trip per evaluation, whatever the number of
                              blocks); the client adds the groups' sums (gradients, never rows).
``tree_sum(fn, handles)``     a fixed-order two-level tree of ``fn`` over the handles (groups of FAN, then the
                              groups' results): results that already exist as futures (predict's histograms)
``memory()``                  the workers' total memory limit (0: unknown), for the cache policy

The cluster backend never gathers rows or blocks: ``map`` leaves the results on the workers.
"""

from __future__ import annotations

from ..console import track
from ..errors import AstrodaskError
from .watch import as_done, workers_now

FAN = 16
"""Handles added by one task of the first level of ``tree_sum``."""
GROUPS = 64
"""The most groups ``group_sum`` cuts the items into (and so the most tasks that compute at once)."""


def groups(n: int) -> list[range]:
    """The consecutive item ranges of ``group_sum``: min(n, GROUPS) of them, sizes differing by at most one."""
    g = min(n, GROUPS)
    bounds = [k * n // g for k in range(g + 1)] if g else [0]
    return [range(bounds[k], bounds[k + 1]) for k in range(g)]


def group_sums(fn, add, spans: list[range], kw: dict, *items) -> list:
    """Worker task: for each span (positions in ``items``) the sum of ``fn(item, **kw)`` over it, in order."""
    out = []
    for span in spans:
        acc = None
        for i in span:
            r = fn(items[i], **kw)
            acc = r if acc is None else add(acc, r)
        out.append(acc)
    return out


def add_groups(add, order: list[tuple[int, int]], *per_task: list):
    """The groups' sums added in group order (``order``: (task, position in its list) of each)."""
    return add(*[per_task[t][k] for t, k in order])


class InProcess:
    """Runs every task here, in item order."""

    def map(self, fn, items, desc: str | None = None, placed: bool = False, **kw) -> list:
        return [fn(item, **kw) for item in items]

    def gather(self, handles, desc: str | None = None) -> list:
        return list(handles)

    def group_sum(self, fn, add, handles, desc: str = "training", **kw):
        handles = list(handles)
        spans = groups(len(handles))
        return add_groups(add, [(0, k) for k in range(len(spans))], group_sums(fn, add, spans, kw, *handles))

    def tree_sum(self, fn, handles, desc: str = "training"):
        handles = list(handles)
        return fn(*[fn(*handles[i:i + FAN]) for i in range(0, len(handles), FAN)])

    def memory(self) -> int:
        return 0


class OnCluster:
    """Submits every task to the workers of ``client``; only the results of ``gather``, ``group_sum`` and
    ``tree_sum`` come back."""

    def __init__(self, client, quiet: bool = False):
        self.client, self.quiet = client, quiet
        self._slots: list[str] | None = None
        self._home: dict = {}
        """Future key -> the worker ``map(placed=True)`` put it on."""

    def slots(self) -> list[str]:
        """One entry per worker thread (workers by address), as the workers were at the first call."""
        if self._slots is None:
            info = workers_now(self.client)
            if not info:
                raise AstrodaskError("the cluster has no workers (or its scheduler did not answer); check it "
                                     "with the dashboard and start again")
            self._slots = [a for a in sorted(info) for _ in range(max(1, int(info[a].get("nthreads", 1))))]
        return self._slots

    def _planned(self, n: int) -> list[str]:
        """The worker of each of ``n`` items: its group's slot (consecutive groups to consecutive slots)."""
        slots, spans = self.slots(), groups(n)
        out = [""] * n
        for k, span in enumerate(spans):
            for i in span:
                out[i] = slots[k * len(slots) // len(spans)]
        return out

    def _homes(self, handles: list) -> list[str]:
        """Where each handle's data lives: where ``map(placed=True)`` put it, else where the scheduler has it
        (asked once), else (files, rows in the client) the planned worker."""
        planned = self._planned(len(handles))
        unknown = [h for h in handles if hasattr(h, "key") and h.key not in self._home]
        if unknown:
            held = self.client.who_has(unknown)
            for h in unknown:
                where = sorted(held.get(h.key) or ())
                if where:
                    self._home[h.key] = where[0]
        return [self._home.get(getattr(h, "key", None)) or p for h, p in zip(handles, planned)]

    def map(self, fn, items, desc: str | None = None, placed: bool = False, **kw) -> list:
        items = list(items)
        if placed and items:
            futs = [self.client.submit(fn, item, workers=[w], allow_other_workers=True, pure=False, **kw)
                    for item, w in zip(items, self._planned(len(items)))]
            self._home.update({f.key: w for f, w in zip(futs, self._planned(len(items)))})
        else:
            futs = self.client.map(fn, items, pure=False, **kw)
        if desc:  # wait with a progress bar; errors surface here
            track(futs, desc, self.quiet, gather=False)
        return futs

    def gather(self, handles, desc: str | None = None) -> list:
        return track(list(handles), desc or "gather", self.quiet or desc is None)

    def group_sum(self, fn, add, handles, desc: str = "training", **kw):
        handles = list(handles)
        spans = groups(len(handles))
        homes = self._homes(handles)
        by_worker: dict[str, list[int]] = {}  # worker -> its groups (where their first item lives), in order
        for k, span in enumerate(spans):
            by_worker.setdefault(homes[span[0]], []).append(k)
        threads = {w: self.slots().count(w) or 1 for w in by_worker}
        futs, order = [], [None] * len(spans)
        for w, ks in by_worker.items():  # each worker's groups split between its threads, consecutive
            n = min(threads[w], len(ks))
            for t in range(n):
                mine = ks[t * len(ks) // n:(t + 1) * len(ks) // n]
                items = [handles[i] for k in mine for i in spans[k]]
                local, at = [], 0
                for pos, k in enumerate(mine):
                    local.append(range(at, at + len(spans[k])))
                    at += len(spans[k])
                    order[k] = (len(futs), pos)
                futs.append(self.client.submit(group_sums, fn, add, local, kw, *items, workers=[w],
                                               allow_other_workers=True, pure=False))
        for fut in as_done(futs, desc):  # bounded: a cluster that cannot run them ends the wait
            if fut.status == "error":
                break
        # added here, in the same order: a task on a worker to add them would cost one more hop per evaluation
        return add_groups(add, order, *self.client.gather(futs))

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
