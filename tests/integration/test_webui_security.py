"""Safe by default: token off loopback, same-origin JSON writes, loopback Host names, text-only rendering."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from qwen_image_studio.webui.app import create_app
from qwen_image_studio.webui.main import build_parser, url_of
from qwen_image_studio.webui.security import is_loopback

WEBUI = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui"
ORIGIN = {"Origin": "http://localhost"}
TOKEN = "s3cret-token"


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(tmp_path / "ws").test_client()


@pytest.fixture
def guarded(tmp_path: Path) -> FlaskClient:
    return create_app(tmp_path / "ws", token=TOKEN).test_client()


def test_loopback_detection_and_defaults() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.com", ""))
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.workspace, args.token) == ("127.0.0.1", 5000, "./workspace", None)
    assert url_of("0.0.0.0", 5000, "abc") == "http://127.0.0.1:5000/?token=abc"
    assert url_of("::1", 8080, None) == "http://[::1]:8080/"


def test_token_is_required_on_every_request(guarded: FlaskClient) -> None:
    for url in ("/", "/api/schema", "/api/configs", "/static/js/app.js"):
        res = guarded.get(url, base_url="http://192.168.1.5:5000")
        assert res.status_code == 401, url
    assert "access token" in guarded.get("/").text
    assert guarded.get("/api/configs", headers={"X-Studio-Token": "wrong"}).status_code == 401
    assert guarded.get("/api/configs", headers={"X-Studio-Token": TOKEN}).status_code == 200
    assert guarded.get("/api/configs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert guarded.get("/?token=wrong").status_code == 401


def test_token_in_the_address_sets_a_cookie(guarded: FlaskClient) -> None:
    base = "http://192.168.1.5:5000"
    res = guarded.get(f"/?token={TOKEN}&x=1", base_url=base)
    assert res.status_code == 302 and res.headers["Location"] == "/?x=1"  # the token leaves the address bar
    cookie = res.headers["Set-Cookie"]
    assert "studio_token=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert guarded.get("/", base_url=base).status_code == 200
    assert guarded.get("/api/configs", base_url=base).status_code == 200
    post = guarded.post("/api/validate", json={"params": {}}, base_url=base, headers={"Origin": base})
    assert post.status_code == 200


def test_without_a_token_only_loopback_host_names_are_answered(client: FlaskClient) -> None:
    assert client.get("/api/configs", base_url="http://127.0.0.1:5000").status_code == 200
    assert client.get("/api/configs", base_url="http://[::1]:5000").status_code == 200
    rebound = client.get("/api/configs", base_url="http://attacker.example:5000")  # DNS rebinding
    assert rebound.status_code == 403 and rebound.get_json()["code"] == "bad_host"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:6006"},
        {"Referer": "http://evil.example/page"},
    ],
)
def test_cross_origin_writes_are_refused(client: FlaskClient, headers: dict[str, str]) -> None:
    res = client.post("/api/configs", json={"name": "x", "params": {}}, headers=headers)
    assert res.status_code == 403 and res.get_json()["code"] == "cross_origin"
    res = client.delete("/api/configs/x", json={}, headers=headers)
    assert res.status_code == 403
    assert client.get("/api/configs").get_json()["configs"] == []


def test_same_origin_referer_is_enough(client: FlaskClient) -> None:
    res = client.post(
        "/api/configs", json={"name": "x", "params": {}}, headers={"Referer": "http://localhost/"}
    )
    assert res.status_code == 200


def test_writes_must_be_json(client: FlaskClient) -> None:
    form = client.post("/api/configs", data={"name": "x"}, headers=ORIGIN)
    assert form.status_code == 415 and form.get_json()["code"] == "json_required"
    text = client.post("/api/validate", data='{"params": {}}', content_type="text/plain", headers=ORIGIN)
    assert text.status_code == 415
    not_object = client.post("/api/validate", json=[1], headers=ORIGIN)
    assert not_object.status_code == 400 and "JSON object" in not_object.get_json()["error"]
    no_body = client.delete("/api/configs/x", headers=ORIGIN)
    assert no_body.status_code == 415


def test_uploads_need_the_custom_header(client: FlaskClient) -> None:
    data = {"file": (io.BytesIO(b"{}"), "a.json")}
    res = client.post("/api/configs/import", data=data, content_type="multipart/form-data", headers=ORIGIN)
    assert res.status_code == 415 and res.get_json()["code"] == "upload_header"
    res = client.post("/api/configs/import", json={}, headers={**ORIGIN, "X-Studio-Upload": "1"})
    assert res.status_code == 415


def test_security_headers(client: FlaskClient) -> None:
    res = client.get("/")
    csp = res.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/api/configs").headers["Cache-Control"] == "no-store"


def test_user_text_is_never_html(client: FlaskClient) -> None:
    name = '<img src=x onerror="alert(1)">'
    assert client.post("/api/configs", json={"name": name, "params": {}}, headers=ORIGIN).status_code == 200
    assert client.get("/api/configs").get_json()["configs"][0]["name"] == name
    for path in (WEBUI / "static" / "js").glob("*.js"):
        text = path.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{path.name} uses {sink}"


def test_nothing_is_written_outside_the_workspace(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    client = create_app(workspace).test_client()
    client.post("/api/configs", json={"name": "../../escape", "params": {}}, headers=ORIGIN)
    client.post("/api/configs", json={"name": "ok", "params": {}}, headers=ORIGIN)
    client.post(
        "/api/configs/import",
        headers={**ORIGIN, "X-Studio-Upload": "1"},
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(b"dit = 'x'"), "../../up.toml")},
    )
    client.get("/api/configs/ok/export")
    outside = [p for p in tmp_path.rglob("*") if workspace not in p.parents and p != workspace]
    assert outside == []
