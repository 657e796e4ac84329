"""Open an HTML report in a real headless Chromium (Debian's ``chromium`` package; no Python dependency), and
check PNG files byte by byte.

``check_page(index.html)`` runs Chromium twice, each a plain subprocess:

1. ``--dump-dom`` of a *probe*: a copy of the page, written to a temporary directory, with ``<base href>`` pointing
   at the report's directory (so every relative image resolves exactly as in the original) and one inline script
   that, on ``load``, writes into the DOM, as JSON, each ``<img>``'s ``complete``/``naturalWidth``/``naturalHeight``,
   its stated ``width``/``height`` attributes, the page's scroll size, and every resource URL the page fetched.
   ``--virtual-time-budget`` makes Chromium run the page until it is idle before dumping. The report directory is
   never written to and the report itself carries no test code. Network is blocked (host resolver maps every
   name to nothing), so a page that needs an external resource shows it as broken.
2. ``--screenshot`` of the original page at ``--window-size=WIDTH,<page height from step 1>``: the whole page.

The result lists broken images (``not (complete and naturalWidth > 0)``); ``assert_ok`` raises with them.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PROBE_ID = "__astrodask_page_check"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--host-resolver-rules=MAP * ~NOTFOUND")
PROBE_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (i) {
    return {src: i.getAttribute('src'), url: i.currentSrc || i.src, complete: i.complete,
            naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight,
            width: i.getAttribute('width'), height: i.getAttribute('height'),
            shownWidth: i.clientWidth};
  });
  // every URL the page refers to (resource timing lists nothing for file:// pages): src/href attributes,
  // style sheets, and whatever resource timing did record
  var res = Array.prototype.map.call(document.querySelectorAll('[src],[href]'), function (e) {
    return e.src || e.href; });
  Array.prototype.forEach.call(document.styleSheets, function (s) { if (s.href) res.push(s.href); });
  performance.getEntriesByType('resource').forEach(function (e) { res.push(e.name); });
  var d = document.documentElement;
  var out = {images: imgs, resources: res, scrollWidth: d.scrollWidth, scrollHeight: d.scrollHeight,
             innerWidth: window.innerWidth, title: document.title};
  var pre = document.createElement('pre');
  pre.id = 'PROBE_ID';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>""".replace("PROBE_ID", PROBE_ID)


