#!/usr/bin/env python
"""(Re)generate the bad-input corpus in this directory: small CSV, Parquet and FITS files and model directories.

Every file is small and made from a few invented, SDSS-like rows (no real survey data is copied here).
What each input must give is the table in EXPECTED.md, checked by tests/ingest/test_bad_inputs.py.

    python tests/data/bad/make_corpus.py          # rewrite every generated file in place

The output is deterministic: rerunning it gives byte-identical files (except the Parquet ``created_by``
footer string when pyarrow is upgraded), so the committed files and this script agree.
"""

from __future__ import annotations

import gzip
import json
import pickle
import shutil
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = ["obj_ID", "alpha", "delta", "u", "g", "r", "i", "z", "class", "redshift", "MJD"]
N = 12
ID0 = 1237645942904389632  # SDSS-like 64-bit ids: more digits than a float64 holds


def base_rows(n: int = N, first: int = 0) -> list[list[str]]:
    """``n`` plausible rows as strings (fixed, no randomness): galaxies, quasars and stars in turn."""
    rows = []
    for k in range(first, first + n):
        cls = ("GALAXY", "QSO", "STAR")[k % 3]
        r = 16.5 + 0.37 * (k % 11)
        colours = {"GALAXY": (1.8, 1.0, 0.45, 0.35), "QSO": (0.3, 0.2, 0.15, 0.1), "STAR": (1.2, 0.5, 0.2, 0.1)}[cls]
        ug, gr, ri, iz = colours
        g = r + gr
        u = g + ug
        i = r - ri
        z = i - iz
        redshift = {"GALAXY": 0.05 + 0.013 * k, "QSO": 0.8 + 0.11 * k, "STAR": 0.0001 * ((k % 5) - 2)}[cls]
        rows.append([str(ID0 + 1000 * k), f"{(23.5 * k) % 360:.6f}", f"{-10 + 3.1 * k:.6f}", f"{u:.5f}",
                     f"{g:.5f}", f"{r:.5f}", f"{i:.5f}", f"{z:.5f}", cls, f"{redshift:.7f}", str(56000 + 37 * k)])
    return rows


def csv_text(rows, header=HEADER, sep=",", eol="\n") -> str:
    return eol.join([sep.join(header), *(sep.join(r) for r in rows)]) + eol


def write(name: str, data: str | bytes) -> Path:
    p = HERE / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    p.write_bytes(data)
    return p


def col(name: str) -> int:
    return HEADER.index(name)


# ------------------------------------------------------------------------------------------------ CSV


