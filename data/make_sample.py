"""Write ``data/sdss_sample.csv``: the embedded synthetic sample (20,000 rows, seed 0, Kaggle SDSS17 column names).

The rows come from ``astrodask.synth`` (an SDSS17-calibrated generator; no real survey data is stored in the
repository). Regenerate with::

    python data/make_sample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # works from a checkout without installing the package

from astrodask.synth import write_sample_csv  # noqa: E402

ROWS = 20_000
SEED = 0
MAX_BYTES = 4 * 2**20


def main() -> None:
    path = write_sample_csv(HERE / "sdss_sample.csv", rows=ROWS, seed=SEED)
    size = path.stat().st_size
    print(f"wrote {path} ({ROWS:,} rows, {size / 2**20:.2f} MiB)")
    if size > MAX_BYTES:
        raise SystemExit(f"{path} is larger than {MAX_BYTES // 2**20} MiB; lower ROWS")


if __name__ == "__main__":
    main()
