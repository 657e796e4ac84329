"""The report's counts against independent computations on the same real rows (pandas, numpy, scikit-learn),
and their algebra (adding, fixed size, round trip)."""

from __future__ import annotations

import itertools
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from support import SHARED_DATA

from astrodask import schema
from astrodask.metrics import block_stats, finalize
from astrodask.report import sums as S
from astrodask.report.collect import frame_sums

CLASSES = list(schema.CLASSES)
K = len(CLASSES)
BOUNDS = (0, 1500, 1501, 4000, 9000, 9001, 17000, 24000)  # uneven blocks, one of a single row
SDSS17 = SHARED_DATA / "sdss17.csv"


def _probabilities(y, r, rng):
    """Model-like probabilities: right more often for bright objects."""
    noise = 1.0 + 0.35 * np.clip(np.nan_to_num(r, nan=20.0) - 17.0, 0, None)
    logits = rng.normal(0.0, 1.0, (len(y), K)) * noise[:, None]
    logits[np.arange(len(y)), np.where(y >= 0, y, 0)] += 3.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """24,000 real SDSS17 rows with probabilities, unlabelled rows, missing r / position / redshift, masks."""
    if not SDSS17.is_file():
        pytest.skip(f"{SDSS17} not found (see ../shared/data/README.md)")
    rng = np.random.default_rng(22)
    n = BOUNDS[-1]
    df = pd.read_csv(SDSS17, nrows=n, usecols=["alpha", "delta", "u", "g", "r", "i", "z", "class", "redshift"])
    y = df["class"].map({c: k for k, c in enumerate(CLASSES)}).to_numpy()
    p = _probabilities(y, df["r"].to_numpy(), rng)
    for k, c in enumerate(CLASSES):
        df[schema.PROB_PREFIX + c] = p[:, k]
    df.loc[rng.random(n) < 0.08, "class"] = None
    df.loc[rng.random(n) < 0.01, "r"] = np.nan
    df.loc[rng.random(n) < 0.01, ["alpha", "delta"]] = np.nan
    df.loc[rng.random(n) < 0.02, "redshift"] = np.nan
    df[schema.OUT_OF_DOMAIN] = ((rng.random(n) < 0.05).astype(np.uint16) * np.uint16(4)
                                | (df["r"] > 22.5).to_numpy().astype(np.uint16))
    df[schema.IMPUTED] = (rng.random(n) < 0.02).astype(np.uint16) << np.uint16(5)
    df["photometric"] = rng.random(n) < 0.1
    return df


def _sums(df):
    return frame_sums(df, df[list(schema.PROBS)].to_numpy(), df["photometric"].to_numpy(),
                      df[schema.IMPUTED].to_numpy(), df[schema.OUT_OF_DOMAIN].to_numpy())


@pytest.fixture(scope="module")
def parts(frame):
    return [_sums(frame.iloc[a:b]) for a, b in itertools.pairwise(BOUNDS)]


@pytest.fixture(scope="module")
def total(parts):
    return S.add(*parts).figures


def _truth(frame):
    y = frame["class"].map({c: k for k, c in enumerate(CLASSES)})
    p = frame[list(schema.PROBS)].to_numpy()
    return y, p, p.argmax(axis=1)


def _bins(frame, col="r", bins=S.R_BINS):
    """Independent bin labels: pd.cut on [-inf, edges..., inf), right-open; NaN -> the last ('missing') bin."""
    edges = [-np.inf, *bins.edges, np.inf]
    return pd.cut(frame[col], edges, right=False, labels=False).fillna(len(edges) - 1).astype(int)


def test_accuracy_per_r_bin_matches_pandas_groupby(frame, total):
    y, _, pred = _truth(frame)
    lab = y.notna()
    d = pd.DataFrame({"bin": _bins(frame)[lab], "ok": y[lab].astype(int).to_numpy() == pred[lab.to_numpy()]})
    expect = d.groupby("bin")["ok"].agg(["mean", "size"])
    tab = total.by_r()
    for b, row in expect.iterrows():
        assert tab.n[b] == row["size"] and tab.accuracy[b] == pytest.approx(row["mean"], abs=1e-12)
    empty = np.setdiff1d(np.arange(S.R_BINS.n), expect.index)
    assert (tab.n[empty] == 0).all() and np.isnan(tab.accuracy[empty]).all()
    assert tab.n.sum() == lab.sum() == total.n_labelled


