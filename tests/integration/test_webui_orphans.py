"""What a killed web UI or a dead stage leaves behind: TensorBoard still holding its port (recorded and ended
by the next UI, while another program on the port is left alone and reported), temporary files kept in the
workspace and the job's folder, and a dead trainer's remaining process group ended on restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from test_webui_jobs import ORIGIN, FakeStages, job_of, ready_params, start, wait_status
from test_webui_tensorboard import free_port, wait_for

from qwen_image_studio.webui.app import create_app, start_services, studio_of
from qwen_image_studio.webui.jobs import procs
from qwen_image_studio.webui.tensorboard import Records

ROOT = Path(__file__).resolve().parents[2]

TEMP_STAGE = r"""
import argparse, json, multiprocessing.util, os, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--events_file")
p.add_argument("--stage")
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
pymp = multiprocessing.util.get_temp_dir()  # the pymp-* folder that a trainer's workers make
with open(os.path.join(tempfile.gettempdir(), "scratch.bin"), "wb") as fh:
    fh.write(b"x")
env = {k: os.environ.get(k) for k in ("TMPDIR", "TMP", "TEMP")}
print("TEMP " + json.dumps({"tmp": tempfile.gettempdir(), "pymp": pymp, "env": env}), flush=True)
with open(a.events_file, "a") as ev:
    ev.write(json.dumps({"t": time.time(), "stage": a.stage, "type": "started"}) + "\n")
end = time.time() + a.sleep
while time.time() < end:
    time.sleep(0.05)
with open(a.events_file, "a") as ev:
    ev.write(json.dumps({"t": time.time(), "stage": a.stage, "type": "finished"}) + "\n")
"""

# a stage leader that starts a worker in its process group, says its pid, and exits when told to
LEADER = (
    "import subprocess, sys; "
    "kid = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'], stdout=subprocess.DEVNULL); "
    "print(kid.pid, flush=True); sys.stdin.readline()"
)

# a program listening on a port; with "tensorboard" in its command line when asked
LISTENER = (
    "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
    "print('up', flush=True); time.sleep(600)"
)


def close_app(app: Flask) -> None:
    state = studio_of(app)
    for job in state.jobs.with_status("queued", "running"):
        state.supervisor.stop(job.id)
    state.supervisor.wait_idle(30)
    state.close()


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        close_app(app)


def listener(port: int, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, str(port), *extra],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    return proc


def a_dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def kill(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


# ---- TensorBoard: the record, and ending only what is ours ---------------------------------------------


def test_records_end_only_a_dead_uis_tensorboard(tmp_path: Path) -> None:
    port, other = free_port(), free_port()
    orphan = listener(port, "--logdir", "x", "tensorboard")  # looks like TensorBoard: argv names it
    kept = listener(other, "tensorboard")
    try:
        records = Records(tmp_path / "logs" / "tensorboard.json")
        records.remember(kept.pid, other, tmp_path, ["tensorboard"])  # this UI's own: alive, kept
        entries = json.loads(records.path.read_text())
        entries.append({**entries[0], "pid": orphan.pid, "start": procs.start_time(orphan.pid), "port": port})
        entries[-1].update(ui_pid=a_dead_pid(), ui_start="1")  # started by a UI that is gone
        records.path.write_text(json.dumps(entries))
        assert records.reclaim(timeout=2.0) == [orphan.pid]
        assert orphan.wait(timeout=10) == -signal.SIGTERM
        assert kept.poll() is None
        assert [e["pid"] for e in json.loads(records.path.read_text())] == [kept.pid]
        records.forget(kept.pid)
        assert json.loads(records.path.read_text()) == []
    finally:
        kill(orphan)
        kill(kept)


def test_a_port_held_by_another_program_is_still_reported(tmp_path: Path) -> None:
    port = free_port()
    foreign = listener(port)  # not TensorBoard, though recorded as one (its pid and start time)
    lookalike = listener(free_port(), "tensorboard")  # TensorBoard by name, but another start time
    ws = tmp_path / "ws"
    (ws / "logs").mkdir(parents=True)
    dead = {
        "ui_pid": a_dead_pid(),
        "ui_start": "1",
        "port": port,
        "logdir": str(ws),
        "cmdline": ["tensorboard"],
    }
    records = [
        {**dead, "pid": foreign.pid, "start": procs.start_time(foreign.pid)},
        {**dead, "pid": lookalike.pid, "start": "1"},
    ]
    (ws / "logs" / "tensorboard.json").write_text(json.dumps(records))
    app = create_app(ws, tensorboard=True, tensorboard_port=port)
    try:
        start_services(app)
        status = app.test_client().get("/api/tensorboard").get_json()
        assert status["state"] == "port_busy" and f"port {port} is in use" in status["message"]
        assert foreign.poll() is None and lookalike.poll() is None  # neither was touched
        assert app.test_client().get("/tensorboard/").status_code == 502
        assert json.loads((ws / "logs" / "tensorboard.json").read_text()) == []  # the stale records went
    finally:
        studio_of(app).close()
        kill(foreign)
        kill(lookalike)


@pytest.mark.slow
def test_tensorboard_writes_its_temporary_files_in_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_tmp = tmp_path / "system-tmp"
    real_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(real_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    ws = tmp_path / "ws"
    app = create_app(ws, tensorboard=True, tensorboard_port=free_port())
    state = studio_of(app)
    try:
        start_services(app)
        running = wait_for(lambda: (s := state.tensorboard.status())["state"] == "running" and s)
        info = ws / ".tmp" / "tensorboard" / ".tensorboard-info"
        assert wait_for(lambda: list(info.glob("pid-*.info")))
        assert not (real_tmp / ".tensorboard-info").exists() and list(real_tmp.iterdir()) == []
        env = Path(f"/proc/{running['pid']}/environ").read_bytes().split(b"\0")
        assert f"TMPDIR={ws / '.tmp' / 'tensorboard'}".encode() in env
        record = json.loads((ws / "logs" / "tensorboard.json").read_text())
        assert [(e["pid"], e["port"], e["ui_pid"]) for e in record] == [
            (running["pid"], running["port"], os.getpid())
        ]
        assert record[0]["start"] == procs.start_time(running["pid"])
    finally:
        state.close()
    assert json.loads((ws / "logs" / "tensorboard.json").read_text()) == []


def ui_command(ws: Path, port: int, board_port: int) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "qwen_webui.py"),
        "--port",
        str(port),
        "--workspace",
        str(ws),
        "--no-demo",
        "--tensorboard_port",
        str(board_port),
    ]


def get_json(port: int, path: str) -> Any:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as res:
            return json.loads(res.read())
    except OSError:
        return None


def board_running(ui: subprocess.Popen[str], port: int) -> dict[str, Any] | None:
    """TensorBoard's status once it runs (an AssertionError when it cannot start)."""
    assert ui.poll() is None, ui.stdout.read() if ui.stdout else ""
    status = get_json(port, "/api/tensorboard")
    assert status is None or status["state"] in ("starting", "running"), status
    return status if status and status["state"] == "running" else None


