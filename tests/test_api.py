"""The HTTP API (`lift-search serve`, search/api.py), driven over real HTTP: the server runs as a
subprocess on a free port against real small indexes, and the tests talk to it with httpx.

Paging, clip and upload searches (forward, reverse, motion) against the CLI's answers, range requests
on videos, thumbnails, refused paths (../, absolute, percent-encoded, symlinks out of the library),
oversized and non-video uploads, the API key beyond loopback, JSON errors (never a traceback), and
searches while an index run writes. The import test: no torch for the search engine or the server."""
from __future__ import annotations

import http.client
import io
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from search import SearchEngine, SearchError, UnreadableVideoError, uploads
from search.cli import main
from tests.helpers import good_videos, index_with_outside_link, make_library, record

ROOT = Path(__file__).resolve().parent.parent
KEY = "k" * 8 + "-test-key-0123456789"
UPLOAD_MB = 1  # the main test server's upload limit (the library's videos are a few KB)


# ---- a server in a subprocess ---------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`lift-search serve` in a subprocess, as a user starts it; its log (stdout + stderr) in `log`."""

    def __init__(self, index: Path, log: Path, *args: str, env: dict | None = None, key: str | None = None):
        self.port, self.log, self.key = free_port(), log, key
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "search.cli", "serve", "--index", str(index), "--port", str(self.port),
                    *args]
        self.env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **(env or {})}

    def start(self, timeout: float = 90) -> "Server":
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        headers = {"X-API-Key": self.key} if self.key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/health", headers=headers, timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer in {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def client(self, **kw) -> httpx.Client:
        headers = {"X-API-Key": self.key} if self.key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kw)

    def raw_get(self, target: str) -> tuple[int, dict, bytes]:
        """GET `target` exactly as written (no client-side normalisation of ../ or %2F)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest("GET", target, skip_accept_encoding=True)
            conn.endheaders()
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def server(small_index, tmp_path_factory):
    s = Server(small_index, tmp_path_factory.mktemp("serve") / "log", "--max-upload-mb", str(UPLOAD_MB)).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def api(server):
    with server.client() as c:
        yield c


def is_error(r: httpx.Response, status: int, text: str = "") -> bool:
    """A JSON error with that status whose message says `text`, and no traceback."""
    body = r.json()
    assert r.status_code == status and body["status"] == status, (r.status_code, r.text)
    assert text in body["error"] and "Traceback" not in r.text and 'File "' not in r.text, body
    return True


def cli_json(capsys, *argv: str):
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ---- the library ------------------------------------------------------------------------------------
def test_clips_are_paged_by_id_over_the_served_clips(api, small_index):
    engine = SearchEngine.open(small_index)
    served = sorted(engine.served_ids())
    seen, offset = [], 0
    while True:
        page = api.get("/clips", params={"offset": offset, "limit": 5}).json()
        assert page["total"] == len(served) == 16 and page["offset"] == offset and page["limit"] == 5
        if not page["clips"]:
            break
        assert len(page["clips"]) == min(5, len(served) - offset)
        seen += [c["clip_id"] for c in page["clips"]]
        offset += 5
    assert seen == served
    first = api.get("/clips", params={"limit": 1}).json()["clips"][0]
    clip = engine.clip(first["clip_id"])
    assert first == {"clip_id": clip.clip_id, "video_path": clip.video_path, "start_s": round(clip.start_s, 3),
                     "end_s": round(clip.end_s, 3)}
    assert api.get(f"/clips/{clip.clip_id}").json() == first
    assert api.get("/clips").json()["limit"] == 100 and len(api.get("/clips").json()["clips"]) == 16
    for params, text in [({"limit": 0}, "limit"), ({"limit": 10**6}, "limit"), ({"offset": -1}, "offset"),
                         ({"offset": "x"}, "offset")]:
        assert is_error(api.get("/clips", params=params), 422, f"query parameter {text}")
    assert is_error(api.get("/clips/999999"), 404, "no clip with id 999999")
    assert is_error(api.get("/clips/abc"), 422, "path parameter clip_id")
    assert is_error(api.get("/clips/0"), 422, "clip_id")
    assert is_error(api.get("/nothing/here"), 404)
    assert is_error(api.delete("/clips/1"), 405)
    st = api.get("/status").json()
    assert st["clips"] == st["served"] == 16 and st["vectors"] == 16 and st["failures"] == 0
    assert api.get("/health").json() == {"status": "ok", "clips": 16}
    assert "/search" in api.get("/openapi.json").json()["paths"] and api.get("/docs").status_code == 200


# ---- searches ---------------------------------------------------------------------------------------
def test_clip_search_gives_the_clis_hits_forward_reverse_and_motion(api, small_index, capsys):
    clip = SearchEngine.open(small_index).clip_page(0, 1)[0].clip_id
    answers = {}
    for reverse, motion in [(False, 0.5), (True, 0.5), (False, 0.0), (True, 1.0)]:
        params = {"clip": clip, "k": 6, "motion": motion, **({"reverse": "true"} if reverse else {})}
        r = api.get("/search", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["query"] == {"clip": clip, "k": 6, "reverse": reverse, "motion": motion, "within": None,
                                 "overlap": "distinct"}
        cli = cli_json(capsys, "search", "--index", str(small_index), "--clip", str(clip), "-k", "6",
                       "--motion", str(motion), *(["--reverse"] if reverse else []))
        assert body["hits"] == cli and len(cli) == 6  # the same hits, every field
        for h in body["hits"]:
            assert h["clip_id"] != clip
            assert h["score"] == pytest.approx((1 - motion) * h["static_score"] + motion * h["dynamic_score"],
                                               abs=1e-5)
        answers[reverse, motion] = {h["clip_id"]: h for h in body["hits"]}
    fwd, rev = answers[False, 0.5], answers[True, 0.5]
    assert list(fwd) != list(rev)
    for cid in set(fwd) & set(rev):  # a reverse query negates the query's motion part only
        assert rev[cid]["dynamic_score"] == pytest.approx(-fwd[cid]["dynamic_score"], abs=1e-5)
        assert rev[cid]["static_score"] == pytest.approx(fwd[cid]["static_score"], abs=1e-5)
    scores = [h["score"] for h in answers[False, 0.0].values()]
    assert scores == sorted(scores, reverse=True)

    assert is_error(api.get("/search", params={"clip": 999999}), 404, "no clip with id 999999")
    assert is_error(api.get("/search", params={"clip": clip, "motion": 1.5}), 422, "query parameter motion")
    assert is_error(api.get("/search", params={"clip": clip, "k": 0}), 422, "query parameter k")
    assert is_error(api.get("/search"), 422, "query parameter clip")
    assert is_error(api.get("/search", params={"clip": clip, "revrese": 1}), 422, "revrese")
    assert is_error(api.get("/search", params={"clip": "../1"}), 422, "query parameter clip")


def test_upload_search_finds_its_own_clip_forward_reverse_and_motion(api, small_library, small_index):
    library, _ = small_library
    video = sorted(library.rglob("*left*.webm"))[0]
    own = next(c.clip_id for c in SearchEngine.open(small_index).clips() if c.video_path == str(video))
    data = video.read_bytes()

    def search(**params) -> list[dict]:
        r = api.post("/search", params={"k": 16, **params}, files={"video": ("../../query.webm", data, "video/webm")})
        assert r.status_code == 200, r.text
        return r.json()["hits"]

    fwd = search()
    assert fwd[0]["clip_id"] == own and fwd[0]["score"] > 0.99  # the very file: the same descriptor
    rev = {h["clip_id"]: h for h in search(reverse="true")}
    assert rev[own]["dynamic_score"] == pytest.approx(-fwd[0]["dynamic_score"], abs=1e-4)
    assert next(iter(rev)) != own
    appearance = search(motion=0.0)
    assert all(h["score"] == pytest.approx(h["static_score"], abs=1e-5) for h in appearance)
    assert not list(Path("/").glob("query.webm")) and not (ROOT.parent / "query.webm").exists()


def test_refused_uploads(api, small_library):
    library, _ = small_library
    video = sorted(library.rglob("*.webm"))[0].read_bytes()
    post = lambda name, data, **kw: api.post("/search", files={"video": (name, data, "video/mp4")}, **kw)  # noqa: E731
    assert is_error(post("notes.txt", b"hello"), 415, "“notes.txt” is not a video")
    assert is_error(post("x.mp4.sh", video), 415, "is not a video")
    r = post("../../junk.mp4", os.urandom(30_000))
    assert is_error(r, 415, "cannot use “../../junk.mp4” as a query") and "lift-search-query-" not in r.text
    assert is_error(post("empty.mp4", b""), 400, "is empty")
    over = b"\0" * (UPLOAD_MB * 2**20 + 10)           # over the limit, within the multipart slack
    assert is_error(post("big.mp4", over), 413, f"the limit is {UPLOAD_MB} MB")
    huge = b"\0" * (UPLOAD_MB * 2**20 * 3)            # refused from its Content-Length, before it is read
    assert is_error(post("huge.mp4", huge), 413, "uploads are limited to")
    assert is_error(api.post("/search", data={"x": "1"}), 422, "upload field video")
    assert is_error(api.post("/search", files={"video": ("a.webm", video)}, params={"start": -1}), 422, "start")


def test_no_chunked_uploads(server):
    def chunks():
        yield b"--b\r\nContent-Disposition: form-data; name=\"video\"; filename=\"a.mp4\"\r\n\r\n"
        yield b"\0" * 1000
        yield b"\r\n--b--\r\n"

    with server.client() as c:
        r = c.post("/search", content=chunks(), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert is_error(r, 411, "Content-Length")


# ---- videos and thumbnails ----------------------------------------------------------------------------
def test_video_is_served_with_range_requests(api, small_index):
    engine = SearchEngine.open(small_index)
    clip = engine.clip_page(0, 1)[0]
    data = Path(clip.video_path).read_bytes()
    size = len(data)
    r = api.get(f"/clips/{clip.clip_id}/video")
    assert r.status_code == 200 and r.content == data and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "video/webm" and "content-disposition" not in r.headers
    r = api.get(f"/clips/{clip.clip_id}/video", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{size}"
    r = api.get(f"/clips/{clip.clip_id}/video", headers={"Range": "bytes=-64"})  # the last 64 bytes
    assert r.status_code == 206 and r.content == data[-64:] and r.headers["content-range"] == \
        f"bytes {size - 64}-{size - 1}/{size}"
    r = api.get(f"/clips/{clip.clip_id}/video", headers={"Range": f"bytes={size - 10}-"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = api.get(f"/clips/{clip.clip_id}/video", headers={"Range": f"bytes={size}-"})
    assert is_error(r, 416, "past the end") and r.headers["content-range"] == f"bytes */{size}"
    assert is_error(api.get(f"/clips/{clip.clip_id}/video", headers={"Range": "lines=1-2"}), 400, "Range")
    assert is_error(api.get(f"/clips/{clip.clip_id}/video", headers={"Range": "bytes=9-3"}), 400, "Range")
    assert is_error(api.get("/clips/999999/video"), 404, "no clip")


def test_thumbnail_is_the_cached_middle_frame_as_jpeg(api, small_index):
    engine = SearchEngine.open(small_index)
    clip = engine.clip_page(3, 1)[0].clip_id
    r = api.get(f"/clips/{clip}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    got = cv2.cvtColor(cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    want = engine.thumbnail(clip)
    assert got.shape == want.shape and np.abs(got.astype(float) - want).mean() < 4  # JPEG at quality 90
    assert is_error(api.get("/clips/999999/thumbnail"), 404, "no clip")


@pytest.fixture(scope="module")
def odd_index(small_library, small_index, tmp_path_factory) -> Path:
    """An index of a good video, one with a non-UTF-8 name, and a symlink to a video outside the
    library; reuses small_index's LiFT weights (nothing is trained)."""
    library, _ = small_library
    return index_with_outside_link(tmp_path_factory.mktemp("odd"), library, small_index,
                                   ["good.webm", b"caf\xe9.webm"], ".webm")


