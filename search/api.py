"""The HTTP API over SearchEngine: `lift-search serve --index IDX` (FastAPI on uvicorn; OpenAPI docs at /docs).

    GET  /clips?offset=&limit=&within=        a page of the library's clips, ordered by id
    GET  /clips/{id}                          one clip
    GET  /clips/{id}/video                    its video file (HTTP range requests: browsers seek)
    GET  /clips/{id}/thumbnail                its middle frame, JPEG
    GET  /search?clip=ID&k=&reverse=&motion=&within=&overlap=    clips like an indexed clip
    POST /search?k=&...&start=&end=           clips like an uploaded video (multipart field "video")
    GET  /status, GET /health

Nothing a client sends is used as a path: videos are served by clip id only (SearchEngine.video_file
serves a file only if it lies inside the indexed folders once every symlink is resolved) and uploads
are copied under a generated name (search.uploads). Every error is JSON, {"error": message, "status":
code}: a LiftSearchError is the client's to fix (4xx with its message; 503 when the index's backbone or
LiFT cannot be loaded); anything else is a bug (500, a generic message; the traceback goes to the
server's log only).

The engine is opened once and reopened when an index run saves new vectors (one request reopens it;
the others go on with the engine they have), so searches keep working, and see new clips, while an
index run writes. Bound to a loopback address by default; any other address needs an API key, checked
on every request (header X-API-Key, or Authorization: Bearer).
"""
from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import threading
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from indexer.segments import MANIFEST
from lift.config import API_KEY_ENV, MOTION_WEIGHT, OVERLAP_MODES, SEARCH_K, ServeOptions
from lift.errors import BackboneError, CheckpointError, LiftSearchError, UsageError
from lift.files import shown_path

from . import uploads
from .engine import Clip, Hit, MediaUnavailableError, SearchEngine, UnknownClipError, UnreadableVideoError

log = logging.getLogger(__name__)

MAX_CLIP_ID = 10**12
MAX_K = 1000
UPLOAD_SLACK = 2**20  # a multipart body's bytes beyond the file itself (boundaries, headers, fields)


# ---- models -------------------------------------------------------------------------------------
class ClipOut(BaseModel):
    clip_id: int
    video_path: str
    start_s: float
    end_s: float

    @classmethod
    def of(cls, c: Clip) -> "ClipOut":
        return cls(clip_id=c.clip_id, video_path=shown_path(c.video_path), start_s=round(c.start_s, 3),
                   end_s=round(c.end_s, 3))


class ClipPage(BaseModel):
    total: int = Field(description="clips in the library (with the `within` filter)")
    offset: int
    limit: int
    clips: list[ClipOut]


class HitOut(BaseModel):
    """One result, as `lift-search search --json` prints it: score = (1 - motion) static + motion dynamic."""
    rank: int
    score: float
    static_score: float = Field(description="cosine of the appearance parts")
    dynamic_score: float = Field(description="cosine of the motion parts (negated query motion if reverse)")
    clip_id: int
    video_path: str
    start_s: float
    end_s: float

    @classmethod
    def of(cls, h: Hit) -> "HitOut":
        return cls(**{**h.to_dict(), "video_path": shown_path(h.video_path)})


class SearchQuery(BaseModel):
    """What every search takes (query parameters)."""
    model_config = ConfigDict(extra="forbid")

    k: int = Field(SEARCH_K, ge=1, le=MAX_K, description="number of results")
    reverse: bool = Field(False, description="find the temporally opposite action")
    motion: float = Field(MOTION_WEIGHT, ge=0.0, le=1.0,
                          description="weight of motion in the score: 0 looks the same ... 1 moves the same")
    within: list[str] | None = Field(None, description="only clips of videos under these folders (absolute "
                                                       "paths; repeat the parameter: under any of them)")
    overlap: Literal[OVERLAP_MODES] = Field(
        OVERLAP_MODES[0], description="`distinct`: windows of one video that overlap in time are one hit, the "
                                      "best; `keep`: every window")

    def engine_kwargs(self) -> dict:
        return {"k": self.k, "reverse": self.reverse, "motion": self.motion, "within": self.within,
                "overlap": self.overlap}


