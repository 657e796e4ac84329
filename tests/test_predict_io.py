"""The predict task's output file (``predict.predict_file``): row for row what ``SoftmaxModel.score`` gives on the
same rows (probabilities the float32 of its float64 values, classes, flags, carried columns), the counts it returns
equal to those read back from the file, and how the file is encoded: row groups of ``ROW_GROUP_ROWS`` rows,
dictionary encoding only for the string columns (``predicted_class``, ``scored_by``, ``class``), and the schema a
pandas or pyarrow reader sees unchanged (``predicted_class`` a string column, not a categorical)."""

from __future__ import annotations

from dataclasses import replace
from importlib.resources import files

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.models import random_model

from astrodask import predict, priors, schema
from astrodask.features import raw_columns
from astrodask.model import SoftmaxModel, TrainingDomain
from astrodask.storage import Location

CARRY = [schema.CLASS, "alpha", "delta", schema.REDSHIFT]
FLOATS = [*schema.PROBS, "alpha", "delta", schema.REDSHIFT]
DICTIONARY = [schema.PRED, schema.SCORED_BY, schema.CLASS]


def _model(feature_set: str, df: pd.DataFrame, seed: int) -> SoftmaxModel:
    """A model with random weights (``support.models.random_model``) and a training domain narrow enough (the
    2 %..98 % quantiles) that some rows lie outside it."""
    bounds = {c: (float(np.nanquantile(df[c], 0.02)), float(np.nanquantile(df[c], 0.98)))
              for c in raw_columns(feature_set)}
    domain = TrainingDomain(bounds, dict.fromkeys(bounds, 0.02), (0.5, 0.2, 0.3), len(df))
    return random_model(feature_set, df, seed, domain=domain)


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    df = pd.read_csv(files("astrodask.data") / "sdss_sample.csv")
    df[schema.ID] = df[schema.ID].astype("uint64")
    return df


@pytest.fixture(scope="module")
def models(sample) -> dict:
    fit = sample.iloc[:10000]
    spec = _model("spectroscopic", fit, 1)
    return {"photometric": _model("photometric", fit, 0),
            "spectroscopic": replace(spec, companion=_model("photometric", fit, 2))}


@pytest.fixture
def part(sample, tmp_path):
    """A dataset file of float32 inputs, some missing (and some redshifts, for a routing model), in row groups of
    3,000 rows."""
    rows = sample.copy()
    rng = np.random.default_rng(5)
    for c in [*schema.BANDS, schema.REDSHIFT]:
        rows.loc[rng.random(len(rows)) < 0.03, c] = np.nan
        rows[c] = rows[c].astype("float32")
    rows = rows[[schema.ID, *schema.BANDS, schema.REDSHIFT, *CARRY[:-1]]]
    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), path, row_group_size=3000)
    return path, rows


def _reference(model: SoftmaxModel, rows: pd.DataFrame, target=None) -> pd.DataFrame:
    """What the predictions of ``rows`` hold, from ``model.score`` of the whole frame."""
    s = model.score(rows)
    p = s.proba if target is None else priors.apply(s.proba, model.priors_of(s.photometric), target)
    out = {schema.ID: rows[schema.ID].to_numpy(np.uint64),
           schema.PRED: np.asarray(model.classes_, dtype=object)[p.argmax(axis=1)]}
    out |= {schema.PROB_PREFIX + c: p[:, k].astype(np.float32) for k, c in enumerate(model.classes_)}
    out |= {schema.IMPUTED: s.imputed, schema.SCORED_BY: np.where(s.photometric, "photometric", "spectroscopic"),
            schema.OUT_OF_DOMAIN: s.out_of_domain}
    out |= {c: rows[c].to_numpy() for c in CARRY}
    return pd.DataFrame(out)


@pytest.mark.parametrize("name,target", [("photometric", None), ("spectroscopic", None),
                                         ("photometric", (0.3, 0.3, 0.4))])
def test_predictions_equal_model_score_row_for_row(models, part, tmp_path, monkeypatch, name, target):
    monkeypatch.setattr(predict, "BATCH_ROWS", 2500)  # batches across the input's row groups
    monkeypatch.setattr(predict, "ROW_GROUP_ROWS", 4096)  # several output row groups, the last one short
    src, rows = part
    model = models[name]
    dst = tmp_path / "out" / "part-00000.parquet"
    done = predict.predict_file(Location.of(src), Location.of(dst), model, CARRY, target)
    got = pq.read_table(dst).to_pandas()
    ref = _reference(model, rows, target)
    assert list(got.columns) == list(ref.columns)
    for c in ref.columns:  # exactly: the same float32 probabilities, ids, classes, flags and carried values
        if c in DICTIONARY:  # strings (scored_by: a categorical of them)
            np.testing.assert_array_equal(got[c].astype(object).to_numpy(), ref[c].astype(object).to_numpy(), c)
        else:
            assert got[c].dtype == ref[c].dtype, c
            np.testing.assert_array_equal(got[c].to_numpy(), ref[c].to_numpy(), err_msg=c)
    assert (got[schema.IMPUTED] != 0).sum() > 100 and (got[schema.OUT_OF_DOMAIN] != 0).sum() > 100
    if name == "spectroscopic":
        assert 0 < (got[schema.SCORED_BY] == "photometric").sum() < len(got)
    # the counts the task returns are those of the file (what a --resume reads back)
    assert done.rows == done.check.rows == len(rows)
    assert done.counts == predict.counts_in(Location.of(dst))