def make_csv() -> None:
    rows = base_rows()
    write("good.csv", csv_text(rows))

    # the file ends in the middle of the last row (a copy that was cut off)
    text = csv_text(rows)
    write("truncated_last_row.csv", text[: text.rindex(",GALAXY,") + 4])

    # a header nobody knows: no id, no magnitudes
    write("wrong_header.csv", csv_text(rows, header=["id", "ra", "dec", "mag_u", "mag_g", "mag_r", "mag_i",
                                                     "mag_z", "type", "zspec", "mjd"]))
    # no header at all: the first data row is taken as the header
    write("no_header.csv", "\n".join(",".join(r) for r in rows) + "\n")

    # the values of class and redshift swapped in every row (header unchanged)
    sw = [r[:] for r in rows]
    for r in sw:
        r[col("class")], r[col("redshift")] = r[col("redshift")], r[col("class")]
    write("swapped_class_redshift.csv", csv_text(sw))
    # ... and in three rows only
    sw = [r[:] for r in rows]
    for k in (2, 5, 9):
        sw[k][col("class")], sw[k][col("redshift")] = sw[k][col("redshift")], sw[k][col("class")]
    write("swapped_class_redshift_3_rows.csv", csv_text(sw))

    # text in numeric columns (an empty value is a missing value, not an error)
    s = [r[:] for r in rows]
    s[1][col("u")] = "abc"
    s[4][col("r")] = "19.2x"
    s[7][col("MJD")] = "yesterday"
    s[8][col("g")] = ""
    write("strings_in_numeric.csv", csv_text(s))

    # NaN is a missing value (kept, imputed later); infinities are errors
    s = [r[:] for r in rows]
    s[0][col("g")] = "nan"
    s[3][col("r")] = "inf"
    s[6][col("z")] = "-inf"
    s[10][col("u")] = "Infinity"
    write("nan_inf.csv", csv_text(s))

    # SDSS "no measurement" sentinels become nulls; the rows are kept
    s = [r[:] for r in rows]
    s[1][col("u")] = "-9999"
    s[2][col("z")] = "-999.0"
    s[5][col("redshift")] = "-9999.0"
    write("sentinel_9999.csv", csv_text(s))

    # classes outside GALAXY/QSO/STAR (lower case is accepted)
    s = [r[:] for r in rows]
    s[0][col("class")] = "PLANET"
    s[3][col("class")] = ""
    s[4][col("class")] = "galaxy"
    write("unknown_class.csv", csv_text(s))

    # repeated ids inside one file: the first occurrence is kept
    s = [r[:] for r in rows]
    for k, src in ((4, 0), (8, 1), (11, 1)):
        s[k][col("obj_ID")] = s[src][col("obj_ID")]
    write("duplicate_ids.csv", csv_text(s))

    # repeated ids across two files of one input directory
    a, b = base_rows(8, 0), base_rows(8, 4)
    write("dup_across_files/a.csv", csv_text(a))
    write("dup_across_files/b.csv", csv_text(b))

    write("empty.csv", b"")
    write("header_only.csv", ",".join(HEADER) + "\n")
    # a header-only file beside a good one: an empty partition in the dataset
    write("header_only_beside_good/a_header_only.csv", ",".join(HEADER) + "\n")
    write("header_only_beside_good/b_good.csv", csv_text(rows))

    # Latin-1 bytes in values, and in the header
    data = csv_text(rows).encode()
    data = data.replace(b"GALAXY", b"GAL\xc4XY", 1)
    first_u = rows[2][col("u")].encode()
    data = data.replace(b"," + first_u + b",", b"," + first_u[:-1] + b"\xb0,", 1)
    write("non_utf8_values.csv", data)
    write("non_utf8_header.csv", csv_text(rows).replace("redshift", "rotverschiebung\xe4").encode("latin-1"))
    write("utf16.csv", csv_text(rows).encode("utf-16"))
    # UTF-8 byte order mark and Windows line ends: a valid file
    write("bom_crlf.csv", b"\xef\xbb\xbf" + csv_text(rows, eol="\r\n").encode())

    # rows with a missing and an extra field
    s = [r[:] for r in rows]
    s[3] = s[3][:-1]
    s[6] = s[6] + ["42"]
    write("ragged_rows.csv", csv_text(s))

    # a quoted value with a line break inside
    s = [r[:] for r in rows]
    s[5][col("class")] = '"GAL\nAXY"'
    write("quoted_newline.csv", csv_text(s))

    # ids as a spreadsheet writes them: floating point, digits lost
    s = [r[:] for r in rows]
    for r in s:
        r[0] = f"{float(r[0]):.5E}"
    write("id_float_notation.csv", csv_text(s))

    # ids that are not unsigned 64-bit integers
    s = [r[:] for r in rows]
    s[0][0] = "-5"
    s[1][0] = "18446744073709551616"
    s[2][0] = "12abc"
    s[3][0] = ""
    write("bad_ids.csv", csv_text(s))

    # sky positions out of range
    s = [r[:] for r in rows]
    s[2][col("alpha")] = "361.5"
    s[7][col("delta")] = "-91.0"
    write("out_of_range.csv", csv_text(s))

    # physically impossible values: u = 99, g = 0, redshift 1e6
    s = [r[:] for r in rows]
    s[1][col("u")] = "99"
    s[4][col("g")] = "0"
    s[8][col("redshift")] = "1e6"
    write("impossible_values.csv", csv_text(s))

    # SkyServer exports of PhotoObj joined with SpecObj: two columns named z (band and redshift), in both orders
    sky = ["specobjid", "class", "z", "objid", "ra", "dec", "u", "g", "r", "i", "z"]
    spec_first = [[str(6543777369295181824 + 4096 * k), r[col("class")], r[col("redshift")], r[0], r[1], r[2],
                   *r[3:8]] for k, r in enumerate(rows)]
    write("skyserver_spec_first.csv", csv_text(spec_first, header=sky))
    sky = ["objid", "ra", "dec", "u", "g", "r", "i", "z", "specobjid", "class", "z"]
    photo_first = [[*r[:8], str(6543777369295181824 + 4096 * k), r[col("class")], r[col("redshift")]]
                   for k, r in enumerate(rows)]
    write("skyserver_photo_first.csv", csv_text(photo_first, header=sky))
    # two z columns that the header cannot tell apart (both beside band names): refused
    amb = ["objid", "ra", "dec", "z", "u", "g", "r", "i", "z"]
    write("ambiguous_z.csv", csv_text([[*r[:3], r[col("redshift")], *r[3:8]] for r in rows], header=amb))
    # PSF and cModel magnitudes but no model magnitudes: which fills u..z must be chosen
    two = ["objid", *(f"psfMag_{b}" for b in "ugriz"), *(f"cModelMag_{b}" for b in "ugriz"), "class"]
    write("two_magnitude_systems.csv", csv_text([[r[0], *r[3:8], *r[3:8], r[col("class")]] for r in rows],
                                                header=two))
    # ra and alpha both present, alpha off by 1 degree in 2 rows: which is the position cannot be told
    both = ["ra", *HEADER]
    moved = [[f"{(float(r[col('alpha')]) + (1.0 if k in (4, 9) else 0.0)) % 360:.6f}", *r] for k, r in enumerate(rows)]
    write("ra_and_alpha_differ.csv", csv_text(moved, header=both))

    # not text at all
    write("binary_garbage.csv", bytes(range(256)) * 4)
    # a gzip file cut in the middle
    gz = gzip.compress(csv_text(base_rows(200)).encode(), mtime=0)
    write("truncated.csv.gz", gz[: len(gz) // 2])


# ------------------------------------------------------------------------------------------------ Parquet


def _frame(rows=None):
    import pandas as pd

    rows = rows or base_rows()
    df = pd.DataFrame(rows, columns=HEADER)
    df["obj_ID"] = df["obj_ID"].astype("uint64")
    for c in ("alpha", "delta", "u", "g", "r", "i", "z", "redshift"):
        df[c] = df[c].astype("float64")
    df["MJD"] = df["MJD"].astype("int64")
    return df


def _write_parquet(name: str, table) -> None:
    import pyarrow.parquet as pq

    p = HERE / name
    pq.write_table(table, p, compression="none")


def make_parquet() -> None:
    import pyarrow as pa

    df = _frame()
    # magnitudes stored as strings, one of them not a number
    t = pa.Table.from_pandas(df, preserve_index=False)
    for b in ("u", "g", "r", "i", "z"):
        vals = [f"{v:.5f}" for v in df[b]]
        if b == "u":
            vals[4] = "n/a?"
        t = t.set_column(t.schema.get_field_index(b), b, pa.array(vals, pa.string()))
    _write_parquet("parquet_mags_as_strings.parquet", t)

    # the 64-bit ids stored as float64: the last digits are gone
    t = pa.Table.from_pandas(df.assign(obj_ID=df["obj_ID"].astype("float64")), preserve_index=False)
    _write_parquet("parquet_id_as_float.parquet", t)

    # a required column missing
    _write_parquet("parquet_missing_z.parquet", pa.Table.from_pandas(df.drop(columns=["z"]), preserve_index=False))

    # class stored as integer codes
    t = pa.Table.from_pandas(df.assign(**{"class": np.arange(len(df)) % 3}), preserve_index=False)
    _write_parquet("parquet_class_as_int.parquet", t)

    # a magnitude stored as a list per row
    t = pa.Table.from_pandas(df, preserve_index=False)
    t = t.set_column(t.schema.get_field_index("u"), "u", pa.array([[v, v] for v in df["u"]], pa.list_(pa.float64())))
    _write_parquet("parquet_list_column.parquet", t)

    # a dataset directory (what `astrodask convert` writes) with an empty partition beside a full one
    typed = pa.table({
        "obj_ID": pa.array(df["obj_ID"], pa.uint64()), "alpha": pa.array(df["alpha"], pa.float64()),
        "delta": pa.array(df["delta"], pa.float64()),
        **{b: pa.array(df[b], pa.float32()) for b in ("u", "g", "r", "i", "z")},
        "class": pa.array(df["class"], pa.string()), "redshift": pa.array(df["redshift"], pa.float32()),
        "MJD": pa.array(df["MJD"], pa.uint32()),
    })
    d = HERE / "dataset_with_empty_partition"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    _write_parquet("dataset_with_empty_partition/part-00000.parquet", typed.slice(0, 0))
    _write_parquet("dataset_with_empty_partition/part-00001.parquet", typed)

    # cut in the middle
    good = pa.Table.from_pandas(df, preserve_index=False)
    _write_parquet("parquet_truncated.parquet", good)
    p = HERE / "parquet_truncated.parquet"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


# ------------------------------------------------------------------------------------------------ FITS


def make_fits() -> None:
    from astropy.io import fits

    df = _frame()
    mags = df[["u", "g", "r", "i", "z"]].to_numpy(np.float32)
    n = len(df)
    objid = fits.Column("OBJID", "K", array=(df["obj_ID"].to_numpy(np.uint64) - np.uint64(ID0)).astype(np.int64))
    cls = fits.Column("CLASS", "6A", array=df["class"].to_numpy().astype("S6"))
    zcol = fits.Column("Z", "E", array=df["redshift"].to_numpy(np.float32))

    def save(name, cols, extra_hdus=()):
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols), *extra_hdus])
        hdul.writeto(HERE / name, overwrite=True, output_verify="silentfix")

    # control: SDSS layout, 5-element band arrays
    save("fits_good.fits", [objid, fits.Column("MODELMAG", "5E", array=mags), zcol, cls])
    # band array with a 2-D shape (5 x 2) instead of 5 values
    arr = np.repeat(mags[:, :, None], 2, axis=2)
    save("fits_band_array_2d.fits", [objid, fits.Column("MODELMAG", "10E", dim="(2,5)", array=arr), zcol, cls])
    # band array with 4 values (no z band)
    save("fits_band_array_4.fits", [objid, fits.Column("MODELMAG", "4E", array=mags[:, :4]), zcol, cls])
    # bands as scalar columns, one stored as text with a bad value
    ucol = np.array([f"{v:.4f}" for v in mags[:, 0]], dtype="S10")
    ucol[3] = b"bad"
    scal = [objid, fits.Column("u", "10A", array=ucol)]
    scal += [fits.Column(b, "E", array=mags[:, k]) for k, b in enumerate("griz", start=1)]
    save("fits_string_magnitude.fits", [*scal, zcol, cls])
    # an image only, no table
    fits.HDUList([fits.PrimaryHDU(np.zeros((4, 4), np.float32))]).writeto(HERE / "fits_no_table.fits",
                                                                         overwrite=True)
    # a good file cut in the middle of its table
    save("fits_truncated.fits", [fits.Column("OBJID", "K", array=np.arange(n * 40, dtype=np.int64)),
                                 fits.Column("MODELMAG", "5E", array=np.tile(mags, (40, 1))),
                                 fits.Column("Z", "E", array=np.tile(df["redshift"].to_numpy(np.float32), 40)),
                                 fits.Column("CLASS", "6A", array=np.tile(df["class"].to_numpy().astype("S6"), 40))])
    p = HERE / "fits_truncated.fits"
    data = p.read_bytes()
    p.write_bytes(data[: 2880 * 2 + 1500])  # both headers, then part of the first data block
    # a variable-length array column for the bands
    vla = fits.Column("MODELMAG", "PE()", array=np.array([m for m in mags], dtype=object))
    save("fits_variable_length_bands.fits", [objid, vla, zcol, cls])


