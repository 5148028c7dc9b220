"""`locvtp serve`: the grounding and search pages and their JSON API on a local web server (FastAPI + uvicorn).

The socket is bound here, before the model loads its weights into the server, so a port in use or a host that
cannot be bound is one line (exit 2) instead of a uvicorn traceback; ``--port 0`` takes a free port. The first
line on stdout is ``locvtp serve: http://HOST:PORT/`` once the server answers requests.
"""
from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path

from locvtp import cliargs
from locvtp.errors import UsageError


def _parser() -> cliargs.ArgumentParser:
    p = cliargs.ArgumentParser(prog="locvtp serve",
                               description="Ground sentences in videos and search moments in a web page (and a "
                                           "JSON API, documented at /api/docs).")
    p.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    p.add_argument("--videos", help="directory of videos to pick from (read only)")
    p.add_argument("--index", help="moment index directory (`locvtp index` output) for the search page")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes the server)")
    p.add_argument("--port", type=cliargs.ranged(int, 0, 65535), default=8000, help="port (0: a free one)")
    p.add_argument("--work-dir", help="where uploads, playback copies, thumbnails and cached embeddings go "
                                      "(default: a new temporary directory)")
    p.add_argument("--max-upload-mb", type=cliargs.positive_float, default=200.0,
                   help="largest accepted upload in MB (default 200)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | mps | auto")
    p.add_argument("--threads", type=cliargs.positive_int, default=None,
                   help="torch threads (default: torch's own choice)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info: one line per request)")
    return p


def _dir(flag: str, value: str | None, must_exist: bool = True) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    if must_exist and not p.is_dir():
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise UsageError(f"locvtp serve needs FastAPI and uvicorn ({exc.name} is missing): "
                         "pip install 'locvtp[serve]'") from None
    from locvtp.serve.app import ServeConfig, create_app

    videos = _dir("--videos", args.videos)
    index = _dir("--index", args.index)
    work = _dir("--work-dir", args.work_dir, must_exist=False)
    if work is not None and work.exists() and not work.is_dir():
        raise UsageError(f"--work-dir {args.work_dir}: exists and is not a directory")
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
    sock = bind(args.host, int(args.port))
    try:
        app = create_app(ServeConfig(Path(args.checkpoint), videos, index, work, float(args.max_upload_mb),
                                     args.device))
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        config = uvicorn.Config(app, log_level=args.log_level, access_log=args.log_level in ("info", "debug"),
                                timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        srv = app.state.server

        orig_startup = server.startup

        async def startup(sockets=None):
            await orig_startup(sockets=sockets)
            print(f"locvtp serve: http://{shown}:{port}/ (checkpoint {srv.p.path}, {len(srv.lib.list())} videos, "
                  f"index: {'none' if srv.index is None else len(srv.index)} clips, work dir {srv.lib.work})",
                  flush=True)

        server.startup = startup
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
