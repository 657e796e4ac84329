"""The ``astrodask`` command: a thin click shell over the Python API (no logic lives here).

Every command takes the cluster options; user errors print one line and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys

import click

# the configs every command is derived from (light modules: nothing here starts Dask)
from .cluster.config import ClusterConfig
from .errors import AstrodaskError, Terminated, terminate_as_interrupt
from .evaluate import EvaluateConfig
from .ingest.config import ConvertConfig, ConvertOptions
from .learn.config import TrainConfig, TrainOptions
from .pipeline import JobConfig
from .predict import PredictConfig, PredictOptions
from .report.stage import ReportConfig
from .synth import SynthConfig
from .verify import VerifyConfig

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="astrodask")
def cli():
    """Classify SDSS objects as STAR, GALAXY or QSO at survey scale with Dask."""


# ------------------------------------------------------------------------------------------------ options


class _Size(click.ParamType):
    """A number of bytes written like 64MiB, 1GB or 4096."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        from dask.utils import parse_bytes

        try:
            return int(parse_bytes(value))
        except (ValueError, TypeError):
            self.fail(f"cannot read {value!r} as a size; use e.g. 64MiB", param, ctx)


class _Count(click.ParamType):
    """A whole number, also written like 1e6 (never rounded: 10.5, nan and inf are refused)."""

    name = "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number != math.floor(number):
            self.fail(f"{value!r} is not a whole number; give e.g. 1000000 or 1e6", param, ctx)
        return int(number)


class _Json(click.ParamType):
    """A JSON object (storage options: a key that is a URL prefix holds an object of options)."""

    name = "json"

    def convert(self, value, param, ctx):
        if isinstance(value, dict) or value is None:
            return value
        try:
            opts = json.loads(value)
        except ValueError as exc:
            self.fail(f"not valid JSON ({exc}); pass a JSON object such as '{{\"anon\": true}}'", param, ctx)
        if not isinstance(opts, dict):
            self.fail("must be a JSON object such as '{\"anon\": true}'", param, ctx)
        for key, sub in opts.items():
            if "://" in key and not isinstance(sub, dict):
                self.fail(f"the options for {key} must be a JSON object such as "
                          f"'{{\"{key}\": {{\"anon\": true}}}}'", param, ctx)
        return opts


_TYPES = {"bytes": _Size(), "count": _Count(), "json": _Json()}


def _click_option(o):
    """A click option for one config field (``options.Option``): the flag, type, choices, default and help all
    come from the field."""
    from dataclasses import MISSING

    flags = [o.flag] + (["-q"] if o.name == "quiet" else [])
    if o.type is bool:
        if o.default:
            return click.option(f"{o.flag}/--no-{o.flag[2:]}", o.name, default=True, show_default=True, help=o.help)
        return click.option(*flags, o.name, is_flag=True, default=False, help=o.help)
    if o.choices:
        kind = click.Choice(o.choices)
    else:
        kind = _TYPES.get(o.unit) or {int: click.INT, float: click.FLOAT, str: click.STRING}.get(o.type, click.STRING)
    if o.default is MISSING:
        return click.option(*flags, o.name, type=kind, required=True, metavar=o.metavar, help=o.help)
    default = None if o.unit == "json" else o.default
    return click.option(*flags, o.name, type=kind, default=default, metavar=o.metavar,
                        show_default=default is not None, help=o.help)


def config_options(*classes, exclude=()):
    """Decorator adding one option per field of the config dataclasses ``classes`` (each declared once, there;
    a name already added by an earlier class is not added again)."""
    from dataclasses import fields

    from .options import JobFlags, options_of

    flags = [f.name for f in fields(JobFlags)]

    def decorate(f):
        seen, opts = set(exclude), []
        for cls in classes:
            for o in options_of(cls):
                if o.name not in seen:
                    seen.add(o.name)
                    opts.append(o)
        opts.sort(key=lambda o: o.name in flags)  # the stage's own options first, then the job flags
        for o in reversed(opts):
            f = _click_option(o)(f)
        return f

    return decorate


def _take(cls, kw: dict, **extra):
    """``cls`` built from its fields' values, taken out of the command's keyword arguments ``kw``, and ``extra``."""
    from dataclasses import fields

    return cls(**{f.name: kw.pop(f.name) for f in fields(cls) if f.name in kw}, **extra)


def _run(stage, cfg, kw: dict):
    """Connect as the cluster options say, run the stage on ``cfg``, print its result (and return it)."""
    from .cluster import connect

    cluster = _take(ClusterConfig, kw)
    if kw:  # pragma: no cover - an option no config declares: a bug in this module
        raise AssertionError(f"options not used: {sorted(kw)}")
    with connect(cluster, cfg.quiet) as client:
        result = stage(cfg, client)
    for line in result.lines():
        click.echo(line)
    return result


