"""The FastAPI application of ``locvtp serve``: the pages, their static assets and the JSON API.

Every model call goes through :class:`locvtp.predictor.LocVTPPredictor` (``decode_video``, ``encode_clips``,
``encode_text``, ``ground``, ``search_index``): the server holds no copy of the preprocessing. Errors are JSON
``{"detail": "one sentence"}`` with a 4xx status for what the client sent (400 malformed, 404 unknown id, 409
not ready, 413 too large, 415 not a video, 422 unusable value) and 500 only for a bug; the server keeps serving
after any of them.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from locvtp.data.textinput import strip_bom
from locvtp.data.video import VideoError
from locvtp.errors import LocVTPError, UsageError
from locvtp.serve.library import Library, NotFound, index_summary
from locvtp.serve.workdir import WorkDir

STATIC = Path(__file__).parent / "static"
MAX_QUERY_WORDS = 200
MAX_QUERY_CHARS = 2000
MAX_TOP_K = 100
CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
log = logging.getLogger("locvtp.serve")


class GroundRequest(BaseModel):
    """POST /api/ground. Ranges are checked by the server (one-sentence 422 messages)."""

    model_config = ConfigDict(extra="forbid")
    video: Optional[str] = Field(None, description="a video id of GET /api/videos (a path relative to --videos, "
                                                   "or upload:<hex> for an upload)")
    query: Optional[str] = Field(None, description=f"the sentence (1 to {200} words)")
    top_k: Optional[int] = Field(5, description="how many windows (1-100)")
    nms: Optional[float] = Field(0.5, description="IoU above which a lower-ranked window is dropped (0-1)")
    alpha: Optional[float] = Field(0.5, description="weight of the sentence vs the word similarities (0-1)")
    max_seconds: Optional[float] = Field(None, description="longest window in seconds (none: any)")
    heatmap: Optional[bool] = Field(True, description="also return the clip x word similarity matrix")


class SearchRequest(BaseModel):
    """POST /api/search."""

    model_config = ConfigDict(extra="forbid")
    query: Optional[str] = Field(None, description="the sentence")
    top_k: Optional[int] = Field(10, description="how many moments (1-100)")


class ApiError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class ServeConfig:
    """What ``locvtp serve`` was given (``work_dir`` None: a temporary folder, removed on exit; see
    :mod:`locvtp.serve.workdir`)."""

    checkpoint: Path
    videos: Optional[Path] = None
    index: Optional[Path] = None
    work_dir: Optional[Path] = None
    max_upload_mb: float = 200.0
    device: str = "cpu"
    allow_foreign_features: bool = False

    def work(self) -> WorkDir:
        """The work folder for this configuration (checked, not yet created)."""
        return WorkDir(self.work_dir, {"--videos": self.videos, "--index": self.index,
                                       "--checkpoint": self.checkpoint})


def check_query(query: Any, max_words: int) -> str:
    """The query, or a 422 saying what is wrong with it (empty, too long, not text)."""
    if not isinstance(query, str):
        raise ApiError(422, "query must be a string: a sentence describing the moment")
    q = strip_bom(query).strip()
    if not q:
        raise ApiError(422, "the query is empty: type a sentence describing the moment")
    words = len(q.split())
    if words > MAX_QUERY_WORDS or len(q) > MAX_QUERY_CHARS:
        raise ApiError(422, f"the query is too long ({words} words, {len(q)} characters): at most "
                            f"{MAX_QUERY_WORDS} words and {MAX_QUERY_CHARS} characters (the model reads only its "
                            f"first {max_words} tokens anyway)")
    return q


def _int(body: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise ApiError(422, f"{key} must be an integer, got {v!r}")
    if not lo <= int(v) <= hi:
        raise ApiError(422, f"{key} must be between {lo} and {hi}, got {v}")
    return int(v)


def _float(body: dict, key: str, default: Optional[float], lo: float, hi: float) -> Optional[float]:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ApiError(422, f"{key} must be a number, got {v!r}")
    if not lo <= float(v) <= hi:
        raise ApiError(422, f"{key} must be between {lo:g} and {hi:g}, got {v}")
    return float(v)


def _round(a: Any, nd: int = 4) -> Any:
    return np.round(np.asarray(a, dtype=np.float64), nd).tolist()


class Server:
    """Predictor + library + index: what the routes call (usable without HTTP, e.g. by the benchmark).

    The work folder is created only after the checkpoint and the index have loaded, so a start that fails on
    them writes nothing; its owner (``work``'s creator) closes it."""

    def __init__(self, cfg: ServeConfig, predictor: Any = None, work: Optional[WorkDir] = None):
        from locvtp.predictor import LocVTPPredictor

        self.cfg = cfg
        self.p = predictor or LocVTPPredictor.from_checkpoint(cfg.checkpoint, device=cfg.device)
        self.p.model.eval()  # once: concurrent calls then never toggle the train flag under each other
        self.index = None
        self.index_warnings: list[str] = []
        if cfg.index is not None:
            self.index, self.index_warnings = self.p.open_index(
                _open_index(cfg.index), allow_foreign_features=cfg.allow_foreign_features,
                allow_flag="--allow-foreign-features", where=f"--index {cfg.index}")
        self.work = work if work is not None else cfg.work()
        self.lib = Library(self.p, self.work.open(), cfg.videos, cfg.index)
        self.max_upload = int(float(cfg.max_upload_mb) * 1024 * 1024)
        # Text encoding (the tokenizer) and the index search run one at a time; both take milliseconds, and the
        # tokenizer object is not documented as thread-safe. Video encoding runs outside this lock.
        self.text_lock = threading.Lock()
        self.started = time.time()

    def summary(self) -> str:
        """The startup line's facts: checkpoint, videos, index (never a bare None), work folder."""
        n = len(self.lib.list())
        videos = (f"{n} videos" if self.cfg.videos is not None or n else
                  "videos: none (give --videos DIR, or upload one on the page)")
        index = (f"index: {len(self.index)} clips of {len(self.index.videos)} videos" if self.index is not None
                 else "index: none (give --index DIR for the search page)")
        return f"checkpoint {self.p.path}, {videos}, {index}, {self.work.describe()}"

    # -- what the API returns -------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        prep = self.p.preprocessing
        return {
            "ok": True,
            "checkpoint": str(self.p.path) if self.p.path is not None else None,
            "checkpoint_sha256": self.p.sha256,
            "preprocessing": {"clip_seconds": prep.clip_seconds, "stride_seconds": prep.stride_seconds,
                              "frames_per_clip": prep.frames_per_clip, "frame_size": prep.frame_size,
                              "max_words": prep.max_words},
            "videos_dir": self.cfg.videos is not None,
            "index": index_summary(self.index) if self.index is not None else None,
            "index_warnings": self.index_warnings,
            "max_upload_mb": self.cfg.max_upload_mb,
            "limits": {"max_query_words": MAX_QUERY_WORDS, "max_query_chars": MAX_QUERY_CHARS,
                       "max_top_k": MAX_TOP_K},
            "uptime_seconds": round(time.time() - self.started, 1),
        }

    def ground(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "send a JSON object: {\"video\": ID, \"query\": TEXT}")
        query = check_query(body.get("query"), self.p.preprocessing.max_words)
        top_k = _int(body, "top_k", 5, 1, MAX_TOP_K)
        nms = _float(body, "nms", 0.5, 0.0, 1.0)
        alpha = _float(body, "alpha", 0.5, 0.0, 1.0)
        max_seconds = _float(body, "max_seconds", None, 1e-3, 1e7)
        heatmap = body.get("heatmap") is not False
        v = self.lib.get(body.get("video"))
        t0 = time.perf_counter()
        emb = self.lib.embedding(v)
        t1 = time.perf_counter()
        with self.text_lock:
            res = self.p.ground(emb, query, top_k=top_k, nms=nms, alpha=alpha, max_seconds=max_seconds)
            text = self.p.encode_text([query], warnings=False) if heatmap else None
        t2 = time.perf_counter()
        out = res.to_json(curve=True)  # the grounding result's one shape (locvtp.localize.GroundingResult)
        out["vid"] = v.id
        out["video"] = v.id
        out["name"] = v.name
        out["clip_scores"] = _round(out["clip_scores"])
        out["clip_relevance"] = _round(out["clip_relevance"])
        if text is not None:
            words = np.asarray(text.words[0], np.float32)
            out["words"] = list(text.tokens[0])
            out["heatmap"] = _round(np.asarray(emb.features, np.float32) @ words.T) if words.size else []
        out["timing"] = {"embedding_seconds": round(t1 - t0, 4), "ground_seconds": round(t2 - t1, 4)}
        return out

    def search(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "send a JSON object: {\"query\": TEXT}")
        if self.index is None:
            raise ApiError(404, "this server has no moment index: start it with --index DIR (built by "
                                "`locvtp index`)")
        query = check_query(body.get("query"), self.p.preprocessing.max_words)
        top_k = _int(body, "top_k", 10, 1, MAX_TOP_K)
        with self.text_lock:
            resp = self.p.search_index(self.index, [query], top_k=top_k, warnings=self.index_warnings)
        r = resp.results[0]
        moments, unplayable = [], []
        for m in r.moments:
            d = m.to_json()
            lib_id = self.lib.for_index_video(m.video_id)
            d["video"] = lib_id
            mid = 0.5 * (float(m.start) + float(m.end))
            d["thumbnail"] = (f"/api/thumbnail?video={_q(lib_id)}&t={mid:.3f}" if lib_id is not None else None)
            if lib_id is None:
                unplayable.append(m.video_id)
            moments.append(d)
        warnings = list(r.warnings) + list(resp.warnings)
        if unplayable:  # said, not silent: a result without a video looks like a broken page
            shown = ", ".join(repr(v) for v in sorted(set(unplayable))[:5])
            warnings.append(f"{len(unplayable)} moment(s) come from videos not found under --videos ({shown}): "
                            "they have no player or thumbnail; start serve with --videos pointing at the folder "
                            "the features were extracted from")
        return {"query": r.query, "moments": moments, "warnings": warnings,
                "timing": {"embed_seconds": round(resp.embed_seconds, 4),
                           "search_seconds": round(resp.search_seconds, 4)}}


def _open_index(path: Path) -> Any:
    """The moment index at ``path``; its errors name ``--index``."""
    from locvtp.index import IndexError_, MomentIndex

    try:
        return MomentIndex(path)
    except IndexError_ as exc:
        raise IndexError_(f"--index {exc}") from None


def _q(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def _video_error_status(exc: VideoError) -> int:
    r = str(getattr(exc, "reason", "")).lower()
    return 415 if ("cannot open" in r or "no video stream" in r or "empty file" in r) else 422


def create_app(cfg: ServeConfig, predictor: Any = None, work: Optional[WorkDir] = None):
    """The ASGI application (FastAPI) for ``cfg``. ``work``: a work folder whose owner closes it (``locvtp
    serve`` does, on every exit); without it the app makes its own and closes it when the app shuts down or
    fails to start."""
    own = work is None
    work = cfg.work() if own else work
    try:
        srv = Server(cfg, predictor, work)
    except BaseException:
        if own:
            work.close()
        raise

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            srv.lib.close()
            if own:
                work.close()

    app = FastAPI(
        lifespan=lifespan,
        title="locvtp serve",
        version="1",
        description="Ground a sentence in a video and search moments with a LocVTP checkpoint. Errors are "
                    "`{\"detail\": MESSAGE}` with a 4xx status. This description is rendered offline at /api/docs.",
        docs_url=None, redoc_url=None, openapi_url="/openapi.json",  # Swagger/ReDoc would load from a CDN
    )
    app.state.server = srv
    _install_errors(app)
    _install_pages(app)
    _install_api(app, srv)
    return app


def err(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _install_errors(app: Any) -> None:
    """Every error a JSON ``{"detail": sentence}`` with its status; CSP and nosniff headers on every answer."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return err(exc.status, exc.detail)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound):
        return err(404, str(exc))

    @app.exception_handler(VideoError)
    async def _video_error(request: Request, exc: VideoError):
        name = Path(str(exc.filename)).name
        return err(_video_error_status(exc), f"{name}: {exc.reason}")

    @app.exception_handler(LocVTPError)
    async def _locvtp_error(request: Request, exc: LocVTPError):
        return err(422, " ".join(str(exc).split()))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            if e.get("type") == "json_invalid":
                return err(400, f"the body is not valid JSON ({e.get('ctx', {}).get('error', 'parse error')})")
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        return err(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return err(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        resp = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp


def _install_pages(app: Any) -> None:
    """The pages and their static files (a fixed table: a name is looked up, never joined to a path)."""

    def page(name: str):
        return FileResponse(STATIC / name, media_type="text/html; charset=utf-8",
                            headers={"Cache-Control": "no-cache"})

    @app.get("/", include_in_schema=False)
    def ground_page():
        return page("ground.html")

    @app.get("/search", include_in_schema=False)
    def search_page():
        return page("search.html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    @app.get("/api/docs", include_in_schema=False)
    def docs_page():
        return page("api.html")

    static_files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str):
        p = static_files.get(name)  # a fixed set of files: looked up, never joined to a path
        if p is None:
            raise ApiError(404, f"no static file {name!r}")
        return FileResponse(p, media_type=types.get(p.suffix, "application/octet-stream"),
                            headers={"Cache-Control": "no-cache"})


def _install_api(app: Any, srv: Server) -> None:
    """The JSON API (documented by its OpenAPI schema)."""

    @app.get("/api/health", summary="Server, checkpoint, preprocessing and index facts")
    def health():
        return srv.health()

    @app.get("/api/videos", summary="Videos to ground in: --videos and uploads (ids to pass as `video`)")
    def videos():
        return {"videos": srv.lib.list()}

    @app.post("/api/ground", summary="Ground a sentence in one video",
              description="Body: `{\"video\": ID, \"query\": TEXT, \"top_k\": 5, \"nms\": 0.5, \"alpha\": 0.5, "
                          "\"max_seconds\": null, \"heatmap\": true}`. Returns the grounding result's one shape "
                          "(as `locvtp ground` prints it): `query`, `vid`, `duration`, the ranked "
                          "`pred_relevant_windows` [[start, end, score], ...] and the per-clip curve "
                          "(`clip_windows`, `clip_scores` = cosine, `clip_relevance`), the query's `words`, the "
                          "clip×word cosine `heatmap` [clips][words] and `warnings`. The video's embeddings are "
                          "computed on first use and cached (a feature store in the work folder).")
    def ground(body: GroundRequest):
        return srv.ground(body.model_dump())

    @app.post("/api/search", summary="Search moments of the --index corpus",
              description="Body: `{\"query\": TEXT, \"top_k\": 10}`. Returns `moments` (video_id, start, end, "
                          "score, `video` = the id to play when the video is in --videos, `thumbnail` URL).")
    def search(body: SearchRequest):
        return srv.search(body.model_dump())

    @app.get("/api/media", summary="The video for playback (H.264 MP4 when the original is not browser-playable)")
    def media(video: str):
        v = srv.lib.get(video)
        path = srv.lib.playable_path(v)
        mt = "video/mp4" if path.suffix.lower() in (".mp4", ".m4v", ".mov") else (
            "video/webm" if path.suffix.lower() == ".webm" else "application/octet-stream")
        return FileResponse(path, media_type=mt)

    @app.get("/api/thumbnail", summary="A JPEG of the frame at `t` seconds of a video")
    def thumbnail(video: str, t: float = 0.0):
        if not np.isfinite(t) or t < 0:
            raise ApiError(422, f"t must be a time >= 0 in seconds, got {t}")
        v = srv.lib.get(video)
        return FileResponse(srv.lib.thumbnail(v, t), media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/jobs/{job_id}", summary="Progress of an upload's preparation (state, progress 0..1, message)")
    def job(job_id: str):
        return srv.lib.job(job_id).to_json()

    @app.post("/api/upload", status_code=202, summary="Upload a video (raw body or multipart field `file`)",
              description="Send the file as the raw body (`Content-Type: application/octet-stream`, "
                          "`?filename=NAME` for its extension) or as multipart/form-data field `file`. The "
                          "server names the file itself inside its work directory. 202 with `{video, job}`: "
                          "poll /api/jobs/{job} for the encoding progress; `?wait=true` answers when the video "
                          "is ready (201) or failed (422). 413 over --max-upload-mb, 415 not a video.")
    async def upload(request: Request, filename: str = "", wait: bool = False):
        return await receive_upload(srv, request, filename, wait)



async def receive_upload(srv: Server, request: Request, filename: str, wait: bool) -> Any:
    """POST /api/upload: stream the body (raw or multipart) to ``WORK/tmp`` counting its size, probe it, name
    it, start its job. Anything half-received is removed."""
    import anyio

    limit = srv.max_upload
    mb = srv.cfg.max_upload_mb
    too_big = f"upload over the limit of {mb:g} MB (--max-upload-mb)"
    clen = request.headers.get("content-length")
    if clen is not None and clen.isdigit() and int(clen) > limit + 64 * 1024:
        raise ApiError(413, too_big)
    hexid, part = srv.lib.new_upload_path(filename)
    ctype = request.headers.get("content-type", "")
    size = 0
    try:
        if ctype.startswith("multipart/form-data"):
            size, filename = await _read_multipart(request, part, filename, limit, too_big)
        else:
            with open(part, "wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise ApiError(413, too_big)
                    out.write(chunk)
        if size == 0:
            raise ApiError(422, "the upload is empty (0 bytes)")
        from locvtp.serve import media

        try:
            await anyio.to_thread.run_sync(media.describe, part)
        except VideoError as exc:
            shown = Path(filename).name or "the upload"
            raise ApiError(_video_error_status(exc), f"{shown} is not a video we can read: {exc.reason}")
        v = srv.lib.add_upload(hexid, part, filename)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    job = srv.lib.start_job(v)
    if wait:
        await anyio.to_thread.run_sync(job.done.wait)
        if job.state == "error":
            return err(422, job.message)
        return JSONResponse({"video": v.to_json(), "job": job.to_json()}, status_code=201)
    return {"video": v.to_json(), "job": job.to_json()}


async def _read_multipart(request: Request, part: Path, filename: str, limit: int, too_big: str
                          ) -> tuple[int, str]:
    """Field ``file`` of a multipart body into ``part`` (the whole body counted while it arrives)."""
    got = {"n": 0}

    async def limited():
        msg = await request.receive()
        got["n"] += len(msg.get("body", b""))
        if got["n"] > limit + 64 * 1024:
            raise ApiError(413, too_big)
        return msg

    form = await Request(request.scope, limited).form(max_files=1, max_fields=10)
    f = form.get("file")
    if f is None or not hasattr(f, "read"):
        raise ApiError(422, "multipart upload without a `file` field")
    filename = filename or str(getattr(f, "filename", "") or "")
    size = 0
    with open(part, "wb") as out:
        while True:
            chunk = await f.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise ApiError(413, too_big)
            out.write(chunk)
    await form.close()
    return size, filename


__all__ = ["ApiError", "MAX_QUERY_CHARS", "MAX_QUERY_WORDS", "STATIC", "ServeConfig", "Server", "check_query",
           "create_app"]
