"""A real headless browser for the web page: serve a folder on 127.0.0.1, open it in Debian's
Chromium through PyPI ``playwright`` (never ``playwright install``), upload an image, screenshot.

Used by ``tests/report/test_web.py``, ``benchmarks/web_inference.py`` and the workflow's Fig. 2 step
(``melanoma screenshot``). Needs ``apt-get install -y chromium``.
"""

from __future__ import annotations

import functools
import http.server
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
#: Flags for a sandboxed CI machine with no network: nothing phones home, nothing hangs on DNS.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@contextmanager
def serve(folder: str | Path):
    """Serve ``folder`` on 127.0.0.1 with a free port; yields the base URL."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextmanager
def launch():
    """Headless Debian Chromium through playwright; yields the browser."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"{CHROMIUM} not found: apt-get install -y chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_ready(browser, url: str, viewport=(900, 1000)):
    """A new page at ``url``, once the model is loaded (``window.__melanoma.ready``)."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.goto(url)
    page.evaluate("window.__melanoma.ready.then(() => true)")
    return page


def upload(page, path: str | Path, timeout_ms: int = 30_000) -> dict | None:
    """Choose ``path`` in the page's file input; the page's result, or None after ``timeout_ms``.

    Polled inside the page: ``wait_for_function`` evaluates a string, which the page's CSP forbids.
    """
    page.evaluate("window.__lastResult = undefined")
    page.set_input_files("#file", str(path))
    return page.evaluate("""async (ms) => { const t0 = performance.now();
        while (!window.__lastResult) {
          if (performance.now() - t0 > ms) return null;
          await new Promise((done) => setTimeout(done, 20));
        }
        return window.__lastResult; }""", timeout_ms)


def screenshot(model_dir: str | Path, image: str | Path, out: str | Path) -> dict:
    """Score ``image`` with the exported model in ``model_dir`` in the page; save the page as PNG."""
    from melanoma.io import atomic_path
    from melanoma.report.export import assemble_site

    with tempfile.TemporaryDirectory() as tmp:
        site = assemble_site(Path(tmp) / "site", model_dir)
        with serve(site) as url, launch() as b:
            page = open_ready(b, f"{url}/index.html")
            r = upload(page, image)
            with atomic_path(out) as t:
                page.screenshot(path=str(t) + ".png", full_page=True)
                Path(str(t) + ".png").replace(t)
    return r


def first_test_melanoma(work: str | Path, dataset: str) -> Path:
    """The image Fig. 2 shows by default: the first melanoma (by image id) of ``dataset``'s test
    split in the work folder ``work`` (the SYNTHETIC replica in the demo)."""
    from melanoma.data.manifest import read_manifest
    from melanoma.io import read_json

    m = read_manifest(work, dataset)
    row = m[(m["split"] == "test") & (m["label"] == 1)].sort_values("image_id").iloc[0]
    rep = read_json(Path(work) / m["dataset"].iloc[0] / "report.json")
    return Path(rep["root"]) / row["path"]


def screenshot_checked(model_dir: str | Path, image: str | Path, out: str | Path) -> dict:
    """:func:`screenshot`, an error when the page did not score the image."""
    r = screenshot(model_dir, image, out)
    if not r or "error" in r:
        raise RuntimeError(f"the page did not score {image}: {r}")
    return r
