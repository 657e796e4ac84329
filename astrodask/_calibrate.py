"""Derive the constants of ``astrodask.synth`` from the real SDSS17 catalogue (run once, by hand).

    python -m astrodask._calibrate /path/to/sdss17.csv [--components 8] > calibration.txt

prints a Python literal (a dict) whose entries are pasted into ``synth_calibration.py``; the library itself never reads
the real file. What is measured:

* ``redshift_scale``, ``sky_grid``: the constants of the feature transform and of the sky grid below.
* ``fractions``: the class mix (GALAXY, QSO, STAR).
* ``band_range``: per-band min and max magnitude over all rows (synthetic magnitudes are clipped to it).
* ``gmm``: per class, a Gaussian mixture (scikit-learn ``GaussianMixture``, full covariance, fixed
  ``random_state``) over ``(r, u-g, g-r, r-i, i-z, asinh(redshift / 1e-3))``; each component is
  ``(weight, mean[6], lower-triangular Cholesky factor of the covariance, row by row [21])``.
* ``bounds``: per class, the min and max of each of those six features (samples outside are redrawn).
* ``sky``: per class, counts on a grid of ``SKY_ALPHA_STEP`` x ``SKY_DELTA_STEP`` degree cells, one string per
  declination row from ``SKY_DELTA_MIN`` upwards, one count per right-ascension cell from 0 degrees.
* ``mjd``: per class, the MJD at the 0, 5, ..., 100 % quantiles.

Numbers are rounded to 5 significant digits to keep ``synth_calibration.py`` compact.
"""

from __future__ import annotations

import argparse
import os
import textwrap

import numpy as np

CLASSES = ("GALAXY", "QSO", "STAR")
BANDS = ("u", "g", "r", "i", "z")
FEATURES = ("r", "u-g", "g-r", "r-i", "i-z", "asinh(redshift/1e-3)")
REDSHIFT_SCALE = 1e-3
SKY_ALPHA_STEP = 15.0
SKY_DELTA_STEP = 10.0
SKY_DELTA_MIN = -20.0
MJD_QUANTILES = np.linspace(0.0, 1.0, 21)
WIDTH = 116


def features(df) -> np.ndarray:
    """The modelled vector per row: r, four colours, asinh-scaled redshift."""
    u, g, r, i, z = (df[b].to_numpy(np.float64) for b in BANDS)
    t = np.arcsinh(df["redshift"].to_numpy(np.float64) / REDSHIFT_SCALE)
    return np.column_stack([r, u - g, g - r, r - i, i - z, t])


def sig(x, digits: int = 5):
    """Round a number (or nested sequence) to ``digits`` significant digits, as plain Python floats."""
    if np.ndim(x) > 0:
        return tuple(sig(v, digits) for v in x)
    return float(f"{float(x):.{digits}g}")


def fit_class(x: np.ndarray, components: int, seed: int = 0) -> list:
    from sklearn.mixture import GaussianMixture

    gm = GaussianMixture(n_components=components, covariance_type="full", random_state=seed,
                         max_iter=500, n_init=2, reg_covar=1e-6).fit(x)
    order = np.argsort(-gm.weights_)
    tril = np.tril_indices(x.shape[1])
    comps = []
    for k in order:
        chol = np.linalg.cholesky(gm.covariances_[k])
        comps.append((sig(gm.weights_[k]), sig(gm.means_[k]), sig(chol[tril])))
    return comps


def sky_grid(alpha: np.ndarray, delta: np.ndarray) -> list[str]:
    a_edges = np.arange(0.0, 360.0 + SKY_ALPHA_STEP / 2, SKY_ALPHA_STEP)
    d_edges = np.arange(SKY_DELTA_MIN, 90.0 + SKY_DELTA_STEP / 2, SKY_DELTA_STEP)
    if delta.min() < SKY_DELTA_MIN:
        raise SystemExit(f"declination {delta.min():.2f} below SKY_DELTA_MIN={SKY_DELTA_MIN}; lower it")
    h, _, _ = np.histogram2d(delta, alpha, bins=[d_edges, a_edges])
    return [" ".join(str(int(c)) for c in row) for row in h]


def calibrate(path: str, components: int = 8) -> dict:
    import pandas as pd

    df = pd.read_csv(path)
    df = df[np.isfinite(df[[*list(BANDS), "redshift"]]).all(axis=1)]
    for b in BANDS:  # drop SDSS "no measurement" sentinels if a copy still has them
        df = df[(df[b] > 0) & (df[b] < 50)]
    out: dict = {
        "source": f"{os.path.basename(path)} ({len(df)} rows)",
        "features": FEATURES,
        "redshift_scale": REDSHIFT_SCALE,
        "sky_grid": {"alpha_step": SKY_ALPHA_STEP, "delta_step": SKY_DELTA_STEP, "delta_min": SKY_DELTA_MIN},
        "fractions": {c: sig((df["class"] == c).mean()) for c in CLASSES},
        "band_range": {b: (sig(df[b].min()), sig(df[b].max())) for b in BANDS},
        "gmm": {},
        "bounds": {},
        "sky": {},
        "mjd": {},
    }
    for c in CLASSES:
        part = df[df["class"] == c]
        x = features(part)
        out["gmm"][c] = fit_class(x, components)
        out["bounds"][c] = (sig(x.min(axis=0)), sig(x.max(axis=0)))
        out["sky"][c] = sky_grid(part["alpha"].to_numpy(), part["delta"].to_numpy())
        out["mjd"][c] = tuple(round(v) for v in np.quantile(part["MJD"].to_numpy(), MJD_QUANTILES))
    return out


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(text, width=WIDTH, initial_indent=indent, subsequent_indent=indent + " ",
                         break_long_words=False, break_on_hyphens=False)


def literal(cal: dict) -> str:
    """``cal`` as a compact, valid Python literal: one line per entry, a few per mixture component."""
    lines = ["{"]
    for key, val in cal.items():
        if key in ("gmm", "sky"):
            lines.append(f"    {key!r}: {{")
            for c, items in val.items():
                lines.append(f"        {c!r}: (")
                for item in items:
                    lines += _wrap(f"{item!r},", " " * 12)
                lines.append("        ),")
            lines.append("    },")
        elif isinstance(val, dict) and len(f"    {key!r}: {val!r},") > WIDTH:
            lines.append(f"    {key!r}: {{")
            for sub, v in val.items():
                lines += _wrap(f"{sub!r}: {v!r},", " " * 8)
            lines.append("    },")
        else:
            lines += _wrap(f"{key!r}: {val!r},", " " * 4)
    lines.append("}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m astrodask._calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("csv", help="the real SDSS17 CSV (Kaggle column names)")
    ap.add_argument("--components", type=int, default=8, help="Gaussian components per class (default 8)")
    args = ap.parse_args(argv)
    print(literal(calibrate(args.csv, args.components)))


if __name__ == "__main__":
    main()
