"""Helpers the tests share: paths, running the command line, processes, the SDSS fixtures, S3 and SLURM."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The project's root (the repository)."""
SHARED_DATA = ROOT.parent / "shared" / "data"
"""The real SDSS data beside the project (``../shared/data``)."""
