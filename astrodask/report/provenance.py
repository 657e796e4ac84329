"""Where a report's numbers come from: inputs, options, versions, the cluster, time per stage, date."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

VERSION_PACKAGES = ("astrodask", "dask", "distributed", "numpy", "pyarrow", "pandas", "matplotlib")


@dataclass(frozen=True)
class InputRecord:
    """One input of the run: what it is, where, how many rows, and the id of that committed output."""

    role: str
    path: str
    rows: int | None = None
    output_id: str | None = None
    """The committed output's id (``_astrodask.json``): another output at the same path has another id."""


@dataclass(frozen=True)
class StageTime:
    stage: str
    seconds: float


@dataclass(frozen=True)
class ClusterInfo:
    workers: int
    threads_per_worker: int
    memory_per_worker: int
    """Bytes (0: unknown)."""
    scheduler: str = ""


@dataclass(frozen=True)
class Provenance:
    inputs: tuple[InputRecord, ...] = ()
    options: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    cluster: ClusterInfo | None = None
    stages: tuple[StageTime, ...] = ()
    date: str = ""

    def with_stage(self, stage: str, seconds: float) -> Provenance:
        return Provenance(self.inputs, self.options, self.versions, self.cluster,
                          (*self.stages, StageTime(stage, seconds)), self.date)


class TrainingRun(NamedTuple):
    """What the learning curve shows."""

    history: list
    """``history.json``: one record per epoch (epoch, train_loss, valid_loss, valid_accuracy...)."""
    best_epoch: int
    stop_reason: str
    """Why training ended, as a sentence."""
    rule: str
    """The stopping rule, as a sentence."""


def versions(packages=VERSION_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` ("not installed" when absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in packages:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "not installed"
    return out


def cluster_info(client) -> ClusterInfo | None:
    """Workers, threads and memory of ``client``'s cluster (None without a client)."""
    if client is None:
        return None
    from ..cluster.watch import workers_now

    workers = workers_now(client)
    threads = sorted({int(w.get("nthreads", 0)) for w in workers.values()}) or [0]
    memory = sorted({int(w.get("memory_limit", 0) or 0) for w in workers.values()}) or [0]
    return ClusterInfo(len(workers), threads[-1], memory[0], str(getattr(client.scheduler, "address", "")))


def input_record(role: str, location, meta: dict) -> InputRecord:
    """The record of an astrodask output at ``location`` from its manifest ``meta``."""
    rows = meta.get("rows", meta.get("written"))
    return InputRecord(role, str(location), int(rows) if rows is not None else None, meta.get("output_id"))


def make(client, inputs, options: dict, stages=()) -> Provenance:
    """The provenance of a run now, on ``client``'s cluster."""
    return Provenance(tuple(inputs), dict(options), versions(), cluster_info(client), tuple(stages),
                      time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
