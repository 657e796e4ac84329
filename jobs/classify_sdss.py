#!/usr/bin/env python
"""Batch job: convert -> train -> predict -> evaluate an SDSS catalogue on a Dask cluster.

Run as a script (same options as ``astrodask run``)::

    python jobs/classify_sdss.py                              # embedded sample, LocalCluster
    python jobs/classify_sdss.py cat.csv --scheduler tcp://scheduler:8786 --out /shared/run1

or import it and call ``classify_sdss(JobConfig(...), client)`` from your own code.
"""

from __future__ import annotations

import sys

from astrodask.cli import main
from astrodask.pipeline import JobConfig
from astrodask.pipeline import run as classify_sdss

__all__ = ["JobConfig", "classify_sdss"]

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]], prog_name="classify_sdss.py"))