def test_paths_are_refused(server):
    """Only clip ids name files: ../, absolute and percent-encoded paths never reach one, and a symlink
    out of the library is not followed."""
    for target in ["/clips/../../../../etc/passwd", "/clips/1/video/../../../../etc/passwd",
                   "/clips/..%2F..%2F..%2Fetc%2Fpasswd/video", "/clips/%2Fetc%2Fpasswd/video",
                   "/clips/1%2F..%2F..%2Fetc%2Fpasswd/video", "/clips//etc/passwd/video",
                   "/clips/%2e%2e/%2e%2e/etc/passwd/video", "/clips/1/video%00.mp4", "/clips/1e0/video",
                   "/clips/-1/video", "/clips/0x1/video", "/../../etc/passwd"]:
        status, headers, body = server.raw_get(target)
        assert status in (404, 422) and headers["content-type"] == "application/json", (target, status, body)
        assert json.loads(body)["status"] == status and b"root:" not in body, target


def test_odd_library_symlink_and_undecodable_names(odd_index, tmp_path):
    s = Server(odd_index, tmp_path / "log").start()
    try:
        with s.client() as api:
            clips = {Path(c["video_path"]).name: c for c in api.get("/clips").json()["clips"]}
            assert set(clips) == {"good.webm", "caf\\xe9.webm", "link.webm"}  # non-UTF-8 bytes as \xNN
            link, odd = clips["link.webm"]["clip_id"], clips["caf\\xe9.webm"]["clip_id"]
            assert is_error(api.get(f"/clips/{link}/video"), 404, "outside the indexed folders")
            assert api.get(f"/clips/{odd}/video").status_code == 200
            hits = api.get("/search", params={"clip": clips["good.webm"]["clip_id"]}).json()["hits"]
            assert {h["clip_id"] for h in hits} == {link, odd}
    finally:
        s.stop()


