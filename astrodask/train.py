"""Stage 4: fit the multinomial logistic regression across the workers.

Two modes:

``parallel`` (default)
    Spark MLlib's approach: every step, each worker computes the softmax loss and gradient on its own
    partitions at the same time; the partial sums are added on the workers (a fixed-order tree, so the
    model is the same whatever the number of workers) and only the summed gradient (classes x features)
    reaches the client, which minimises the L2-regularised mean loss with L-BFGS (scipy). One epoch is
    one pass over the data (one L-BFGS iteration). Early stopping watches the validation loss.

``incremental``
    The library path: dask-ml ``Incremental(SGDClassifier(loss="log_loss"))``, which calls ``partial_fit``
    on one block at a time. Rows are first shuffled across partitions on the workers (blocks by id hash);
    dask-ml has no epochs, so each epoch here permutes the rows within each block and the order of the
    blocks, and calls ``partial_fit`` over all blocks once. Kept as the baseline.

Features are persisted on the workers when they fit in the cluster's memory and re-read from Parquet
each pass otherwise (``cache="auto"``). After every iteration a checkpoint is written to the model's
staging directory; ``resume`` continues from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import evaluate, lbfgs, schema
from .cluster import worker_memory
from .console import log, track
from .dataset import N_BUCKETS, TEST, TEST_BUCKETS, TRAIN, VALID, Dataset, hash64, open_dataset, read_part, split_of
from .errors import AstrodaskError, ConfigError
from .features import (
    QUANTILE_LEVELS,
    RECIPES,
    FeatureSpec,
    base_matrix,
    check_feature_set,
    merge_quantiles,
    quantile_summary,
    raw_columns,
    spec_from_quantiles,
)
from .model import SoftmaxModel, softmax
from .storage import StagedOutput, write_json_atomic

MODES = ("parallel", "incremental")
CACHES = ("auto", "memory", "stream")
K = len(schema.CLASSES)
FEATURES_JSON = "features.json"
"""The fitted (scaled) feature spec in the model's staging directory, reused by ``--resume``."""
CLASS_INDEX = {c: k for k, c in enumerate(schema.CLASSES)}


