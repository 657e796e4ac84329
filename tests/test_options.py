"""Options are declared once, in each stage's options class (ingest.ConvertOptions, learn.TrainOptions,
predict.PredictOptions); the stage's command, ``run`` and JobConfig derive from them."""

from __future__ import annotations

from dataclasses import fields

import click
import pytest

from astrodask import cli as cli_module
from astrodask.errors import ConfigError
from astrodask.ingest import ConvertConfig, ConvertOptions
from astrodask.learn import TrainConfig, TrainOptions
from astrodask.options import field_docs, options_of
from astrodask.pipeline import JobConfig
from astrodask.predict import PredictConfig, PredictOptions

TRAINING = options_of(TrainOptions)
STAGES = {"convert": (ConvertOptions, ConvertConfig), "train": (TrainOptions, TrainConfig),
          "predict": (PredictOptions, PredictConfig)}
JOB_FLAGS = ["overwrite", "resume", "quiet", "storage_options"]


def _options(command: str) -> dict[str, click.Option]:
    return {p.name: p for p in cli_module.cli.commands[command].params if isinstance(p, click.Option)}


def test_the_training_options_are_every_field_a_user_sets():
    names = [o.name for o in TRAINING]
    assert names == [f.name for f in fields(TrainOptions)]
    for expected in ("features", "mode", "epochs", "l2", "class_weight", "patience", "monitor", "tol", "seed",
                     "cache", "learning_rate", "eta0", "report"):
        assert expected in names
    # a TrainConfig is the options plus where the data is, where the model goes, and the job flags
    extra = [f.name for f in fields(TrainConfig) if f.name not in names]
    assert extra == ["dataset", "model_dir", *JOB_FLAGS]


@pytest.mark.parametrize("stage", STAGES)
def test_each_config_is_its_options_plus_paths_and_job_flags(stage):
    options, config = STAGES[stage]
    names = {f.name for f in fields(options)}
    extra = [f.name for f in fields(config) if f.name not in names]
    assert set(JOB_FLAGS) <= set(extra)
    assert len(extra) - len(JOB_FLAGS) <= 3, f"{config.__name__} has options outside {options.__name__}: {extra}"


@pytest.mark.parametrize("stage, command", [(s, c) for s in STAGES for c in (s, "run")])
def test_every_option_is_on_the_command_with_the_same_default_choices_and_help(stage, command):
    opts = _options(command)
    for o in options_of(STAGES[stage][0]):
        assert o.name in opts, f"astrodask {command} has no {o.flag}"
        p = opts[o.name]
        assert o.flag in p.opts
        assert p.default == o.default, (command, o.name, p.default, o.default)
        if o.choices:
            assert tuple(p.type.choices) == o.choices
        assert o.help and p.help == o.help, f"{o.name}: help must be the field's docstring"
    for flag in ("overwrite", "resume", "quiet", "storage_options"):
        assert flag in opts, f"astrodask {command} has no --{flag.replace('_', '-')}"
    if command == "train":
        assert "model_dir" in opts


def test_every_command_takes_storage_options():
    for name, command in cli_module.cli.commands.items():
        if name != "synth":
            assert "storage_options" in {p.name for p in command.params}, name


def test_no_cuts_and_block_size_on_the_command_line():
    opts = _options("convert")
    assert "--no-cuts" in opts["cuts"].secondary_opts
    assert opts["block_size"].type.convert("64MiB", None, None) == 64 << 20


def test_job_config_holds_each_stages_options_instead_of_repeating_them():
    job = {f.name for f in fields(JobConfig)}
    for options, _ in STAGES.values():
        assert not job & {f.name for f in fields(options)}, f"JobConfig repeats an option of {options.__name__}"
    assert JobConfig().train == TrainOptions() and JobConfig().convert == ConvertOptions()
    job = JobConfig(train=TrainOptions(patience=7, seed=3), convert=ConvertOptions(row_ids=True, cuts=False),
                    predict=PredictOptions(format="hats"), resume=True, storage_options={"anon": True})
    cfg = job.train_config("ds", "m")
    assert (cfg.patience, cfg.seed, cfg.resume, cfg.dataset, cfg.model_dir) == (7, 3, True, "ds", "m")
    conv = job.convert_config("ds")
    assert (conv.row_ids, conv.cuts, conv.dest, conv.storage_options) == (True, False, "ds", {"anon": True})
    assert job.predict_config("ds", "m", "p").format == "hats"


@pytest.mark.parametrize("command", ["train", "run"])
def test_the_options_given_reach_the_stage(command, monkeypatch, tmp_path):
    """``run`` offers --patience, --monitor, --seed... like ``train``, and they reach the training stage."""
    import contextlib

    seen = {}

    def fake_train(cfg, client):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(cli_module, "_connect", lambda cluster: contextlib.nullcontext(None))
    monkeypatch.setattr("astrodask.learn.stage.run", fake_train)
    args = ["--patience", "7", "--monitor", "loss", "--seed", "3", "--tol", "1e-6", "--class-weight", "balanced",
            "--no-report", "--epochs", "12"]
    if command == "train":
        argv = ["train", str(tmp_path / "ds"), "--model", str(tmp_path / "m"), *args]
    else:
        monkeypatch.setattr("astrodask.ingest.run", lambda cfg, client: {})
        argv = ["run", "--out", str(tmp_path / "out"), *args]
    with pytest.raises(SystemExit):
        cli_module.cli.main(args=argv, standalone_mode=False)
    cfg = seen["cfg"]
    assert cfg.options() == TrainOptions(patience=7, monitor="loss", seed=3, tol=1e-6, class_weight="balanced",
                                         report=False, epochs=12)


def test_help_text_comes_from_the_field_docstrings():
    docs = field_docs(TrainConfig)
    assert docs["patience"].startswith("Early stopping: stop when the monitored validation score")
    assert docs["dataset"].startswith("Parquet dataset made by")
    assert "``" not in next(o.help for o in TRAINING if o.name == "features")


@pytest.mark.parametrize("field, value, words", [
    ("cache", "disk", "use one of auto, memory, stream"),
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
