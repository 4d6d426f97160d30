"""The live channel over a real WebSocket (werkzeug's threaded server, flask-sock): resume by line number,
nothing missed or doubled, floods in batches, several pages at once, Origin and token checks."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from simple_websocket import Client, ConnectionClosed
from simple_websocket import ConnectionError as Refused
from test_webui_jobs import FakeStages, ready_params
from werkzeug.serving import make_server

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.jobs.logtail import display_text

HOST = "127.0.0.1"


class Server:
    """The app on a real threaded server in this process."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.server = make_server(HOST, 0, app, threaded=True)
        self.port = self.server.port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=10)
        self.server.server_close()
        studio_of(self.app).close()


@pytest.fixture
def fake(tmp_path: Path) -> FakeStages:
    from test_webui_jobs import FAKE_STAGE

    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE, encoding="utf-8")
    return FakeStages(script)


@pytest.fixture
def server(tmp_path: Path, fake: FakeStages) -> Iterator[Server]:
    srv = Server(create_app(tmp_path / "ws", command=fake, stop_timeout=1.0, allow_dirs=(tmp_path,)))
    yield srv
    state = studio_of(srv.app)
    for job in state.jobs.with_status("queued", "running"):
        state.supervisor.stop(job.id)
    state.supervisor.wait_idle(20)
    srv.close()


