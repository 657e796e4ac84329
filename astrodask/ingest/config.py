"""The convert stage's settings, declared once.

:class:`ConvertOptions` holds every option a user sets to convert catalogues; the ``convert`` and ``run`` commands
derive their options from its fields (``astrodask.options``), and ``JobConfig`` holds one. :class:`ConvertConfig`
adds what the stage needs besides: the inputs, the destination and the job flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError
from ..options import JobFlags, check_choices
from ..schema import MAGNITUDE_SYSTEMS, ColumnError, parse_overrides


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """How to read and check catalogues (every option a user sets; the same for ``convert`` and ``run``)."""

    magnitudes: str | None = field(default=None, metadata={"choices": MAGNITUDE_SYSTEMS})
    """Which magnitudes fill u..z: ``model``, ``psf`` or ``cmodel``; by default model magnitudes, or the one
    other system a file has (recorded in the summary)."""
    deredden: bool = False
    """Subtract the Galactic extinction from u..z (SkyServer dered_u..z; SDSS bulk files: EXTINCTION)."""
    row_ids: bool = False
    """Generate obj_ID from the file's content hash and each row's position, keeping the source's id text in
    source_obj_ID and the position in source_row (for ids written as floats, e.g. Kaggle's SDSS17 file)."""
    photometry: str | None = None
    """For a specObj file: its row-matched photometry (photoPosPlate-dr17.fits), joined by row position."""
    cuts: bool = True
    """Apply the SDSS quality cuts (SPECPRIMARY == 1, ZWARNING == 0, survey-primary photometry), counted as
    filtered rows; --no-cuts keeps every row."""
    block_size: int | None = field(default=None, metadata={"bytes": True})
    """Bytes of input per block (one output file each), e.g. 64MiB; by default chosen from the input size
    (1 MiB to 256 MiB)."""
    row_group_size: int = 131072
    """Minimum rows per Parquet row group (a block is written as at most a few row groups)."""
    columns: str | None = field(default=None, metadata={"metavar": "SRC=COL,..."})
    """Which input column fills which canonical column, over the name rules, e.g. mag_u=psf_u,mag_g=psf_g,...
    for an export whose query named the PSF magnitudes mag_u..mag_z (recorded in the manifest). Refused when a
    target is not a canonical column or is given twice, or the input lacks a source."""

    def __post_init__(self):
        check_choices(self)
        if isinstance(self.columns, dict):  # from Python: {"mag_u": "psf_u", ...}
            object.__setattr__(self, "columns", ",".join(f"{k}={v}" for k, v in self.columns.items()) or None)
        try:
            parse_overrides(self.columns)
        except ColumnError as exc:
            raise ConfigError("columns", str(exc).removeprefix("--columns").lstrip(": "),
                              "give SOURCE=CANONICAL pairs, e.g. mag_u=psf_u") from None
        if self.block_size is not None and self.block_size < 4096:
            raise ConfigError("block_size", f"{self.block_size} bytes is too small", "use at least 4096 (e.g. 64MiB)")
        if self.row_group_size < 1:
            raise ConfigError("row_group_size", "must be positive", "use e.g. 131072")

    def options(self) -> ConvertOptions:
        """Just the convert options (a ConvertConfig without its inputs, destination and job flags)."""
        return ConvertOptions(**{k: getattr(self, k) for k in ConvertOptions.__dataclass_fields__})


@dataclass(frozen=True)
class ConvertConfig(ConvertOptions, JobFlags):
    """The ``convert`` stage: the convert options, plus the inputs, the destination and the job flags."""

    sources: tuple[str, ...]
    """Input files: local paths, globs, directories (a HATS catalogue too) or fsspec URLs (CSV, .csv.gz,
    Parquet, FITS)."""
    dest: str
    """Output dataset directory (a local path or an fsspec URL)."""

    def __post_init__(self):
        ConvertOptions.__post_init__(self)
        self.check_flags()
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        if not self.sources:
            raise ConfigError("sources", "no input files given", "pass at least one CSV, Parquet or FITS path")