def test_check_upload_private_copy_and_query_file(tmp_path):
    """The checks the app and the API share (search.uploads): the name only gives the type."""
    assert uploads.check_upload("../../A.MP4", 10, 100) == ".mp4"
    assert uploads.check_upload("C:\\x\\clip.webm", 10, 100) == ".webm"
    for name, size, error in [("a.mp4", 0, uploads.InputError), ("a.mp4", 101, uploads.UploadTooLargeError),
                              ("a.gif", 5, uploads.UnsupportedUploadError), ("mp4", 5, uploads.UnsupportedUploadError),
                              (".mp4", 5, uploads.UnsupportedUploadError)]:
        with pytest.raises(error):
            uploads.check_upload(name, size, 100)
    for data in (b"data", io.BytesIO(b"data")):
        with uploads.private_copy(data, ".mkv") as p:
            assert p.name == "query.mkv" and p.read_bytes() == b"data"
            assert stat.S_IMODE(p.parent.stat().st_mode) == 0o700 and stat.S_IMODE(p.stat().st_mode) == 0o600
        assert not p.exists() and not p.parent.exists()
    with pytest.raises(uploads.InputError):
        with uploads.private_copy(b"x", "/../../etc/x"):
            pass
    with pytest.raises(UnreadableVideoError, match="^cannot use “../x.mp4” as a query: broken$") as e:
        with uploads.query_file(b"x", "../x.mp4", 1, 100) as p:
            raise UnreadableVideoError(f"cannot use {p} as a query: broken")
    assert "lift-search-query-" not in str(e.value)
    with pytest.raises(SearchError, match="^k must be"):  # an error that does not name the file: as it is
        with uploads.query_file(b"x", "x.mp4", 1, 100):
            raise SearchError("k must be at least 1")


