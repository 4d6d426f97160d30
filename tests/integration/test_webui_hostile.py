"""Hostile input against every HTTP route and WebSocket message type: a clear 4xx (or an answer), never a
5xx, a traceback or a dropped connection, and nothing written outside the workspace.

The inputs come from tables: each route gets the generic bad bodies (not JSON, not an object, nested
too deeply, invalid UTF-8) and each field of its body gets the bad values (NUL bytes, paths over the OS
limits, numbers beyond 64 bits, wrong types, lone surrogates, traversal). The counts are printed.
"""

from __future__ import annotations

import http.client
import io
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from simple_websocket import Client
from test_webui_live import Server

from qwen_image_studio.params.fields import all_fields
from qwen_image_studio.webui.app import create_app, studio_of

ORIGIN = "http://localhost"
DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000
BAD_VALUES: list[Any] = [
    None,
    "",
    "a\x00b",
    "/" + "a" * 5000,
    "x/" * 3000,
    "../../../../etc/passwd",
    "\ud800",  # a lone surrogate: valid JSON, not encodable as UTF-8
    2**64,
    -(2**63) - 1,
    1e308,
    -1,
    True,
    [],
    ["train_network"],
    {"a": 1},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
    "--dit",
    "; rm -rf /",
]
RAW_BODIES: list[bytes] = [
    b"",
    b"not json",
    b"[1, 2]",
    b'"text"',
    b"\xff\xfe\x00garbage",
    DEEP.encode(),
    DEEP_OBJECT.encode(),
    b'{"params": ' + DEEP.encode() + b"}",
    b"{" * 100,
    b'{"a": NaN}',
]
# JSON routes and the fields of their bodies.
JSON_ROUTES: dict[str, tuple[str, list[str]]] = {
    "/api/validate": ("POST", ["params", "stage"]),
    "/api/configs": ("POST", ["name", "params", "overwrite"]),
    "/api/configs/demo-t2i/rename": ("POST", ["new_name"]),
    "/api/config/from-command": ("POST", ["text"]),
    "/api/config/argv": ("POST", ["params"]),
    "/api/jobs": ("POST", ["kind", "params", "config_name"]),
    "/api/jobs/1/stop": ("POST", []),
    "/api/dataset/inspect": ("POST", ["path", "edit"]),
    "/api/dataset/create": (
        "POST",
        ["name", "image_directory", "control_directory", "resolution", "batch_size", "num_repeats"],
    ),
    "/api/vram": ("POST", ["params"]),
    "/api/tensorboard": ("POST", ["logdir"]),
}
GET_ROUTES = [
    "/",
    "/api/status",
    "/api/i18n",
    "/api/schema",
    "/api/configs",
    "/api/config/defaults",
    "/api/config/argv",
    "/api/jobs",
    "/api/presets",
    "/api/tensorboard",
]
BAD_NAMES = ["%00", "a%00b", "x" * 5000, "..", "%2e%2e", "%2F", "\u202e", "%ud800", "a" * 300]
BAD_IDS = ["0", "9223372036854775807", "9223372036854775808", "99999999999999999999999999", "1e308", "-1"]
PATH_FIELDS = [name for name, spec in all_fields().items() if spec.meta.path]
FIELD_VALUES: list[Any] = ["a\x00b", "/" + "a" * 5000, "x" * 300 + "/y", 2**64, ["a", "b\x00"], {"a": "b"}]


class Tally:
    """What the suite tried and how the server answered."""

    def __init__(self) -> None:
        self.tried = 0
        self.rejected = 0
        self.server_errors: list[str] = []

    def check(self, what: str, status: int, body: bytes, content_type: str) -> None:
        self.tried += 1
        if status >= 500:
            self.server_errors.append(f"{what}: {status} {body[:200]!r}")
            return
        if 400 <= status < 500:
            self.rejected += 1
            assert b"Traceback" not in body, what
            if content_type.startswith("application/json"):
                answer = json.loads(body)
                assert isinstance(answer.get("error"), str) and answer["error"], what


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "ws"


@pytest.fixture(scope="module")
def client(workspace: Path) -> Iterator[FlaskClient]:
    app = create_app(workspace)
    yield app.test_client()
    state = studio_of(app)
    for job in state.jobs.with_status("queued", "running"):
        state.supervisor.stop(job.id)
    state.supervisor.wait_idle(20)
    state.close()


def _send(client: FlaskClient, tally: Tally, method: str, url: str, **kwargs: Any) -> None:
    headers = {"Origin": ORIGIN, **kwargs.pop("headers", {})}
    res = client.open(url, method=method, headers=headers, **kwargs)
    tally.check(f"{method} {url} {str(kwargs)[:120]}", res.status_code, res.data, res.content_type or "")


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=True).encode()