def _stage(module: str, name: str = "run"):
    from importlib import import_module

    return getattr(import_module(module, __package__), name)


# ------------------------------------------------------------------------------------------------ commands


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest")
@config_options(ConvertConfig, ClusterConfig, exclude=("sources", "dest"))
def convert(sources, dest, **kw):
    """Convert catalogue files (CSV, Parquet, FITS, SDSS bulk files, HATS catalogues; paths or URLs) into a
    validated Parquet dataset DEST.

    Rows that fail validation go to DEST/_quarantine with a reason.

    Example: astrodask convert data/sdss_sample.csv out/dataset
    """
    _run(_stage(".ingest"), _take(ConvertConfig, kw, sources=tuple(sources), dest=dest), kw)


@cli.command()
@click.argument("dest")
@config_options(SynthConfig, ClusterConfig, exclude=("dest",))
def synth(dest, **kw):
    """Generate a synthetic SDSS-like catalogue calibrated to SDSS17, in parallel on the workers.

    Example: astrodask synth --rows 1e6 out/synthetic
    """
    _run(_stage(".synth"), _take(SynthConfig, kw, dest=dest), kw)


@cli.command()
@click.argument("dataset")
@config_options(TrainConfig, ClusterConfig, exclude=("dataset",))
def train(dataset, **kw):
    """Train a model on DATASET; write it, metrics.json and report/ to --model.

    Example: astrodask train out/dataset --model out/model
    """
    _run(_stage(".learn.stage"), _take(TrainConfig, kw, dataset=dataset), kw)


@cli.command()
@click.argument("dataset")
@click.argument("model_dir")
@click.argument("out")
@config_options(PredictConfig, ClusterConfig, exclude=("dataset", "model_dir", "out"))
def predict(dataset, model_dir, out, **kw):
    """Classify DATASET with the model in MODEL_DIR; write the predictions to OUT (Parquet, one file per input
    partition, or a HATS catalogue with --format hats).

    Example: astrodask predict out/dataset out/model out/predictions
    """
    _run(_stage(".predict"), _take(PredictConfig, kw, dataset=dataset, model_dir=model_dir, out=out), kw)


@cli.command()
@click.argument("predictions")
@config_options(EvaluateConfig, ClusterConfig, exclude=("predictions",))
def evaluate(predictions, **kw):
    """Metrics of a PREDICTIONS dataset that has true labels; metrics.json, figures and a report with --out.

    Example: astrodask evaluate out/predictions --out out/evaluation
    """
    _run(_stage(".evaluate"), _take(EvaluateConfig, kw, predictions=predictions), kw)


@cli.command()
@click.argument("predictions")
@config_options(ReportConfig, ClusterConfig, exclude=("predictions",))
def report(predictions, **kw):
    """An HTML report of PREDICTIONS (labelled or not) into --out: class fractions and probabilities by r
    magnitude, the out-of-domain share by magnitude and on the sky, colour-colour diagrams, an all-sky map, and,
    where the rows have a true class, accuracy by magnitude and redshift and calibration.

    Example: astrodask report out/predictions --out out/report
    """
    _run(_stage(".report.stage"), _take(ReportConfig, kw, predictions=predictions), kw)


@cli.command("run")
@click.argument("sources", nargs=-1)
@config_options(JobConfig, ConvertOptions, TrainOptions, PredictOptions, ClusterConfig,
                exclude=("sources", "convert", "train", "predict"))
def run_cmd(sources, **kw):
    """The end-to-end job: convert SOURCES (default: the embedded sample), train, predict, evaluate; every
    stage's options.

    Example: astrodask run --out out
    """
    # the one --report is TrainOptions': JobConfig draws the model's and the evaluation's pages by it
    stages = {"convert": _take(ConvertOptions, kw), "train": _take(TrainOptions, kw),
              "predict": _take(PredictOptions, kw)}
    extra = {"sources": tuple(sources)} if sources else {}
    _run(_stage(".pipeline"), _take(JobConfig, kw, **stages, **extra), kw)


@cli.command()
@click.argument("output")
@config_options(VerifyConfig, ClusterConfig, exclude=("output", "overwrite", "resume"))
def verify(output, **kw):
    """Read every file of OUTPUT (a dataset, model, predictions or evaluation, or the --out of astrodask run) on
    the workers and check its size, digest and rows against the manifest; exit 1 when any differs.

    Example: astrodask verify out/dataset
    """
    result = _run(_stage(".verify"), _take(VerifyConfig, kw, output=output), kw)
    if not result.ok:
        raise AstrodaskError(result.summary())