@dataclass(frozen=True)
class TrainConfig:
    """How to train."""

    dataset: str
    """Parquet dataset made by ``astrodask convert`` (or ``synth``); needs ``class``."""
    model_dir: str
    """Where the model directory goes (model.json, weights.npz, metrics.json, report/)."""
    features: str = "spectroscopic"
    """``spectroscopic`` (bands, colours, redshift) or ``photometric`` (no redshift)."""
    mode: str = "parallel"
    """``parallel`` (data-parallel gradient + L-BFGS) or ``incremental`` (dask-ml Incremental SGD)."""
    epochs: int | None = None
    """Maximum passes over the training data: L-BFGS iterations (parallel, default 400) or SGD epochs
    (incremental, default 10)."""
    l2: float = 1e-5
    """L2 strength on the weights: the objective is mean log-loss + l2/2 * |W|^2 (scikit-learn's
    C = 1 / (l2 * n_train))."""
    class_weight: str | None = None
    """None (every row weighs 1) or ``balanced`` (rows weighted by n / (classes * n_class))."""
    patience: int = 50
    """Stop when the monitored validation score has not improved for this many epochs (0: never stop
    early; the model is then the last iterate, else the best epoch's)."""
    monitor: str = "accuracy"
    """Validation score for early stopping: ``accuracy`` (what the classifier is for; the validation log-loss
    can rise from a few over-confident rows while accuracy still improves) or ``loss``."""
    tol: float = 1e-9
    """L-BFGS stops when the relative decrease of the objective falls below this."""
    learning_rate: str = "optimal"
    """Incremental mode: scikit-learn SGD schedule (``optimal``, ``invscaling``, ``adaptive``, ``constant``)."""
    eta0: float = 0.01
    """Incremental mode: initial learning rate for the ``invscaling``/``adaptive``/``constant`` schedules."""
    cache: str = "auto"
    """``memory`` persists features on the workers, ``stream`` re-reads Parquet every pass, ``auto`` picks
    ``memory`` when the expanded features fit in half the workers' memory. Parallel mode only: the
    incremental mode always persists its shuffled blocks (dask-ml trains on in-memory arrays)."""
    seed: int = 0
    """Seed for shuffling (incremental mode)."""
    overwrite: bool = False
    """Replace an existing model directory."""
    resume: bool = False
    """Continue an interrupted training from its last checkpoint."""
    report: bool = True
    """Write the HTML report with figures."""
    quiet: bool = False
    """No progress bars."""

    def __post_init__(self):
        check_feature_set(self.features)
        if self.mode not in MODES:
            raise ConfigError("mode", f"unknown mode {self.mode!r}", f"use one of {', '.join(MODES)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError("epochs", f"must be at least 1, got {self.epochs}", "pass --epochs 1 or more")
        if not (self.l2 >= 0 and np.isfinite(self.l2)):
            raise ConfigError("l2", f"must be a finite number >= 0, got {self.l2}", "pass e.g. --l2 1e-5")
        if self.class_weight not in (None, "balanced"):
            raise ConfigError("class_weight", f"unknown value {self.class_weight!r}", "use balanced or leave it out")
        if self.monitor not in ("accuracy", "loss"):
            raise ConfigError("monitor", f"unknown score {self.monitor!r}", "use accuracy or loss")
        if self.patience < 0:
            raise ConfigError("patience", "must be >= 0", "pass 0 to disable early stopping")
        if self.cache not in CACHES:
            raise ConfigError("cache", f"unknown value {self.cache!r}", f"use one of {', '.join(CACHES)}")
        if self.learning_rate not in ("optimal", "invscaling", "adaptive", "constant"):
            raise ConfigError("learning_rate", f"unknown schedule {self.learning_rate!r}",
                              "use optimal, invscaling, adaptive or constant")
        if self.eta0 <= 0:
            raise ConfigError("eta0", "must be positive", "pass e.g. --eta0 0.01")

    @property
    def max_epochs(self) -> int:
        return self.epochs or (400 if self.mode == "parallel" else 10)

    def fingerprint(self) -> str:
        """Hash of the settings that determine the model (a checkpoint resumes only with the same ones)."""
        keep = {k: v for k, v in asdict(self).items() if k not in ("overwrite", "resume", "quiet", "report",
                                                                     "model_dir", "epochs", "cache")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------- worker tasks


def _labelled(file: str, feature_set: str, extra=()) -> pd.DataFrame:
    cols = [schema.ID, schema.CLASS, *raw_columns(feature_set), *extra]
    df = read_part(file, columns=list(dict.fromkeys(cols)))
    return df


def _summaries_task(file: str, feature_set: str, base_names: tuple[str, ...]) -> dict:
    """Pass 1 on a partition: quantile summaries of raw inputs and base features, moments, class counts."""
    df = _labelled(file, feature_set)
    split = split_of(df[schema.ID].to_numpy())
    tr = df[split == TRAIN]
    raw = tr[list(raw_columns(feature_set))].to_numpy(dtype="float64", na_value=np.nan)
    base = base_matrix(tr, base_names, None)
    finite = np.isfinite(base)
    b0 = np.where(finite, base, 0.0)
    counts = {s: df.loc[split == s, schema.CLASS].value_counts().reindex(schema.CLASSES, fill_value=0).to_numpy()
              for s in (TRAIN, VALID, TEST)}
    return {
        "raw": quantile_summary(raw),
        "base": quantile_summary(base),
        "n": finite.sum(axis=0),
        "sum": b0.sum(axis=0),
        "sumsq": (b0 * b0).sum(axis=0),
        "counts": counts,
    }


def _moments_task(block, spec: FeatureSpec) -> tuple:
    """Count, sum and sum of squares of a partition's expanded (unscaled) training features: the scaler's
    statistics (float64 sums, accumulated in row chunks so no float64 copy of the partition is made)."""
    x = _materialize(block, spec)["X"][TRAIN]
    s, ss = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for start in range(0, len(x), 65536):
        c = x[start:start + 65536].astype(np.float64)
        s += c.sum(axis=0)
        ss += np.einsum("ij,ij->j", c, c)
    return len(x), s, ss


def _standardise_block(block: dict, spec: FeatureSpec) -> dict:
    """Apply the fitted scaler to a block persisted unscaled, in place (it is the same data either way, and a
    copy would double the workers' memory); returns the block."""
    for x in block["X"].values():
        spec.standardise(x)
    return block


def _load_block(file: str, spec: FeatureSpec, weights: np.ndarray) -> dict:
    """A partition's expanded features, labels and row weights, by split (TRAIN, VALID)."""
    return _block_from_frame(_labelled(file, spec.feature_set), spec, weights, file)


def _block_from_frame(df: pd.DataFrame, spec: FeatureSpec, weights: np.ndarray, where: str = "a partition") -> dict:
    split = split_of(df[schema.ID].to_numpy())
    y = df[schema.CLASS].map(CLASS_INDEX)
    if y.isna().any():
        bad = df.loc[y.isna(), schema.CLASS].iloc[0]
        raise AstrodaskError(f"{where}: class value {bad!r} is not one of {', '.join(schema.CLASSES)}; reconvert")
    y = y.to_numpy(dtype=np.int8)
    out = {"X": {}, "y": {}, "w": {}}
    for s in (TRAIN, VALID):
        m = split == s
        out["X"][s] = spec.expand(df[m])
        out["y"][s] = y[m]
        out["w"][s] = weights[y[m]].astype(np.float32)
    return out


def _materialize(block, spec: FeatureSpec, weights: np.ndarray | None = None) -> dict:
    if isinstance(block, dict):
        return block
    return _load_block(block, spec, np.ones(K) if weights is None else weights)


def _loss_grad(x: np.ndarray, y: np.ndarray, w: np.ndarray, theta: np.ndarray):
    """Weighted softmax loss sum, gradient sum ((K, d+1), last column = intercept), weight sum, correct count."""
    coef = theta[:, :-1].astype(np.float32)
    logits = (x @ coef.T).astype(np.float64) + theta[:, -1]
    logits -= logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits).sum(axis=1))
    logp_true = logits[np.arange(len(y)), y] - lse
    p = np.exp(logits - lse[:, None])
    correct = float(w[p.argmax(axis=1) == y].sum())
    r = p
    r[np.arange(len(y)), y] -= 1.0
    r *= w[:, None]
    g = np.empty_like(theta)
    # x.T @ r, not r.T @ x: BLAS is several times faster with the long dimension contiguous in both operands
    g[:, :-1] = (x.T @ r.astype(np.float32)).T
    g[:, -1] = r.sum(axis=0)
    return float(-(w * logp_true).sum()), g, float(w.sum()), correct


