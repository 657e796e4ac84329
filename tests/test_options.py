"""Every option is declared once, as a field of a config dataclass, and the command line is derived from them:
the stage options (ConvertOptions, TrainOptions, PredictOptions), the stage configs (which add paths), the job
flags (JobFlags, inherited by every stage config), ClusterConfig, and the estimator's defaults."""

from __future__ import annotations

import inspect
import subprocess
import sys
from dataclasses import MISSING, fields

import click
import pytest

from astrodask import cli as cli_module
from astrodask.cluster.config import ClusterConfig
from astrodask.errors import ConfigError
from astrodask.evaluate import EvaluateConfig
from astrodask.ingest import ConvertConfig, ConvertOptions
from astrodask.learn import TrainConfig, TrainOptions
from astrodask.learn.config import DEFAULT_EPOCHS
from astrodask.options import JobFlags, field_docs, options_of
from astrodask.pipeline import JobConfig
from astrodask.predict import PredictConfig, PredictOptions
from astrodask.synth import SynthConfig

JOB_FLAGS = [f.name for f in fields(JobFlags)]
COMMANDS = {  # command -> (the configs its options come from, the fields that are its arguments)
    "convert": ((ConvertConfig, ClusterConfig), ("sources", "dest")),
    "synth": ((SynthConfig, ClusterConfig), ("dest",)),
    "train": ((TrainConfig, ClusterConfig), ("dataset",)),
    "predict": ((PredictConfig, ClusterConfig), ("dataset", "model_dir", "out")),
    "evaluate": ((EvaluateConfig, ClusterConfig), ("predictions",)),
    "run": ((JobConfig, ConvertOptions, TrainOptions, PredictOptions, ClusterConfig),
            ("sources", "convert", "train", "predict")),
}
CONFIGS = (ConvertConfig, TrainConfig, PredictConfig, EvaluateConfig, SynthConfig, JobConfig)


def _params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in cli_module.cli.commands[command].params}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_a_command_is_one_field_with_its_flag_default_choices_and_help(command):
    classes, arguments = COMMANDS[command]
    declared = {}
    for cls in classes:
        for o in options_of(cls):
            declared.setdefault(o.name, o)
    params = _params(command)
    options = {n: p for n, p in params.items() if isinstance(p, click.Option)}
    assert set(options) == set(declared) - set(arguments), "an option no config declares, or a field not offered"
    assert {n for n, p in params.items() if isinstance(p, click.Argument)} <= set(arguments) | {"sources"}
    ctx = click.Context(cli_module.cli.commands[command])
    for name, p in options.items():
        o = declared[name]
        assert o.flag in p.opts, (command, name, p.opts)
        assert o.help and p.help == o.help, f"{name}: the help must be the field's docstring"
        if o.default is MISSING:
            assert p.required, name
        elif o.unit != "json":
            assert p.get_default(ctx) == o.default, (command, name, p.get_default(ctx), o.default)
        if o.choices:
            assert tuple(p.type.choices) == o.choices


def test_the_job_flags_are_declared_once_and_inherited_by_every_stage_config():
    for cls in CONFIGS:
        assert issubclass(cls, JobFlags), cls
        names = [f.name for f in fields(cls)]
        assert all(flag in names for flag in JOB_FLAGS), cls
        for klass in cls.__mro__:
            if klass is not JobFlags and "__annotations__" in vars(klass):
                assert not set(vars(klass)["__annotations__"]) & set(JOB_FLAGS), f"{klass.__name__} re-declares"
    # the storage options dict is left out of the hash, so every config is hashable
    cfg = TrainConfig("ds", "m", storage_options={"anon": True})
    assert hash(cfg) == hash(TrainConfig("ds", "m", storage_options={"anon": False}))
    assert cfg != TrainConfig("ds", "m", storage_options={"anon": False})


def test_each_config_is_its_options_plus_paths_and_job_flags():
    for options, config in ((ConvertOptions, ConvertConfig), (TrainOptions, TrainConfig),
                            (PredictOptions, PredictConfig)):
        extra = [f.name for f in fields(config) if f.name not in {f.name for f in fields(options)}]
        assert set(JOB_FLAGS) <= set(extra)
        assert len(extra) - len(JOB_FLAGS) <= 3, f"{config.__name__} has options outside {options.__name__}: {extra}"


def test_cluster_config_imports_nothing_of_distributed():
    code = "import sys, astrodask.cluster.config, astrodask.cli; print('distributed' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == "False", "the command line loads distributed before a command runs"


