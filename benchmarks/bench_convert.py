"""Benchmark of ``astrodask convert`` against plain pyarrow on the same CSV (not a test; pytest does not collect it).

    python benchmarks/bench_convert.py --rows 10M            # generates ~1.6 GB of CSV under /tmp
    python benchmarks/bench_convert.py --rows 1M --workers 2 --block-size 64MiB

Steps, in one run:

1. generate a synthetic SDSS-like CSV of N rows (``astrodask.synth`` when importable, else the real SDSS17
   file repeated with perturbed magnitudes and fresh ids), in a child process;
2. baseline, in a child process: ``pyarrow.csv.read_csv`` (all cores) + ``pyarrow.parquet.write_table``;
3. ``ingest.run`` on a LocalCluster (``--workers`` processes, one thread each; cluster start-up and the
   workers' imports not timed), sampling the RSS of the client and of every worker process every 0.1 s.

``--repeat N`` reports the fastest of N runs of each method (the machine may be shared).

``--specobj-bytes 1GB`` instead benchmarks the SDSS bulk layout: a specObj-dr17-layout file of that size is
streamed to disk (``tests/support/sdss_fixtures.write_big_specobj``) with a row-matched photoPosPlate-layout file, both in
a child process, then ``astrodask convert specObj.fits DEST --photometry photoPosPlate.fits`` runs on the
LocalCluster twice: on the big file and on a small one (``--small-bytes``, default 1/20 of it), reporting the
client's peak RSS of each (flat: it does not grow with the file) and the workers'.

Prints a Markdown table: rows/s, seconds, peak memory, and the ratio to pyarrow.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

REAL = common.SDSS17
CHUNK_ROWS = 1_000_000


def parse_count(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    mult = {"k": 10**3, "m": 10**6, "g": 10**9, "b": 10**9}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


# ------------------------------------------------------------------------------------------------ data


def _synth_chunks(rows: int):
    from astrodask import synth

    fmt = getattr(synth, "_csv_frame", lambda df: df)  # rounded floats, as `astrodask synth --format csv`
    for df in common.synth_frames(rows, CHUNK_ROWS):
        yield fmt(df)


def _real_chunks(rows: int):
    import numpy as np
    import pandas as pd

    base = pd.read_csv(REAL)
    rng = np.random.default_rng(0)
    for start in range(0, rows, CHUNK_ROWS):
        n = min(CHUNK_ROWS, rows - start)
        df = base.sample(n=n, replace=True, random_state=int(rng.integers(2**31))).reset_index(drop=True)
        df["obj_ID"] = np.arange(start, start + n, dtype=np.uint64) + 1237645879578460000
        for b in "ugriz":
            df[b] = (df[b] + rng.normal(0, 0.01, n)).round(5)
        yield df


def generate(rows: int, path: Path, data: str = "auto") -> str:
    """Write ``rows`` rows to ``path`` (one header); return where the rows came from."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if data in ("auto", "synth"):
        try:
            from astrodask import synth  # noqa: F401
        except ImportError:
            if data == "synth":
                sys.exit("astrodask.synth is not importable")
            data = "real"
        else:
            data = "synth"
    if data == "synth":
        chunks, origin = _synth_chunks(rows), "astrodask.synth, 18 columns"
    else:
        if not REAL.is_file():
            sys.exit(f"the real data ({REAL}) is not available")
        chunks = _real_chunks(rows)
        origin = f"{REAL.name} resampled with perturbed magnitudes and fresh ids, 11 columns"
    tmp = path.with_name(path.name + ".tmp")
    writer = None
    try:
        for df in chunks:
            t = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pacsv.CSVWriter(str(tmp), t.schema, write_options=pacsv.WriteOptions(quoting_style="none"))
            writer.write_table(t)
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, path)
    return origin


# ------------------------------------------------------------------------------------------------ baseline

BASELINE = r"""
import json, resource, sys, time
import pyarrow.csv as pacsv, pyarrow.parquet as pq
t0 = time.perf_counter()
table = pacsv.read_csv(sys.argv[1])
t1 = time.perf_counter()
pq.write_table(table, sys.argv[2], compression="zstd")
t2 = time.perf_counter()
print(json.dumps({"rows": table.num_rows, "read": t1 - t0, "write": t2 - t1, "seconds": t2 - t0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def baseline(csv: Path, out: Path, repeat: int) -> dict:
    """Best of ``repeat`` runs, each in a fresh process (its peak RSS is the process's own)."""
    runs = []
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-c", BASELINE, str(csv), str(out)], capture_output=True, text=True,
                           check=True)
        runs.append(json.loads(r.stdout))
    return min(runs, key=lambda r: r["seconds"])


