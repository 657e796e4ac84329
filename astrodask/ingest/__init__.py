"""Stage 1: catalogue files (CSV, Parquet, FITS, SDSS bulk files, HATS catalogues; local paths or fsspec URLs) ->
a validated Parquet dataset.

Rooms: ``config`` (ConvertOptions, ConvertConfig), ``plan`` (the client side: headers only, blocks), ``readers/``
(one reader per input layout), ``validate`` (pure checks: canonical rows or rejected ones with a reason),
``tasks`` (the worker task: read, validate, write one block), ``dedupe`` (repeated ids across blocks), ``ids``
(generated ids of ``--row-ids``), ``stage`` (``run``: plan -> tasks -> dedupe -> accounting -> commit).
"""

from .config import ConvertConfig, ConvertOptions
from .plan import plan_blocks
from .stage import ConvertResult, run
from .tasks import BLOCKS_DIR, QUARANTINE_DIR, convert_block
from .validate import validate

__all__ = [
           "BLOCKS_DIR",
           "QUARANTINE_DIR",
           "ConvertConfig",
           "ConvertOptions",
           "ConvertResult",
           "convert_block",
           "plan_blocks",
           "run",
           "validate",
]