class Page:
    """What a page keeps: log lines by number, events in order, job states."""

    def __init__(
        self, server: Server, origin: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        hdrs = {"Origin": origin or f"http://{HOST}", **(headers or {})}
        self.ws = Client.connect(f"ws://{HOST}:{server.port}/ws", headers=hdrs)
        self.lines: dict[int, str] = {}
        self.duplicates: list[int] = []
        self.events: list[dict[str, Any]] = []
        self.jobs: dict[int, dict[str, Any]] = {}
        self.messages = 0
        self.partial: list[Any] | None = None
        self.skipped: list[int] | None = None
        self.seen: set[str] = set()

    def watch(self, job_id: int, tail: int = 2000) -> None:
        self.ws.send(
            json.dumps(
                {
                    "type": "watch",
                    "job": job_id,
                    "log_after": max(self.lines, default=0),
                    "events_after": len(self.events),
                    "tail": tail,
                }
            )
        )

    def pump(self, until: Callable[[Page], bool], timeout: float = 120.0) -> None:
        """Read messages until `until` holds; returns as soon as it does. `timeout` only bounds a hang (on a
        starved 2-core CI machine the first message has taken over 30 s)."""
        end = time.monotonic() + timeout
        while not until(self):
            assert time.monotonic() < end, (
                len(self.lines),
                max(self.lines, default=0),
                self.messages,
                self.partial,
                self.ws.connected,
                self.jobs,
            )
            raw = self.ws.receive(timeout=0.5)
            if raw is None:
                continue
            self.messages += 1
            m = json.loads(raw)
            self.seen.update(m)
            if m["type"] == "log":
                for n, text in m["lines"]:
                    if n in self.lines:
                        self.duplicates.append(n)
                    self.lines[n] = text
                if "partial" in m:
                    self.partial = m["partial"]
                if "skipped" in m:
                    self.skipped = m["skipped"]
            elif m["type"] == "events":
                assert [n for n, _ in m["events"]] == list(
                    range(len(self.events) + 1, len(self.events) + 1 + len(m["events"]))
                )
                self.events += [e for _, e in m["events"]]
            elif m["type"] == "jobs":
                self.jobs.update({j["id"]: j for j in m["jobs"]})
            elif m["type"] == "job":
                self.jobs[m["job"]["id"]] = m["job"]

    def done(self, job_id: int) -> Callable[[Page], bool]:
        return lambda p: p.jobs.get(job_id, {}).get("status") in ("done", "failed", "stopped")

    def close(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            self.ws.close()


def start_job(server: Server, kind: str, params: dict[str, Any]) -> int:
    res = server.app.test_client().post(
        "/api/jobs", json={"kind": kind, "params": params}, headers={"Origin": "http://localhost"}
    )
    assert res.status_code == 200, res.get_json()
    return res.get_json()["job"]["id"]


def file_lines(tmp_path: Path, job_id: int) -> list[str]:
    raw = (tmp_path / "ws" / "jobs" / str(job_id) / "log.txt").read_bytes()
    return [display_text(line) for line in raw.split(b"\n")[:-1]]


def test_reconnect_resumes_with_exactly_the_missing_lines(server, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--lines", "300", "--tick", "0.005"]
    job_id = start_job(server, "cache_latents", ready_params(tmp_path))
    first = Page(server)
    first.watch(job_id)
    first.pump(lambda p: len(p.lines) >= 50)
    first.close()  # the connection drops mid-run
    second = Page(server)
    second.lines, second.events = dict(first.lines), list(first.events)
    second.watch(job_id)
    second.pump(second.done(job_id))
    second.pump(lambda p: len(p.lines) >= len(file_lines(tmp_path, job_id)), timeout=5)
    second.close()
    expected = file_lines(tmp_path, job_id)
    assert [second.lines[n] for n in sorted(second.lines)] == expected
    assert sorted(second.lines) == list(range(1, len(expected) + 1))
    assert first.duplicates == second.duplicates == []
    events = [
        json.loads(ln)
        for ln in (tmp_path / "ws" / "jobs" / str(job_id) / "events.jsonl").read_text().splitlines()
    ]
    assert second.events == events


def test_several_pages_at_once_and_carriage_returns(server, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--lines", "5", "--cr", "--sleep", "0.5"]
    pages = [Page(server) for _ in range(3)]
    job_id = start_job(server, "cache_latents", ready_params(tmp_path))
    for page in pages:
        page.watch(job_id)
    for page in pages:
        page.pump(page.done(job_id))
        page.pump(lambda p: "progress 100%" in p.lines.values(), timeout=5)
        page.close()
    expected = file_lines(tmp_path, job_id)
    assert "progress 100%" in expected and not any("\r" in line for line in expected)
    for page in pages:
        assert [page.lines[n] for n in sorted(page.lines)] == expected and page.duplicates == []


def test_a_flood_arrives_in_batches(server, fake, tmp_path: Path) -> None:
    go = tmp_path / "go"
    fake.options["cache_latents"] = ["--lines", "60000", "--wait-for", str(go)]
    job_id = start_job(server, "cache_latents", ready_params(tmp_path))
    page = Page(server)
    page.watch(job_id)
    page.pump(lambda p: "synced" in p.seen)  # watching before the flood starts: every line arrives live
    go.touch()
    page.pump(page.done(job_id), timeout=60)
    page.pump(lambda p: len(p.lines) >= len(file_lines(tmp_path, job_id)), timeout=20)
    page.close()
    assert len(page.lines) == len(file_lines(tmp_path, job_id)) > 60000
    assert page.messages < 600, page.messages  # batches, not one message per line
    # a page that keeps only the last 500 lines is told what it did not get
    late = Page(server)
    late.watch(job_id, tail=500)
    late.pump(lambda p: len(p.lines) >= 500)
    late.close()
    total = len(file_lines(tmp_path, job_id))
    assert late.skipped == [1, total - 500] and sorted(late.lines) == list(range(total - 499, total + 1))


def test_job_changes_reach_every_page(server, fake, tmp_path: Path) -> None:
    page = Page(server)
    page.pump(lambda p: p.messages >= 1)  # the job list on connect
    job_id = start_job(server, "cache_latents", ready_params(tmp_path))
    page.pump(page.done(job_id))
    assert page.jobs[job_id]["status"] == "done"
    page.close()


def test_the_websocket_checks_origin_and_token(tmp_path: Path) -> None:
    srv = Server(create_app(tmp_path / "ws"))
    try:
        for origin in ("http://evil.example", "null", f"http://{HOST}:1"):
            with pytest.raises(Refused):
                Page(srv, origin=origin)
        Page(srv).close()
    finally:
        srv.close()
    guarded = Server(create_app(tmp_path / "ws2", token="s3cret"))
    try:
        with pytest.raises(Refused):
            Page(guarded)
        page = Page(guarded, headers={"Cookie": "studio_token=s3cret"})
        page.pump(lambda p: p.messages >= 1)
        page.close()
    finally:
        guarded.close()


def test_a_log_appears_while_waiting(server, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--lines", "20", "--tick", "0.05"]
    job_id = start_job(server, "cache_latents", ready_params(tmp_path))
    page = Page(server)
    page.watch(job_id)
    seen: list[int] = []
    page.pump(lambda p: seen.append(len(p.lines)) or p.done(job_id)(p))
    page.close()
    assert len(set(seen)) > 3  # lines arrived over time, not all at the end