# ------------------------------------------------------------------------------------------------ convert


class Sampler(threading.Thread):
    """Peak RSS of this process and of the given worker processes, sampled every ``interval`` seconds."""

    def __init__(self, worker_pids: list[int], interval: float = 0.1):
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.workers = [psutil.Process(p) for p in worker_pids]
        self.interval = interval
        self.stop = threading.Event()
        self.client_peak = 0
        self.worker_peak = 0  # largest single worker
        self.workers_sum_peak = 0  # all workers at the same moment

    def sample(self):
        self.client_peak = max(self.client_peak, self.me.memory_info().rss)
        rss = []
        for w in self.workers:
            try:
                rss.append(w.memory_info().rss)
            except Exception:  # noqa: BLE001 - a worker restarting
                pass
        if rss:
            self.worker_peak = max(self.worker_peak, max(rss))
            self.workers_sum_peak = max(self.workers_sum_peak, sum(rss))

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)
        self.sample()


def _warm_up():
    """Import what the tasks use (the baseline's imports are not timed either)."""
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet  # noqa: F401

    import astrodask.ingest  # noqa: F401


def run_convert(csv: Path, dest: Path, workers: int, block_size: int | None, repeat: int) -> dict:
    """Best of ``repeat`` conversions on one LocalCluster (start-up and worker imports not timed)."""
    from astrodask import ingest
    from astrodask.cluster import ClusterConfig, connect

    os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    t_start = time.perf_counter()
    best = None
    with connect(ClusterConfig(n_workers=workers, threads_per_worker=1), quiet=True) as client:
        client.run(_warm_up)
        startup = time.perf_counter() - t_start
        pids = list(client.run(os.getpid).values())
        for _ in range(repeat):
            shutil.rmtree(dest, ignore_errors=True)
            sampler = Sampler(pids)
            sampler.start()
            t0 = time.perf_counter()
            s = ingest.run(ingest.ConvertConfig((str(csv),), str(dest), block_size=block_size, quiet=True), client)
            seconds = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join()
            meta = json.loads((dest / "_astrodask.json").read_text())
            r = {"rows": s.read, "written": s.written, "quarantined": s.quarantined, "seconds": seconds,
                 "startup": startup, "client_peak": sampler.client_peak, "worker_peak": sampler.worker_peak,
                 "workers_sum_peak": sampler.workers_sum_peak, "parts": len(meta["parts"])}
            best = r if best is None or r["seconds"] < best["seconds"] else best
    return best


# ------------------------------------------------------------------------------------------------ main


# ------------------------------------------------------------------------------------------------ SDSS bulk


