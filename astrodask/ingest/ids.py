"""Generated row ids (``convert --row-ids``): for sources whose ids are not exact integers.

Kaggle's SDSS17 ``star_classification.csv`` (and other pandas or spreadsheet exports) write the 64-bit ids as
floats (``1.237660961327743e+18``): 15-17 significant digits, so ids are rounded to multiples of 256 and two
objects can share one. With ``--row-ids`` every row gets an id made from the file's content and the row's
position in the file, the same on every rerun and whatever the block size, and the source's id text is kept
(``source_obj_ID``, and ``source_row``: the row's position, for an exact join back to the file).

Bit layout of a generated ``obj_ID`` (64 bits)::

    bit 63      1            (CAS objIDs leave bit 63 unused, i.e. 0: a generated id is never a real objID)
    bits 40-62  file tag     (23 bits of the BLAKE2b hash of the file's bytes)
    bits 0-39   row          (position among the file's data rows, from 0; up to 2**40 rows per file)

Two inputs with the same content get the same tag (their rows then repeat each other's ids, and the later
ones are quarantined as ``duplicate_id``, as for any repeated input); two different inputs whose tags collide
(chance ~ n^2 / 2^24 for n files) are refused at planning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ..storage import Location
from .readers.base import open_input

FLAG = 1 << 63
TAG_BITS = 23
ROW_BITS = 40
HASH_PIECE = 64 << 20
"""Bytes hashed by one task (pieces aligned on the file, so the hash does not depend on the block size)."""


@dataclass(frozen=True)
class RowIds:
    """What a chunk needs to generate its ids: the file tag and each row's position in the file."""

    tag: int
    rows: np.ndarray
    """Position of each row of the chunk among its file's data rows (uint64)."""


def hash_piece(loc: Location, k: int) -> bytes:
    """Worker task: BLAKE2b digest of bytes ``[k * HASH_PIECE, (k + 1) * HASH_PIECE)`` of the file."""
    h = hashlib.blake2b(digest_size=16)
    with open_input(loc) as fh:
        fh.seek(k * HASH_PIECE)
        left = HASH_PIECE
        while left:
            buf = fh.read(min(left, 8 << 20))
            if not buf:
                break
            h.update(buf)
            left -= len(buf)
    return h.digest()


def file_digest(pieces: list[bytes], size: int) -> str:
    """The file's content hash from its pieces' digests (in order) and its size."""
    h = hashlib.blake2b(digest_size=16)
    h.update(size.to_bytes(8, "little"))
    for p in pieces:
        h.update(p)
    return h.hexdigest()


def tag_of(digest: str) -> int:
    return int(digest, 16) >> (128 - TAG_BITS)


def generated_ids(tag: int, rows: np.ndarray) -> np.ndarray:
    """``obj_ID`` of rows at positions ``rows`` of the file with tag ``tag`` (see the module's bit layout)."""
    rows = np.asarray(rows, dtype=np.uint64)
    if len(rows) and int(rows.max()) >= 1 << ROW_BITS:
        raise ValueError(f"row {int(rows.max())} does not fit in {ROW_BITS} bits")
    return np.uint64(FLAG | (int(tag) << ROW_BITS)) | rows


def is_generated(ids) -> np.ndarray:
    """True for ids made by :func:`generated_ids` (bit 63 set)."""
    return (np.asarray(ids, dtype=np.uint64) >> np.uint64(63)) == np.uint64(1)