@pytest.mark.slow
def test_a_ui_killed_with_sigkill_leaves_no_tensorboard_in_the_way(tmp_path: Path) -> None:
    ws, board_port = tmp_path / "ws", free_port()
    first_port = free_port()
    first = subprocess.Popen(
        ui_command(ws, first_port, board_port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    second: subprocess.Popen[str] | None = None
    try:
        old = wait_for(lambda: board_running(first, first_port), timeout=120)
        old_start = procs.start_time(old["pid"])
        first.kill()  # kill -9: no clean-up; TensorBoard (its own session) goes on holding the port
        first.wait(timeout=10)
        assert procs.is_running(old["pid"], old_start)
        second_port = free_port()
        second = subprocess.Popen(
            ui_command(ws, second_port, board_port),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        new = wait_for(lambda: board_running(second, second_port), timeout=120)
        assert new["port"] == board_port and "in use" not in new["message"]
        assert not procs.is_running(old["pid"], old_start)  # ended (its pid gone, or another process's now)
        with urllib.request.urlopen(f"http://127.0.0.1:{second_port}/tensorboard/", timeout=10) as res:
            assert res.status == 200 and b"tb-relative-root" in res.read()
        new_start = procs.start_time(new["pid"])
        second.send_signal(signal.SIGTERM)  # a clean stop ends TensorBoard and forgets it
        out, _ = second.communicate(timeout=60)
        assert "in use" not in out, out
        assert not procs.is_running(new["pid"], new_start)
        assert json.loads((ws / "logs" / "tensorboard.json").read_text()) == []
    finally:
        for ui in (first, second):
            if ui is not None:
                kill(ui)
        Records(ws / "logs" / "tensorboard.json").reclaim()  # a TensorBoard a failed run left behind


# ---- stages: TMPDIR in the job's folder, and what a dead stage leaves ----------------------------------


def temp_of(log_file: Path) -> dict[str, Any] | None:
    for line in log_file.read_text().splitlines() if log_file.exists() else []:
        if line.startswith("TEMP "):
            return json.loads(line[5:])
    return None


def test_a_stage_keeps_its_temporary_files_in_its_job_folder(tmp_path: Path, apps: list[Flask]) -> None:
    script = tmp_path / "temp_stage.py"
    script.write_text(TEMP_STAGE, encoding="utf-8")
    fake = FakeStages(script)
    fake.options["cache_latents"] = ["--sleep", "60"]
    apps.append(create_app(tmp_path / "ws", command=fake, stop_timeout=2.0, allow_dirs=(tmp_path,)))
    client, state = apps[0].test_client(), studio_of(apps[0])
    job = start(client, "cache_latents", ready_params(tmp_path))
    tmp = state.supervisor.tmp_dir(job["id"])
    assert tmp.parent == state.supervisor.job_dir(job["id"])
    log_file, _ = state.supervisor.paths(job["id"])
    seen = wait_for(lambda: temp_of(log_file), timeout=30)
    assert seen["env"] == {"TMPDIR": str(tmp), "TMP": str(tmp), "TEMP": str(tmp)}
    assert seen["tmp"] == str(tmp) and Path(seen["pymp"]).parent == tmp
    assert (tmp / "scratch.bin").exists() and Path(seen["pymp"]).is_dir()
    res = client.post(f"/api/jobs/{job['id']}/stop", json={}, headers=ORIGIN)
    assert res.status_code == 200
    wait_status(client, job["id"], "stopped")
    assert not tmp.exists()  # SIGTERM skips the stage's own clean-up; the supervisor's removes it all
    # a stage that finishes leaves none either
    fake.options["cache_latents"] = []
    done = start(client, "cache_latents", ready_params(tmp_path))
    assert wait_status(client, done["id"], "done", "failed")["status"] == "done"
    assert temp_of(state.supervisor.paths(done["id"])[0]) is not None
    assert not state.supervisor.tmp_dir(done["id"]).exists()


def test_a_dead_stages_process_group_is_ended_on_restart(tmp_path: Path, apps: list[Flask]) -> None:
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdin is not None and leader.stdout is not None
    leader_start = procs.start_time(leader.pid)
    worker = int(leader.stdout.readline())
    worker_start = procs.start_time(worker)
    try:
        leader.stdin.close()  # the trainer dies; its worker goes on in its process group
        leader.wait(timeout=10)
        assert procs.orphans_of(leader.pid, leader_start) == [worker]
        # a group is never taken for the job's when the leader's start time does not fit
        assert procs.orphans_of(leader.pid, str(int(worker_start or 0) + 1)) == []
        assert procs.orphans_of(leader.pid, None) == []
        assert procs.orphans_of(os.getpid(), procs.start_time(os.getpid())) == []  # a leader still running

        apps.append(create_app(tmp_path / "ws", stop_timeout=1.0))
        state = studio_of(apps[0])
        state.close()  # the UI that "ran" it is gone
        assert state.supervisor._thread is not None
        state.supervisor._thread.join(timeout=10)
        job = state.jobs.create(
            "cache_latents", None, ready_params(tmp_path), ["cache_latents"], lambda i: [["x"]]
        )
        state.jobs.set_job(job.id, status="running", started_at=1.0)
        state.jobs.set_stage(
            job.id, 0, status="running", pid=leader.pid, pid_start=leader_start, started_at=1.0
        )
        tmp = state.supervisor.tmp_dir(job.id)
        (tmp / "pymp-left").mkdir(parents=True)

        apps.append(create_app(tmp_path / "ws", stop_timeout=1.0))  # the restarted UI
        client = apps[1].test_client()
        lost = wait_status(client, job.id, "lost", "failed", "done")
        assert lost["status"] == "lost" and lost["stages"][0]["status"] == "lost"
        assert not procs.is_running(worker, worker_start)  # SIGTERM ignored: SIGKILL after 1 s
        assert not tmp.exists()
        log_file, _ = studio_of(apps[1]).supervisor.paths(job.id)
        log = log_file.read_text()
        assert f"ended the processes it left: {worker}]" in log
        assert log.splitlines()[-1].startswith("⏰ [cache_latents: lost, ")
        assert job_of(client, job.id)["stages"][0]["pid"] == leader.pid
    finally:
        if procs.is_running(worker, worker_start):
            os.kill(worker, signal.SIGKILL)