def test_f1_per_r_bin_matches_sklearn(frame, total):
    from sklearn.metrics import f1_score

    y, _, pred = _truth(frame)
    lab = y.notna().to_numpy()
    bins = _bins(frame).to_numpy()[lab]
    yt, yp = y.to_numpy()[lab].astype(int), pred[lab]
    tab = total.by_r()
    checked = 0
    for b in np.unique(bins):
        m = bins == b
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = f1_score(yt[m], yp[m], labels=list(range(K)), average=None, zero_division=0)
        for k in range(K):
            if ((yt[m] == k) | (yp[m] == k)).any():
                assert tab.f1[b, k] == pytest.approx(ref[k], abs=1e-12)
                checked += 1
            else:
                assert np.isnan(tab.f1[b, k])
    assert checked > 40


def test_confusion_per_redshift_bin_matches_pandas(frame, total):
    y, _, pred = _truth(frame)
    lab = y.notna().to_numpy()
    zb = _bins(frame, "redshift", S.Z_BINS).to_numpy()[lab]
    ct = pd.crosstab([zb, y.to_numpy()[lab].astype(int)], pred[lab])
    for (b, t), row in ct.iterrows():
        for p_, v in row.items():
            assert total.conf_z[b, t, p_] == v
    assert total.conf_z.sum() == lab.sum()
    star = CLASSES.index("STAR")
    assert total.conf_z[0, star].sum() > 0.9 * total.conf_z[0].sum()  # z < 0.003: stars


def test_predicted_share_and_paths_per_r_bin_count_every_row(frame, total):
    _, _, pred = _truth(frame)
    d = pd.DataFrame({"bin": _bins(frame), "pred": pred})
    share = d.groupby("bin")["pred"].value_counts(normalize=True).unstack(fill_value=0.0)
    tab = total.by_r()
    for b, row in share.iterrows():
        for k, v in row.items():
            assert tab.pred_share[b, k] == pytest.approx(v, abs=1e-12)
    assert total.pred_r.sum() == len(frame) == total.n_rows
    phot = np.bincount(_bins(frame)[frame["photometric"]], minlength=S.R_BINS.n)
    np.testing.assert_array_equal(total.path_r[:, 1], phot)


def test_ece_of_the_metrics_matches_the_textbook_formula(frame):
    y, p, _ = _truth(frame)
    lab = y.notna().to_numpy()
    yl, pl = y.to_numpy()[lab].astype(int), p[lab]
    m = finalize(block_stats(yl, pl))
    for k, c in enumerate(CLASSES):
        d = pd.DataFrame({"bin": np.minimum(np.floor(pl[:, k] * 10), 9).astype(int), "p": pl[:, k],
                          "o": (yl == k).astype(float)})
        g = d.groupby("bin").agg(n=("p", "size"), mp=("p", "mean"), fo=("o", "mean"))
        assert m.per_class[c].ece == pytest.approx(float((g["n"] / len(yl) * (g["mp"] - g["fo"]).abs()).sum()),
                                                   rel=1e-10)
        np.testing.assert_array_equal(np.asarray(m.reliability[c].count)[g.index], g["n"])


def test_ece_is_small_for_a_calibrated_model_and_large_for_an_overconfident_one():
    rng = np.random.default_rng(1)
    n = 200_000
    p = rng.dirichlet([1, 1, 1], n)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)  # y drawn from p: calibrated
    assert max(v.ece for v in finalize(block_stats(y, p)).per_class.values()) < 0.01
    sharp = p ** 4 / (p ** 4).sum(axis=1, keepdims=True)  # same ranking, overconfident
    assert min(v.ece for v in finalize(block_stats(y, sharp)).per_class.values()) > 0.05


def test_probability_histograms(frame, total):
    _, p, pred = _truth(frame)
    for k in range(K):
        np.testing.assert_array_equal(total.prob_hist[k], np.histogram(p[:, k], S.P_EDGES)[0])
        np.testing.assert_array_equal(total.maxp_hist[k], np.histogram(p[pred == k].max(axis=1), S.P_EDGES)[0])


@pytest.mark.parametrize("name", list(S.DIAGRAMS))
def test_colour_colour_counts_match_numpy_histogram2d(frame, total, name):
    xc, yc, xe, ye = S.DIAGRAMS[name]
    x = (frame[xc[0]] - frame[xc[2]]).to_numpy()
    yv = (frame[yc[0]] - frame[yc[2]]).to_numpy()
    y, _, pred = _truth(frame)
    for k in range(K):
        m = pred == k
        np.testing.assert_array_equal(total.cc_pred[name][k], np.histogram2d(yv[m], x[m], bins=[ye, xe])[0])
        mt = (y == k).to_numpy()
        np.testing.assert_array_equal(total.cc_true[name][k], np.histogram2d(yv[mt], x[mt], bins=[ye, xe])[0])
    assert total.cc_pred[name].sum() + total.cc_outside[list(S.DIAGRAMS).index(name)] == len(frame)