# ---- the API key, and errors ------------------------------------------------------------------------------
def test_beyond_loopback_needs_an_api_key_on_every_request(small_index, tmp_path):
    env = {"LIFT_SEARCH_API_KEY": ""}
    r = subprocess.run([sys.executable, "-m", "search.cli", "serve", "--index", str(small_index), "--host", "0.0.0.0"],
                       cwd=ROOT, env={**Server(small_index, tmp_path / "x").env, **env}, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "needs an API key: set LIFT_SEARCH_API_KEY" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "search.cli", "serve", "--index", str(small_index), "--host", "0.0.0.0",
                        "--api-key", "short"], cwd=ROOT, env=Server(small_index, tmp_path / "x").env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "use at least 16" in r.stderr

    s = Server(small_index, tmp_path / "log", "--host", "0.0.0.0", env={"LIFT_SEARCH_API_KEY": KEY}, key=KEY).start()
    try:
        with httpx.Client(base_url=s.url, timeout=60) as plain:
            for path in ["/health", "/status", "/clips", "/clips/1", "/clips/1/video", "/clips/1/thumbnail",
                         "/search?clip=1", "/docs", "/openapi.json", "/nothing"]:
                assert is_error(plain.get(path), 401, "needs an API key"), path
                assert is_error(plain.get(path, headers={"X-API-Key": KEY[:-1] + "x"}), 401, "wrong API key")
                assert is_error(plain.get(path, headers={"Authorization": "Bearer " + KEY[:-1]}), 401, "wrong")
            assert is_error(plain.post("/search", files={"video": ("a.mp4", b"x")}), 401, "needs an API key")
            assert plain.get("/clips", headers={"X-API-Key": KEY}).json()["total"] == 16
            assert plain.get("/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    finally:
        s.stop()
    assert KEY not in (tmp_path / "log").read_text()


def test_a_bug_is_a_generic_500_with_the_traceback_in_the_log_only(small_index, tmp_path):
    """A damaged index (a feature file gone) is not the client's fault: 500, a generic JSON body."""
    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    engine = SearchEngine.open(index)
    clip = engine.clip_page(0, 1)[0].clip_id
    with engine.sessions() as ses:
        from db import Clip as ClipRow

        (index / ses.get(ClipRow, clip).video.features).unlink()
    s = Server(index, tmp_path / "log").start()
    try:
        with s.client() as api:
            r = api.get(f"/clips/{clip}/thumbnail")
            assert is_error(r, 500, "internal server error") and "features" not in r.text
            assert api.get("/health").status_code == 200  # and it goes on serving
    finally:
        s.stop()
    log = (tmp_path / "log").read_text()
    assert "Traceback" in log and "FileNotFoundError" in log


# ---- searches while an index run writes -----------------------------------------------------------------
def test_searches_during_an_index_run_never_fail_and_then_see_the_new_clips(driver, tmp_path):
    videos = make_library(tmp_path / "videos", groups=("left_right", "up_down"))
    index = tmp_path / "idx"
    assert driver.run([videos], index)[0] == "exit 0"
    extra = make_library(tmp_path / "extra", groups=("open_close", "rotate", "towards_away"), crash=False)
    for f in good_videos(extra):
        shutil.copy2(f, videos / f.name)  # 6 new videos, stored one checkpoint each

    s = Server(index, tmp_path / "log").start()
    stop, errors, counts = threading.Event(), [], {"searches": 0, "pages": 0, "clips": set()}

    def client(seed: int):
        rng = random.Random(seed)
        with s.client() as api:
            while not stop.is_set():
                try:
                    page = api.get("/clips")
                    assert page.status_code == 200, page.text
                    ids = [c["clip_id"] for c in page.json()["clips"]]
                    counts["pages"] += 1
                    counts["clips"].add(len(ids))
                    r = api.get("/search", params={"clip": rng.choice(ids), "k": 5, "motion": rng.random()})
                    assert r.status_code == 200 and r.json()["hits"], r.text
                    counts["searches"] += 1
                except Exception as e:  # noqa: BLE001 -- any error at all fails the test
                    errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.5)
        job = driver.start([videos], index, opts={"checkpoint_videos": 1})
        before = counts["searches"]
        while not driver.finished(0.05) and not errors:
            pass
        during = counts["searches"] - before
        status, result, _, _ = driver.wait(job)
        deadline = time.monotonic() + 30
        while 10 not in counts["clips"] and time.monotonic() < deadline and not errors:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        s.stop()
    assert status == "exit 0" and result["report"]["new"] == 6, result
    assert errors == [] and during >= 20, (errors[:3], counts)
    assert 4 in counts["clips"] and 10 in counts["clips"]  # served the old library, then the new one
    assert "reopened" in (tmp_path / "log").read_text()
    record("serve_concurrency", {"http_searches_during_indexing": during, "http_searches_total": counts["searches"],
                                 "pages_total": counts["pages"], "clients": len(threads), "errors": len(errors)})


