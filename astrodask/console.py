"""Messages and progress for long work: a line per event on stderr and a progress bar over futures."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def log(msg: str) -> None:
    print(f"[astrodask] {msg}", file=sys.stderr, flush=True)


def track(futures, desc: str, quiet: bool = False):
    """Wait for ``futures`` with a progress bar; return their results in order (re-raising the first error)."""
    from distributed import as_completed

    futures = list(futures)
    if not futures:
        return []
    with tqdm(total=len(futures), desc=desc, unit="task", disable=quiet or None, file=sys.stderr, leave=False) as bar:
        for fut in as_completed(futures, loop=futures[0].client.loop):  # works without a default client
            if fut.status == "error":
                break
            bar.update(1)
    return [f.result() for f in futures]
