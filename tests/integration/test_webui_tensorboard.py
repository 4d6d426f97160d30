"""TensorBoard beside the UI: started, restarted when it dies, re-pointed, stopped; a busy port is reported."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qwen_image_studio.webui.app import create_app, start_services, studio_of
from qwen_image_studio.webui.jobs import procs

ORIGIN = {"Origin": "http://localhost"}


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
            status = app.test_client().get("/api/tensorboard").get_json()
            assert status["state"] == "port_busy" and f"port {port} is in use" in status["message"]
            assert status["pid"] is None
        finally:
            studio_of(app).close()


def test_tensorboard_can_be_turned_off(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws")
    start_services(app)
    status = app.test_client().get("/api/tensorboard").get_json()
    assert status["enabled"] is False and status["state"] == "off"
    studio_of(app).close()
