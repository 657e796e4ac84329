"""The ``astrodask`` command: a thin click shell over the Python API (no logic lives here).

Every command takes the cluster options; user errors print one line and exit 1, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import AstrodaskError, ConfigError

EXIT_USER_ERROR = 1
EXIT_INTERNAL = 2


def cluster_options(f):
    """--scheduler, local cluster sizing and TLS options, turned into a ClusterConfig ``cluster`` argument."""

    @click.option("--scheduler", envvar="DASK_SCHEDULER_ADDRESS", default=None, metavar="ADDRESS",
                  help="Running Dask scheduler (tcp://host:8786 or tls://...); default: start a LocalCluster. "
                       "Also read from DASK_SCHEDULER_ADDRESS.")
    @click.option("--workers", type=int, default=None, help="LocalCluster worker processes (default: one per core).")
    @click.option("--threads", type=int, default=1, show_default=True, help="LocalCluster threads per worker.")
    @click.option("--memory-limit", default="auto", show_default=True, help="LocalCluster memory per worker.")
    @click.option("--tls-ca", type=click.Path(), default=None, help="CA certificate (PEM) for a tls:// scheduler.")
    @click.option("--tls-cert", type=click.Path(), default=None, help="Client certificate (PEM).")
    @click.option("--tls-key", type=click.Path(), default=None, help="Client private key (PEM).")
    @click.option("--quiet", "-q", is_flag=True, help="No progress bars or dashboard link.")
    @functools.wraps(f)
    def wrapper(*args, scheduler, workers, threads, memory_limit, tls_ca, tls_cert, tls_key, quiet, **kw):
        from .cluster import ClusterConfig

        cluster = ClusterConfig(scheduler=scheduler, n_workers=workers, threads_per_worker=threads,
                                memory_limit=memory_limit, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                quiet=quiet)
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


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest")
@click.option("--block-size", default=None, help="Bytes of CSV per output file, e.g. 64MiB (default: by input size).")
@click.option("--overwrite", is_flag=True, help="Replace DEST if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion into DEST.")
@cluster_options
def convert(sources, dest, block_size, overwrite, resume, cluster, quiet):
    """Convert catalogue files (CSV, Parquet, FITS; paths or URLs) into a validated Parquet dataset DEST.

    Rows that fail validation go to DEST/_quarantine with a reason.

    Example: astrodask convert data/sdss_sample.csv out/dataset
    """
    from dask.utils import parse_bytes

    from . import convert as stage

    try:
        block_bytes = parse_bytes(block_size) if block_size else None
    except ValueError:
        raise ConfigError("block_size", f"cannot read {block_size!r} as a size", "use e.g. 64MiB") from None
    cfg = stage.ConvertConfig(tuple(sources), dest, block_size=block_bytes,
                              overwrite=overwrite, resume=resume, quiet=quiet)
    with _connect(cluster) as client:
        s = stage.run(cfg, client)
    click.echo(f"dataset: {s['dest']}")
    click.echo(f"rows read {s['read']:,}  written {s['written']:,}  quarantined {s['quarantined']:,}")
    for reason, n in sorted(s["reasons"].items(), key=lambda kv: -kv[1]):
        click.echo(f"  quarantined {n:,}: {reason}")


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


def training_options(f):
    for opt in reversed([
        click.option("--features", type=click.Choice(["spectroscopic", "photometric"]), default="spectroscopic",
                     show_default=True, help="photometric: no redshift, for objects without a spectrum."),
        click.option("--mode", type=click.Choice(["parallel", "incremental"]), default="parallel", show_default=True,
                     help="parallel: gradients on all workers at once + L-BFGS; incremental: dask-ml Incremental SGD."),
        click.option("--epochs", type=int, default=None, help="Maximum passes over the data (parallel 400, incremental 10)."),
        click.option("--l2", type=float, default=1e-5, show_default=True, help="L2 strength."),
        click.option("--class-weight", type=click.Choice(["balanced"]), default=None, help="Weight classes."),
        click.option("--cache", type=click.Choice(["auto", "memory", "stream"]), default="auto", show_default=True,
                     help="Persist features on the workers or re-read Parquet every pass."),
    ]):
        f = opt(f)
    return f


@cli.command()
@click.argument("dataset")
@click.option("--model", "model_dir", required=True, help="Model directory to write.")
@training_options
@click.option("--patience", type=int, default=50, show_default=True, help="Early stopping patience (0: off).")
@click.option("--monitor", type=click.Choice(["accuracy", "loss"]), default="accuracy", show_default=True,
              help="Validation score watched by early stopping.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the model directory if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted training from its last checkpoint.")
@cluster_options
def train(dataset, model_dir, features, mode, epochs, l2, class_weight, cache, patience, monitor, seed, overwrite, resume,
          cluster, quiet):
    """Train a model on DATASET; write it, metrics.json and report/ to --model.

    Example: astrodask train out/dataset --model out/model
    """
    from . import train as stage

    cfg = stage.TrainConfig(dataset, model_dir, features=features, mode=mode, epochs=epochs, l2=l2,
                            class_weight=class_weight, cache=cache, patience=patience, monitor=monitor, seed=seed,
                            overwrite=overwrite, resume=resume, quiet=quiet)
    with _connect(cluster) as client:
        r = stage.run(cfg, client)
    click.echo(f"model: {r['model_dir']}")
    click.echo(f"holdout: {_metrics_line(r['metrics'])}")
    click.echo(f"report: {Path(r['model_dir']) / 'report' / 'index.html'}")


@cli.command()
@click.argument("dataset")
@click.argument("model_dir")
@click.argument("out")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run; scored partitions are kept.")
@cluster_options
def predict(dataset, model_dir, out, overwrite, resume, cluster, quiet):
    """Classify DATASET with the model in MODEL_DIR; write Parquet predictions to OUT (one file per partition).

    Example: astrodask predict out/dataset out/model out/predictions
    """
    from . import predict as stage

    cfg = stage.PredictConfig(dataset, model_dir, out, overwrite=overwrite, resume=resume, quiet=quiet)
    with _connect(cluster) as client:
        r = stage.run(cfg, client)
    click.echo(f"predictions: {r['out']} ({r['rows']:,} rows in {r['files']} files)")


@cli.command()
@click.argument("predictions")
@click.option("--out", "out_dir", default=None, help="Where metrics.json and the figures go (default: print only).")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@cluster_options
def evaluate(predictions, out_dir, overwrite, cluster, quiet):
    """Metrics of a PREDICTIONS dataset that has true labels; a PNG confusion matrix and report with --out.

    Example: astrodask evaluate out/predictions --out out/evaluation
    """
    from . import evaluate as stage

    with _connect(cluster) as client:
        if out_dir:
            m = stage.run(client, predictions, out_dir, overwrite=overwrite, quiet=quiet)
        else:
            m = stage.predictions(client, predictions, quiet=quiet)
    click.echo(_metrics_line(m))
    for c, v in m["per_class"].items():
        click.echo(f"  {c:7s} precision {v['precision']:.4f}  recall {v['recall']:.4f}  F1 {v['f1']:.4f}")
    if out_dir:
        where = Path(out_dir).absolute()
        click.echo(f"metrics: {where / 'metrics.json'}  confusion matrix: {where / 'confusion_matrix.png'}")


def job_options(f):
    f = click.option("--out", default="astrodask-output", show_default=True, help="Output directory.")(f)
    f = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(f)
    f = click.option("--resume", is_flag=True, help="Skip finished stages, continue an interrupted one.")(f)
    return training_options(cluster_options(f))


@cli.command("run")
@click.argument("sources", nargs=-1)
@job_options
def run_cmd(sources, out, overwrite, resume, features, mode, epochs, l2, class_weight, cache, cluster, quiet):
    """The end-to-end job: convert SOURCES (default: the embedded sample), train, predict, evaluate.

    Example: astrodask run --out out
    """
    from .pipeline import JobConfig, run

    kw = {"sources": tuple(sources)} if sources else {}
    cfg = JobConfig(out=out, features=features, mode=mode, epochs=epochs, l2=l2, class_weight=class_weight,
                    cache=cache, overwrite=overwrite, resume=resume, quiet=quiet, **kw)
    with _connect(cluster) as client:
        r = run(cfg, client)
    p = r["paths"]
    click.echo(f"dataset:     {p['dataset']}")
    click.echo(f"model:       {p['model']}  (report: {p['model']}/report/index.html)")
    click.echo(f"predictions: {p['predictions']}")
    click.echo(f"evaluation:  {p['evaluation']}")
    click.echo(f"holdout:     {_metrics_line(r['holdout'])}")
    click.echo(f"all rows:    {_metrics_line(r['all_rows'])}")


def main(argv=None, prog_name="astrodask") -> int:
    """Entry point: run the CLI; user errors -> one line on stderr and exit 1."""
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("astrodask: aborted", err=True)
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
    except KeyboardInterrupt:
        click.echo("astrodask: interrupted; rerun with --resume to continue", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - the user gets one line; ASTRODASK_DEBUG=1 shows the traceback
        import os

        if os.environ.get("ASTRODASK_DEBUG"):
            raise
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
