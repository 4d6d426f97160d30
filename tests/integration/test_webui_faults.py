"""Faults a user meets: a huge log, stop racing the end of a job, read-only and full output folders, and
paths outside the folders the UI may write in — each refused or handled before anything is lost."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from test_webui_jobs import ORIGIN, FakeStages, ready_params
from test_webui_jobs import fake as fake  # noqa: F401 - the fixture
from test_webui_orphans import close_app

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.jobs.hub import Hub, Subscriber


@pytest.fixture
def app(tmp_path: Path, fake: FakeStages) -> Iterator[Flask]:
    made = create_app(tmp_path / "ws", command=fake, stop_timeout=2.0, allow_dirs=(tmp_path,))
    yield made
    close_app(made)


def test_a_fresh_watcher_gets_only_its_tail_of_a_huge_log(tmp_path: Path) -> None:
    folder = tmp_path / "jobs" / "1"
    folder.mkdir(parents=True)
    log = folder / "job.log"
    line = b"step 123456 loss 0.123456 lr 0.0001 of a long training run\n"
    with open(log, "wb") as fh:
        block = line * 10_000
        for _ in range(160):  # 1.6 M lines, 96 MB
            fh.write(block)
    (folder / "events.jsonl").write_bytes(b"")
    hub = Hub(
        lambda job_id: (
            tmp_path / "jobs" / str(job_id) / "job.log",
            tmp_path / "jobs" / str(job_id) / "events.jsonl",
        )
    )
    sub = Subscriber()
    started = time.monotonic()
    hub.watch(sub, 1, log_after=0, events_after=0, tail=2000)
    took = time.monotonic() - started
    messages = []
    while not sub.queue.empty():
        messages.append(sub.queue.get_nowait())
    lines = [n for m in messages if m["type"] == "log" for n, _ in m["lines"]]
    assert lines == list(range(1_600_000 - 1999, 1_600_001))
    assert messages[0]["skipped"] == [1, 1_600_000 - 2000]
    assert messages[-1]["synced"] == 1_600_000
    print(f"\ntail of a 96 MB, 1.6 M-line log: {len(lines)} lines sent in {took:.2f} s")
    hub.poll_once()  # nothing more arrives later either
    later = []
    while not sub.queue.empty():
        later.append(sub.queue.get_nowait())
    assert [n for m in later if m["type"] == "log" for n, _ in m["lines"]] == []


def test_concurrent_submit_and_stop_never_end_a_stopped_job_done(
    app: Flask, tmp_path: Path, fake: FakeStages
) -> None:
    fake.options = {"train_network": ["--lines", "1"]}  # jobs end about when they are stopped
    params = ready_params(tmp_path)
    errors: list[str] = []

    def client_loop(count: int) -> None:
        client = app.test_client()
        for _ in range(count):
            res = client.post("/api/jobs", json={"kind": "train_network", "params": params}, headers=ORIGIN)
            if res.status_code != 200:
                errors.append(str(res.get_json()))
                continue
            job_id = res.get_json()["job"]["id"]
            time.sleep(0.05 * (job_id % 4))
            client.post(f"/api/jobs/{job_id}/stop", json={}, headers=ORIGIN)

    threads = [threading.Thread(target=client_loop, args=(12,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    state = studio_of(app)
    assert state.supervisor.wait_idle(120)
    assert errors == []
    jobs = state.jobs.recent(100)
    ends: dict[str, int] = {}
    for job in jobs:
        ends[job.status] = ends.get(job.status, 0) + 1
        if job.stop_requested:
            assert job.status == "stopped", (job.id, job.status)
        assert job.status in ("done", "stopped"), (job.id, job.status)
    assert len(jobs) == 24 and ends.get("stopped", 0) > 0
    print(f"\n24 concurrent submit/stop pairs: {ends}")


def _mount_tmpfs(target: Path, options: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
    )
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the full/read-only folder test: {result.stderr.strip()}")
        pytest.skip(f"needs root to mount a small tmpfs: {result.stderr.strip()}")


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[dict[str, Path]]:
    mounts = {"full": tmp_path / "full", "readonly": tmp_path / "readonly"}
    _mount_tmpfs(mounts["full"], "size=1m")
    _mount_tmpfs(mounts["readonly"], "size=1m,ro")
    yield mounts
    for path in mounts.values():
        subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_or_full_output_folder_is_refused_before_training(
    app: Flask, tmp_path: Path, small_disks: dict[str, Path]
) -> None:
    client = app.test_client()
    params = ready_params(tmp_path)
    for name, field in (("readonly", "output_dir"), ("full", "output_dir"), ("readonly", "logging_dir")):
        values = {**params, field: str(small_disks[name] / "out")}
        res = client.post("/api/jobs", json={"kind": "train_network", "params": values}, headers=ORIGIN)
        assert res.status_code == 400, res.get_json()
        problem = res.get_json()["problems"][0]
        assert problem["field"] == field
        expected = "cannot write in" if name == "readonly" else "free, and the next files need about"
        assert expected in problem["message"] and str(small_disks[name]) in problem["message"]
        check = client.post(
            "/api/validate", json={"params": values, "stage": "train_network"}, headers=ORIGIN
        ).get_json()
        assert not check["ok"] and check["stage_problems"][0]["field"] == field  # the form says it first
    assert studio_of(app).jobs.recent() == []  # nothing was queued


def test_jobs_write_only_inside_the_workspace_and_allowed_folders(tmp_path: Path, fake: FakeStages) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    app = create_app(tmp_path / "ws", command=fake, stop_timeout=2.0, allow_dirs=(tmp_path / "inputs",))
    try:
        client = app.test_client()
        params = ready_params(tmp_path)
        for field, value in (
            ("output_dir", "/etc/qwen"),
            ("logging_dir", "/root/logs"),
            ("output_dir", str(elsewhere)),
        ):
            res = client.post(
                "/api/jobs",
                json={"kind": "train_network", "params": {**params, field: value}},
                headers=ORIGIN,
            )
            assert res.status_code == 400
            problem = res.get_json()["problems"][0]
            assert problem["field"] == field and "--allow_dir" in problem["message"], problem
            zh = client.post(
                "/api/jobs",
                json={"kind": "train_network", "params": {**params, field: value}},
                headers={**ORIGIN, "X-Studio-Lang": "zh-CN"},
            ).get_json()["problems"][0]["message"]
            assert "允许" in zh
        inside = {**params, "output_dir": str(tmp_path / "inputs" / "out"), "logging_dir": "logs"}
        res = client.post("/api/jobs", json={"kind": "train_network", "params": inside}, headers=ORIGIN)
        assert res.status_code == 200, res.get_json()
        assert studio_of(app).supervisor.wait_idle(30)
        status = client.get("/api/status").get_json()
        assert status["allowed_dirs"] == [str((tmp_path / "inputs").resolve())]
        assert not Path("/etc/qwen").exists() and not Path("/root/logs").exists()
    finally:
        close_app(app)


def test_output_name_must_be_a_file_name_stem(app: Flask, tmp_path: Path) -> None:
    client = app.test_client()
    params = ready_params(tmp_path)
    for bad in ("a\x00b", "--dit", "../up", "a/b", "x" * 201, ""):
        res = client.post(
            "/api/jobs",
            json={"kind": "train_network", "params": {**params, "output_name": bad}},
            headers=ORIGIN,
        )
        assert res.status_code == 400
        assert res.get_json()["problems"][0]["field"] == "output_name"
    res = client.post(
        "/api/jobs",
        json={"kind": "train_network", "params": params, "config_name": "x" * 500},
        headers=ORIGIN,
    )
    assert (
        res.status_code == 400
        and "config" in res.get_json()["error"].lower()
        or "name" in res.get_json()["error"]
    )


def test_a_save_that_runs_out_of_disk_keeps_the_previous_file(small_disks: dict[str, Path]) -> None:
    import torch

    from qwen_image_studio.atomic import atomic_save_safetensors
    from qwen_image_studio.errors import DiskFullError

    target = small_disks["full"] / "lora.safetensors"
    atomic_save_safetensors({"w": torch.zeros(16)}, target, {})
    before = target.read_bytes()
    with pytest.raises(DiskFullError) as info:
        atomic_save_safetensors({"w": torch.zeros(1024 * 1024)}, target, {})  # 4 MB on a 1 MB disk
    assert target.read_bytes() == before
    assert "is full" in str(info.value) and "the previous lora.safetensors is kept" in str(info.value)
    assert [p.name for p in small_disks["full"].iterdir()] == ["lora.safetensors"]  # no temporary file left
    shutil.rmtree(small_disks["full"] / "none", ignore_errors=True)
