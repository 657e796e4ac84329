"""Messages and progress for long work: a line per event on stderr and a progress bar over futures."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def log(msg: str) -> None:
    print(f"[astrodask] {msg}", file=sys.stderr, flush=True)


def track(futures, desc: str, quiet: bool = False, gather: bool = True):
    """Wait for ``futures`` with a progress bar; return their results in order (re-raising the first error).

    With ``gather=False`` the results stay on the workers (for persisted data: only errors reach the client).
    The wait is bounded: a cluster that cannot run the tasks ends it in one line (``cluster.watch``).
    """
    from .cluster.watch import as_done

    futures = list(futures)
    if not futures:
        return []
    with tqdm(total=len(futures), desc=desc, unit="task", disable=quiet or None, file=sys.stderr, leave=False) as bar:
        for fut in as_done(futures, desc):
            if fut.status == "error":
                break
            bar.update(1)
    failed = [f for f in futures if f.status == "error"]
    if failed:
        failed[0].result()  # raises the task's exception here
    return [f.result() for f in futures] if gather else None
