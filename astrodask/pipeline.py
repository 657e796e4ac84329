"""The end-to-end job: convert -> train -> predict -> evaluate, each stage an atomic output under one directory.

``OUT/dataset``, ``OUT/model``, ``OUT/predictions``, ``OUT/evaluation``. With ``resume``, each stage checks its
output: complete and made from the same inputs and options -> kept as it is; interrupted -> continued; made from
something else -> refused. ``OUT`` may be a local directory or an object-store URL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from . import evaluate, predict
from .errors import ConfigError
from .ingest.config import ConvertConfig, ConvertOptions
from .learn.config import TrainConfig, TrainOptions
from .options import JobFlags
from .predict import PredictOptions
from .storage import Location, locked

if TYPE_CHECKING:
    from .ingest.stage import ConvertResult
    from .learn.stage import TrainResult

JOB_LOCK = ".job.lock"
STAGES = ("dataset", "model", "predictions", "evaluation")


def default_source() -> str:
    """The embedded sample (``data/sdss_sample.csv``, installed as the package data ``astrodask.data``)."""
    from importlib.resources import files

    return str(files("astrodask.data") / "sdss_sample.csv")


DEFAULT_SOURCE = default_source()


@dataclass(frozen=True)
class JobConfig(JobFlags):
    """The batch job's settings: each stage's options (declared once, in its own options class), the job flags
    (one set for every stage) and where everything goes."""

    sources: tuple[str, ...] = (DEFAULT_SOURCE,)
    """Input catalogue files (CSV, Parquet, FITS, HATS; paths or URLs). Default: the embedded sample."""
    out: str = "astrodask-output"
    """Output directory (or URL): dataset/, model/, predictions/, evaluation/ go inside."""
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    """The convert options (``astrodask.ingest.ConvertOptions``: magnitudes, row_ids, cuts...)."""
    train: TrainOptions = field(default_factory=TrainOptions)
    """The training options (``astrodask.learn.TrainOptions``: features, mode, epochs, l2, patience...); its
    ``report`` draws the evaluation's page too (the job's predictions are labelled: that page is their report)."""
    predict: PredictOptions = field(default_factory=PredictOptions)
    """The predict options (``astrodask.predict.PredictOptions``: format)."""

    def __post_init__(self):
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        self.check_flags()
        if self.overwrite and self.resume:
            raise ConfigError("resume", "cannot be combined with --overwrite", "choose one of them")

    def paths(self) -> dict[str, Location]:
        out = Location.of(self.out, self.storage_options)
        return {k: out / k for k in STAGES}

    def convert_config(self) -> ConvertConfig:
        return ConvertConfig(**asdict(self.convert), sources=self.sources, dest=str(self.paths()["dataset"]),
                                    **self.flags())

    def train_config(self) -> TrainConfig:
        p = self.paths()
        return TrainConfig(str(p["dataset"]), str(p["model"]), **asdict(self.train), **self.flags())

    def predict_config(self) -> predict.PredictConfig:
        p = self.paths()
        return predict.PredictConfig(**asdict(self.predict), dataset=str(p["dataset"]), model_dir=str(p["model"]),
                                     out=str(p["predictions"]), **self.flags())

    def evaluate_config(self) -> evaluate.EvaluateConfig:
        p = self.paths()
        return evaluate.EvaluateConfig(predictions=str(p["predictions"]), out=str(p["evaluation"]),
                                       holdout=str(p["model"]), report=self.train.report, **self.flags())


@dataclass(frozen=True)
class JobResult:
    """Every stage's result."""

    out: str
    dataset: ConvertResult
    model: TrainResult
    predictions: predict.PredictResult
    evaluation: evaluate.EvaluateResult

    def lines(self) -> list[str]:
        return [f"dataset:     {self.dataset.dest}",
                f"model:       {self.model.model_dir}" + (f"  (report: {self.model.report})" if self.model.report
                                                            else ""),
                *self.predictions.lines(),
                f"evaluation:  {self.evaluation.out}",
                f"holdout:     {self.model.metrics.line()}",
                f"all rows:    {self.evaluation.metrics.line()}"]


def run(cfg: JobConfig, client) -> JobResult:
    """Run every stage, each on the result of the one before."""
    # every stage's settings are checked before any work starts
    configs = (cfg.convert_config(), cfg.train_config(), cfg.predict_config(), cfg.evaluate_config())
    out = Location.of(cfg.out, cfg.storage_options)
    out.mkdir()
    # one job per output directory: a second job would otherwise replace (--overwrite) or mix stages under a
    # running one, which holds only the lock of the stage it is in
    from . import ingest
    from .learn import stage as train_stage

    with locked(out / JOB_LOCK, out):
        dataset = ingest.run(configs[0], client)
        model = train_stage.run(configs[1], client)
        predictions = predict.run(configs[2], client)
        evaluation = evaluate.run(configs[3], client)
    return JobResult(str(out), dataset, model, predictions, evaluation)
