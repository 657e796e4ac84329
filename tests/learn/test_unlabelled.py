"""Datasets holding unlabelled rows (null ``class``: photometric objects without a spectrum).

Training, the quantile pass and the holdout metrics use the labelled rows only (and say how many were
skipped); prediction scores every row; evaluation counts the labelled rows only.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from astrodask import evaluate, ingest, labels, predict, schema
from astrodask.dataset import HOLDOUT, TEST, open_dataset
from astrodask.errors import AstrodaskError
from astrodask.learn import TrainConfig, stage
from astrodask.model import SoftmaxModel


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as c, c.as_current():
        yield c


@pytest.fixture(scope="module")
def datasets(client, small_csv, tmp_path_factory):
    """(labelled only, the same plus unlabelled rows, unlabelled ids): the same partitions, file by file.

    The unlabelled rows are made unlike any labelled row (bands 4 mag fainter, redshift 3): if they leaked
    into the quantiles, the scaler or the gradient, the two models would differ."""
    d = tmp_path_factory.mktemp("unlabelled")
    ingest.run(ingest.ConvertConfig((str(small_csv),), str(d / "ds"), block_size=256 * 1024, quiet=True), client)
    (d / "labelled").mkdir()
    (d / "mixed").mkdir()
    extra_ids = []
    for f in open_dataset(str(d / "ds")).files:
        t = pq.read_table(f.url)
        n = t.num_rows
        ids = t.column(schema.ID).to_numpy()
        # another table of as many rows: new ids, no class, shifted values
        new_ids = ids + np.uint64(1 << 62)
        extra = t.set_column(t.schema.get_field_index(schema.ID), t.schema.field(schema.ID),
                             pa.array(new_ids, pa.uint64()))
        extra = extra.set_column(extra.schema.get_field_index(schema.CLASS), schema.CLASS, pa.nulls(n, pa.string()))
        for b in schema.BANDS:
            i = extra.schema.get_field_index(b)
            extra = extra.set_column(i, b, pc.add(extra.column(b), pa.scalar(4.0, pa.float32())))
        i = extra.schema.get_field_index(schema.REDSHIFT)
        extra = extra.set_column(i, schema.REDSHIFT, pa.array(np.full(n, 3.0, np.float32)))
        pq.write_table(t, d / "labelled" / f.name)
        pq.write_table(pa.concat_tables([t, extra]), d / "mixed" / f.name)
        extra_ids.append(new_ids)
    return d / "labelled", d / "mixed", np.concatenate(extra_ids)


def test_labels_follow_converts_rules():
    assert labels.encode([" galaxy", "QSO", None, float("nan"), "", "star\t"]).tolist() == [0, 1, -1, -1, -1, 2]
    with pytest.raises(AstrodaskError, match=r"^y: 3 label\(s\) are not one of GALAXY, QSO, STAR: 'x' \(2\)"):
        labels.encode(["GALAXY", "x", "blazar", "x"], where="y")


def test_unlabelled_rows_change_nothing_in_training_and_are_counted(client, datasets, tmp_path, capsys):
    labelled, mixed, extra_ids = datasets
    kw = dict(epochs=15, patience=0, report=False, quiet=True)
    a = stage.run(TrainConfig(str(labelled), str(tmp_path / "a"), **kw), client)
    capsys.readouterr()
    b = stage.run(TrainConfig(str(mixed), str(tmp_path / "b"), **kw), client)
    err = capsys.readouterr().err
    n_extra = len(extra_ids)
    assert f"{n_extra:,} unlabelled rows (no class) left out of training and evaluation" in err
    ma, mb = SoftmaxModel.load(tmp_path / "a"), SoftmaxModel.load(tmp_path / "b")
    # the quantile pass (knots, medians), the scaler and the gradient saw the labelled rows only
    assert ma.spec.to_dict() == mb.spec.to_dict()
    np.testing.assert_array_equal(ma.coef, mb.coef)
    np.testing.assert_array_equal(ma.intercept, mb.intercept)
    assert mb.info.n_unlabelled == n_extra and ma.info.n_unlabelled == 0
    assert mb.info.n_train == ma.info.n_train
    # the holdout metrics: labelled rows only, the unlabelled holdout rows counted
    n_test_unlabelled = int((HOLDOUT.of(extra_ids) == TEST).sum())
    assert n_test_unlabelled > 0
    assert b.metrics.n == a.metrics.n and b.metrics.accuracy == a.metrics.accuracy
    assert b.metrics.confusion_matrix == a.metrics.confusion_matrix
    assert b.metrics.n_unlabelled == n_test_unlabelled
    assert b.metrics.train["unlabelled_rows"] == n_extra


def test_prediction_scores_every_row_and_evaluation_counts_labelled_rows(client, datasets, tmp_path):
    labelled, mixed, extra_ids = datasets
    stage.run(TrainConfig(str(labelled), str(tmp_path / "m"), epochs=10, patience=0, report=False, quiet=True),
              client)
    r = predict.run(predict.PredictConfig(str(mixed), str(tmp_path / "m"), str(tmp_path / "p"), quiet=True), client)
    n_all = open_dataset(str(mixed)).n_rows
    assert r.rows == n_all
    pred = pq.read_table(tmp_path / "p").to_pandas()
    assert set(extra_ids.tolist()) <= set(pred[schema.ID].tolist())
    assert pred["predicted_class"].notna().all()
    ev = evaluate.run(evaluate.EvaluateConfig(str(tmp_path / "p"), out=str(tmp_path / "ev"), report=False, quiet=True),
                      client)
    m = ev.metrics
    assert ev.report is None and not (tmp_path / "ev" / "index.html").exists()  # report=False: metrics.json only
    assert m.n == n_all - len(extra_ids) and m.n_unlabelled == len(extra_ids)
    assert sum(map(sum, m.confusion_matrix)) == m.n
    assert sum(m.predicted_counts.values()) == m.n
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["n_unlabelled"] == len(extra_ids)


def test_a_dataset_without_labelled_rows_is_refused_in_one_line(client, datasets, tmp_path):
    _, mixed, _ = datasets
    (tmp_path / "none").mkdir()
    for f in sorted(mixed.glob("*.parquet")):
        t = pq.read_table(f)
        t = t.set_column(t.schema.get_field_index(schema.CLASS), schema.CLASS, pa.nulls(t.num_rows, pa.string()))
        pq.write_table(t, tmp_path / "none" / f.name)
    with pytest.raises(AstrodaskError, match="no labelled training rows") as info:
        stage.run(TrainConfig(str(tmp_path / "none"), str(tmp_path / "m"), epochs=2, quiet=True), client)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m").exists()


def test_an_unknown_label_in_a_dataset_is_refused(client, datasets, tmp_path):
    labelled, _, _ = datasets
    (tmp_path / "bad").mkdir()
    for k, f in enumerate(sorted(labelled.glob("*.parquet"))):
        t = pq.read_table(f)
        if k == 0:
            cls = t.column(schema.CLASS).to_pylist()
            cls[3] = "BLAZAR"
            t = t.set_column(t.schema.get_field_index(schema.CLASS), schema.CLASS, pa.array(cls, pa.string()))
        pq.write_table(t, tmp_path / "bad" / f.name)
    with pytest.raises(AstrodaskError, match="'BLAZAR' \\(1\\)"):
        stage.run(TrainConfig(str(tmp_path / "bad"), str(tmp_path / "m"), epochs=2, quiet=True), client)
