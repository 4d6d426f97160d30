"""TensorBoard beside the UI: started, restarted when it dies, re-pointed, stopped; a busy port is reported;
served through the UI under /tensorboard/ behind the UI's token and origin checks."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import re
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_image_studio.webui.app import create_app, start_services, studio_of
from qwen_image_studio.webui.jobs import procs

ORIGIN = {"Origin": "http://localhost"}
TOKEN = "s3cret-token"
REMOTE = "http://192.168.1.5:5000"  # how a browser on another machine addresses a UI on 0.0.0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.mark.slow
def test_tensorboard_lifecycle(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(tmp_path / "ws", tensorboard=True, tensorboard_port=port)
    client = app.test_client()
    state = studio_of(app)
    try:
        start_services(app)
        status = wait_for(
            lambda: (s := client.get("/api/tensorboard").get_json())["state"] == "running" and s
        )
        assert status["port"] == port and status["logdir"] == str(tmp_path / "ws" / "logs")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as res:
            assert res.status == 200 and b"tensorboard" in res.read().lower()
        first = status["pid"]
        os.kill(first, signal.SIGKILL)  # it dies: the watcher starts it again
        again = wait_for(
            lambda: (s := state.tensorboard.status())["state"] == "running" and s["pid"] != first and s
        )
        assert again["pid"] != first
        # pointing it at another logging folder (relative to the workspace) restarts it there
        res = client.post("/api/tensorboard", json={"logdir": "runs/a"}, headers=ORIGIN)
        assert res.status_code == 200 and res.get_json()["changed"] is True
        moved = wait_for(lambda: (s := state.tensorboard.status())["state"] == "running" and s)
        assert moved["logdir"] == str(tmp_path / "ws" / "runs" / "a")
        assert str(tmp_path / "ws" / "runs" / "a") in cmdline(moved["pid"])
        assert not procs.is_running(again["pid"], None)
        same = client.post("/api/tensorboard", json={"logdir": "runs/a"}, headers=ORIGIN).get_json()
        assert same["changed"] is False
        # remembered: the next start shows the same folder
        assert state.tensorboard_logdir() == tmp_path / "ws" / "runs" / "a"
        assert client.get("/api/status").get_json()["tensorboard"]["state"] == "running"
    finally:
        state.close()
    assert state.tensorboard.status()["state"] == "stopped"
    assert not procs.is_running(moved["pid"], None)


def test_a_busy_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        app = create_app(tmp_path / "ws", tensorboard=True, tensorboard_port=port)
        try:
            start_services(app)
            client = app.test_client()
            status = client.get("/api/tensorboard").get_json()
            assert status["state"] == "port_busy" and f"port {port} is in use" in status["message"]
            assert status["pid"] is None
            # the program holding the port is not ours: the proxy never forwards there
            assert studio_of(app).tensorboard.upstream_port() is None
            res = client.get("/tensorboard/")
            assert res.status_code == 502 and "not running (port_busy)" in res.text
        finally:
            studio_of(app).close()


def test_tensorboard_can_be_turned_off(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws")
    start_services(app)
    client = app.test_client()
    status = client.get("/api/tensorboard").get_json()
    assert status["enabled"] is False and status["state"] == "off"
    assert client.get("/tensorboard/").status_code == 404
    studio_of(app).close()


def write_scalars(logdir: Path, steps: int = 5) -> None:
    """A small real event file, written the way training writes it."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(logdir))
    for step in range(steps):
        writer.add_scalar("loss/current", 1.0 / (step + 1), step)
    writer.close()