# ---- cold start --------------------------------------------------------------------------------------
def test_search_engine_and_server_import_no_model(small_index):
    """`from search import SearchEngine`, the CLI, the server's start-up and a clip search need no model:
    neither torch nor timm is imported (8 s cold)."""
    code = ("import sys; from search import SearchEngine; import search.cli, search.api; "
            "from fastapi.testclient import TestClient; "
            "c = TestClient(search.api.create_app(sys.argv[1])); "
            "assert c.get('/search', params={'clip': c.get('/clips').json()['clips'][0]['clip_id']}).json()['hits']; "
            "print(sorted(m for m in ('torch', 'timm', 'torchvision', 'onnxruntime', 'cv2', 'streamlit') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(small_index)], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_within_overlap_and_segment(api, small_index, small_library):
    """The API passes `within`, `overlap` and an upload's segment to the engine: the hits are the engine's."""
    engine = SearchEngine.open(small_index)
    library, _ = small_library
    folder = str(next(p for p in sorted(library.iterdir()) if p.is_dir()))
    clip = engine.clip_page(0, 1, within=[folder])[0]
    for overlap in ("distinct", "keep"):
        r = api.get("/search", params={"clip": clip.clip_id, "within": [folder, folder + "/none"], "overlap": overlap})
        want = engine.search_clip(clip.clip_id, within=[folder, folder + "/none"], overlap=overlap)
        assert r.status_code == 200 and [h["clip_id"] for h in r.json()["hits"]] == [h.clip_id for h in want]
        assert all(h["video_path"].startswith(folder + "/") for h in r.json()["hits"]) and want
    page = api.get("/clips", params={"within": folder}).json()
    under = [c for c in engine.clips() if c.video_path.startswith(folder + "/")]
    assert page["total"] == engine.count([folder]) == len(under)
    assert 0 < page["total"] < 16 and all(c["video_path"].startswith(folder + "/") for c in page["clips"])
    assert is_error(api.get("/search", params={"clip": clip.clip_id, "within": "/nowhere"}), 400, "no indexed clip")
    assert is_error(api.get("/search", params={"clip": clip.clip_id, "overlap": "merge"}), 422, "overlap")

    video = Path(clip.video_path)
    upload = {"video": ("q.webm", video.read_bytes())}
    r = api.post("/search", params={"start": 0.5, "end": 1.5, "k": 3}, files=upload)
    want = engine.search_video(video, k=3, start_s=0.5, end_s=1.5)
    assert r.status_code == 200, r.text
    got = [(h["clip_id"], round(h["score"], 4)) for h in r.json()["hits"]]
    assert got == [(h.clip_id, round(h.score, 4)) for h in want]
    assert is_error(api.post("/search", params={"start": 2.0, "end": 1.0}, files=upload), 400, "a segment needs")
