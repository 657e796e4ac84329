"""astrodask: classify SDSS objects as STAR, GALAXY or QSO at survey scale with Dask."""

__version__ = "0.1.0"