def generate_specobj_pair(target_bytes: int, spec_path: Path, photo_path: Path) -> dict:
    """Stream a specObj-layout file of ``target_bytes`` and its row-matched photoPosPlate (one chunk in memory)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import sdss_fixtures as sf

    info = sf.write_big_specobj(spec_path, target_bytes)
    step = 20_000

    def chunks():
        for c, start in enumerate(range(0, info.nrows, step)):
            spec = sf.big_specobj_rows(info.seed, info.nrows, start, min(start + step, info.nrows))
            t = sf._specobj_truth(spec_path, spec)
            rng = np.random.default_rng([info.seed, 3, c])
            objid = t.bestobjid
            parts = sf.decompose_objid(objid)
            safe = lambda a: np.where(objid != 0, a, 1)  # noqa: E731
            rows, _ = sf._photo_rows(rng, safe(parts["run"]), 301, safe(parts["camcol"]), safe(parts["field"]),
                                     safe(parts["id"]), t.plug_ra, t.plug_dec, np.where(t.cls == "", "GALAXY", t.cls),
                                     rng.uniform(15.0, 21.5, len(spec)), t.mjd, 0.7, 2)
            empty = np.flatnonzero(objid == 0)
            if len(empty):
                blank = sf._blank_rows(sf.PHOTOOBJ_LAYOUT, len(empty))
                for name in ("OBJID", "PARENTID", "FIELDID"):
                    sf._put_str(blank, name, "0")
                rows[empty] = blank
            yield rows

    sf.write_table_stream(photo_path, sf.PHOTOOBJ_LAYOUT, info.nrows, chunks())
    return {"rows": info.nrows, "spec_bytes": info.file_bytes, "photo_bytes": photo_path.stat().st_size,
            "keep": info.n_keep, "primary": info.n_primary}


def run_convert_pair(pairs: list[tuple[Path, Path]], dests: list[Path], workers: int) -> list[dict]:
    """Convert each (specObj, photoPosPlate) pair on one LocalCluster, sampling the client's and workers' RSS."""
    from astrodask import ingest
    from astrodask.cluster import ClusterConfig, connect

    os.environ.pop("DASK_SCHEDULER_ADDRESS", None)
    out = []
    with connect(ClusterConfig(n_workers=workers, threads_per_worker=1), quiet=True) as client:
        client.run(_warm_up)
        pids = list(client.run(os.getpid).values())
        for (spec, photo), dest in zip(pairs, dests):
            shutil.rmtree(dest, ignore_errors=True)
            sampler = Sampler(pids)
            sampler.start()
            t0 = time.perf_counter()
            s = ingest.run(ingest.ConvertConfig((str(spec),), str(dest), photometry=str(photo), quiet=True), client)
            seconds = time.perf_counter() - t0
            sampler.stop.set()
            sampler.join()
            meta = json.loads((dest / "_astrodask.json").read_text())
            out.append({"rows": s.read, "written": s.written, "quarantined": s.quarantined,
                        "filtered": s.filtered, "seconds": seconds, "client_peak": sampler.client_peak,
                        "worker_peak": sampler.worker_peak, "workers_sum_peak": sampler.workers_sum_peak,
                        "parts": len(meta["parts"])})
    return out


def main_specobj(args) -> int:
    from dask.utils import format_bytes, parse_bytes

    big = parse_bytes(args.specobj_bytes)
    small = parse_bytes(args.small_bytes) if args.small_bytes else big // 20
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="astrodask-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        pairs, gen = [], []
        for size in (small, big):
            spec, photo = work / f"specObj-{size}.fits", work / f"photoPosPlate-{size}.fits"
            t0 = time.perf_counter()
            if not (spec.is_file() and photo.is_file()):
                r = subprocess.run([sys.executable, __file__, "--generate-specobj", str(size), str(spec), str(photo)],
                                   capture_output=True, text=True, check=True)
                g = json.loads(r.stdout)
            else:
                g = {"rows": None, "spec_bytes": spec.stat().st_size, "photo_bytes": photo.stat().st_size}
            g["generated_s"] = time.perf_counter() - t0
            pairs.append((spec, photo))
            gen.append(g)
            print(f"input: {spec} ({format_bytes(g['spec_bytes'])}) + {photo.name} ({format_bytes(g['photo_bytes'])}), "
                  f"{g['generated_s']:.0f} s to generate", file=sys.stderr)
        res = run_convert_pair(pairs, [work / "ds-small", work / "ds-big"], args.workers)
        print(f"\n### convert: specObj-dr17 layout + photoPosPlate (--photometry), {os.cpu_count()} cores, "
              f"LocalCluster {args.workers}x1 thread, load average {os.getloadavg()[0]:.1f}\n")
        print("| specObj file | photoPosPlate file | rows read | written | quarantined | filtered | seconds | rows/s "
              "| MB/s (both files) | parts | peak RSS client | peak RSS per worker | workers together |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for g, r in zip(gen, res):
            mb = (g["spec_bytes"] + g["photo_bytes"]) / 1e6
            filt = ", ".join(f"{k} {v:,}" for k, v in r["filtered"].items())
            print(f"| {format_bytes(g['spec_bytes'])} | {format_bytes(g['photo_bytes'])} | {r['rows']:,} | "
                  f"{r['written']:,} | {r['quarantined']:,} | {filt} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} "
                  f"| {mb / r['seconds']:,.0f} | {r['parts']} | {mib(r['client_peak'])} | {mib(r['worker_peak'])} | "
                  f"{mib(r['workers_sum_peak'])} |")
        ratio = res[1]["client_peak"] / res[0]["client_peak"]
        print(f"\nclient peak RSS, big / small file: {ratio:.2f} (file size ratio {big / small:.0f})")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def mib(x: float) -> str:
    return f"{x / 2**20:,.0f} MiB"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1M", help="rows of CSV to generate (e.g. 1M, 10M, 2.5e6)")
    ap.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (1 thread each)")
    ap.add_argument("--block-size", default=None, help="convert --block-size (default: auto)")
    ap.add_argument("--workdir", default=None, help="where the CSV and outputs go (default: a new dir in /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV and outputs")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each method; the fastest is reported "
                    "(use 3 on a busy machine)")
    ap.add_argument("--data", choices=["auto", "synth", "real"], default="auto",
                    help="synthetic rows (astrodask.synth) or the real SDSS17 rows resampled (default: synth if any)")
    ap.add_argument("--generate-only", metavar="PATH", help=argparse.SUPPRESS)
    ap.add_argument("--specobj-bytes", default=None, help="benchmark a generated specObj-layout file of this size "
                    "(e.g. 1GB) with its photoPosPlate instead of CSV")
    ap.add_argument("--small-bytes", default=None, help="size of the small specObj file compared with (default 1/20)")
    ap.add_argument("--generate-specobj", nargs=3, metavar=("BYTES", "SPEC", "PHOTO"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate_specobj:
        size, spec, photo = args.generate_specobj
        print(json.dumps(generate_specobj_pair(int(size), Path(spec), Path(photo))))
        return 0
    if args.specobj_bytes:
        return main_specobj(args)
    rows = parse_count(args.rows)
    if args.generate_only:
        print(generate(rows, Path(args.generate_only), args.data))
        return 0
    from dask.utils import format_bytes, parse_bytes

    block = parse_bytes(args.block_size) if args.block_size else None
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="astrodask-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    csv = work / f"sdss_{args.data}_{rows}.csv"
    try:
        t0 = time.perf_counter()
        if not csv.is_file():
            r = subprocess.run([sys.executable, __file__, "--rows", str(rows), "--data", args.data,
                                "--generate-only", str(csv)],
                               capture_output=True, text=True, check=True)
            origin = r.stdout.strip()
        else:
            origin = "existing file"
        size = csv.stat().st_size
        print(f"input: {csv} ({rows:,} rows, {format_bytes(size)}; {origin}; generated in "
              f"{time.perf_counter() - t0:.1f} s)", file=sys.stderr)
        for d in ("pyarrow.parquet", "dataset"):
            shutil.rmtree(work / d, ignore_errors=True)
        base = baseline(csv, work / "pyarrow.parquet", args.repeat)
        conv = run_convert(csv, work / "dataset", args.workers, block, args.repeat)
        assert conv["rows"] == rows == base["rows"], (conv, base)
        b_rate, c_rate = rows / base["seconds"], rows / conv["seconds"]
        load = os.getloadavg()[0]
        print(f"\n### convert: {rows:,} rows, {format_bytes(size)} of CSV ({origin}), {os.cpu_count()} cores, "
              f"load average {load:.1f}, best of {args.repeat}\n")
        print("| method | seconds | rows/s | MB/s of CSV | ratio (rows/s) | peak RSS client | peak RSS workers |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(f"| pyarrow read_csv + write_table (1 process, all cores) | {base['seconds']:.2f} | {b_rate:,.0f} | "
              f"{size / 1e6 / base['seconds']:,.0f} | 1.00 | {mib(base['peak_rss'])} | - |")
        print(f"| astrodask convert (LocalCluster {args.workers}x1 thread, "
              f"{conv['parts']} parts) | {conv['seconds']:.2f} | {c_rate:,.0f} | {size / 1e6 / conv['seconds']:,.0f} "
              f"| {c_rate / b_rate:.2f} | {mib(conv['client_peak'])} | {mib(conv['worker_peak'])} per worker, "
              f"{mib(conv['workers_sum_peak'])} together |")
        print(f"\npyarrow: read {base['read']:.2f} s + write {base['write']:.2f} s; astrodask: cluster start-up "
              f"{conv['startup']:.1f} s (not timed), written {conv['written']:,}, quarantined {conv['quarantined']:,}; "
              f"block size {format_bytes(block) if block else 'auto'}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