class ClipSearchQuery(SearchQuery):
    clip: int = Field(ge=1, lt=MAX_CLIP_ID, description="id of the query clip")


class VideoSearchQuery(SearchQuery):
    start: float | None = Field(None, ge=0.0, description="query segment start, seconds (default: 0)")
    end: float | None = Field(None, gt=0.0, description="query segment end, seconds (default: the video's end)")

    def engine_kwargs(self) -> dict:
        return {**super().engine_kwargs(), "start_s": self.start, "end_s": self.end}


class SearchOut(BaseModel):
    query: SerializeAsAny[SearchQuery]
    hits: list[HitOut]


class Failure(BaseModel):
    path: str
    reason: str


class StatusOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: str
    videos: int
    clips: int
    vectors: int
    served: int = Field(description="clips this server serves (from the vectors it has loaded)")
    failures: int
    failure_reasons: list[Failure]
    backbone: str | None
    lift: dict | None
    sampling: dict | None
    dim: int
    disk_bytes: int


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"
    clips: int


class ErrorOut(BaseModel):
    error: str
    status: int


ERRORS = {code: {"model": ErrorOut} for code in (400, 401, 404, 411, 413, 415, 416, 422, 500, 503)}
ClipId = Annotated[int, PathParam(ge=1, lt=MAX_CLIP_ID, description="a clip's id (from /clips or a search)")]


# ---- errors -------------------------------------------------------------------------------------
# a client's error -> its status; checked in order, the first class that matches wins
STATUS = ((UnknownClipError, 404), (MediaUnavailableError, 404), (uploads.UploadTooLargeError, 413),
          (uploads.UnsupportedUploadError, 415), (UnreadableVideoError, 415), (BackboneError, 503),
          (CheckpointError, 503), (LiftSearchError, 400))


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def status_of(e: LiftSearchError) -> int:
    return next(code for cls, code in STATUS if isinstance(e, cls))