def _grad_task(block, theta: np.ndarray, spec: FeatureSpec, weights: np.ndarray) -> dict:
    b = _materialize(block, spec, weights)
    out = {}
    for s, key in ((TRAIN, "train"), (VALID, "valid")):
        if len(b["y"][s]):
            out[key] = _loss_grad(b["X"][s], b["y"][s], b["w"][s], theta)
        else:
            out[key] = (0.0, np.zeros_like(theta), 0.0, 0.0)
    return out


def _sum_grads(*parts: dict) -> dict:
    out = {}
    for key in ("train", "valid"):
        loss = sum(p[key][0] for p in parts)
        g = parts[0][key][1].copy()
        for p in parts[1:]:
            g += p[key][1]
        out[key] = (loss, g, sum(p[key][2] for p in parts), sum(p[key][3] for p in parts))
    return out


def _permuted(block: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(block["y"][TRAIN]))
    return block["X"][TRAIN][idx], block["y"][TRAIN][idx]


def _n_train(block: dict) -> int:
    return len(block["y"][TRAIN])


# ------------------------------------------------------------------------------------- driver


class _Checkpoint:
    """Training state in the staging directory, replaced atomically after every epoch.

    ``checkpoint.npz`` holds arrays (optimizer state, best weights), ``checkpoint.json`` the history and
    counters; the JSON is written last and names the npz it belongs to, so a kill between the two
    writes leaves the previous consistent pair.
    """

    def __init__(self, stage: Path, fingerprint: str):
        self.dir = stage
        self.json = stage / "checkpoint.json"
        self.fingerprint = fingerprint

    def save(self, arrays: dict, state: dict) -> None:
        epoch = int(state["epoch"])
        npz = self.dir / f"checkpoint-{epoch:06d}.npz"
        tmp = self.dir / f".checkpoint-{epoch:06d}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(npz)
        write_json_atomic(self.json, {"fingerprint": self.fingerprint, "arrays": npz.name, **state})
        for old in self.dir.glob("checkpoint-*.npz"):
            if old != npz:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict, dict] | None:
        if not self.json.is_file():
            return None
        state = json.loads(self.json.read_text())
        if state.get("fingerprint") != self.fingerprint:
            raise AstrodaskError(
                "the interrupted training used other settings (dataset, features, mode, l2...); "
                "rerun with the same options, or without --resume to start again"
            )
        with np.load(self.dir / state["arrays"], allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, state

    def clear(self) -> None:
        self.json.unlink(missing_ok=True)
        for old in self.dir.glob("checkpoint-*.npz"):
            old.unlink(missing_ok=True)


class Trainer:
    """Holds the cluster-side state of one training run (blocks, spec, weights)."""

    def __init__(self, cfg: TrainConfig, client, ds: Dataset, stage: Path):
        self.cfg, self.client, self.ds, self.stage = cfg, client, ds, stage

    # -- features --------------------------------------------------------------------------------

    def fit_features(self) -> tuple[FeatureSpec, dict]:
        """Pass 1: knots, medians and base statistics from quantile summaries -> the unscaled spec and the
        class counts by split (on ``--resume``, the scaled spec saved by ``fit_scaler``)."""
        cfg, client = self.cfg, self.client
        cached = self.stage / FEATURES_JSON
        if cfg.resume and cached.is_file():
            doc = json.loads(cached.read_text())
            if doc.get("fingerprint") == cfg.fingerprint():
                log("resume: reusing fitted features")
                return FeatureSpec.from_dict(doc["spec"]), {int(k): np.asarray(v) for k, v in doc["counts"].items()}
        recipe = RECIPES[cfg.features]
        summ = track(client.map(_summaries_task, self.ds.files, feature_set=cfg.features, base_names=recipe.base,
                                pure=False),
                     "features: quantiles", cfg.quiet)
        counts = {s: sum(p["counts"][s] for p in summ) for s in (TRAIN, VALID, TEST)}
        if counts[TRAIN].sum() == 0:
            raise AstrodaskError(f"{self.ds.path}: no training rows (the dataset is empty); convert a catalogue with data")
        n = sum(p["n"] for p in summ)
        mean = sum(p["sum"] for p in summ) / np.maximum(n, 1)
        std = np.sqrt(np.maximum(sum(p["sumsq"] for p in summ) / np.maximum(n, 1) - mean**2, 0.0))
        raw_q = merge_quantiles([p["raw"] for p in summ], QUANTILE_LEVELS)
        base_q = merge_quantiles([p["base"] for p in summ], QUANTILE_LEVELS)
        if np.isnan(raw_q).any():
            empty = [c for k, c in enumerate(raw_columns(cfg.features)) if np.isnan(raw_q[:, k]).all()]
            raise AstrodaskError(
                f"{self.ds.path}: column(s) {', '.join(empty)} have no values in the training rows; "
                "use --features photometric if the catalogue has no redshift"
            )
        return spec_from_quantiles(cfg.features, recipe, raw_q, base_q, mean, std), counts

    def fit_scaler(self, spec: FeatureSpec, counts: dict, items: list) -> FeatureSpec:
        """The scaler's statistics summed on the workers over ``items`` (unscaled persisted blocks, or files
        expanded on the fly); returns the scaled spec and saves it for ``--resume``."""
        mom = track(self.client.map(_moments_task, items, spec=spec, pure=False), "features: scaling", self.cfg.quiet)
        n_rows = sum(m[0] for m in mom)
        mu = sum(m[1] for m in mom) / max(n_rows, 1)
        sd = np.sqrt(np.maximum(sum(m[2] for m in mom) / max(n_rows, 1) - mu**2, 0.0))
        spec = replace(spec, mean=mu, scale=np.where(sd > 1e-12, sd, 1.0))
        write_json_atomic(self.stage / FEATURES_JSON, {"fingerprint": self.cfg.fingerprint(), "spec": spec.to_dict(),
                                                       "counts": {str(k): v.tolist() for k, v in counts.items()}})
        return spec

    def class_weights(self, counts: dict) -> np.ndarray:
        if self.cfg.class_weight != "balanced":
            return np.ones(K)
        c = counts[TRAIN].astype(np.float64)
        return np.where(c > 0, c.sum() / (K * np.maximum(c, 1)), 0.0)

    def blocks(self, spec: FeatureSpec, weights: np.ndarray) -> tuple[list, str]:
        """Persisted feature blocks (futures) or file paths (stream), and which was chosen."""
        cache = self.cfg.cache
        # the persisted blocks hold the TRAIN and VALID rows only (float32 features, label, weight)
        need = self.ds.n_rows * (1 - TEST_BUCKETS / N_BUCKETS) * (spec.n_features + 2) * 4
        mem = worker_memory(self.client)
        if cache == "auto":
            cache = "memory" if mem == 0 or need < 0.5 * mem else "stream"
        log(f"features: {spec.n_features} per row, ~{need / 2**30:.2f} GiB expanded; "
            f"workers have {mem / 2**30:.1f} GiB -> {cache}")
        if cache == "stream":
            return list(self.ds.files), cache
        futs = self.client.map(_load_block, self.ds.files, spec=spec, weights=weights, pure=False)
        track(futs, "features: persist", self.cfg.quiet, gather=False)
        return futs, cache

    def scaled_blocks(self, spec: FeatureSpec, counts: dict, weights: np.ndarray) -> tuple[FeatureSpec, list, str]:
        """Fit the scaler if ``spec`` has none and return (scaled spec, blocks, cache). With the memory cache the
        blocks are persisted unscaled, the scaler's sums are taken from them and they are standardised in
        place: one expansion of the data instead of two."""
        if spec.mean is not None:
            return (spec, *self.blocks(spec, weights))
        blocks, cache = self.blocks(spec, weights)
        spec = self.fit_scaler(spec, counts, blocks)
        if cache == "memory":
            blocks = self.client.map(_standardise_block, blocks, spec=spec, pure=False)
        return spec, blocks, cache

    # -- parallel: data-parallel gradient + L-BFGS ------------------------------------------------

    def evaluate_sums(self, blocks, theta, spec, weights) -> dict:
        futs = self.client.map(_grad_task, blocks, theta=theta, spec=spec, weights=weights, pure=False)
        # fixed-order two-level tree: the sum does not depend on which worker holds what
        fan = 16
        level = [self.client.submit(_sum_grads, *futs[i:i + fan], pure=False) for i in range(0, len(futs), fan)]
        return self.client.submit(_sum_grads, *level, pure=False).result()

    def fit_parallel(self, spec, blocks, weights, ckpt: _Checkpoint) -> tuple[np.ndarray, list[dict]]:
        cfg = self.cfg
        shape = (K, spec.n_features + 1)
        last: dict = {}

        def fg(flat):
            theta = flat.reshape(shape)
            s = self.evaluate_sums(blocks, theta, spec, weights)
            loss, g, wsum, _ = s["train"]
            wsum = max(wsum, 1e-300)
            obj = loss / wsum + 0.5 * cfg.l2 * float((theta[:, :-1] ** 2).sum())
            grad = g / wsum
            grad[:, :-1] += cfg.l2 * theta[:, :-1]
            last.update(train=s["train"], valid=s["valid"])
            return obj, grad.ravel()

        restored = ckpt.load() if cfg.resume else None
        if restored is not None:
            arrays, saved = restored
            st = lbfgs.LbfgsState.from_arrays(arrays)
            history, best = saved["history"], {"score": saved["best_score"], "theta": arrays["best"],
                                               "epoch": saved["best_epoch"]}
            log(f"resume: continuing from epoch {st.iteration}")
        else:
            st = lbfgs.start(fg, np.zeros(shape).ravel())
            history, best = [], {"score": np.inf, "theta": np.zeros(shape), "epoch": 0}
        bar = _bar(cfg.max_epochs, st.iteration, "train (L-BFGS)", cfg.quiet)
        t0 = time.perf_counter() - (history[-1]["seconds"] if history else 0.0)
        stopped = restored is not None and restored[1].get("stopped")
        while not (stopped or st.converged) and st.iteration < cfg.max_epochs:
            before = st.iteration
            st = lbfgs.step(fg, st, tol=cfg.tol)
            if st.iteration == before:  # the line search found no decrease: converged at float precision
                break
            tl, _, tw, tc = last["train"]
            vl, _, vw, vc = last["valid"]
            rec = {"epoch": st.iteration, "objective": st.f, "train_loss": tl / max(tw, 1e-300),
                   "train_accuracy": tc / max(tw, 1e-300), "valid_loss": vl / vw if vw else None,
                   "valid_accuracy": vc / vw if vw else None, "passes": st.evaluations,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            score = _score(rec, cfg.monitor)
            if score < best["score"]:
                best = {"score": score, "theta": st.x.reshape(shape).copy(), "epoch": st.iteration}
            if cfg.patience and st.iteration - best["epoch"] >= cfg.patience:
                log(f"early stop at epoch {st.iteration}: validation {cfg.monitor} best at epoch {best['epoch']}")
                stopped = True
            ckpt.save({**st.to_arrays(), "best": best["theta"]},
                      {"epoch": st.iteration, "history": history, "best_score": best["score"],
                       "best_epoch": best["epoch"], "stopped": stopped})
            bar.update(1)
            bar.set_postfix(valid_accuracy=f"{rec['valid_accuracy'] or 0:.4f}", valid_loss=f"{rec['valid_loss'] or 0:.4f}")
            last.clear()
        bar.close()
        # with early stopping, the epoch with the best validation loss; without, the optimum reached
        return (best["theta"] if cfg.patience else st.x.reshape(shape)), history

    # -- incremental: dask-ml Incremental(SGDClassifier) -------------------------------------------

    def shuffled_blocks(self, spec, weights) -> list:
        """Feature blocks of rows spread over the blocks by a hash of their id (a shuffle on the workers).

        Partitions may be sorted by sky position, so they are not IID; after this shuffle every block is a
        random sample of the whole catalogue. Each epoch then permutes rows within blocks and block order.
        """
        cols = [schema.ID, schema.CLASS, *raw_columns(spec.feature_set)]
        ddf = self.ds.to_dask(columns=list(dict.fromkeys(cols)))
        n = ddf.npartitions
        salt = 0x5EED + self.cfg.seed
        ddf = ddf.assign(_block=ddf[schema.ID].map_partitions(
            lambda s: pd.Series((hash64(s.to_numpy(), salt) % np.uint64(n)).astype(np.int64), index=s.index),
            meta=(None, "int64")))
        parts = self.client.compute(ddf.shuffle(on="_block", npartitions=n).to_delayed())
        futs = self.client.map(_block_from_frame, parts, spec=spec, weights=weights, pure=False)
        track(futs, "features: shuffle", self.cfg.quiet, gather=False)
        return futs

    def fit_incremental(self, spec, weights, ckpt: _Checkpoint) -> tuple[np.ndarray, list[dict]]:
        import dask.array as da
        from dask import delayed
        from dask_ml.wrappers import Incremental
        from sklearn.linear_model import SGDClassifier

        cfg, client = self.cfg, self.client
        blocks = self.shuffled_blocks(spec, weights)
        sizes = client.gather(client.map(_n_train, blocks, pure=False))
        nonempty = [(b, n) for b, n in zip(blocks, sizes) if n]
        d = spec.n_features
        cw = {k: float(weights[k]) for k in range(K)} if cfg.class_weight else None
        sgd = SGDClassifier(loss="log_loss", penalty="l2", alpha=max(cfg.l2, 1e-12), learning_rate=cfg.learning_rate,
                            eta0=cfg.eta0, random_state=cfg.seed, class_weight=cw, average=False)
        inc = Incremental(sgd, shuffle_blocks=True, random_state=cfg.seed, scoring=None)
        history: list[dict] = []
        start = 0
        restored = ckpt.load() if cfg.resume else None
        if restored is not None:
            arrays, state = restored
            theta = arrays["theta"]
            history, start = state["history"], state["epoch"]
            # initialise scikit-learn's internal state on dummy rows (no data travels), then restore
            est = SGDClassifier(**sgd.get_params()).partial_fit(np.zeros((K, d), np.float32), np.arange(K),
                                                                classes=np.arange(K))
            est.coef_, est.intercept_, est.t_ = theta[:, :-1].copy(), theta[:, -1].copy(), state["t"]
            inc.estimator_ = est
            log(f"resume: continuing from epoch {start}")
        bar = _bar(cfg.max_epochs, start, "train (incremental)", cfg.quiet)
        best = {"score": np.inf, "epoch": start}
        t0 = time.perf_counter()
        for epoch in range(start + 1, cfg.max_epochs + 1):
            perm = [client.submit(_permuted, b, cfg.seed * 100003 + epoch * 7919 + i, pure=False)
                    for i, (b, _) in enumerate(nonempty)]
            xs = [da.from_delayed(delayed(lambda t: t[0])(f), shape=(n, d), dtype=np.float32)
                  for f, (_, n) in zip(perm, nonempty)]
            ys = [da.from_delayed(delayed(lambda t: t[1])(f), shape=(n,), dtype=np.int8)
                  for f, (_, n) in zip(perm, nonempty)]
            inc.random_state = cfg.seed + epoch
            inc.partial_fit(da.concatenate(xs), da.concatenate(ys), classes=np.arange(K))
            est = inc.estimator_
            theta = np.column_stack([est.coef_, est.intercept_])
            s = self.evaluate_sums(blocks, theta, spec, weights)  # softmax loss as the common yardstick
            tl, _, tw, tc = s["train"]
            vl, _, vw, vc = s["valid"]
            rec = {"epoch": epoch, "train_loss": tl / max(tw, 1e-300), "train_accuracy": tc / max(tw, 1e-300),
                   "valid_loss": vl / vw if vw else None, "valid_accuracy": vc / vw if vw else None,
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            ckpt.save({"theta": theta}, {"epoch": epoch, "history": history, "t": float(est.t_)})
            bar.update(1)
            score = _score(rec, cfg.monitor)
            bar.set_postfix(valid_accuracy=f"{rec['valid_accuracy'] or 0:.4f}", valid_loss=f"{rec['valid_loss'] or 0:.4f}")
            if score < best["score"] - 1e-6:
                best.update(score=score, epoch=epoch)
            elif cfg.patience and epoch - best["epoch"] >= cfg.patience:
                log(f"early stop at epoch {epoch}")
                break
        bar.close()
        est = inc.estimator_
        return np.column_stack([est.coef_, est.intercept_]), history


def _score(rec: dict, monitor: str) -> float:
    """The early-stopping score of an epoch record, lower is better (training figures if no validation rows)."""
    if monitor == "accuracy":
        acc = rec["valid_accuracy"] if rec["valid_accuracy"] is not None else rec["train_accuracy"]
        return -acc
    return rec["valid_loss"] if rec["valid_loss"] is not None else rec["train_loss"]


def _bar(total: int, initial: int, desc: str, quiet: bool):
    import sys

    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="epoch", disable=quiet or None, file=sys.stderr,
                leave=False)


def run(cfg: TrainConfig, client) -> dict:
    """Train a model on ``cfg.dataset``; write it with its holdout metrics and report to ``cfg.model_dir``."""
    ds = open_dataset(cfg.dataset)
    ds.require([schema.CLASS, *raw_columns(cfg.features)], f"to train with --features {cfg.features}")
    with StagedOutput(Path(cfg.model_dir), cfg.overwrite, cfg.resume, kind="model") as out:
        trainer = Trainer(cfg, client, ds, out.staging)
        spec, counts = trainer.fit_features()
        weights = trainer.class_weights(counts)
        ckpt = _Checkpoint(out.staging, cfg.fingerprint())
        t0 = time.perf_counter()
        if cfg.mode == "parallel":
            spec, blocks, cache = trainer.scaled_blocks(spec, counts, weights)
            theta, history = trainer.fit_parallel(spec, blocks, weights, ckpt)
            del blocks
        else:  # dask-ml trains on in-memory dask arrays: the shuffled blocks are always persisted
            if spec.mean is None:
                spec = trainer.fit_scaler(spec, counts, list(ds.files))
            cache = "memory"
            theta, history = trainer.fit_incremental(spec, weights, ckpt)
        seconds = time.perf_counter() - t0
        model = SoftmaxModel(spec, theta[:, :-1], theta[:, -1], schema.CLASSES, info={
            "link": "softmax" if cfg.mode == "parallel" else "ovr",
            "config": {k: v for k, v in asdict(cfg).items() if k not in ("overwrite", "resume", "quiet")},
            "cache": cache,
            "n_train": int(counts[TRAIN].sum()),
            "n_valid": int(counts[VALID].sum()),
            "n_test": int(counts[TEST].sum()),
            "train_seconds": seconds,
            "epochs_run": len(history),
        })
        metrics = evaluate.holdout(client, model, ds.files, quiet=cfg.quiet)
        metrics["train"] = {"mode": cfg.mode, "features": cfg.features, "epochs": len(history),
                            "seconds": seconds, "rows": int(counts[TRAIN].sum())}
        model.save(out.staging)
        write_json_atomic(out.staging / "metrics.json", metrics)
        write_json_atomic(out.staging / "history.json", history)
        if cfg.report:
            from . import report

            report.write(out.staging / "report", metrics, history, title=f"astrodask model: {cfg.features}, {cfg.mode}")
        ckpt.clear()
        (out.staging / FEATURES_JSON).unlink(missing_ok=True)
        out.commit({"dataset": str(Path(cfg.dataset).absolute()), "accuracy": metrics["accuracy"]})
    return {"model_dir": str(Path(cfg.model_dir).absolute()), "metrics": metrics, "history": history}
