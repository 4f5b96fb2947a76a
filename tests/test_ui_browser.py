"""The app in a real browser: `lift-search ui` on a free port, driven by headless Chromium (Debian's
`chromium` package) through Playwright. Searches, flips the opposite-action toggle, checks the players,
and saves a screenshot of each page to docs/screenshots/.

    apt-get install -y chromium && pip install playwright      # no `playwright install` download
    python -m pytest -m browser tests/test_ui_browser.py -q
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from indexer.pipeline import run_index
from tests.helpers import small_options

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def web_index(small_library) -> Iterator[Path]:
    """small_library (VP8 WebM, which browsers play) indexed like small_index, under a plain temp
    folder, since its paths show in the screenshots."""
    library, _ = small_library
    root = Path(tempfile.mkdtemp(prefix="lift-search-demo-"))
    try:
        shutil.copytree(library, root / "videos")
        run_index([root / "videos"], root / "index", small_options())
        yield root / "index"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(web_index, tmp_path_factory):
    port = free_port()
    exe = shutil.which("lift-search")
    cmd = ([exe] if exe else [sys.executable, "-m", "search.cli"]) + ["ui", "--index", str(web_index),
                                                                      "--port", str(port)]
    log = tmp_path_factory.mktemp("server") / "streamlit.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path_factory.mktemp("cwd"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"the app did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


@pytest.fixture(scope="module")
def page():
    """Asked for before `server` by each test, so a missing browser skips before anything is built."""
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1440, "height": 900})
        pg.set_default_timeout(WAIT_MS)
        yield pg
        browser.close()


def settle(pg) -> None:
    """Wait until the app has finished its run (Streamlit's 'Running…' indicator is gone)."""
    pg.wait_for_timeout(300)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=WAIT_MS)
    pg.wait_for_timeout(500)


def count(pg, selector: str, n: int) -> None:
    """Wait until exactly n elements match (Streamlit renders in steps)."""
    pg.wait_for_function(f"() => document.querySelectorAll({selector!r}).length === {n}", timeout=WAIT_MS)


def shot(pg, name: str, wait_for: str | None = None) -> None:
    """The whole page: the window is made as tall as the app's content (Streamlit scrolls inside it)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.mouse.move(1200, 5)  # no hover effects
    height = pg.evaluate("() => Math.max(...[...document.querySelectorAll("
                         "'[data-testid=stMain], [data-testid=stMainBlockContainer]')].map(e => e.scrollHeight))")
    pg.set_viewport_size({"width": 1440, "height": min(max(900, height + 40), 2400)})
    pg.wait_for_timeout(800)
    if wait_for:  # text that must be drawn (tables render after a resize)
        pg.get_by_text(wait_for, exact=True).wait_for(state="visible")
        pg.wait_for_timeout(500)
    pg.screenshot(path=str(SHOTS / f"{name}.png"))
    pg.set_viewport_size({"width": 1440, "height": 900})


def result_ids(pg) -> list[int]:
    text = pg.locator("[data-testid=stMain]").inner_text()
    return [int(c) for c in re.findall(r"#\d+ · clip (\d+) · score", text)]


def playing(pg) -> list[float]:
    """videoWidth of each <video> once it has its metadata (0: the browser cannot play it)."""
    pg.wait_for_function("() => [...document.querySelectorAll('video')].every(v => v.readyState >= 1 || v.error)",
                         timeout=WAIT_MS)
    return pg.eval_on_selector_all("video", "vs => vs.map(v => v.error ? 0 : v.videoWidth)")


def test_search_opposite_explain_index(page, server):
    pg = page
    pg.goto(f"{server}/")
    pg.get_by_text("of 16 clips").wait_for()
    count(pg, "[data-testid=stImage] img", 16)
    settle(pg)
    shot(pg, "library")

    # search with a library clip (the first card's Search button)
    pg.locator("[class*='st-key-lib_search_'] button").first.click()
    pg.get_by_text("clips like the query").wait_for()
    settle(pg)
    same = result_ids(pg)
    assert len(same) == 9
    count(pg, "video", 10)                                    # the query and nine results
    assert all(w > 0 for w in playing(pg))
    starts = pg.eval_on_selector_all("video", "vs => vs.map(v => v.currentTime)")
    assert all(t == 0 for t in starts)                        # one-clip videos start at 0 s
    shot(pg, "search")

    pg.get_by_text("Opposite action").click()
    pg.get_by_text("clips doing the opposite of the query").wait_for()
    settle(pg)
    opposite = result_ids(pg)
    assert len(opposite) == 9 and opposite != same
    count(pg, "video", 10)
    shot(pg, "opposite")

    pg.locator(f".st-key-why_{opposite[0]} button").first.click()
    pg.get_by_text("Arrows' cosine").wait_for()
    count(pg, "[data-testid=stImage] img", 1)
    settle(pg)
    shot(pg, "explain")

    pg.locator("[data-testid=stSidebar]").get_by_text("Index", exact=True).click()
    pg.get_by_text("Searchable vectors").wait_for()
    settle(pg)
    shot(pg, "index", wait_for="Last updated")


def test_browser_cannot_reach_files(page, server):
    pg = page
    pg.goto(f"{server}/?page=Search&clip=..%2F..%2Fetc%2Fpasswd")
    pg.get_by_text("is not a clip id").wait_for()
    settle(pg)
    assert pg.locator("video").count() == 0
    for path in ["/media/..%2F..%2F..%2Fetc%2Fpasswd", "/media/../../etc/passwd", "/app/static/../../etc/passwd",
                 "/etc/passwd"]:
        resp = pg.request.get(server + path)
        assert "root:" not in resp.text(), path
