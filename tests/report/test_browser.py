"""The reports in a real headless Chromium (Debian's ``chromium``, installed by .ci/run): every image loads at its
stated size, nothing external is fetched, no horizontal scrolling at 1300 px; and the check itself catches a
damaged, missing, mis-sized or external image."""

from __future__ import annotations

import os
import shutil

import pytest
from support.browser import BrowserUnavailable, check_page, find_chromium

from astrodask.report.build import MODEL_REPORT_DIR, PREDICTIONS_REPORT_DIR


@pytest.fixture(scope="module", autouse=True)
def chromium():
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no chromium: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no chromium executable (apt-get install chromium, or set ASTRODASK_CHROMIUM)")


@pytest.mark.parametrize("where", [("model", MODEL_REPORT_DIR), ("pred", PREDICTIONS_REPORT_DIR)])
def test_every_image_of_the_report_loads_in_chromium(report_job, tmp_path, where):
    page = report_job / where[0] / where[1] / "index.html"
    check = check_page(page, width=1300, screenshot=tmp_path / "shot.png")
    check.assert_ok(min_images=10)
    assert all(i.shownWidth > 0 for i in check.images)
    assert check.screenshot.stat().st_size > 50_000  # a full page was drawn


def test_the_check_catches_damaged_missing_mis_sized_and_external_images(report_job, tmp_path):
    src = report_job / "model" / MODEL_REPORT_DIR
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    data = (bad / "confusion_matrix.png").read_bytes()
    (bad / "confusion_matrix.png").write_bytes(data[: len(data) // 2])  # truncated: Chromium still "loads" it
    (bad / "reliability.png").unlink()
    (bad / "sky_density.png").write_bytes(b"not a png")
    html = (bad / "index.html").read_text()
    html = html.replace("src='colour_ug_gr.png' width='1200'", "src='colour_ug_gr.png' width='640'")
    html = html.replace("src='colour_gr_ri.png'", "src='https://example.invalid/colour.png'")
    (bad / "index.html").write_text(html)
    check = check_page(bad / "index.html", width=1300)
    with pytest.raises(AssertionError) as info:
        check.assert_ok(min_images=10)
    msg = str(info.value)
    for words in ("confusion_matrix.png is damaged", "did not load: reliability.png", "did not load: sky_density.png",
                  "colour_ug_gr.png: 1200x", "external resource: https://example.invalid/colour.png"):
        assert words in msg, (words, msg)


def test_no_browser_is_a_clear_error(monkeypatch, report_job):
    monkeypatch.setenv("ASTRODASK_CHROMIUM", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrowserUnavailable, match="apt-get install chromium"):
        check_page(report_job / "model" / MODEL_REPORT_DIR / "index.html")