def test_the_estimator_defaults_are_the_training_options_defaults():
    from astrodask import SDSSClassifier

    params = inspect.signature(SDSSClassifier.__init__).parameters
    defaults = TrainOptions()
    shared = [n for n in params if n in {f.name for f in fields(TrainOptions)}]
    assert len(shared) >= 8, shared
    for name in shared:
        assert params[name].default == getattr(defaults, name), name
    assert params["max_iter"].default == DEFAULT_EPOCHS["parallel"]


def test_job_config_holds_each_stages_options_instead_of_repeating_them():
    job = {f.name for f in fields(JobConfig)}
    for options in (ConvertOptions, TrainOptions, PredictOptions):
        assert not job & {f.name for f in fields(options)}, f"JobConfig repeats an option of {options.__name__}"
    assert JobConfig().train == TrainOptions() and JobConfig().convert == ConvertOptions()
    job = JobConfig(out="o", train=TrainOptions(patience=7, seed=3), convert=ConvertOptions(row_ids=True, cuts=False),
                    predict=PredictOptions(format="hats"), resume=True, storage_options={"anon": True})
    cfg = job.train_config()
    assert (cfg.patience, cfg.seed, cfg.resume, cfg.dataset.endswith("dataset"), cfg.model_dir.endswith("model")) == \
        (7, 3, True, True, True)
    conv = job.convert_config()
    assert (conv.row_ids, conv.cuts, conv.storage_options) == (True, False, {"anon": True})
    assert job.predict_config().format == "hats"
    ev = job.evaluate_config()
    assert ev.holdout == cfg.model_dir and ev.predictions == job.predict_config().out


@pytest.mark.parametrize("command", ["train", "run"])
def test_the_options_given_reach_the_stage(command, monkeypatch, tmp_path):
    """``run`` offers --patience, --monitor, --seed... like ``train``, and they reach the training stage."""
    import contextlib

    seen = {}

    def fake(cfg, client):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr("astrodask.cluster.connect", lambda cluster, quiet=False: contextlib.nullcontext(None))
    monkeypatch.setattr(cli_module, "_stage", lambda module, name="run": fake)
    args = ["--patience", "7", "--monitor", "loss", "--seed", "3", "--tol", "1e-6", "--class-weight", "balanced",
            "--no-report", "--epochs", "12"]
    if command == "train":
        argv = ["train", str(tmp_path / "ds"), "--model", str(tmp_path / "m"), *args]
    else:
        argv = ["run", "--out", str(tmp_path / "out"), *args]
    with pytest.raises(SystemExit):
        cli_module.cli.main(args=argv, standalone_mode=False)
    cfg = seen["cfg"]
    got = cfg.options() if command == "train" else cfg.train
    assert got == TrainOptions(patience=7, monitor="loss", seed=3, tol=1e-6, class_weight="balanced", report=False,
                               epochs=12)


def test_whole_numbers_accept_scientific_notation_and_refuse_fractions():
    count = cli_module._Count()
    assert count.convert("1e7", None, None) == 10_000_000 and count.convert("12", None, None) == 12
    for bad in ("10.5", "nan", "inf", "1e400", "ten"):
        with pytest.raises(click.BadParameter):
            count.convert(bad, None, None)


def test_help_text_comes_from_the_field_docstrings():
    docs = field_docs(TrainConfig)
    assert docs["patience"].startswith("Early stopping: stop when the monitored validation score")
    assert docs["dataset"].startswith("Parquet dataset made by")
    assert "``" not in next(o.help for o in options_of(TrainOptions) if o.name == "features")


def test_no_cuts_and_block_size_on_the_command_line():
    opts = _params("convert")
    assert "--no-cuts" in opts["cuts"].secondary_opts
    assert opts["block_size"].type.convert("64MiB", None, None) == 64 << 20


@pytest.mark.parametrize("field, value, words", [
    ("cache", "disk", "use one of auto, memory, spill, stream"),
    ("monitor", "f1", "use one of accuracy, loss"),
    ("class_weight", "equal", "use one of balanced or leave it out"),
    ("features", "x-ray", "use one of spectroscopic, photometric"),
    ("tol", -1.0, "must be a finite number >= 0"),
    ("eta0", 0.0, "must be a positive number"),
])
def test_a_bad_value_names_the_field_and_the_fix(field, value, words):
    with pytest.raises(ConfigError, match=f"^{field}: ") as info:
        TrainOptions(**{field: value})
    assert words in str(info.value)
