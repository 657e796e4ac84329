"""The ``astrodask`` command: a thin click shell over the Python API (no logic lives here).

Every command takes the cluster options; user errors print one line and exit 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys

import click

from .errors import AstrodaskError

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 2


def cluster_options(f):
    """Where the work runs: --scheduler, --cluster (local or a batch queue) and its sizing, TLS and the bounds of
    every wait, turned into a ClusterConfig ``cluster`` argument (each option mirrors one ClusterConfig field).

    Choices and defaults are spelled out so that ``--help`` need not import distributed; tests/test_cluster.py
    checks that they agree with ClusterConfig."""
    kinds = ("local", "slurm", "pbs", "sge", "lsf", "htcondor")  # astrodask.cluster.CLUSTERS

    @click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None, metavar="ADDRESS",
                  help="Running Dask scheduler (tcp://host:8786 or tls://...); default: start a cluster (--cluster). "
                       "Also read from DASK_SCHEDULER_ADDRESS.")
    @click.option("--cluster", "cluster_kind", type=click.Choice(kinds), default="local", show_default=True,
                  help="Cluster to start without --scheduler: a LocalCluster, or worker jobs on a batch queue "
                       "(dask-jobqueue; jobs sized by jobqueue.<name> in the Dask config, ~/.config/dask/jobqueue.yaml "
                       "or $DASK_CONFIG).")
    @click.option("--jobs", type=int, default=None, help="Batch cluster: jobs to submit (default 1).")
    @click.option("--adapt-max", type=int, default=None, metavar="N",
                  help="Batch cluster: scale adaptively between --jobs and N jobs.")
    @click.option("--workers", type=int, default=None, help="LocalCluster worker processes (default: one per core).")
    @click.option("--threads", type=int, default=1, show_default=True,
                  help="Threads per worker (LocalCluster; a batch job's cores when its config has none).")
    @click.option("--memory-limit", default="auto", show_default=True,
                  help="Memory per worker, at least 384MiB (auto: LocalCluster machine memory / workers; batch: "
                       "the jobqueue config, else 2GiB).")
    @click.option("--timeout", type=float, default=30.0, show_default=True, metavar="SECONDS",
                  help="Give up when the scheduler does not answer as a Dask scheduler within this time.")
    @click.option("--worker-timeout", type=float, default=60.0, show_default=True,
                  metavar="SECONDS", help="Give up when no worker has joined within this time (queued batch jobs "
                                          "included).")
    @click.option("--tls-ca", type=click.Path(), default=None, help="CA certificate (PEM) for a tls:// scheduler.")
    @click.option("--tls-cert", type=click.Path(), default=None, help="Client certificate (PEM).")
    @click.option("--tls-key", type=click.Path(), default=None, help="Client private key (PEM).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bars or dashboard link.")
    @functools.wraps(f)
    def wrapper(*args, scheduler, cluster_kind, jobs, adapt_max, workers, threads, memory_limit, timeout,
                worker_timeout, tls_ca, tls_cert, tls_key, quiet, **kw):
        from .cluster import ClusterConfig

        if cluster_kind != "local" and scheduler is not None:
            source = click.get_current_context().get_parameter_source("scheduler")
            if source == click.core.ParameterSource.ENVIRONMENT:
                scheduler = None  # an explicit --cluster wins over DASK_SCHEDULER_ADDRESS left in the environment
        cluster = ClusterConfig(scheduler=scheduler, cluster=cluster_kind, jobs=jobs, adapt_max=adapt_max,
                                n_workers=workers, threads_per_worker=threads, memory_limit=memory_limit,
                                timeout=timeout, worker_timeout=worker_timeout, tls_ca=tls_ca, tls_cert=tls_cert,
                                tls_key=tls_key, quiet=quiet)
        return f(*args, cluster=cluster, quiet=quiet, **kw)

    return wrapper


def _connect(cluster):
    from .cluster import connect

    return connect(cluster)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _metrics_line(m: dict) -> str:
    return (f"accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  log-loss {m['log_loss']:.4f}  "
            f"Brier {m['brier']:.4f}  ({m['n']:,} rows)")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="astrodask")
def cli():
    """Classify SDSS objects as STAR, GALAXY or QSO at survey scale with Dask."""


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


def _click_option(o):
    """A click option for one config field (``options.Option``): the flag, type, choices, default and help all
    come from the field."""
    if o.type is bool:
        if o.default:
            return click.option(f"{o.flag}/--no-{o.flag[2:]}", o.name, default=True, show_default=True, help=o.help)
        return click.option(o.flag, o.name, is_flag=True, default=False, help=o.help)
    if o.unit == "bytes":
        kind = _Size()
    else:
        kind = click.Choice(o.choices) if o.choices else {int: click.INT, float: click.FLOAT, str: click.STRING}[o.type]
    return click.option(o.flag, o.name, type=kind, default=o.default, show_default=o.default is not None,
                        help=o.help)


def config_options(cls, exclude=()):
    """Decorator adding one option per field of the options dataclass ``cls`` (declared once, there)."""
    from .options import options_of

    def decorate(f):
        for o in reversed(options_of(cls, exclude)):
            f = _click_option(o)(f)
        return f

    return decorate


def _take(cls, kw: dict) -> dict:
    """The values of ``cls``'s options, removed from the command's keyword arguments ``kw``."""
    from dataclasses import fields

    return {f.name: kw.pop(f.name) for f in fields(cls) if f.name in kw}


def _convert_options(f):
    from .ingest.config import ConvertOptions

    return config_options(ConvertOptions)(f)


def _training_options(f):
    from .learn.config import TrainOptions

    return config_options(TrainOptions)(f)


def _predict_options(f):
    from .predict import PredictOptions

    return config_options(PredictOptions)(f)


def _parse_storage_options(ctx, param, value):
    if not value:
        return {}
    try:
        opts = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON ({exc}); pass a JSON object such as '{{\"anon\": true}}'") from None
    if not isinstance(opts, dict):
        raise click.BadParameter("must be a JSON object such as '{\"anon\": true}'")
    for key, sub in opts.items():
        if "://" in key and not isinstance(sub, dict):
            raise click.BadParameter(f"the options for {key} must be a JSON object such as "
                                     f"'{{\"{key}\": {{\"anon\": true}}}}'")
    return opts


def storage_options(f):
    """--storage-options: fsspec options for every URL the command reads or writes."""
    return click.option("--storage-options", "storage_options", default=None, metavar="JSON",
                        callback=_parse_storage_options,
                        help='fsspec options for URL inputs and outputs (s3://, gs://...), e.g. '
                             '\'{"endpoint_url": "http://127.0.0.1:9000"}\'. A key that is a URL prefix holds options '
                             'for the URLs below it, over the others: \'{"s3://public-bucket": {"anon": true}}\' reads '
                             "that bucket anonymously and writes elsewhere with credentials. Credentials and the "
                             "endpoint are also read from the usual places (AWS_* variables such as "
                             "AWS_ENDPOINT_URL, ~/.aws, fsspec config).")(f)


def output_flags(what: str):
    """--overwrite and --resume for a command writing ``what``."""

    def decorate(f):
        f = click.option("--resume", is_flag=True,
                         help=f"Continue an interrupted run into {what}; if {what} is complete and was made from the "
                              "same inputs and options, succeed and change nothing.")(f)
        return click.option("--overwrite", is_flag=True,
                             help=f"Replace {what} if it is an output astrodask wrote (never anything else).")(f)

    return decorate


def echo_convert_summary(s: dict) -> None:
    """The convert summary: counts, reasons, magnitudes, missing values."""
    click.echo(f"dataset: {s['dest']}")
    filtered = s.get("filtered") or {}
    click.echo(f"rows read {s['read']:,}  written {s['written']:,}  quarantined {s['quarantined']:,}"
               + (f"  filtered {sum(filtered.values()):,}" if filtered else ""))
    for reason, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  quarantined {n:,}: {reason}")
    for cut, n in filtered.items():
        click.echo(f"  filtered {n:,}: {cut}")
    mags = s.get("magnitudes")
    if mags:
        click.echo(f"magnitudes u..z: {mags if isinstance(mags, str) else '; '.join(mags)}")
    if s.get("row_ids"):
        click.echo(f"ids: generated ({s['row_ids']['why']})")
    nulls = s.get("nulls") or {}
    if nulls:
        click.echo("missing values (kept as nulls): " + ", ".join(f"{c} {n:,}" for c, n in nulls.items()))


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest")
@_convert_options
@output_flags("DEST")
@storage_options
@cluster_options
def convert(sources, dest, overwrite, resume, storage_options, cluster, quiet, **options):
    """Convert catalogue files (CSV, Parquet, FITS, SDSS bulk files, HATS catalogues; paths or URLs) into a
    validated Parquet dataset DEST.

    Rows that fail validation go to DEST/_quarantine with a reason.

    Example: astrodask convert data/sdss_sample.csv out/dataset
    """
    from . import ingest as stage

    cfg = stage.ConvertConfig(**options, sources=tuple(sources), dest=dest, overwrite=overwrite, resume=resume,
                              quiet=quiet, storage_options=storage_options)
    with _connect(cluster) as client:
        s = stage.run(cfg, client)
    echo_convert_summary(s)


@cli.command()
@click.argument("dest")
@click.option("--rows", required=True, type=float, help="Number of rows (e.g. 1e6).")
@click.option("--partitions", type=int, default=None, help="Output files (default: ~1M rows each).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default="parquet", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
@cluster_options
def synth(dest, rows, partitions, seed, fmt, overwrite, cluster, quiet):
    """Generate a synthetic SDSS-like catalogue calibrated to SDSS17, in parallel on the workers.

    Example: astrodask synth --rows 1e6 out/synthetic
    """
    from . import synth as stage

    cfg = stage.SynthConfig(rows=int(rows), dest=dest, partitions=partitions, seed=seed, format=fmt,
                            overwrite=overwrite, quiet=quiet)
    with _connect(cluster) as client:
        s = stage.run(cfg, client)
    click.echo(f"synthetic catalogue: {s['dest']} ({s['rows']:,} rows)")


@cli.command()
@click.argument("dataset")
@click.option("--model", "model_dir", required=True, help="Model directory to write.")
@_training_options
@output_flags("the model directory")
@storage_options
@cluster_options
def train(dataset, model_dir, overwrite, resume, storage_options, cluster, quiet, **options):
    """Train a model on DATASET; write it, metrics.json and report/ to --model.

    Example: astrodask train out/dataset --model out/model
    """
    from .learn import TrainConfig
    from .learn.stage import run

    cfg = TrainConfig(dataset, model_dir, **options, overwrite=overwrite, resume=resume, quiet=quiet,
                      storage_options=storage_options)
    with _connect(cluster) as client:
        r = run(cfg, client)
    click.echo(f"model: {r.model_dir}")
    click.echo(f"holdout: {_metrics_line(r.metrics)}")
    click.echo(f"report: {r.model_dir}/report/index.html")


@cli.command()
@click.argument("dataset")
@click.argument("model_dir")
@click.argument("out")
@_predict_options
@output_flags("OUT")
@storage_options
@cluster_options
def predict(dataset, model_dir, out, overwrite, resume, storage_options, cluster, quiet, **options):
    """Classify DATASET with the model in MODEL_DIR; write the predictions to OUT (Parquet, one file per input
    partition, or a HATS catalogue with --format hats).

    Example: astrodask predict out/dataset out/model out/predictions
    """
    from . import predict as stage

    cfg = stage.PredictConfig(**options, dataset=dataset, model_dir=model_dir, out=out, overwrite=overwrite,
                              resume=resume, quiet=quiet, storage_options=storage_options)
    with _connect(cluster) as client:
        r = stage.run(cfg, client)
    click.echo(f"predictions: {r['out']} ({r['rows']:,} rows in {r['files']} files)")


@cli.command()
@click.argument("predictions")
@click.option("--out", "out_dir", default=None, help="Where metrics.json and the figures go (default: print only).")
@output_flags("--out")
@storage_options
@cluster_options
def evaluate(predictions, out_dir, overwrite, resume, storage_options, cluster, quiet):
    """Metrics of a PREDICTIONS dataset that has true labels; a PNG confusion matrix and report with --out.

    Example: astrodask evaluate out/predictions --out out/evaluation
    """
    from . import evaluate as stage

    with _connect(cluster) as client:
        if out_dir:
            m = stage.run(client, predictions, out_dir, overwrite=overwrite, resume=resume, quiet=quiet,
                          storage_options=storage_options)
        else:
            m = stage.predictions(client, predictions, quiet=quiet, storage_options=storage_options)
    click.echo(_metrics_line(m))
    for c, v in m["per_class"].items():
        click.echo(f"  {c:7s} precision {v['precision']:.4f}  recall {v['recall']:.4f}  F1 {v['f1']:.4f}")
    if out_dir:
        click.echo(f"metrics: {out_dir}/metrics.json  confusion matrix: {out_dir}/confusion_matrix.png")


@cli.command("run")
@click.argument("sources", nargs=-1)
@click.option("--out", default="astrodask-output", show_default=True,
              help="Output directory (or URL): dataset/, model/, predictions/, evaluation/ go inside.")
@_convert_options
@_training_options
@_predict_options
@output_flags("each stage's output")
@storage_options
@cluster_options
def run_cmd(sources, out, overwrite, resume, storage_options, cluster, quiet, **options):
    """The end-to-end job: convert SOURCES (default: the embedded sample), train, predict, evaluate; every
    stage's options.

    Example: astrodask run --out out
    """
    from .ingest.config import ConvertOptions
    from .learn.config import TrainOptions
    from .pipeline import JobConfig, run
    from .predict import PredictOptions

    kw = {"sources": tuple(sources)} if sources else {}
    cfg = JobConfig(out=out, convert=ConvertOptions(**_take(ConvertOptions, options)),
                    train=TrainOptions(**_take(TrainOptions, options)),
                    predict=PredictOptions(**_take(PredictOptions, options)), storage_options=storage_options,
                    overwrite=overwrite, resume=resume, quiet=quiet, **kw)
    with _connect(cluster) as client:
        r = run(cfg, client)
    p = r["paths"]
    click.echo(f"dataset:     {p['dataset']}")
    click.echo(f"model:       {p['model']}  (report: {p['model']}/report/index.html)")
    click.echo(f"predictions: {p['predictions']}")
    click.echo(f"evaluation:  {p['evaluation']}")
    click.echo(f"holdout:     {_metrics_line(r['holdout'])}")
    click.echo(f"all rows:    {_metrics_line(r['all_rows'])}")


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


def main(argv=None, prog_name="astrodask") -> int:
    """Entry point: run the CLI; user errors -> one line on stderr and exit 1."""
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
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
    except Exception as exc:  # noqa: BLE001 - the user gets one line; ASTRODASK_DEBUG=1 shows the traceback
        import os

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
        msg = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"astrodask: internal error: {type(exc).__name__}: {msg} (set ASTRODASK_DEBUG=1 for details)",
                   err=True)
        return EXIT_INTERNAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