@pytest.mark.slow
def test_tensorboard_through_the_ui_needs_the_token(tmp_path: Path) -> None:
    write_scalars(tmp_path / "ws" / "logs" / "run1")
    port = free_port()
    app = create_app(tmp_path / "ws", token=TOKEN, tensorboard=True, tensorboard_port=port)
    client = app.test_client()
    state = studio_of(app)
    try:
        start_services(app)
        wait_for(lambda: state.tensorboard.status()["state"] == "running")
        # without the token nothing of TensorBoard is shown or reached
        assert client.get("/tensorboard/", base_url=REMOTE).status_code == 401
        assert client.get("/tensorboard/data/runs", base_url=REMOTE).status_code == 401
        res = client.post(
            "/tensorboard/data/plugin/scalars/scalars_multirun",
            data={"tag": "loss/current", "runs": "run1"},
            base_url=REMOTE,
            headers={"Origin": REMOTE},
        )
        assert res.status_code == 401
        assert client.get("/tensorboard/", base_url=REMOTE, headers={"X-Studio-Token": "wrong"}).status_code == 401
        # the printed address's ?token= works here too: a cookie, and the token leaves the address bar
        res = client.get(f"/tensorboard/?token={TOKEN}", base_url=REMOTE)
        assert res.status_code == 302 and res.headers["Location"] == "/tensorboard/"
        page = client.get("/tensorboard/", base_url=REMOTE)
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert b'<meta name="tb-relative-root" content="./">' in page.data and b"<tb-webapp>" in page.data
        assert "frame-ancestors 'self'" in page.headers["Content-Security-Policy"]
        # its inline styles load the fonts from the root: moved under the prefix
        assert b"url(/font-roboto/" not in page.data and int(page.headers["Content-Length"]) == len(page.data)
        font = re.search(rb"url\((/tensorboard/font-roboto/[\w-]+\.woff2)\)", page.data)
        assert font is not None
        res = client.get(font[1].decode(), base_url=REMOTE)
        assert res.status_code == 200 and res.mimetype == "font/woff2"
        assert client.get("/tensorboard", base_url=REMOTE).status_code in (301, 308)
        runs = client.get("/tensorboard/data/runs", base_url=REMOTE)
        assert runs.status_code == 200 and runs.get_json() == ["run1"]
        head = client.head("/tensorboard/data/runs", base_url=REMOTE)
        assert head.status_code == 200 and head.data == b"" and head.mimetype == "application/json"
        # a scalars data endpoint, gzip passed through as TensorBoard sent it
        res = client.get(
            "/tensorboard/data/plugin/scalars/scalars?run=run1&tag=loss%2Fcurrent",
            base_url=REMOTE,
            headers={"Accept-Encoding": "gzip"},
        )
        assert res.status_code == 200 and res.mimetype == "application/json"
        assert res.headers["Content-Encoding"] == "gzip"
        assert int(res.headers["Content-Length"]) == len(res.data)
        points = json.loads(gzip.decompress(res.data))
        assert [step for _, step, _ in points] == [0, 1, 2, 3, 4]
        assert points[1][2] == pytest.approx(0.5)
        # the page's batched POSTs go through from this origin, not from another one
        form = {"tag": "loss/current", "runs": "run1"}
        res = client.post(
            "/tensorboard/data/plugin/scalars/scalars_multirun",
            data=form,
            base_url=REMOTE,
            headers={"Origin": REMOTE},
        )
        assert res.status_code == 200 and len(res.get_json()["run1"]) == 5
        res = client.post(
            "/tensorboard/data/plugin/scalars/scalars_multirun",
            data=form,
            base_url=REMOTE,
            headers={"Origin": "http://evil.example"},
        )
        assert res.status_code == 403
        # direct access on the machine itself is unchanged
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as direct:
            assert direct.status == 200 and b"tb-relative-root" in direct.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=10) as direct:
            assert json.loads(direct.read()) == ["run1"]
    finally:
        state.close()


