"""One small job for every report test: the real sample converted, a model with its report, predictions with
theirs (built once for the package)."""

from __future__ import annotations

import pytest

from astrodask import ingest, predict
from astrodask.learn import TrainConfig
from astrodask.learn import stage as train_stage


@pytest.fixture(scope="package")
def report_client():
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="package")
def report_job(report_client, small_csv_parts, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    ingest.run(ingest.ConvertConfig(tuple(map(str, small_csv_parts)), str(d / "ds"), quiet=True), report_client)
    train_stage.run(TrainConfig(str(d / "ds"), str(d / "model"), epochs=15, quiet=True), report_client)
    predict.run(predict.PredictConfig(str(d / "ds"), str(d / "model"), str(d / "pred"), report=True, quiet=True),
                report_client)
    return d