def test_file_encoding_and_schema(models, part, tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "ROW_GROUP_ROWS", 4096)
    src, rows = part
    dst = tmp_path / "part-00000.parquet"
    predict.predict_file(Location.of(src), Location.of(dst), models["spectroscopic"], CARRY)
    pf = pq.ParquetFile(dst)
    md = pf.metadata
    sizes = [md.row_group(g).num_rows for g in range(md.num_row_groups)]
    assert sizes == [4096] * (len(rows) // 4096) + [len(rows) % 4096]
    names = [md.schema.column(i).name for i in range(md.num_columns)]
    for g in range(md.num_row_groups):
        enc = {n: set(md.row_group(g).column(i).encodings) for i, n in enumerate(names)}
        for c in DICTIONARY:
            assert "RLE_DICTIONARY" in enc[c], (c, enc[c])
        for c in names:
            if c not in DICTIONARY:
                assert not enc[c] & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}, (c, enc[c])
        assert set(FLOATS) <= set(names)
    # readers see the schema they saw before: strings stay strings (not categoricals); scored_by a dictionary
    assert pf.schema_arrow.equals(predict.output_schema(CARRY))
    assert pf.schema_arrow.field(schema.PRED).type == pa.string()
    df = pq.read_table(dst).to_pandas()
    for c in (schema.PRED, schema.CLASS):
        assert not isinstance(df[c].dtype, pd.CategoricalDtype) and isinstance(df[c].iloc[0], str), c
    assert isinstance(df[schema.SCORED_BY].dtype, pd.CategoricalDtype)


def test_the_default_row_group_is_pyarrows(models, part, tmp_path):
    src, rows = part
    dst = tmp_path / "part-00000.parquet"
    predict.predict_file(Location.of(src), Location.of(dst), models["photometric"], CARRY)
    assert predict.ROW_GROUP_ROWS == 1 << 20 and pq.ParquetFile(dst).metadata.num_row_groups == 1


def test_an_empty_partition(models, tmp_path):
    src = tmp_path / "part-00000.parquet"
    cols = [schema.ID, *schema.BANDS, *CARRY]
    pq.write_table(pa.schema([pa.field(c, schema.TYPES[c]) for c in cols]).empty_table(), src)
    done = predict.predict_file(Location.of(src), Location.of(tmp_path / "o.parquet"), models["photometric"], CARRY)
    assert done.rows == 0 and done.counts == predict.RowCounts()
    assert pq.ParquetFile(tmp_path / "o.parquet").schema_arrow.equals(predict.output_schema(CARRY))


@pytest.mark.parametrize("link", ["softmax", "ovr", "logits"])
def test_the_three_class_pass_equals_the_general_loop_bit_for_bit(models, sample, link):
    """compiled.score_kernel scores three classes in one pass: the same float64 values as its general loop (run
    here on the same weights plus a fourth class whose logit is -inf, which adds exactly 0 to every sum of the
    link), on rows with missing inputs and values far outside the knots; and within 1e-6 of the NumPy
    reference."""
    from astrodask.features import compiled

    model = models["photometric"]
    params = model.kernel_params()
    rows = sample.copy()
    rng = np.random.default_rng(3)
    for c in schema.BANDS:
        rows.loc[rng.random(len(rows)) < 0.05, c] = np.nan
        far = rng.random(len(rows)) < 0.05
        rows.loc[far, c] = rng.choice([-1e6, -60.0, 0.0, 99.0, 1e6], far.sum())
    x = compiled.input_matrix(params.raw, rows).astype(np.float64)
    code = {"softmax": compiled.SOFTMAX, "ovr": compiled.OVR, "logits": compiled.LOGITS}[link]
    got = []
    for w, bias in ((params.w, params.bias),
                    (np.vstack([params.w, np.zeros(params.w.shape[1])]), np.append(params.bias, -np.inf))):
        out, mask = np.empty((len(rows), len(bias))), np.empty(len(rows), np.uint16)
        compiled.score_kernel(x, *params.bases(), w, bias, params.redshift_scale, params.inv, code, out, mask)
        got.append((out[:, :3], mask))
    np.testing.assert_array_equal(got[0][0], got[1][0])
    np.testing.assert_array_equal(got[0][1], got[1][1])
    if link == "softmax":
        np.testing.assert_allclose(got[0][0], model.reference_predict_proba(rows), rtol=0, atol=1e-6)
