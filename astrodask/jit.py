"""numba compilation with an on-disk cache where one can be written (shared by every compiled kernel)."""

from __future__ import annotations

from numba import njit


def jit(fn=None, **options):
    """``njit(cache=True, nogil=True, **options)``, or without the on-disk cache when numba finds no writable
    cache directory (a read-only install and no writable user cache directory: numba raises instead of falling
    back). Also ``@jit(fastmath=...)``."""
    if fn is None:
        return lambda f: jit(f, **options)
    try:
        return njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError:
        return njit(cache=False, nogil=True, **options)(fn)