def test_sky_counts_match_a_histogram_in_ra_and_sin_dec(frame, total):
    a, d = frame["alpha"].to_numpy(), frame["delta"].to_numpy()
    ok = np.isfinite(a) & np.isfinite(d)
    assert total.sky.sum() == ok.sum() and total.sky_missing == (~ok).sum()
    _, _, pred = _truth(frame)
    for k in range(K):
        m = ok & (pred == k)
        ref = np.histogram2d(np.sin(np.radians(d[m])), a[m] % 360, bins=[S.SKY_SINDEC_EDGES, S.SKY_RA_EDGES])[0]
        np.testing.assert_array_equal(total.sky[k], ref)
    assert total.sky_density().sum() * S.SKY_CELL_DEG2 == pytest.approx(ok.sum())
    ood = frame[schema.OUT_OF_DOMAIN].to_numpy()
    assert total.sky_ood.sum() == ((ood != 0) & ok).sum()


def test_sky_cells_have_equal_area_summing_to_the_sphere():
    area = np.outer(np.diff(np.sin(np.radians(S.SKY_DEC_EDGES))), np.radians(np.diff(S.SKY_RA_EDGES))) \
        * (180 / np.pi) ** 2
    np.testing.assert_allclose(area, S.SKY_CELL_DEG2, rtol=1e-9)
    assert area.sum() == pytest.approx(41_252.96, abs=0.01)


def test_uniform_points_on_the_sphere_fill_the_cells_evenly():
    rng = np.random.default_rng(3)
    v = rng.normal(size=(1_620_000, 3))  # isotropic directions
    ra = np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360
    dec = np.degrees(np.arcsin(v[:, 2] / np.linalg.norm(v, axis=1)))
    c = S.figure_sums(np.full((len(ra), K), 1 / K), {"alpha": ra, "delta": dec}).sky.sum(axis=0)
    assert c.mean() == pytest.approx(100.0) and c.std() == pytest.approx(10.0, rel=0.05)  # Poisson only
    assert np.abs(c.mean(axis=1) - 100).max() < 5 * 10 / np.sqrt(S.SKY_NRA)  # no trend with declination


def test_out_of_domain_and_imputed_counts_per_bit_and_bin(frame, total):
    rb = _bins(frame).to_numpy()
    ood = frame[schema.OUT_OF_DOMAIN].to_numpy()
    np.testing.assert_array_equal(total.ood_r, np.bincount(rb[ood != 0], minlength=S.R_BINS.n))
    for b in range(S.NBITS):
        np.testing.assert_array_equal(total.ood_r_bits[:, b], np.bincount(rb[(ood >> b) & 1 == 1],
                                                                          minlength=S.R_BINS.n))
    imp = frame[schema.IMPUTED].to_numpy()
    assert total.imputed_bits[5] == (imp != 0).sum() == total.imputed_bits.sum() == total.imputed_r.sum()


def test_wilson_interval_known_value():
    lo, hi = S.wilson(8, 10, z=1.959964)
    assert (float(lo), float(hi)) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert all(np.isnan(x) for x in S.wilson(0, 0))


def test_blocks_add_up_to_the_whole_in_any_order(frame, parts, total):
    whole = _sums(frame)
    for name, a in whole.figures.to_npz().items():
        np.testing.assert_array_equal(total.to_npz()[name], a, err_msg=name)
    rev = S.add(*reversed(parts))
    assert finalize(rev.metrics).accuracy == finalize(whole.metrics).accuracy
    assert rev.metrics.confusion.tolist() == whole.metrics.confusion.tolist()


def test_size_does_not_grow_with_rows(frame):
    small, big = _sums(frame.iloc[:10]), _sums(frame)
    assert abs(len(pickle.dumps(small)) - len(pickle.dumps(big))) < 2000 and len(pickle.dumps(big)) < 3_000_000
    assert {k: np.shape(v) for k, v in small.figures.to_npz().items()} == \
        {k: np.shape(v) for k, v in big.figures.to_npz().items()}


def test_round_trip_through_npz_and_a_foreign_layout_is_refused(tmp_path, total):
    np.savez_compressed(tmp_path / "s.npz", **total.to_npz())
    with np.load(tmp_path / "s.npz") as z:
        back = S.ReportSums.from_npz(dict(z))
    for name, a in total.to_npz().items():
        np.testing.assert_array_equal(back.to_npz()[name], a)
    bad = {**total.to_npz(), "conf_r": np.zeros((3, 3, 3))}
    with pytest.raises(ValueError, match="layout"):
        S.ReportSums.from_npz(bad)


def test_unlabelled_rows_are_counted_but_never_scored(frame):
    st = _sums(frame.drop(columns="class"))
    assert st.figures.n_labelled == 0 and st.figures.conf_r.sum() == 0 and st.metrics.n == 0
    assert st.figures.pred_r.sum() == len(frame) and st.metrics.n_unlabelled == len(frame)
