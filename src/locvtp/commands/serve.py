"""`locvtp serve`: the grounding and search pages and their JSON API on a local web server (FastAPI + uvicorn).

The socket is bound here, before the model loads its weights into the server, so a port in use or a host that
cannot be bound is one line (exit 2) instead of a uvicorn traceback; ``--port 0`` takes a free port. The first
line on stdout is ``locvtp serve: http://HOST:PORT/ (...)`` once the server answers requests. The work folder
(:mod:`locvtp.serve.workdir`) is closed on every way out: a normal shutdown, Ctrl-C, SIGTERM, SIGHUP, a failed
start.
"""
from __future__ import annotations

import contextlib
import ipaddress
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Iterator

from locvtp import cliargs
from locvtp.errors import UsageError


def _parser() -> cliargs.ArgumentParser:
    p = cliargs.ArgumentParser(prog="locvtp serve",
                               description="Ground sentences in videos and search moments in a web page (and a "
                                           "JSON API, documented at /api/docs).")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--videos", help="directory of videos to pick from (read only)")
    p.add_argument("--index", help="moment index directory (`locvtp index` output) for the search page")
    p.add_argument("--allow-foreign-features", action="store_true",
                   help="serve an --index built from another checkpoint's features (its scores then compare two "
                        "different models; a warning says so)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the server)")
    p.add_argument("--port", type=cliargs.ranged(int, 0, 65535), default=8000, help="port (0: a free one)")
    p.add_argument("--work-dir", help="where uploads, playback copies, thumbnails and cached embeddings go; "
                                      "created if absent, kept on exit, and it may hold only what serve wrote "
                                      "(default: a new temporary directory, removed on exit)")
    p.add_argument("--max-upload-mb", type=cliargs.positive_float, default=200.0,
                   help="largest accepted upload in MB (default 200)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | mps | auto")
    p.add_argument("--threads", type=cliargs.positive_int, default=None,
                   help="torch threads (default: torch's own choice)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info: one line per request)")
    return p


def _dir(flag: str, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if not p.is_dir():
        raise UsageError(f"{flag} {value}: not a directory")
    return p


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (a ``UsageError`` naming both when it cannot be had)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    # proto = IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # answer written in two parts waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UsageError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose another "
                         "--port (0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@contextlib.contextmanager
def _stop_signals(state: dict) -> Iterator[None]:
    """SIGTERM and SIGHUP end the command the way Ctrl-C does, so every ``finally`` runs (the work folder is
    removed): before and after serving they raise ``SystemExit(128 + signal)``; while uvicorn serves (which
    handles SIGINT and SIGTERM itself, then re-raises them) they ask it to stop gracefully first."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        server = state.get("server")
        if server is not None and server.started and not server.should_exit:
            server.should_exit = True
            state["signal"] = signum
            return
        raise SystemExit(128 + signum)

    stops = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    old = {s: signal.signal(s, handler) for s in stops}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Stop signals wait while the work folder is removed (a second Ctrl-C then cannot leave half of it)."""
    held = {signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", signal.SIGTERM)}
    can = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held) if can else None
    try:
        yield
    finally:
        if can:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise UsageError(f"locvtp serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         "pip install 'locvtp[serve]'") from None
    from locvtp.serve.app import ServeConfig

    cfg = ServeConfig(Path(args.checkpoint).expanduser(), _dir("--videos", args.videos), _dir("--index", args.index),
                      None if args.work_dir is None else Path(args.work_dir), float(args.max_upload_mb),
                      args.device, bool(args.allow_foreign_features))
    work = cfg.work()  # a --work-dir that is a file, overlaps an input or holds other files: refused here
    if args.threads is not None:
        import torch

        torch.set_num_threads(int(args.threads))
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback:
        cliargs.warn("locvtp serve", f"--host {args.host}: the server answers other machines too; it has no "
                                     "authentication")
    state: dict = {}
    with _stop_signals(state):
        sock = bind(args.host, int(args.port))
        try:
            _serve(args, cfg, work, sock, state)
        finally:
            sock.close()
            with _signals_held():
                work.close()
    if state.get("signal"):
        raise SystemExit(128 + int(state["signal"]))
    return 0


def _serve(args, cfg, work, sock: socket.socket, state: dict) -> None:
    """Load the model and the index, then serve until stopped; prints the startup line once it answers."""
    import uvicorn

    from locvtp.serve.app import create_app

    app = create_app(cfg, work=work)
    srv = app.state.server
    for w in srv.index_warnings:
        cliargs.warn("locvtp serve", w)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    state["server"] = server
    orig_startup = server.startup

    async def startup(sockets=None):
        await orig_startup(sockets=sockets)
        print(f"locvtp serve: http://{shown}:{port}/ ({srv.summary()})", flush=True)

    server.startup = startup
    server.run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())