class Upstream(http.server.ThreadingHTTPServer):
    """A stand-in for TensorBoard that records what reaches it."""

    seen: list[dict[str, Any]]


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    BODY = os.urandom(300_000)

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.seen.append(  # type: ignore[attr-defined]
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )

    def do_GET(self) -> None:
        self._record()
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        # chunked, with hop-by-hop headers and a cookie that must not reach the browser
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close, X-Hop")
        self.send_header("X-Hop", "1")
        self.send_header("Keep-Alive", "timeout=5")
        self.send_header("Set-Cookie", "studio_token=stolen; Path=/")
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        for start in range(0, len(self.BODY), 65_536):
            chunk = self.BODY[start : start + 65_536]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def do_POST(self) -> None:
        self._record()
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(("127.0.0.1", 0), UpstreamHandler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_proxy_passes_on_only_what_it_should(tmp_path: Path, upstream: Upstream, monkeypatch: Any) -> None:
    app = create_app(tmp_path / "ws", tensorboard=True)
    board = studio_of(app).tensorboard
    monkeypatch.setattr(board, "upstream_port", lambda: upstream.server_address[1])
    client = app.test_client()
    client.set_cookie("studio_lang", "en")
    try:
        res = client.get(
            "/tensorboard/data/x?a=1&b=%2F",
            headers={
                "Accept-Encoding": "gzip",
                "X-TensorBoard-Feature-Flags": "{}",
                "Authorization": "Bearer abc",
                "X-Studio-Token": "abc",
                "X-Forwarded-Host": "evil.example",
            },
        )
        assert res.status_code == 200 and res.data == UpstreamHandler.BODY  # unchanged, gzip or not
        assert res.headers["Content-Encoding"] == "gzip" and res.headers["X-Upstream"] == "yes"
        for gone in ("Set-Cookie", "X-Hop", "Keep-Alive", "Transfer-Encoding", "Connection"):
            assert gone not in res.headers, gone
        seen = upstream.seen[-1]
        assert seen["method"] == "GET" and seen["path"] == "/data/x?a=1&b=%2F"
        sent = {k.lower(): v for k, v in seen["headers"].items()}
        assert sent["host"] == f"127.0.0.1:{upstream.server_address[1]}"
        assert sent["accept-encoding"] == "gzip" and sent["x-tensorboard-feature-flags"] == "{}"
        for kept_here in ("cookie", "authorization", "x-studio-token", "x-forwarded-host", "origin"):
            assert kept_here not in sent, kept_here
        # TensorBoard's own redirects stay under the prefix
        res = client.get("/tensorboard/redirect")
        assert res.status_code == 302 and res.headers["Location"] == "/tensorboard/"
        # a form POST from this page goes through, body and content type intact
        form = b"requests=%5B%7B%22a%22%3A+1%7D%5D"
        res = client.post(
            "/tensorboard/data/plugin/p/q",
            data=form,
            content_type="application/x-www-form-urlencoded",
            headers=ORIGIN,
        )
        assert res.status_code == 200 and res.get_json() == {"ok": True}
        seen = upstream.seen[-1]
        assert seen["method"] == "POST" and seen["path"] == "/data/plugin/p/q"
        assert seen["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
        assert seen["body"] == form
        count = len(upstream.seen)
        # refused before anything reaches TensorBoard
        assert client.post("/tensorboard/data/plugin/p/q", data={"a": "1"}).status_code == 403  # no Origin
        assert client.put("/tensorboard/data/x", headers=ORIGIN, json={}).status_code == 405
        assert client.delete("/tensorboard/data/x", headers=ORIGIN, json={}).status_code == 405
        for bad in ("/tensorboard/../api/status", "/tensorboard/%2e%2e/api/status", "/tensorboard/http://evil.example/"):
            assert client.get(bad).status_code == 400, bad
        for bad in ("/tensorboard/x%0d%0aX-Injected:%201", "/tensorboard/x%00"):
            assert client.get(bad).status_code in (400, 404), bad
        res = client.get("/tensorboard//evil.example/x")  # werkzeug merges the slashes: still here
        assert res.status_code == 308 and res.headers["Location"] == "http://localhost/tensorboard/evil.example/x"
        rebound = client.get("/tensorboard/", base_url="http://attacker.example:5000")  # DNS rebinding
        assert rebound.status_code == 403
        assert len(upstream.seen) == count
        # TensorBoard not answering is said so
        upstream.shutdown()
        upstream.server_close()
        res = client.get("/tensorboard/")
        assert res.status_code == 502 and "does not answer" in res.text
    finally:
        studio_of(app).close()
