"""The end-to-end job: convert -> train -> predict -> evaluate, each stage an atomic output under one directory.

``OUT/dataset``, ``OUT/model``, ``OUT/predictions``, ``OUT/evaluation``. With ``resume``, each stage checks its
output: complete and made from the same inputs and options -> kept as it is; interrupted -> continued; made from
something else -> refused. ``OUT`` may be a local directory or an object-store URL.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import evaluate, ingest, predict
from .errors import ConfigError
from .ingest import ConvertOptions
from .learn import TrainConfig, TrainOptions
from .learn import stage as train_stage
from .predict import PredictOptions
from .storage import Location, locked, read_json

JOB_LOCK = ".job.lock"


def default_source() -> str:
    """The embedded sample (``data/sdss_sample.csv``, installed as the package data ``astrodask.data``)."""
    from importlib.resources import files

    return str(files("astrodask.data") / "sdss_sample.csv")


DEFAULT_SOURCE = default_source()


@dataclass(frozen=True)
class JobConfig:
    """The batch job's settings: each stage's options (declared once, in its own options class) and the job's."""

    sources: tuple[str, ...] = (DEFAULT_SOURCE,)
    """Input catalogue files (CSV, Parquet, FITS, HATS; paths or URLs). Default: the embedded sample."""
    out: str = "astrodask-output"
    """Directory (or object-store URL) that receives dataset/, model/, predictions/ and evaluation/."""
    convert: ConvertOptions = field(default_factory=ConvertOptions)
    """The convert options (``astrodask.ingest.ConvertOptions``: magnitudes, row_ids, cuts...)."""
    train: TrainOptions = field(default_factory=TrainOptions)
    """The training options (``astrodask.learn.TrainOptions``: features, mode, epochs, l2, patience...)."""
    predict: PredictOptions = field(default_factory=PredictOptions)
    """The predict options (``astrodask.predict.PredictOptions``: format)."""
    storage_options: dict = field(default_factory=dict)
    """fsspec options (credentials, endpoint...) for URL inputs and outputs."""
    overwrite: bool = False
    """Replace existing outputs under ``out`` (only ones astrodask wrote)."""
    resume: bool = False
    """Keep the stages already complete from the same inputs and options, continue an interrupted one."""
    quiet: bool = False
    """No progress bars."""

    def __post_init__(self):
        if isinstance(self.sources, str):
            object.__setattr__(self, "sources", (self.sources,))
        if self.overwrite and self.resume:
            raise ConfigError("resume", "cannot be combined with --overwrite", "choose one of them")
        if self.storage_options is None:
            object.__setattr__(self, "storage_options", {})

    def __hash__(self):  # storage_options is a dict
        return hash((self.sources, self.out))

    def _flags(self) -> dict:
        return {"overwrite": self.overwrite, "resume": self.resume, "quiet": self.quiet,
                "storage_options": self.storage_options}

    def convert_config(self, dataset: str) -> ingest.ConvertConfig:
        return ingest.ConvertConfig(**asdict(self.convert), sources=tuple(self.sources), dest=dataset,
                                    **self._flags())

    def train_config(self, dataset: str, model_dir: str) -> TrainConfig:
        return TrainConfig(dataset, model_dir, **asdict(self.train), **self._flags())

    def predict_config(self, dataset: str, model_dir: str, out: str) -> predict.PredictConfig:
        return predict.PredictConfig(**asdict(self.predict), dataset=dataset, model_dir=model_dir, out=out,
                                     **self._flags())


def run(cfg: JobConfig, client) -> dict:
    """Run every stage; return where the outputs are and the headline metrics."""
    # every stage's settings are checked before any work starts
    out = Location.of(cfg.out, cfg.storage_options)
    paths = {k: out / k for k in ("dataset", "model", "predictions", "evaluation")}
    conv = cfg.convert_config(str(paths["dataset"]))
    tcfg = cfg.train_config(str(paths["dataset"]), str(paths["model"]))
    pcfg = cfg.predict_config(str(paths["dataset"]), str(paths["model"]), str(paths["predictions"]))
    out.mkdir()
    # one job per output directory: a second job would otherwise replace (--overwrite) or mix stages under a
    # running one, which holds only the lock of the stage it is in
    with locked(out / JOB_LOCK, out):
        result = {"out": str(out)}
        result["convert"] = ingest.run(conv, client)
        train_stage.run(tcfg, client)
        predict.run(pcfg, client)
        evaluate.run(client, paths["predictions"], paths["evaluation"], cfg.overwrite, cfg.resume, cfg.quiet,
                     title="astrodask: predictions on the whole dataset",
                     extra={"holdout_metrics.json": paths["model"] / "metrics.json"})
        result["holdout"] = read_json(paths["model"] / "metrics.json")
        result["all_rows"] = read_json(paths["evaluation"] / "metrics.json")
        result["paths"] = {k: str(v) for k, v in paths.items()}
    return result
