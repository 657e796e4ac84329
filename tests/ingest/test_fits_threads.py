"""FITS blocks read from several threads leave the process's warning filters alone (issue 24, T).

``warnings.catch_warnings()`` saves and restores the one process-global filter list; called per block in worker
threads it restored other threads' states (e.g. "ignore everything") for the whole process, pytest's own checks
included. The reader installs its astropy filters once instead."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
from astropy.utils.exceptions import AstropyUserWarning
from support import sdss_fixtures as sf

from astrodask.ingest.readers import fits as fits_reader
from astrodask.storage import Location


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return sf.write_specobj(tmp_path_factory.mktemp("fits_threads") / "specObj-dr17.fits", n=400, seed=1)


def test_threads_reading_blocks_never_save_or_restore_the_warning_filters(spec):
    def refuse(*a, **k):
        raise AssertionError("catch_warnings in a reader thread")

    loc = Location.of(str(spec.path))
    fits_reader.quiet_astropy()
    before = list(warnings.filters)
    whole = fits_reader.read_fits_rows(loc, str(spec.path), 0, 400)
    errors, parts = [], {}

    def read(k):
        try:
            for _ in range(5):
                parts[k] = fits_reader.read_fits_rows(loc, str(spec.path), k * 50, 50)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
    original, warnings.catch_warnings = warnings.catch_warnings, refuse  # not monkeypatch: pytest needs it back
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        warnings.catch_warnings = original
    assert not errors, errors
    assert warnings.filters == before
    for k in range(8):
        for name in ("SPECOBJID", "PLATESN2", "CLASS"):
            np.testing.assert_array_equal(parts[k][name].to_numpy(zero_copy_only=False),
                                          whole[name].to_numpy(zero_copy_only=False)[k * 50:(k + 1) * 50])


def test_astropy_fits_chatter_is_ignored_and_other_warnings_are_not():
    fits_reader.quiet_astropy()
    with warnings.catch_warnings(record=True) as seen:  # the main thread's (pytest's) filters, the reader's first
        warnings.warn_explicit("card too long", AstropyUserWarning, "card.py", 1, module="astropy.io.fits.card")
        warnings.warn_explicit("from the reader", AstropyUserWarning, "fits.py", 1,
                               module="astrodask.ingest.readers.fits")
        warnings.warn_explicit("elsewhere", AstropyUserWarning, "x.py", 1, module="astropy.table.table")
        warnings.warn_explicit("not astropy", UserWarning, "x.py", 1, module="astropy.io.fits.card")
    assert sorted(str(w.message) for w in seen) == ["elsewhere", "not astropy"]


def test_threads_reading_blocks_never_parse_column_formats_at_once(spec, monkeypatch):
    """astropy parses column formats with ast.literal_eval, and CPython 3.11's AST constructor is not thread-safe
    (python/cpython#106905: "SystemError: AST constructor recursion depth mismatch" failed a conversion now and
    then). Each parse here is slowed down, so threads that could overlap would."""
    import ast
    import time

    real, inside, most, guard = ast.literal_eval, [0], [0], threading.Lock()

    def slow(*a, **k):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.002)
        try:
            return real(*a, **k)
        finally:
            with guard:
                inside[0] -= 1

    monkeypatch.setattr(ast, "literal_eval", slow)
    loc = Location.of(str(spec.path))
    errors = []

    def read(k):
        try:
            for _ in range(3):
                fits_reader.read_fits_rows(loc, str(spec.path), k * 50, 50)
                fits_reader.read_columns(loc, str(spec.path), k * 50, 50, ["SPECOBJID", "Z", "CLASS"])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert most[0] == 1, f"{most[0]} threads parsed column formats at once"