def png_check(path) -> tuple[int, int]:
    """Validate a whole PNG file (signature, every chunk's CRC, IHDR first, IEND last, the IDAT stream inflates to
    exactly the image's size) and return (width, height); ValueError says what is wrong. A browser shows a
    truncated PNG partially and reports it loaded (naturalWidth > 0), so the bytes are checked here."""
    import struct
    import zlib

    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file (bad signature)")
    pos, idat, ihdr, end = 8, [], None, False
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"truncated chunk header at byte {pos}")
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if len(body) < n or pos + 12 + n > len(data):
            raise ValueError(f"truncated {kind!r} chunk at byte {pos}")
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r} chunk at byte {pos}")
        if ihdr is None and kind != b"IHDR":
            raise ValueError("first chunk is not IHDR")
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + n
        if kind == b"IEND":
            end = True
            break
    if not end:
        raise ValueError("no IEND chunk (file truncated)")
    if pos != len(data):
        raise ValueError(f"{len(data) - pos} bytes after IEND")
    w, h, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as e:
        raise ValueError(f"image data does not inflate: {e}") from None
    if interlace == 0 and len(raw) != h * (1 + (w * channels * depth + 7) // 8):
        raise ValueError(f"image data holds {len(raw)} bytes, a {w}x{h} image needs "
                         f"{h * (1 + (w * channels * depth + 7) // 8)}")
    return int(w), int(h)


class BrowserUnavailable(RuntimeError):
    pass


@dataclass
class ImageStatus:
    src: str
    url: str
    complete: bool
    naturalWidth: int
    naturalHeight: int
    width: str | None
    height: str | None
    shownWidth: float = 0.0
    file_error: str | None = None
    """For an image file beside the page: what ``png_check`` found wrong with its bytes (None: valid)."""

    @property
    def loaded(self) -> bool:
        return bool(self.complete) and self.naturalWidth > 0

    @property
    def size_as_stated(self) -> bool:
        return (str(self.naturalWidth), str(self.naturalHeight)) == (str(self.width), str(self.height))


@dataclass
class PageCheck:
    page: Path
    images: list[ImageStatus]
    resources: list[str]
    scroll_width: int
    scroll_height: int
    inner_width: int
    title: str
    screenshot: Path | None = None
    stderr: str = field(default="", repr=False)

    @property
    def broken(self) -> list[ImageStatus]:
        return [i for i in self.images if not i.loaded]

    @property
    def external(self) -> list[str]:
        return [u for u in dict.fromkeys(self.resources) if not u.startswith(("file:", "data:", "about:"))]

    def assert_ok(self, min_images: int = 1) -> None:
        problems = []
        if len(self.images) < min_images:
            problems.append(f"{len(self.images)} images, expected at least {min_images}")
        problems += [f"image did not load: {i.src}" for i in self.broken]
        problems += [f"image file {i.src} is damaged: {i.file_error}" for i in self.images
                     if i.loaded and i.file_error]
        problems += [f"image {i.src}: {i.naturalWidth}x{i.naturalHeight}, page states {i.width}x{i.height}"
                     for i in self.images if i.loaded and not i.size_as_stated]
        problems += [f"external resource: {u}" for u in self.external]
        if self.scroll_width > self.inner_width:
            problems.append(f"page is {self.scroll_width} px wide in a {self.inner_width} px window "
                            "(horizontal scrolling)")
        if problems:
            raise AssertionError(f"{self.page}: " + "; ".join(problems))


def find_chromium() -> str | None:
    """The Chromium executable: $ASTRODASK_CHROMIUM, else chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("ASTRODASK_CHROMIUM")
    if env:
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _run(exe: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    prof = tempfile.mkdtemp(prefix="astrodask-chromium-")
    try:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={prof}", *args], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(prof, ignore_errors=True)


def _probe_html(page: Path) -> str:
    text = page.read_text(encoding="utf-8")
    base = f'<base href="{page.parent.resolve().as_uri()}/">'
    m = re.search(r"<head[^>]*>", text, re.I)
    text = text[:m.end()] + base + text[m.end():] if m else base + text
    i = text.lower().rfind("</body>")
    return text[:i] + PROBE_SCRIPT + text[i:] if i >= 0 else text + PROBE_SCRIPT


def check_page(page, width: int = 1300, screenshot=None, timeout: float = 90.0,
               budget_ms: int = 15000, max_height: int = 16000, check_files: bool = True) -> PageCheck:
    """Load ``page`` (an HTML file) in headless Chromium at ``width`` px; report every image's status and,
    with ``screenshot`` (a .png path), save a full-page screenshot ``width`` px wide. With ``check_files``, every
    local PNG the page showed is also validated byte by byte (``figures.png_check``): Chromium draws a truncated
    PNG partially and calls it loaded."""
    exe = find_chromium()
    if exe is None:
        raise BrowserUnavailable("no chromium executable (apt-get install chromium, or set ASTRODASK_CHROMIUM)")
    page = Path(page).resolve()
    with tempfile.TemporaryDirectory(prefix="astrodask-probe-") as tmp:
        probe = Path(tmp) / "probe.html"
        probe.write_text(_probe_html(page), encoding="utf-8")
        cp = _run(exe, [f"--virtual-time-budget={budget_ms}", f"--window-size={width},900", "--dump-dom",
                        probe.as_uri()], timeout)
    m = re.search(rf'<pre id="{PROBE_ID}">(.*?)</pre>', cp.stdout, re.S)
    if m is None:
        raise AssertionError(f"{page}: the page did not finish loading in Chromium (exit {cp.returncode}); "
                             f"stderr: {cp.stderr[-2000:]}")
    data = json.loads(html.unescape(m.group(1)))
    result = PageCheck(page, [ImageStatus(**i) for i in data["images"]], data["resources"], data["scrollWidth"],
                       data["scrollHeight"], data["innerWidth"], data["title"], None, cp.stderr)
    if check_files:
        from urllib.parse import unquote, urlparse

        for i in result.images:
            u = urlparse(i.url)
            if u.scheme == "file" and u.path.lower().endswith(".png") and Path(unquote(u.path)).exists():
                try:
                    png_check(unquote(u.path))
                except ValueError as e:
                    i.file_error = str(e)
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        if shot.exists():
            shot.unlink()
        height = min(max(int(data["scrollHeight"]), 200), max_height)
        cp2 = _run(exe, [f"--window-size={width},{height}", f"--screenshot={shot}",
                         f"--virtual-time-budget={budget_ms}", page.as_uri()], timeout)
        if not shot.exists():
            raise AssertionError(f"{page}: Chromium wrote no screenshot (exit {cp2.returncode}): {cp2.stderr[-2000:]}")
        result.screenshot = shot
    return result
