"""A damaged studio.sqlite3: the UI starts, keeps the old file aside, rebuilds the jobs and configurations
from the workspace's files and says so; a database that breaks while the UI runs answers 503, not 500.

One workspace with a few finished jobs (a fake stage: a real, short subprocess) and a saved configuration
is built once; each test damages a copy of it in one of the ways files get damaged.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_webui_jobs import FAKE_STAGE, FakeStages, ready_params

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.db_check import DAMAGED, damage_of, move_aside
from qwen_image_studio.webui.jobs.snapshot import SNAPSHOT_NAME, read_snapshot
from qwen_image_studio.webui.store import DB_NAME

ORIGIN = {"Origin": "http://localhost"}
ZH = {"X-Studio-Lang": "zh-CN"}
CONFIG_NAME = "my config"


def wait_final(client: FlaskClient, job_id: int, timeout: float = 30.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/api/jobs/{job_id}").get_json()["job"]
        if job["status"] in ("done", "failed", "stopped", "lost"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def jobs_of(client: FlaskClient) -> list[tuple[int, str, str, list[tuple[str, str, int | None]]]]:
    res = client.get("/api/jobs")
    assert res.status_code == 200, res.get_data(as_text=True)
    return [
        (j["id"], j["kind"], j["status"], [(s["stage"], s["status"], s["exit_code"]) for s in j["stages"]])
        for j in res.get_json()["jobs"]
    ]


def config_names(client: FlaskClient) -> list[str]:
    return [c["name"] for c in client.get("/api/configs").get_json()["configs"]]


def close(app: Flask) -> None:
    state = studio_of(app)
    state.supervisor.wait_idle(20)
    state.close()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any], list[str]]:
    """A workspace with three ended jobs (done, failed, done) and a saved configuration, closed; plus its
    job list and configuration names as the API gave them."""
    root = tmp_path_factory.mktemp("built")
    script = root / "fake_stage.py"
    script.write_text(FAKE_STAGE, encoding="utf-8")
    fake = FakeStages(script)
    app = create_app(root / "ws", command=fake, stop_timeout=2.0, allow_dirs=(root,))
    client = app.test_client()
    params = ready_params(root)
    try:
        res = client.post("/api/configs", json={"name": CONFIG_NAME, "params": params}, headers=ORIGIN)
        assert res.status_code == 200, res.get_json()
        for kind, failing in (("cache_latents", set()), ("pipeline", {"cache_text_encoder_outputs"})):
            fake.options = {stage: ["--exit", "3", "--reason", "fake failure"] for stage in failing}
            res = client.post("/api/jobs", json={"kind": kind, "params": params}, headers=ORIGIN)
            assert res.status_code == 200, res.get_json()
            wait_final(client, res.get_json()["job"]["id"])
        fake.options = {}
        res = client.post(
            "/api/jobs",
            json={"kind": "train_network", "params": params, "config_name": CONFIG_NAME},
            headers=ORIGIN,
        )
        assert res.status_code == 200, res.get_json()
        wait_final(client, res.get_json()["job"]["id"])
        # room for 64 KiB of garbage in the middle: settings rows after the jobs' pages
        state = studio_of(app)
        for i in range(600):
            state.store.set_setting(f"pad{i}", "p" * 400)
        jobs, names = jobs_of(client), config_names(client)
    finally:
        close(app)
    assert [j[2] for j in jobs] == ["done", "failed", "done"]
    assert not (root / "ws" / f"{DB_NAME}-wal").exists()  # checkpointed on close: one file to damage
    return root / "ws", jobs, names


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def truncated(db: Path) -> None:
    size = db.stat().st_size
    with open(db, "r+b") as fh:
        fh.truncate(size // 2 + 1000)


def header_overwritten(db: Path) -> None:
    _overwrite(db, 0, b"\x00" * 100)


def garbage_in_the_middle(db: Path) -> None:
    size = db.stat().st_size
    assert size > 3 * 65536
    _overwrite(db, size // 2 - 32768, random.Random(0).randbytes(65536))


def zero_length(db: Path) -> None:
    db.write_bytes(b"")


def not_sqlite(db: Path) -> None:
    db.write_text("these are somebody's notes, saved over the database by mistake\n" * 50, encoding="utf-8")


def garbled_page(db: Path) -> None:
    with sqlite3.connect(db) as con:
        root = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'job_stages'").fetchone()[0]
        page = con.execute("PRAGMA page_size").fetchone()[0]
    con.close()
    _overwrite(db, (root - 1) * page + 1, b"\xff" * 64)  # the page type stays; its cell pointers do not


def wrong_schema(db: Path) -> None:
    con = sqlite3.connect(db)
    con.execute("ALTER TABLE job_stages RENAME TO stages_of_another_tool")
    con.commit()
    con.close()


DAMAGE: dict[str, Callable[[Path], None]] = {
    f.__name__: f
    for f in (
        truncated,
        header_overwritten,
        garbage_in_the_middle,
        zero_length,
        not_sqlite,
        garbled_page,
        wrong_schema,
    )
}


@pytest.fixture
def workspace(built: tuple[Path, list[Any], list[str]], tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(built[0], ws)
    return ws


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_database_is_kept_aside_and_rebuilt(
    damage: str, workspace: Path, built: tuple[Path, list[Any], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    db = workspace / DB_NAME
    DAMAGE[damage](db)
    damaged_bytes = db.read_bytes()
    assert damage_of(db, workspace) is not None
    with caplog.at_level(logging.ERROR, logger="qwen_image_studio.webui.db_check"):
        app = create_app(workspace)
    try:
        client = app.test_client()
        kept = [p for p in workspace.iterdir() if p.name.startswith(DB_NAME + DAMAGED)]
        assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes  # the old file, untouched
        # one line in the log naming the file, where it went and what was rebuilt
        lines = [r.getMessage() for r in caplog.records if r.name.endswith("db_check")]
        assert len(lines) == 1 and str(db) in lines[0] and kept[0].name in lines[0]
        assert f"{len(built[1])} jobs rebuilt" in lines[0] and "1 saved configurations" in lines[0]
        # the notice, in both languages
        status = client.get("/api/status").get_json()
        assert [n["key"] for n in status["notices_i18n"]] == ["notice.db_rebuilt"]
        assert kept[0].name in status["notices"][0] and str(db) in status["notices"][0]
        zh = client.get("/api/status", headers=ZH).get_json()["notices"][0]
        assert "已损坏" in zh and kept[0].name in zh and f"重建了 {len(built[1])} 个任务" in zh
        # the history and the saved configuration are back, with their ids and states
        assert jobs_of(client) == built[1]
        assert config_names(client) == built[2]
        job = client.get(f"/api/jobs/{built[1][0][0]}")
        assert job.status_code == 200 and job.get_json()["job"]["params"]["output_name"] == "fake"
        assert client.get(f"/api/configs/{CONFIG_NAME}").status_code == 200
        assert damage_of(db, workspace) is None
    finally:
        close(app)
    again = create_app(workspace)  # the next start finds nothing to repair
    try:
        assert studio_of(again).notices == []
        assert jobs_of(again.test_client()) == built[1]
    finally:
        close(again)


def test_new_jobs_after_a_rebuild_get_new_ids(
    workspace: Path, built: tuple[Path, list[Any], list[str]]
) -> None:
    not_sqlite(workspace / DB_NAME)
    script = workspace.parent / "fake_stage.py"
    script.write_text(FAKE_STAGE, encoding="utf-8")
    app = create_app(workspace, command=FakeStages(script), allow_dirs=(workspace.parent,))
    try:
        client = app.test_client()
        res = client.post(
            "/api/jobs",
            json={"kind": "train_network", "params": ready_params(workspace.parent)},
            headers=ORIGIN,
        )
        assert res.status_code == 200, res.get_json()
        new_id = res.get_json()["job"]["id"]
        assert new_id == max(j[0] for j in built[1]) + 1
        assert wait_final(client, new_id)["status"] == "done"
        # the snapshot follows the committed row (written just after the commit, by the thread that made it)
        snapshot = workspace / "jobs" / str(new_id) / SNAPSHOT_NAME
        end = time.monotonic() + 10
        while read_snapshot(snapshot).status != "done" and time.monotonic() < end:
            time.sleep(0.05)
        assert read_snapshot(snapshot).status == "done"
    finally:
        close(app)


def test_each_job_folder_keeps_a_snapshot_of_its_record(built: tuple[Path, list[Any], list[str]]) -> None:
    ws, jobs, _ = built
    for job_id, kind, status, stages in jobs:
        path = ws / "jobs" / str(job_id) / SNAPSHOT_NAME
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["format"] == "qwen-image-studio-job" and doc["job"]["id"] == job_id
        job = read_snapshot(path)
        assert (job.kind, job.status) == (kind, status)
        assert [(s.stage, s.status, s.exit_code) for s in job.stages] == stages
        assert job.params["output_name"] == "fake" and job.created_at and job.finished_at
        assert all(s.argv and "--events_file" in s.argv for s in job.stages)
    failed = read_snapshot(ws / "jobs" / str(jobs[1][0]) / SNAPSHOT_NAME)
    assert failed.stages[1].reason == "fake failure"
    assert not list((ws / "jobs").glob("*/.job.json.*"))  # no temporary files left behind


def test_a_sound_or_new_database_is_left_alone(workspace: Path, tmp_path: Path) -> None:
    assert damage_of(workspace / DB_NAME, workspace) is None
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / DB_NAME).write_bytes(b"")  # empty, and nothing in the workspace to rebuild: a new database
    assert damage_of(fresh / DB_NAME, fresh) is None
    app = create_app(fresh)
    try:
        assert studio_of(app).notices == []
        assert not [p for p in fresh.iterdir() if DAMAGED in p.name]
    finally:
        close(app)


def test_a_missing_database_with_job_folders_is_rebuilt(
    workspace: Path, built: tuple[Path, list[Any], list[str]]
) -> None:
    (workspace / DB_NAME).unlink()
    app = create_app(workspace)
    try:
        client = app.test_client()
        assert [n.key for n in studio_of(app).notices] == ["notice.db_missing"]
        assert jobs_of(client) == built[1] and config_names(client) == built[2]
    finally:
        close(app)


def test_job_folders_without_a_snapshot_are_named(
    workspace: Path, built: tuple[Path, list[Any], list[str]]
) -> None:
    first = built[1][-1][0]  # the oldest job
    (workspace / "jobs" / str(first) / SNAPSHOT_NAME).write_text("{not json", encoding="utf-8")
    zero_length(workspace / DB_NAME)
    app = create_app(workspace)
    try:
        notices = studio_of(app).notices
        assert [n.key for n in notices] == ["notice.db_rebuilt", "notice.db_jobs_left"]
        assert notices[1].vars["folders"] == str(first)
        assert [j[0] for j in jobs_of(app.test_client())] == [j[0] for j in built[1] if j[0] != first]
    finally:
        close(app)


def test_the_old_file_is_never_overwritten(tmp_path: Path) -> None:
    db = tmp_path / DB_NAME
    now = datetime(2026, 12, 3, 10, 20, 30)
    taken = tmp_path / f"{DB_NAME}.damaged-20261203-102030"
    taken.write_bytes(b"an earlier damaged file")
    db.write_bytes(b"damaged")
    (tmp_path / f"{DB_NAME}-wal").write_bytes(b"wal")
    (tmp_path / f"{DB_NAME}-journal").write_bytes(b"journal")
    kept = move_aside(db, now)
    assert kept == tmp_path / f"{DB_NAME}.damaged-20261203-102030-2"
    assert kept.read_bytes() == b"damaged" and taken.read_bytes() == b"an earlier damaged file"
    assert (tmp_path / f"{kept.name}-wal").read_bytes() == b"wal"
    assert (tmp_path / f"{kept.name}-journal").read_bytes() == b"journal"
    assert not db.exists() and not (tmp_path / f"{DB_NAME}-wal").exists()


def test_a_database_that_breaks_while_running_answers_503(
    workspace: Path, built: tuple[Path, list[Any], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(workspace)
    state = studio_of(app)
    try:
        with caplog.at_level(logging.ERROR, logger="qwen_image_studio.webui.jobs.supervisor"):
            not_sqlite(workspace / DB_NAME)
            for url in ("/api/jobs", "/api/configs", f"/api/jobs/{built[1][0][0]}"):
                res = app.test_client().get(url)
                assert res.status_code == 503, res.get_data(as_text=True)
                body = res.get_json()
                assert body["code"] == "database" and str(workspace / DB_NAME) in body["error"]
                assert "Restart the web UI" in body["error"]
            zh = app.test_client().get("/api/jobs", headers=ZH).get_json()
            assert "请重启 Web 界面" in zh["error"] and zh["error_i18n"]["key"] == "err.database"
            end = time.monotonic() + 10
            while not caplog.records and time.monotonic() < end:
                time.sleep(0.05)
        # the job queue says so once and waits (its thread does not die with a traceback)
        assert [r.getMessage() for r in caplog.records if "restart the web UI" in r.getMessage()]
        assert state.supervisor._thread is not None and state.supervisor._thread.is_alive()
    finally:
        state.close()
    again = create_app(workspace)  # the restart the answer asks for repairs the file
    try:
        assert [n.key for n in studio_of(again).notices] == ["notice.db_rebuilt"]
        assert jobs_of(again.test_client()) == built[1]
    finally:
        close(again)
