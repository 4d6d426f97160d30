"""`python qwen_webui.py` / `qwen-image-studio webui`: start the web UI on a workspace."""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import sys
from pathlib import Path

from ..logging_setup import setup_logging
from .app import create_app, start_services, studio_of
from .jobs.supervisor import STALL_AFTER_S
from .security import is_loopback
from .tensorboard import DEFAULT_PORT

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The web UI's command-line options."""
    parser = argparse.ArgumentParser(prog="qwen_webui.py", description="Qwen-Image Studio web UI.")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; any other needs the access token)",
    )
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    parser.add_argument(
        "--workspace",
        default="./workspace",
        help="folder for the UI's state, the demo and everything it writes (default ./workspace)",
    )
    parser.add_argument(
        "--allow_dir",
        "--allow-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a folder outside the workspace that jobs may write in (LoRA files, logs, caches); repeatable",
    )
    parser.add_argument("--token", help="access token (default: generated when --host is not loopback)")
    parser.add_argument("--no-demo", action="store_true", help="do not create the demo workspace")
    parser.add_argument(
        "--tensorboard_port",
        "--tensorboard-port",
        type=int,
        default=DEFAULT_PORT,
        help=f"TensorBoard's port (default {DEFAULT_PORT}; it listens on 127.0.0.1)",
    )
    parser.add_argument("--no-tensorboard", action="store_true", help="do not start TensorBoard")
    parser.add_argument(
        "--stop_timeout",
        "--stop-timeout",
        type=float,
        default=10.0,
        help="seconds a stopped job gets to end after SIGTERM before SIGKILL (default 10)",
    )
    parser.add_argument(
        "--stall_warning",
        "--stall-warning",
        type=float,
        default=STALL_AFTER_S,
        metavar="SECONDS",
        help="a running stage with no output and no progress for this long gets a ⏰ warning line in its "
        f"job's log; nothing is stopped (default {STALL_AFTER_S:g}, i.e. 10 minutes; 0: never)",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging")
    return parser


def url_of(host: str, port: int, token: str | None) -> str:
    """The address to open in a browser (with the token when one is needed)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else "[::1]" if host == "::" else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """Stop like Ctrl+C does, so the demo child is ended too."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start the server; returns the exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    allowed = [Path(d).expanduser().resolve() for d in args.allow_dir]
    for folder in allowed:
        if not folder.is_dir():
            print(f"error: --allow_dir: {folder} is not an existing folder", file=sys.stderr)
            return 2
    token = args.token or (None if is_loopback(args.host) else secrets.token_urlsafe(24))
    app = create_app(
        Path(args.workspace),
        token=token,
        stop_timeout=args.stop_timeout,
        stall_after=args.stall_warning,
        tensorboard_port=args.tensorboard_port,
        tensorboard=not args.no_tensorboard,
        allow_dirs=tuple(allowed),
    )
    state = studio_of(app)

    from werkzeug.serving import make_server

    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except (OSError, SystemExit) as exc:  # werkzeug exits on a busy port after printing why
        reason = exc.strerror if isinstance(exc, OSError) else "the address is in use or not available"
        print(
            f"error: cannot listen on {args.host}:{args.port}: {reason} (is another server using the port? try --port)",
            file=sys.stderr,
        )
        state.close()
        return 1
    start_services(app)
    if not args.no_demo:
        state.demo.start()
    print(f"Qwen-Image Studio: {url_of(args.host, args.port, token)}", flush=True)
    print(f"workspace: {state.workspace}", flush=True)
    for folder in state.allowed_dirs:
        print(f"jobs may also write in: {folder}", flush=True)
    board = state.tensorboard.status()
    if board["enabled"]:
        where = f"http://127.0.0.1:{board['port']}/ ({board['logdir']})"
        where += f"; through the UI: {url_of(args.host, args.port, None).rstrip('/')}{board['proxy_path']}"
        note = f" — {board['message']}" if board["state"] == "port_busy" else ""
        print(f"TensorBoard: {where}{note}", flush=True)
    if token and not is_loopback(args.host):
        print(
            "listening beyond this machine: the address above carries the access token; keep it private"
            + (
                "; from other machines use this machine's address instead of 127.0.0.1"
                if args.host in ("0.0.0.0", "::", "")
                else ""
            ),
            flush=True,
        )
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        state.demo.stop()
        state.close()
    return 0