# ------------------------------------------------------------------------------------------------ models


def make_models() -> None:
    from astrodask import schema
    from astrodask.features import RECIPES, FeatureSpec
    from astrodask.model import MODEL_JSON, WEIGHTS, ModelInfo, SoftmaxModel, weights_digest

    recipe = RECIPES["photometric"]
    spec = FeatureSpec(feature_set="photometric", base=recipe.base,
                       impute=dict.fromkeys(schema.BANDS, 19.0),
                       base_mean=np.full(len(recipe.base), 10.0), base_std=np.full(len(recipe.base), 2.0))
    d = spec.n_features
    coef = np.linspace(-1.0, 1.0, 3 * d).reshape(3, d)
    model = SoftmaxModel(spec, coef, np.array([0.1, -0.2, 0.1]), schema.CLASSES, info=ModelInfo())

    def fresh(name: str) -> Path:
        p = HERE / name
        shutil.rmtree(p, ignore_errors=True)
        model.save(p)
        doc = json.loads((p / MODEL_JSON).read_text())
        doc["versions"] = {"astrodask": "corpus"}  # no library versions: keep the file stable
        (p / MODEL_JSON).write_text(json.dumps(doc, indent=1) + "\n")
        return p

    def edit(p: Path, change) -> None:
        doc = json.loads((p / MODEL_JSON).read_text())
        change(doc)
        (p / MODEL_JSON).write_text(json.dumps(doc, indent=1) + "\n")

    fresh("model_good")
    edit(fresh("model_wrong_version"), lambda doc: doc.update(format_version=99))
    edit(fresh("model_missing_fields"), lambda doc: doc.pop("features"))
    def weights(p: Path, data: bytes, digest: bool = True) -> None:
        """Put ``data`` in as the weights file; with ``digest``, model.json records its digest (so the check
        that follows the digest's is the one the case exercises)."""
        (p / WEIGHTS).write_bytes(data)
        if digest:
            edit(p, lambda doc: doc.update(weights_digest=weights_digest(data)))

    def npz(**arrays) -> bytes:
        import io

        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    # a harmless pickle (plain dict of lists) under the name weights.npz
    weights(fresh("model_pickle_weights"),
            pickle.dumps({"coef": coef.tolist(), "intercept": [0.1, -0.2, 0.1]}, protocol=4))
    weights(fresh("model_wrong_shape"), npz(coef=coef[:, :-3], intercept=np.zeros(3)))
    # the weights of another model of the same shape, copied in: only the digest tells
    weights(fresh("model_swapped_weights"), npz(coef=coef[::-1].copy(), intercept=np.zeros(3)), digest=False)


def main() -> None:
    make_csv()
    make_parquet()
    make_fits()
    make_models()
    print(f"corpus written to {HERE}")


if __name__ == "__main__":
    main()
