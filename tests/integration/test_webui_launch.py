"""Starting the web UI: no torch in the UI process, the demo created in a child process, errors shown."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qwen_image_studio.webui import demo_setup
from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_web_ui_never_imports_torch(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import importlib, io, json, pkgutil, sys
        import qwen_image_studio.webui as webui
        for mod in pkgutil.walk_packages(webui.__path__, "qwen_image_studio.webui."):
            importlib.import_module(mod.name)
        from qwen_image_studio.webui.app import create_app
        client = create_app({str(tmp_path / "ws")!r}).test_client()
        h = {{"Origin": "http://localhost"}}
        for url in ("/", "/api/schema", "/api/status", "/api/config/defaults", "/api/config/argv"):
            assert client.get(url).status_code == 200, url
        assert client.post("/api/validate", json={{"params": {{}}, "stage": "train_network"}}, headers=h).status_code == 200
        assert client.post("/api/configs", json={{"name": "a", "params": {{}}}}, headers=h).status_code == 200
        assert client.get("/api/configs/a/export").status_code == 200
        assert client.post("/api/config/from-command", json={{"text": "--network_dim 4"}}, headers=h).status_code == 200
        up = {{**h, "X-Studio-Upload": "1"}}
        data = {{"file": (io.BytesIO(b"network_dim = 4"), "b.toml")}}
        assert client.post("/api/configs/import", data=data, headers=up).status_code == 200
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "transformers", "accelerate"))
        print(json.dumps(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_launcher_help() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "qwen_webui.py"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--workspace" in out.stdout and "--token" in out.stdout


def test_failed_demo_creation_is_shown_and_the_ui_still_works(tmp_path: Path, monkeypatch) -> None:
    failing = [sys.executable, "-c", "import sys; print('tiny models could not be built'); sys.exit(3)"]
    monkeypatch.setattr(demo_setup, "demo_command", lambda target: failing)
    app = create_app(tmp_path / "ws")
    state = studio_of(app)
    assert state.demo.status.state == "absent"
    status = state.demo.run()
    assert status.state == "failed"
    assert "exit code 3" in status.message and "tiny models could not be built" in status.message
    body = app.test_client().get("/api/status").get_json()
    assert body["demo"]["state"] == "failed" and "tiny models could not be built" in body["demo"]["message"]
    assert app.test_client().get("/api/configs").status_code == 200
    assert (tmp_path / "ws" / "logs" / "demo-create.log").exists()


def test_successful_demo_creation_imports_its_configurations(tmp_path: Path, monkeypatch) -> None:
    writer = textwrap.dedent("""
        import sys
        from pathlib import Path
        from qwen_image_studio.params.config_files import save_config
        from qwen_image_studio.params.schema import StudioConfig
        root = Path(sys.argv[1])
        save_config(StudioConfig(output_name="t"), root / "configs" / "demo-t2i.json", name="demo-t2i")
        (root / ".demo-complete").write_text("seed=0")
    """)
    monkeypatch.setattr(
        demo_setup, "demo_command", lambda target: [sys.executable, "-c", writer, str(target)]
    )
    app = create_app(tmp_path / "ws")
    thread = studio_of(app).demo.start()
    assert thread is not None
    thread.join(timeout=60)
    assert studio_of(app).demo.status.state == "ready"
    names = [c["name"] for c in app.test_client().get("/api/configs").get_json()["configs"]]
    assert names == ["demo-t2i"]
    assert studio_of(create_app(tmp_path / "ws")).demo.start() is None  # not created twice


def test_busy_port_is_reported(tmp_path: Path, capsys) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        code = main(
            ["--port", str(port), "--workspace", str(tmp_path / "ws"), "--no-demo", "--no-tensorboard"]
        )
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(proc: subprocess.Popen, predicate, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.5)
    raise AssertionError("timed out")


def _get(port: int, path: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as res:
        return json.loads(res.read())


@pytest.mark.slow
def test_real_server_creates_the_demo_in_a_child_process(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "qwen_webui.py"),
            "--port",
            str(port),
            "--workspace",
            str(tmp_path / "ws"),
            "--no-tensorboard",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def up() -> bool:
            try:
                return _get(port, "/api/status")["demo"]["state"] != "creating"
            except OSError:
                return False

        _wait_for(proc, up, timeout=300)
        status = _get(port, "/api/status")
        assert status["demo"]["state"] == "ready", status
        names = [c["name"] for c in _get(port, "/api/configs")["configs"]]
        assert {"demo-t2i", "demo-edit"} <= set(names)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
