"""The end-to-end job: convert -> train -> predict -> evaluate, each stage an atomic output under one directory.

``OUT/dataset``, ``OUT/model``, ``OUT/predictions``, ``OUT/evaluation``. With ``resume``, stages whose output
is already complete are skipped and an interrupted stage continues from its staging directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import convert, evaluate, predict, train
from .console import log
from .errors import ConfigError
from .storage import is_complete, locked, read_meta

JOB_LOCK = ".job.lock"
DEFAULT_SOURCE = str(Path(__file__).resolve().parents[1] / "data" / "sdss_sample.csv")


@dataclass(frozen=True)
class JobConfig:
    """The batch job's settings (the stages' own settings are derived from these)."""

    sources: tuple[str, ...] = (DEFAULT_SOURCE,)
    """Input catalogue files (CSV, Parquet, FITS; paths or URLs). Default: the embedded sample."""
    out: str = "astrodask-output"
    """Directory that receives dataset/, model/, predictions/ and evaluation/."""
    features: str = "spectroscopic"
    """Feature set: ``spectroscopic`` or ``photometric``."""
    mode: str = "parallel"
    """Training mode: ``parallel`` or ``incremental``."""
    epochs: int | None = None
    """Maximum training epochs (mode default when None)."""
    l2: float = 1e-5
    """L2 strength."""
    class_weight: str | None = None
    """None or ``balanced``."""
    cache: str = "auto"
    """Feature cache: ``auto``, ``memory`` or ``stream``."""
    overwrite: bool = False
    """Replace existing outputs under ``out``."""
    resume: bool = False
    """Skip completed stages and continue an interrupted one."""
    quiet: bool = False
    """No progress bars."""

    def __post_init__(self):
        if self.overwrite and self.resume:
            raise ConfigError("resume", "cannot be combined with --overwrite", "choose one of them")

    def train_config(self, dataset: str, model_dir: str) -> train.TrainConfig:
        return train.TrainConfig(dataset, model_dir, features=self.features, mode=self.mode, epochs=self.epochs,
                                 l2=self.l2, class_weight=self.class_weight, cache=self.cache,
                                 overwrite=self.overwrite, resume=self.resume, quiet=self.quiet)


def _skip(path: Path, cfg: JobConfig, stage: str) -> bool:
    if cfg.resume and is_complete(path):
        log(f"resume: {stage} already complete at {path}")
        return True
    return False


def run(cfg: JobConfig, client) -> dict:
    """Run every stage; return where the outputs are and the headline metrics."""
    # every stage's settings are checked before any work starts
    out = Path(cfg.out).absolute()
    paths = {k: out / k for k in ("dataset", "model", "predictions", "evaluation")}
    conv = convert.ConvertConfig(tuple(cfg.sources), str(paths["dataset"]), overwrite=cfg.overwrite,
                                 resume=cfg.resume, quiet=cfg.quiet)
    tcfg = cfg.train_config(str(paths["dataset"]), str(paths["model"]))
    pcfg = predict.PredictConfig(str(paths["dataset"]), str(paths["model"]), str(paths["predictions"]),
                                 overwrite=cfg.overwrite, resume=cfg.resume, quiet=cfg.quiet)
    out.mkdir(parents=True, exist_ok=True)
    # one job per output directory: a second job would otherwise replace (--overwrite) or mix stages under a
    # running one, which holds only the lock of the stage it is in
    with locked(out / JOB_LOCK, out):
        return _run_stages(cfg, client, out, paths, conv, tcfg, pcfg)


def _run_stages(cfg: JobConfig, client, out: Path, paths: dict, conv, tcfg, pcfg) -> dict:
    result = {"out": str(out)}
    result["convert"] = read_meta(paths["dataset"]) if _skip(paths["dataset"], cfg, "convert") else convert.run(conv, client)
    if not _skip(paths["model"], cfg, "train"):
        train.run(tcfg, client)
    if not _skip(paths["predictions"], cfg, "predict"):
        predict.run(pcfg, client)
    if not _skip(paths["evaluation"], cfg, "evaluate"):
        evaluate.run(client, str(paths["predictions"]), paths["evaluation"], cfg.overwrite, cfg.resume, cfg.quiet,
                     title="astrodask: predictions on the whole dataset",
                     extra={"holdout_metrics.json": paths["model"] / "metrics.json"})
    result["holdout"] = json.loads((paths["model"] / "metrics.json").read_text())
    result["all_rows"] = json.loads((paths["evaluation"] / "metrics.json").read_text())
    result["paths"] = {k: str(v) for k, v in paths.items()}
    return result