def validation_message(e: RequestValidationError) -> str:
    """One line per refused input: "query parameter k: Input should be greater than or equal to 1"."""
    where = {"query": "query parameter", "path": "path parameter", "body": "upload field", "header": "header"}
    parts = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        name = ".".join(loc[1:]) or "request"
        parts.append(f"{where.get(loc[0], loc[0]) if loc else 'request'} {name}: {err.get('msg')}")
    return "; ".join(parts)


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LiftSearchError)
    async def client_error(request: Request, e: LiftSearchError):
        return error(status_of(e), str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return error(422, validation_message(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        return error(e.status_code, str(e.detail), headers=getattr(e, "headers", None))


# ---- the engine, reopened when the index changes ----------------------------------------------
class EngineHolder:
    """The engine requests use. When an index run saves new vectors, the next request reopens the
    engine (the others go on with the engine they have, which stays consistent: it never serves an id
    out of step with its vector)."""

    def __init__(self, index: str | Path):
        self.index = Path(index)
        self._engine = SearchEngine.open(self.index)
        self._seen = self._signature()
        self._reopening = threading.Lock()

    def _signature(self) -> tuple | None:
        idx = self._engine.idx
        for f in (idx.vectors / MANIFEST, idx.legacy_vectors):  # replaced atomically by every commit: a new inode
            try:
                st = os.stat(f)
            except FileNotFoundError:
                continue
            return st.st_ino, st.st_mtime_ns, st.st_size
        return None

    def get(self) -> SearchEngine:
        sig = self._signature()
        if sig != self._seen and self._reopening.acquire(blocking=False):
            try:
                self._seen = sig  # a reopen that fails is tried again at the next change
                self._engine = SearchEngine.open(self.index)
                log.info("reopened %s: %d clips", self.index, len(self._engine.served_ids()))
            except (LiftSearchError, OSError) as e:
                log.warning("serving the index as it was: cannot reopen %s: %s", self.index, e)
            finally:
                self._reopening.release()
        return self._engine


def engine(request: Request) -> SearchEngine:
    return request.app.state.holder.get()


Engine = Annotated[SearchEngine, Depends(engine)]


# ---- the endpoints ------------------------------------------------------------------------------
router = APIRouter()


@router.get("/health", response_model=HealthOut)
def health(eng: Engine) -> HealthOut:
    """The server is up and its index open."""
    return HealthOut(clips=eng.count())


@router.get("/status", response_model=StatusOut)
def status(eng: Engine) -> StatusOut:
    """Counts of videos, clips and failures (with reasons), and the models of the index."""
    st = eng.status()
    st["failure_reasons"] = [{"path": shown_path(f["path"]), "reason": f["reason"]} for f in st["failure_reasons"]]
    return StatusOut(**st, served=eng.count())


@router.get("/clips", response_model=ClipPage, responses=ERRORS)
def clips(eng: Engine, offset: Annotated[int, Query(ge=0)] = 0,
          limit: Annotated[int, Query(ge=1, le=ServeOptions.max_page_limit)] = ServeOptions.page_limit,
          within: Annotated[list[str] | None, Query(description="only clips of videos under these folders")] = None
          ) -> ClipPage:
    """A page of the library's clips, ordered by id."""
    return ClipPage(total=eng.count(within), offset=offset, limit=limit,
                    clips=[ClipOut.of(c) for c in eng.clip_page(offset, limit, within)])


@router.get("/clips/{clip_id}", response_model=ClipOut, responses=ERRORS)
def clip(clip_id: ClipId, eng: Engine) -> ClipOut:
    return ClipOut.of(eng.clip(clip_id))


@router.get("/clips/{clip_id}/video", response_class=FileResponse, responses=ERRORS)
def clip_video(clip_id: ClipId, eng: Engine, request: Request) -> Response:
    """The clip's whole video file (seek to the clip's start_s), with HTTP range requests."""
    path = eng.video_file(clip_id)
    size = path.stat().st_size
    if (bad := range_error(request.headers.get("range"), size)) is not None:
        return bad
    return FileResponse(path, media_type=uploads.MEDIA_TYPES.get(path.suffix.lower().lstrip("."),
                                                                 "application/octet-stream"))


@router.get("/clips/{clip_id}/thumbnail", response_class=Response, responses=ERRORS)
def clip_thumbnail(clip_id: ClipId, eng: Engine) -> Response:
    """The clip's middle frame as a JPEG (from the index's cache; the video is not decoded)."""
    import cv2

    rgb = eng.thumbnail(clip_id)  # (H, W, 3) uint8
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError(f"cannot encode the thumbnail of clip {clip_id} as JPEG")
    return Response(jpeg.tobytes(), media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/search", response_model=SearchOut, responses=ERRORS)
def search_clip(q: Annotated[ClipSearchQuery, Query()], eng: Engine) -> SearchOut:
    """Clips like an indexed clip (itself excluded), best first; `reverse` finds the opposite action."""
    hits = eng.search_clip(q.clip, **q.engine_kwargs())
    return SearchOut(query=q, hits=[HitOut.of(h) for h in hits])


@router.post("/search", response_model=SearchOut, responses=ERRORS)
def search_video(q: Annotated[VideoSearchQuery, Query()], eng: Engine, request: Request,
                 video: Annotated[UploadFile, File(description="the query video (.mp4, .avi, .mov, .mkv, .webm)")]
                 ) -> SearchOut:
    """Clips like an uploaded video (one clip over the whole file, or over start..end seconds)."""
    opts: ServeOptions = request.app.state.opts
    with request.app.state.video_queries, \
            uploads.query_file(video.file, video.filename or "", video.size or 0, opts.max_upload_mb * 2**20) as tmp:
        hits = eng.search_video(tmp, **q.engine_kwargs())
    return SearchOut(query=q, hits=[HitOut.of(h) for h in hits])


# ---- range requests, the API key, the body size ---------------------------------------------------
RANGE_SPEC = re.compile(r"\s*([0-9]*)-([0-9]*)\s*")


def range_error(header: str | None, size: int) -> JSONResponse | None:
    """Our JSON error for a Range header that Starlette's FileResponse would refuse in plain text: 416
    when a range starts past the end of the file, 400 when it is malformed; None when it is fine."""
    if header is None:
        return None
    unit, _, specs = header.partition("=")
    parsed = [RANGE_SPEC.fullmatch(s) for s in specs.split(",")]
    if unit.strip().lower() != "bytes" or not all(m and (m[1] or m[2]) for m in parsed):
        return error(400, f"malformed Range header {uploads.quote(header)}: use bytes=START-END, "
                          f"bytes=START- or bytes=-LENGTH")
    for m in parsed:
        start = int(m[1]) if m[1] else max(size - int(m[2]), 0)
        if m[1] and m[2] and int(m[2]) < start:
            return error(400, f"malformed Range header {uploads.quote(header)}: a range ends before it starts")
        if start >= size:
            return error(416, f"range {uploads.quote(m[0].strip())} starts past the end of the file "
                              f"({size} bytes)", headers={"Content-Range": f"bytes */{size}"})
    return None


def given_key(headers: Headers) -> str | None:
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return headers.get("x-api-key")


class Guard:
    """ASGI middleware, before any route: the API key (when the server has one) on every request;
    request bodies bounded by their Content-Length before a byte of them is read; and any other
    exception answered as a generic 500 (handled here, the connection stays usable)."""

    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.key, self.max_body = app, (api_key.encode() if api_key else None), max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(Headers(scope=scope), scope["method"])
        if refusal is not None:
            return await refusal(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # a bug: the traceback to the log only, the client a generic error
            log.exception("%s %s failed", scope["method"], scope["path"])
            if started:
                raise
            await error(500, "internal server error (the server's log has the details)")(scope, receive, send)

    def refusal(self, headers: Headers, method: str) -> JSONResponse | None:
        if self.key is not None:
            key = given_key(headers)
            if not key:
                return error(401, "this server needs an API key: send it in the X-API-Key header "
                                  "(or as Authorization: Bearer KEY)", headers={"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(key.encode("utf-8", "surrogateescape"), self.key):
                return error(401, "wrong API key", headers={"WWW-Authenticate": "Bearer"})
        if method in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None:
                return error(411, "send the request with a Content-Length header (no chunked uploads)")
            if not length.isdigit() or int(length) > self.max_body:
                return error(413, f"the request body is {length} bytes; uploads are limited to "
                                  f"{(self.max_body - UPLOAD_SLACK) / 2**20:.0f} MB")
        return None


# ---- the app --------------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def api_key_for(host: str, api_key: str | None) -> str | None:
    """The API key to require: the one given (--api-key, else $LIFT_SEARCH_API_KEY); refuses to serve
    beyond loopback without one, and keys too short to resist guessing."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    if key is None and not is_loopback(host):
        raise UsageError(f"serving on {host} (beyond this machine) needs an API key: set {API_KEY_ENV} (or pass "
                         f"--api-key), e.g. {API_KEY_ENV}=$(python -c 'import secrets; "
                         f"print(secrets.token_urlsafe(32))')")
    if key is not None and len(key) < ServeOptions.min_api_key_chars:
        raise UsageError(f"the API key is {len(key)} characters; use at least {ServeOptions.min_api_key_chars}")
    return key


def create_app(index: str | Path, opts: ServeOptions = ServeOptions(), api_key: str | None = None) -> FastAPI:
    """The API over the index at `index` (opened now: a missing or empty index is an error here).
    `api_key`: required on every request when given (see api_key_for)."""
    app = FastAPI(title="lift-search", version="1", summary="Time-aware video search over one index.",
                  description=__doc__.split("\n\n", 2)[2])
    app.state.holder = EngineHolder(index)
    app.state.opts = opts
    app.state.video_queries = threading.BoundedSemaphore(opts.video_queries)
    app.include_router(router)
    add_error_handlers(app)
    app.add_middleware(Guard, api_key=api_key, max_body=opts.max_upload_mb * 2**20 + UPLOAD_SLACK)
    return app


def serve(index: str | Path, opts: ServeOptions = ServeOptions(), api_key: str | None = None) -> None:
    """Run the API with uvicorn until interrupted."""
    import faiss
    import uvicorn

    key = api_key_for(opts.host, api_key)
    # requests run in parallel threads, each search on one core: FAISS's own thread team only adds its
    # start-up and spinning to a one-query search (3x slower on a busy 2-core machine)
    faiss.omp_set_num_threads(1)
    app = create_app(index, opts, key)
    log.info("serving %s on http://%s:%d (API docs at /docs)%s", index, opts.host, opts.port,
             "; API key required" if key else "")
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info", timeout_graceful_shutdown=5)