def _object_store_error(exc: BaseException) -> str | None:
    """The one-line message for an object store's client error that is the user's to fix (no credentials, an
    unreachable endpoint), or None. botocore's exceptions are matched by name: botocore is optional."""
    name = type(exc).__name__
    msg = str(exc).splitlines()[0] if str(exc) else name
    if name in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return (f"no credentials for the object store ({msg}); give them the usual way (AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials) or in --storage-options "
                "'{\"key\": ..., \"secret\": ...}'; for a public bucket read anonymously: "
                "'{\"s3://BUCKET\": {\"anon\": true}}'")
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ProxyConnectionError"):
        return (f"cannot reach the object store ({msg}); check the endpoint (AWS_ENDPOINT_URL, or endpoint_url in "
                "--storage-options) and the network")
    return None


_DASK_CONFIG = re.compile(r"A dask config file at '(?P<path>.+?)' is malformed(?P<rest>.*)", re.S)
_YAML_MARK = re.compile(r'^in "[^"]*", (line \d+, column \d+):?$')


def _dask_config_error(exc: BaseException) -> str | None:
    """The one-line message for a Dask config file that cannot be read (dask reads them all at ``import dask``,
    so every command fails on it), with the YAML error whole, or None."""
    m = _DASK_CONFIG.match(str(exc)) if isinstance(exc, ValueError) else None
    if m is None:
        return None
    rest = re.sub(r"^(, original error message:|\s*-\s*)", "", m["rest"].strip()).strip()
    parts, snippet = [], False
    for text in rest.splitlines():
        line = text.strip()
        mark = _YAML_MARK.match(line)
        if mark:  # YAML's 'in "<unicode string>", line 4, column 13:' and then the line quoted, with a caret
            parts[-1:] = [f"{parts[-1]} ({mark[1]})" if parts else f"at {mark[1]}"]
            snippet = True
        elif snippet:
            snippet = line != "^"
        elif line:
            parts.append(line)
    detail = ": ".join(parts) or "unreadable"
    return (f"the Dask config file {m['path']} is not valid ({detail}); fix it or move it away (Dask reads every "
            "YAML file in $DASK_CONFIG, ~/.config/dask and /etc/dask)")


def main(argv=None, prog_name="astrodask") -> int:
    """Entry point: run the CLI; user errors -> one line on stderr and exit 1."""
    if not os.environ.get("ASTRODASK_DEBUG"):
        # distributed's client teardown can leave a future whose timeout no one awaits; asyncio then prints
        # "Future exception was never retrieved" at exit, after the command's own result or one-line error
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        with terminate_as_interrupt():  # SIGTERM unwinds like Ctrl-C: the cluster is closed, the staging kept
            cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:  # click turns Ctrl-C into Abort
        cause = exc if isinstance(exc, Terminated) else exc.__cause__ or exc.__context__
        if isinstance(cause, Terminated):
            click.echo("astrodask: terminated (SIGTERM); rerun the same command with --resume to continue", err=True)
            return 128 + cause.signum
        click.echo("astrodask: interrupted; rerun the same command with --resume to continue", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:  # `astrodask` alone: show the help
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:  # bad option value, unknown option, missing argument: one line, exit 1
        msg = " ".join(exc.format_message().split())
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"astrodask: error: {msg}{where}", err=True)
        return EXIT_USER_ERROR
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except AstrodaskError as exc:
        click.echo(f"astrodask: error: {exc}", err=True)
        return EXIT_USER_ERROR
    except OSError as exc:  # the disk or network refused: read-only, full, permissions, a dangling link
        from .storage import os_error

        where = exc.filename or "a file"
        click.echo(f"astrodask: error: {os_error(exc, where, 'read or write')}", err=True)
        return EXIT_USER_ERROR
    except Exception as exc:
        if os.environ.get("ASTRODASK_DEBUG"):
            raise
        cloud = _object_store_error(exc)
        if cloud:
            click.echo(f"astrodask: error: {cloud}", err=True)
            return EXIT_USER_ERROR
        if type(exc).__name__ == "KilledWorker":  # distributed gave up on a task whose workers kept dying
            task = str(getattr(exc, "task", "") or "a task").split("-")[0]
            click.echo(f"astrodask: error: the Dask workers running {task} kept dying (most often: out of memory); "
                       "give each worker more memory (--memory-limit, or the cluster's) or make smaller partitions "
                       "(convert --block-size), then rerun with --resume", err=True)
            return EXIT_USER_ERROR
        config = _dask_config_error(exc)
        if config:
            click.echo(f"astrodask: error: {config}", err=True)
            return EXIT_USER_ERROR
        msg = "; ".join(ln.strip() for ln in str(exc).splitlines() if ln.strip())[:400]
        click.echo(f"astrodask: internal error: {type(exc).__name__}: {msg} (set ASTRODASK_DEBUG=1 for details)",
                   err=True)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