def test_every_http_route_answers_hostile_input_with_a_4xx(client: FlaskClient, workspace: Path) -> None:
    tally = Tally()
    json_headers = {"Content-Type": "application/json"}
    for url, (method, fields) in JSON_ROUTES.items():
        for raw in RAW_BODIES:
            _send(client, tally, method, url, data=raw, headers=json_headers)
        _send(client, tally, method, url, data=b"{}", headers={"Content-Type": "text/plain"})
        for name in fields:
            for value in BAD_VALUES:
                _send(client, tally, method, url, data=_json_bytes({name: value}), headers=json_headers)
    for name in PATH_FIELDS:  # every path parameter of the schema, through each route that takes params
        for value in FIELD_VALUES:
            for url in ("/api/validate", "/api/configs", "/api/jobs", "/api/vram", "/api/config/argv"):
                body = {
                    "params": {name: value},
                    "name": "x",
                    "kind": "train_network",
                    "stage": "train_network",
                }
                _send(client, tally, "POST", url, data=_json_bytes(body), headers=json_headers)
    for url in GET_ROUTES:
        _send(client, tally, "GET", url + "?name=%00&lang=%00&token=%00")
    for name in BAD_NAMES:
        for url in (f"/api/configs/{name}", f"/api/configs/{name}/export", f"/api/config/argv?name={name}"):
            _send(client, tally, "GET", url)
        _send(client, tally, "DELETE", f"/api/configs/{name}", headers=json_headers)
        _send(client, tally, "POST", f"/api/configs/{name}/rename", json={"new_name": "y"})
        for job in ("1", "99999999999999999999"):
            _send(client, tally, "GET", f"/api/jobs/{job}/files/{name}")
            _send(client, tally, "GET", f"/api/jobs/{job}/samples/{name}")
        _send(client, tally, "GET", f"/static/{name}")
    for job_id in BAD_IDS:
        for tail in ("", "/log", "/files/x.safetensors", "/samples/x.png"):
            _send(client, tally, "GET", f"/api/jobs/{job_id}{tail}")
        _send(client, tally, "POST", f"/api/jobs/{job_id}/stop", json={})
    for content in (
        DEEP.encode(),
        b"\xff\xfe",
        b'{"version": ' + b"[" * 3000 + b"}",
        b"a = [" * 2000,
        b"\x00",
    ):
        for filename in ("c.json", "c.toml", "\x00.json", "x" * 5000 + ".json"):
            _send(
                client,
                tally,
                "POST",
                "/api/configs/import",
                data={"file": (io.BytesIO(content), filename)},
                headers={"X-Studio-Upload": "1"},
                content_type="multipart/form-data",
            )
    print(
        f"\nhostile HTTP inputs: {tally.tried} tried, {tally.rejected} rejected with a 4xx, "
        f"{len(tally.server_errors)} 5xx"
    )
    assert tally.tried >= 300
    assert tally.server_errors == []
    assert client.get("/api/status").status_code == 200  # the server still serves
    outside = [p for p in workspace.parent.iterdir() if p.name != "ws"]
    assert outside == []  # nothing was written beside the workspace


def test_the_websocket_answers_bad_messages_and_stays_open(workspace: Path) -> None:
    srv = Server(create_app(workspace.parent / "ws-live"))
    try:
        ws = Client.connect(f"ws://127.0.0.1:{srv.port}/ws", headers={"Origin": "http://127.0.0.1"})
        try:
            assert json.loads(ws.receive(timeout=5))["type"] == "jobs"
            messages = [
                "not json",
                DEEP,
                DEEP_OBJECT,
                "[]",
                "null",
                '"watch"',
                "{}",
                '{"type": 5}',
                '{"type": "dance"}',
                '{"type": "watch"}',
                '{"type": "watch", "job": 1e308}',
                '{"type": "watch", "job": -1}',
                '{"type": "watch", "job": 99999999999999999999999}',
                '{"type": "watch", "job": "abc"}',
                '{"type": "watch", "job": [1]}',
                '{"type": "watch", "job": {"a": 1}}',
                '{"type": "watch", "job": true}',
                '{"type": "watch", "job": 1.5}',
                '{"type": "watch", "job": NaN}',
                '{"type": "watch", "job": 1, "tail": 1e308}',
                '{"type": "watch", "job": 1, "log_after": -5}',
                '{"type": "watch", "job": 1, "events_after": "x"}',
                '{"type": "watch", "job": 1, "tail": [' + "[" * 100 + "]" * 100 + "]}",
                "x" * 70000,
            ]
            for text in messages:
                ws.send(text)
                answer = json.loads(ws.receive(timeout=5))
                assert answer["type"] == "error" and answer["message"], text[:80]
                assert ws.connected, text[:80]
            ws.send('{"type": "unwatch", "job": "\\ud800"}')  # unwatch takes no fields: no answer, still open
            ws.send(b"\x00\x01binary")
            assert json.loads(ws.receive(timeout=5))["type"] == "error"
            ws.send('{"type": "watch", "job": 1}')  # a good message still works afterwards
            answer = json.loads(ws.receive(timeout=5))
            assert answer["type"] == "log" and ws.connected
            print(
                f"\nhostile WebSocket messages: {len(messages) + 1} sent, all answered with an error, 0 closed"
            )
        finally:
            ws.close()
    finally:
        srv.close()


def _raw_request(port: int, head: str, body_chunks: Iterator[bytes]) -> int:
    """Send a request by hand (for chunked bodies) and return the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        try:
            for chunk in body_chunks:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early and closed
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status


def test_oversized_bodies_get_413_chunked_or_not(workspace: Path) -> None:
    srv = Server(create_app(workspace.parent / "ws-size"))
    try:
        origin = f"http://127.0.0.1:{srv.port}"
        head = (
            f"POST /api/validate HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nOrigin: {origin}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        chunk = b" " * (1024 * 1024)
        assert _raw_request(srv.port, head, iter([chunk] * 50)) == 413
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request(
            "POST",
            "/api/validate",
            body=b" " * (3 * 1024 * 1024),
            headers={"Origin": origin, "Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 413
    finally:
        srv.close()


def test_origin_must_match_scheme_and_host(client: FlaskClient) -> None:
    body = {"params": {}}
    assert client.post("/api/validate", json=body, headers={"Origin": "http://localhost"}).status_code == 200
    for origin in ("https://localhost", "ws://localhost", "http://localhost.evil", "null", "file://"):
        res = client.post("/api/validate", json=body, headers={"Origin": origin})
        assert res.status_code == 403, origin
