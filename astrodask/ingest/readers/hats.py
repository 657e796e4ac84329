"""HATS catalogues (the HEALPix-partitioned Parquet that LSDB reads): the data files of a catalogue directory.

A HATS catalogue is a directory with ``hats.properties`` and its rows in ``dataset/Norder=K/Dir=D/Npix=N.parquet``
(or ``Npix=N/`` directories of parts). ``plan.expand`` turns a catalogue directory into its data files; this
reader reads them like any Parquet file, with the catalogue's own right ascension and declination columns
(``hats_col_ra`` / ``hats_col_dec`` in ``hats.properties``) as ``alpha`` and ``delta``. HATS's own columns
(``_healpix_29``, the ``Norder``/``Dir``/``Npix`` partition keys) are not carried.
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import schema
from ...errors import AstrodaskError
from ...storage import Location
from .base import Probe, ReaderOptions
from .parquet import ParquetReader

PROPERTIES = "hats.properties"
DATASET = "dataset"


@dataclass(frozen=True)
class HatsInfo:
    """What the catalogue's properties say, beside the Parquet footer of one data file."""

    footer: object
    ra: str
    dec: str
    catalog: str


def catalogue_root(loc: Location) -> Location | None:
    """The catalogue directory holding the data file ``loc`` (``ROOT/dataset/Norder=...``), or None."""
    url = loc.url.replace("\\", "/")
    cut = url.rfind(f"/{DATASET}/Norder=")
    if cut < 0:
        return None
    root = Location(url[:cut], loc.options_json) if not loc.is_local else Location.of(url[:cut])
    return root if (root / PROPERTIES).exists() else None


def read_properties(root: Location) -> dict[str, str]:
    """``hats.properties`` as a mapping (Java properties: ``key=value`` lines, ``#`` comments)."""
    out = {}
    for raw in (root / PROPERTIES).read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class HatsReader(ParquetReader):
    name = "hats"
    extensions = (".parquet",)

    def probe(self, loc: Location, source: str, options: ReaderOptions) -> Probe | None:
        root = catalogue_root(loc)
        if root is None:
            return None
        props = read_properties(root)
        ra, dec = props.get("hats_col_ra"), props.get("hats_col_dec")
        if not ra or not dec:
            raise AstrodaskError(f"{root}: {PROPERTIES} names no hats_col_ra / hats_col_dec; check the catalogue")
        p = super().probe(loc, source, options)
        return Probe(p.source, p.location, self.name, p.columns, p.nbytes, p.nrows, layout="hats",
                     detail=HatsInfo(p.detail, ra, dec, props.get("obs_collection", root.name)), header=p.header)

    def columns(self, probe: Probe, options: ReaderOptions):
        cmap = super().columns(probe, options)
        info: HatsInfo = probe.detail
        have = {c for _, c in cmap.pairs}
        extra = [(src, canon) for src, canon in ((info.ra, "alpha"), (info.dec, "delta"))
                 if canon not in have and src in probe.columns]
        return schema.ColumnMap(cmap.pairs + tuple(extra), cmap.magnitudes, cmap.alternates)

    def plan(self, probe: Probe, block_bytes: int):
        return super().plan(_as_parquet(probe), block_bytes)


def _as_parquet(probe: Probe) -> Probe:
    return Probe(probe.source, probe.location, "parquet", probe.columns, probe.nbytes, probe.nrows,
                 layout="parquet", detail=probe.detail.footer, header=probe.header)
