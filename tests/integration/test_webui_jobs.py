"""Jobs through the API against real SQLite and real processes: queue, pipeline, stop, re-attach, files.

A small fake stage (a real subprocess writing log lines and events, optionally with a child process)
stands in for the stage commands where a test needs control over timing, failures and process trees;
the last tests run the real caching stages on the demo workspace.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qwen_image_studio.params.cli import to_argv
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import Join, Message
from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import TABLE
from qwen_image_studio.webui.jobs import procs
from qwen_image_studio.webui.jobs.supervisor import StallWatch, Supervisor

ORIGIN = {"Origin": "http://localhost"}


def in_chinese(stage: dict[str, Any]) -> str:
    """A stage's reason as the Chinese page shows it (from its structured form)."""
    msg = Message.from_json(stage["reason_i18n"])
    assert msg is not None, stage["reason"]
    return msg.render(TABLE["zh-CN"], TABLE["en"])


FAKE_STAGE = r"""
import argparse, json, os, signal, subprocess, sys, time

p = argparse.ArgumentParser()
p.add_argument("--events_file")
p.add_argument("--stage")
p.add_argument("--lines", type=int, default=3)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--tick", type=float, default=0.0)
p.add_argument("--exit", type=int, default=0)
p.add_argument("--reason", default="")
p.add_argument("--reason_i18n", default="")  # JSON, as stages/runner.py writes it
p.add_argument("--field", default=None)
p.add_argument("--child", action="store_true")
p.add_argument("--ignore-term", action="store_true")
p.add_argument("--cr", action="store_true")
p.add_argument("--artifact", nargs=2, action="append", default=[])
p.add_argument("--wait-for", default="")
a = p.parse_args()
ev = open(a.events_file, "a", buffering=1)
def emit(type_, **data):
    ev.write(json.dumps({"t": time.time(), "stage": a.stage, "type": type_, **data}) + "\n")
if a.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if a.child:
    cmd = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
    kid = subprocess.Popen(cmd)
    print(f"child {kid.pid}", flush=True)
emit("started", argv=sys.argv[1:], pid=os.getpid())
while a.wait_for and not os.path.exists(a.wait_for):
    time.sleep(0.02)
for i in range(a.lines):
    print(f"{a.stage} line {i + 1}")
    if i % 100 == 0:
        emit("progress", phase=a.stage, done=i, total=a.lines, rate=10.0, eta=1.0)
        emit("metric", step=i + 1, loss=1.0 / (i + 1), lr=1e-4)
    if a.tick:
        sys.stdout.flush()
        time.sleep(a.tick)
if a.cr:
    sys.stdout.write("progress 10%\rprogress 50%\rprogress 100%\n")
sys.stdout.flush()
for kind, path in a.artifact:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    open(path, "wb").write(b"\x89PNG\r\n\x1a\n" if path.endswith(".png") else b"lora")
    emit("artifact", kind=kind, path=path)
end = time.time() + a.sleep
while time.time() < end:
    time.sleep(0.05)
if a.exit:
    print(f"error: {a.reason}", file=sys.stderr, flush=True)
    said = {"reason_i18n": json.loads(a.reason_i18n), "field": a.field} if a.reason_i18n else {}
    emit("failed", reason=a.reason, exit_code=a.exit, **said)
    sys.exit(a.exit)
emit("finished")
"""


def said(msg: Message, field: str | None = None) -> list[str]:
    """The fake stage's options to fail as the runner does: the English reason, the message, the field."""
    extra = ["--field", field] if field else []
    return ["--reason", msg.render(TABLE["en"]), "--reason_i18n", json.dumps(msg.as_json()), *extra]


class FakeStages:
    """The command the supervisor runs per stage: the fake stage with per-stage options."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.options: dict[str, list[str]] = {}

    def __call__(self, stage: Stage, config: StudioConfig, events_file: Path) -> list[str]:
        extra = self.options.get(stage.value, [])
        return [
            sys.executable,
            str(self.script),
            "--events_file",
            str(events_file),
            "--stage",
            stage.value,
            *extra,
        ]


@pytest.fixture
def fake(tmp_path: Path) -> FakeStages:
    script = tmp_path / "fake_stage.py"
    script.write_text(FAKE_STAGE, encoding="utf-8")
    return FakeStages(script)


def ready_params(tmp_path: Path) -> dict[str, Any]:
    """Values that pass every stage's checks (the files exist, one captioned image; the fake stage
    ignores them)."""
    from PIL import Image

    files = tmp_path / "inputs"
    files.mkdir(exist_ok=True)
    for name in ("dit.safetensors", "vae.safetensors", "te.safetensors"):
        (files / name).write_bytes(b"x")
    Image.new("RGB", (64, 64), (200, 40, 40)).save(files / "red.png")
    (files / "red.txt").write_text("a red square\n", encoding="utf-8")
    toml = files / "dataset.toml"
    toml.write_text(f'[[datasets]]\nimage_directory = "{files}"\n', encoding="utf-8")
    return {
        "dit": str(files / "dit.safetensors"),
        "vae": str(files / "vae.safetensors"),
        "text_encoder": str(files / "te.safetensors"),
        "dataset_config": str(toml),
        "output_dir": "output",
        "output_name": "fake",
        "logging_dir": "logs",
    }


@pytest.fixture
def make_app(tmp_path: Path, fake: FakeStages) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**kwargs: Any) -> Flask:
        kwargs.setdefault("stop_timeout", 2.0)
        kwargs.setdefault("allow_dirs", (tmp_path,))  # the inputs and outputs lie beside the workspace
        app = create_app(tmp_path / "ws", command=fake, **kwargs)
        apps.append(app)
        return app

    yield make
    for app in apps:
        state = studio_of(app)
        for job in state.jobs.with_status("queued", "running"):
            state.supervisor.stop(job.id)
        state.supervisor.wait_idle(20)
        state.close()


def start(client: FlaskClient, kind: str, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    res = client.post("/api/jobs", json={"kind": kind, "params": params, "config_name": name}, headers=ORIGIN)
    assert res.status_code == 200, res.get_json()
    return res.get_json()["job"]


def job_of(client: FlaskClient, job_id: int) -> dict[str, Any]:
    return client.get(f"/api/jobs/{job_id}").get_json()["job"]


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_status(client: FlaskClient, job_id: int, *statuses: str, timeout: float = 30.0) -> dict[str, Any]:
    return wait_for(
        lambda: (j := job_of(client, job_id))["status"] in statuses and j,
        timeout,
        f"job {job_id} to be {statuses}",
    )


def test_pipeline_runs_the_three_stages_in_order(make_app, tmp_path: Path) -> None:
    app = make_app()
    client = app.test_client()
    params = ready_params(tmp_path)
    job = start(client, "pipeline", params, name="my config")
    assert job["status"] in ("queued", "running")
    done = wait_status(client, job["id"], "done", "failed")
    assert done["status"] == "done", done
    assert [s["stage"] for s in done["stages"]] == [
        s.value for s in (Stage.CACHE_LATENTS, Stage.CACHE_TEXT, Stage.TRAIN)
    ]
    assert all(s["status"] == "done" and s["exit_code"] == 0 for s in done["stages"])
    starts = [s["started_at"] for s in done["stages"]]
    assert starts == sorted(starts) and all(s["duration"] is not None for s in done["stages"])
    # relative paths were resolved against the workspace, and the snapshot and argv are in SQLite
    workspace = tmp_path / "ws"
    assert done["params"]["output_dir"] == str(workspace / "output")
    with sqlite3.connect(workspace / "studio.sqlite3") as db:
        kind, name, snapshot = db.execute("SELECT kind, config_name, params FROM jobs").fetchone()
        argvs = [json.loads(r[0]) for r in db.execute("SELECT argv FROM job_stages ORDER BY idx")]
    assert (kind, name) == ("pipeline", "my config")
    assert json.loads(snapshot)["dit"] == params["dit"]
    assert all("--events_file" in argv for argv in argvs)
    log = (workspace / "jobs" / str(job["id"]) / "log.txt").read_text()
    for stage in ("cache_latents", "cache_text_encoder_outputs", "train_network"):
        assert f"{stage} line 3" in log and f"\n✅ [{stage}: exit code 0, done, " in log
    assert "⏰" not in log and "❌" not in log


def test_real_stage_command_lines_come_from_the_configuration(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws")
    try:
        params = ready_params(tmp_path)
        job = studio_of(app).supervisor.submit(
            "pipeline", StudioConfig(**{**params, "output_dir": str(tmp_path / "out")}), None
        )
        studio_of(app).supervisor.stop(job.id)
        argv = studio_of(app).jobs.get(job.id).stages[2].argv
        assert argv[:4] == [sys.executable, "-m", "qwen_image_studio.cli", "train"]
        assert argv[argv.index("--dit") + 1] == params["dit"] and argv[-2] == "--events_file"
    finally:
        studio_of(app).close()


def test_a_failing_stage_stops_the_pipeline_with_its_reason(make_app, fake, tmp_path: Path) -> None:
    missing = Message("v.not_found", {"flag": "--text_encoder", "path": "/models/te.safetensors"})
    fake.options["cache_text_encoder_outputs"] = [
        "--exit",
        "2",
        *said(missing, "text_encoder"),
    ]
    client = make_app().test_client()
    job = wait_status(client, start(client, "pipeline", ready_params(tmp_path))["id"], "failed", "done")
    stages = job["stages"]
    assert job["status"] == "failed"
    assert [s["status"] for s in stages] == ["done", "failed", "skipped"]
    assert stages[1]["exit_code"] == 2 and stages[1]["field"] == "text_encoder"
    assert stages[1]["reason"] == "--text_encoder: not found: /models/te.safetensors"
    assert in_chinese(stages[1]) == "--text_encoder：找不到 /models/te.safetensors"
    assert "error: --text_encoder: not found" in stages[1]["log_tail"]
    log = (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text().splitlines()
    closing = [ln for ln in log if ln.startswith(("✅", "❌", "⏰"))]
    assert [ln.split(",")[0] for ln in closing] == [
        "✅ [cache_latents: exit code 0",
        "❌ [cache_text_encoder_outputs: exit code 2",
    ]


def test_out_of_memory_and_crashes_are_explained(make_app, fake, tmp_path: Path) -> None:
    oom_msg = Message(
        "reason.oom", {"tips": Join(("--fp8_base --fp8_scaled", Message("tip.lower_resolution")))}
    )
    fake.options["cache_latents"] = ["--exit", "4", *said(oom_msg)]
    client = make_app().test_client()
    oom = wait_status(client, start(client, "cache_latents", ready_params(tmp_path))["id"], "failed")
    assert oom["stages"][0]["exit_code"] == 4 and "--fp8_base --fp8_scaled" in oom["stages"][0]["reason"]
    assert (
        in_chinese(oom["stages"][0]) == "显存不足；请尝试 --fp8_base --fp8_scaled、数据集配置中更低的分辨率"
    )
    fake.options["cache_latents"] = ["--exit", "1", "--lines", "40"]
    crash = wait_status(client, start(client, "cache_latents", ready_params(tmp_path))["id"], "failed")
    stage = crash["stages"][0]
    assert stage["exit_code"] == 1 and stage["reason"] == "exited with code 1"
    assert in_chinese(stage) == "以退出码 1 结束"
    tail = stage["log_tail"].splitlines()
    assert len(tail) == 20 and tail[-2] == "cache_latents line 40"


OOM_STAGE = r"""
import sys, types
import torch
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main

stage = Stage(sys.argv[1])

def run(config, args, events):  # the stage up to its first allocation that does not fit
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)")

module = types.ModuleType(f"qwen_image_studio.stages.{stage.value}")
module.run = run
sys.modules[module.__name__] = module
sys.exit(main(stage, sys.argv[2:]))
"""


def test_a_stage_out_of_memory_gets_advice_for_that_stage_in_both_languages(tmp_path: Path) -> None:
    script = tmp_path / "oom_stage.py"
    script.write_text(OOM_STAGE, encoding="utf-8")

    def command(stage: Stage, config: StudioConfig, events_file: Path) -> list[str]:
        """The real runner (stages/runner.py) with the stage's own command line, in its own process."""
        return [
            sys.executable,
            str(script),
            stage.value,
            *to_argv(config, stage),
            "--events_file",
            str(events_file),
        ]

    app = create_app(tmp_path / "ws", command=command, stop_timeout=2.0, allow_dirs=(tmp_path,))
    client = app.test_client()
    params = {**ready_params(tmp_path), "fp8_vl": False, "cache_batch_size": 4, "network_dim": 16}
    cases = {
        "cache_text_encoder_outputs": (
            "out of GPU memory; try --fp8_vl, a lower --batch_size (now 4), "
            "--device cpu as a last resort (much slower)",
            "显存不足；请尝试 --fp8_vl、更小的 --batch_size（当前 4）、--device cpu（最后的办法，速度慢很多）",
        ),
        "train_network": (
            "out of GPU memory; try --fp8_base --fp8_scaled, --blocks_to_swap 16, a lower --network_dim (now 16), "
            "a lower resolution in the dataset config",
            "显存不足；请尝试 --fp8_base --fp8_scaled、--blocks_to_swap 16、更小的 --network_dim（当前 16）、"
            "数据集配置中更低的分辨率",
        ),
    }
    try:
        for kind, (en, zh) in cases.items():
            job = wait_status(client, start(client, kind, params)["id"], "failed", "done")
            events = (tmp_path / "ws" / "jobs" / str(job["id"]) / "events.jsonl").read_text(encoding="utf-8")
            [failed] = [e for e in map(json.loads, events.splitlines()) if e["type"] == "failed"]
            assert (failed["reason"], failed["exit_code"], failed["reason_i18n"]["key"]) == (
                en,
                4,
                "reason.oom",
            )
            [stage] = job["stages"]
            assert (stage["status"], stage["exit_code"], stage["reason"]) == ("failed", 4, en)
            assert stage["reason_i18n"] == failed["reason_i18n"]  # taken as the stage sent it
            assert in_chinese(stage) == zh
            assert f"error: {en}" in stage["log_tail"]
    finally:
        studio_of(app).supervisor.wait_idle(20)
        studio_of(app).close()


def test_a_stage_whose_input_vanished_says_so_in_both_languages(make_app, fake, tmp_path: Path) -> None:
    params = ready_params(tmp_path)
    gate = tmp_path / "go"
    fake.options["cache_latents"] = ["--wait-for", str(gate)]
    client = make_app().test_client()
    job = start(client, "pipeline", params)
    wait_for(
        lambda: job_of(client, job["id"])["stages"][0]["status"] == "running", what="cache_latents to run"
    )
    Path(params["text_encoder"]).unlink()  # gone before the next stage starts
    gate.touch()
    failed = wait_status(client, job["id"], "failed", "done")["stages"][1]
    assert failed["status"] == "failed" and failed["field"] == "text_encoder"
    assert failed["reason"] == f"--text_encoder: not found: {params['text_encoder']}"
    assert failed["reason_i18n"]["key"] == "v.not_found"
    assert in_chinese(failed) == f"--text_encoder：找不到 {params['text_encoder']}"


def test_one_job_at_a_time_the_others_queued(make_app, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--sleep", "1.5"]
    client = make_app().test_client()
    params = ready_params(tmp_path)
    first = start(client, "cache_latents", params)
    second = start(client, "cache_latents", params)
    wait_status(client, first["id"], "running")
    assert job_of(client, second["id"])["status"] == "queued"
    a = wait_status(client, first["id"], "done", timeout=30)
    b = wait_status(client, second["id"], "done", timeout=30)
    assert b["started_at"] >= a["finished_at"] - 0.01
    listed = [j["id"] for j in client.get("/api/jobs").get_json()["jobs"]]
    assert listed[:2] == [second["id"], first["id"]]


def _living(pids: list[int]) -> list[int]:
    return [p for p in pids if (s := procs.stat_of(p)) is not None and s.alive]


def test_stop_ends_the_whole_process_tree(make_app, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--child", "--ignore-term", "--sleep", "60"]
    client = make_app(stop_timeout=1.0).test_client()
    job = start(client, "pipeline", ready_params(tmp_path))
    running = wait_for(lambda: (j := job_of(client, job["id"]))["stages"][0]["pid"] and j, what="a pid")
    leader = running["stages"][0]["pid"]
    log = tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt"
    child = int(
        wait_for(
            lambda: [ln for ln in log.read_text().splitlines() if ln.startswith("child ")], what="the child"
        )[0].split()[1]
    )
    assert sorted(procs.tree_of(leader)) == sorted({leader, child})
    began = time.monotonic()
    res = client.post(f"/api/jobs/{job['id']}/stop", json={}, headers=ORIGIN)
    assert res.status_code == 200
    stopped = wait_status(client, job["id"], "stopped", timeout=20)
    assert time.monotonic() - began < 10  # SIGTERM ignored by both: SIGKILL after the 1 s timeout
    assert [s["status"] for s in stopped["stages"]] == ["stopped", "skipped", "skipped"]
    assert procs.tree_of(leader) == [] and _living([leader, child]) == []
    assert log.read_text().splitlines()[-1].startswith("⏰ [cache_latents: exit code -9, stopped, ")


def test_stopping_a_queued_job_means_it_never_starts(make_app, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--sleep", "1"]
    client = make_app().test_client()
    params = ready_params(tmp_path)
    first = start(client, "cache_latents", params)
    second = start(client, "train_network", params)
    stopped = client.post(f"/api/jobs/{second['id']}/stop", json={}, headers=ORIGIN).get_json()["job"]
    assert stopped["status"] == "stopped" and stopped["stages"][0]["status"] == "skipped"
    wait_status(client, first["id"], "done")
    time.sleep(0.5)
    job = job_of(client, second["id"])
    assert job["status"] == "stopped" and job["started_at"] is None and job["stages"][0]["pid"] is None
    assert not (tmp_path / "ws" / "jobs" / str(second["id"]) / "events.jsonl").exists()


def test_a_restarted_server_reattaches_to_a_running_job(make_app, fake, tmp_path: Path) -> None:
    fake.options["cache_latents"] = ["--lines", "30", "--tick", "0.1"]
    first = make_app()
    client = first.test_client()
    job = start(client, "pipeline", ready_params(tmp_path))
    running = wait_for(lambda: (j := job_of(client, job["id"]))["stages"][0]["pid"] and j, what="a pid")
    pid = running["stages"][0]["pid"]
    studio_of(first).close()  # the server goes away; the stage goes on
    time.sleep(0.5)
    assert procs.is_running(pid, None)
    second = make_app()
    client = second.test_client()
    done = wait_status(client, job["id"], "done", "failed", "lost", timeout=60)
    assert done["status"] == "done", done
    assert [s["status"] for s in done["stages"]] == ["done", "done", "done"]
    assert done["stages"][0]["pid"] == pid and done["stages"][0]["exit_code"] == 0
    log = (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text().splitlines()
    assert [ln for ln in log if ln.startswith("cache_latents line")] == [
        f"cache_latents line {i}" for i in range(1, 31)
    ]


def test_two_servers_on_one_workspace_never_run_a_job_twice(make_app, fake, tmp_path: Path) -> None:
    first, second = make_app(), make_app()  # e.g. the UI started twice on different ports
    client = second.test_client()
    job = wait_status(client, start(client, "pipeline", ready_params(tmp_path))["id"], "done", "failed")
    assert job["status"] == "done"
    log = (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text()
    assert log.count("$ ") == 3 and log.count("cache_latents line 1\n") == 1
    studio_of(first).close()  # the other one takes over the queue
    again = wait_status(
        client, start(client, "cache_latents", ready_params(tmp_path))["id"], "done", timeout=30
    )
    assert again["status"] == "done"


def test_a_silent_stage_gets_one_warning_per_silence(make_app, fake, tmp_path: Path) -> None:
    """A running stage with no output and no event for `stall_after` s gets one ⏰ line in the log and the
    live feed; it is not stopped, and output starts a new silence (warned about again if it lasts)."""
    # line 1, 2.6 s quiet, line 2, 2.6 s quiet, exit
    fake.options["cache_latents"] = ["--lines", "2", "--tick", "2.6"]
    app = make_app(stall_after=1.0)
    state = studio_of(app)
    client = app.test_client()
    job = start(client, "cache_latents", ready_params(tmp_path))
    page = state.hub.connect()
    state.hub.watch(page, job["id"])
    done = wait_status(client, job["id"], "done", "failed", "stopped")
    assert done["status"] == "done" and done["stages"][0]["exit_code"] == 0  # warned, never stopped
    log = (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text().splitlines()
    told = [ln for ln in log if ln.startswith("⏰")]
    assert len(told) == 2, log
    for line in told:
        assert line.startswith("⏰ [cache_latents: no output and no progress for ")
        assert line.endswith(" s; it is still running and was not stopped]")
        seconds = float(line.split(" for ")[1].split(" s;")[0])
        assert 1.0 <= seconds < 2.6
    body = [ln for ln in log if not ln.startswith("$ ")]
    assert body[:4] == ["cache_latents line 1", told[0], "cache_latents line 2", told[1]]
    assert body[4].startswith("✅ [cache_latents: exit code 0, done, ") and len(body) == 5
    state.hub.flush(job["id"])
    streamed = [
        text
        for m in page.drain(1.0) + page.drain(0.2)
        if m["type"] == "log" and m["job"] == job["id"]
        for _, text in m["lines"]
    ]
    assert [ln for ln in streamed if ln.startswith("⏰")] == told


def test_the_warning_ends_an_unfinished_progress_line(tmp_path: Path) -> None:
    """The supervisor's lines never run into a stage's unfinished line (a progress bar without newline)."""
    log, events = tmp_path / "log.txt", tmp_path / "events.jsonl"
    log.write_bytes(b"step 1\nprogress 10%\rprogress 40%")
    now = [100.0]
    watch = StallWatch(log, events, 5.0, lambda: now[0])
    now[0] += 4.9
    assert watch.check() is None
    now[0] += 0.2
    assert watch.check() == pytest.approx(5.1)
    Supervisor._note(log, "⏰ warned", own_line=True)
    watch.ours()
    now[0] += 60
    assert watch.check() is None  # once per silence, and our own line is not the stage speaking
    assert log.read_bytes().decode("utf-8") == "step 1\nprogress 10%\rprogress 40%\n⏰ warned\n"
    events.write_text("{}\n")
    assert watch.check() is None  # an event: a new silence begins
    now[0] += 5
    assert watch.check() == pytest.approx(5.0)


def test_a_job_whose_process_vanished_is_marked_lost(make_app, tmp_path: Path) -> None:
    app = make_app()
    state = studio_of(app)
    job = state.jobs.create(
        "cache_latents", None, ready_params(tmp_path), ["cache_latents"], lambda i: [["x"]]
    )
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state.close()
    state.jobs.set_job(job.id, status="running", started_at=time.time())
    state.jobs.set_stage(job.id, 0, status="running", pid=gone.pid, pid_start="1", started_at=time.time())
    client = make_app().test_client()
    lost = wait_status(client, job.id, "lost")
    assert lost["stages"][0]["status"] == "lost" and lost["stages"][0]["exit_code"] is None
    assert "left no result" in lost["stages"][0]["reason"]
    log = (tmp_path / "ws" / "jobs" / str(job.id) / "log.txt").read_text()
    assert log.splitlines()[-1].startswith("⏰ [cache_latents: lost, ")
    assert in_chinese(lost["stages"][0]) == "进程在 Web UI 未运行期间结束，且没有留下结果"


def test_start_is_refused_with_the_fields_to_fix(make_app, tmp_path: Path) -> None:
    client = make_app().test_client()
    res = client.post("/api/jobs", json={"kind": "pipeline", "params": {"network_dim": 0}}, headers=ORIGIN)
    assert res.status_code == 400 and res.get_json()["code"] == "invalid"
    assert res.get_json()["problems"][0]["field"] == "network_dim"
    params = {**ready_params(tmp_path), "vae": "models/missing_vae.safetensors"}
    del params["dit"]
    res = client.post("/api/jobs", json={"kind": "pipeline", "params": params}, headers=ORIGIN)
    body = res.get_json()
    assert res.status_code == 400 and body["code"] == "not_ready"
    problems = {p["field"]: p["message"] for p in body["problems"]}
    assert problems["vae"] == f"--vae: not found: {tmp_path / 'ws' / 'models' / 'missing_vae.safetensors'}"
    assert problems["dit"] == "--dit is required"
    res = client.post("/api/jobs", json={"kind": "no_such_kind", "params": {}}, headers=ORIGIN)
    assert res.status_code == 400 and "kind" in res.get_json()["error"]
    assert client.get("/api/jobs").get_json()["jobs"] == []


def test_files_are_served_only_from_the_jobs_output_folder(make_app, fake, tmp_path: Path) -> None:
    out = tmp_path / "ws" / "output" / "job-1"  # the job's run folder inside its output_dir
    outside = tmp_path / "elsewhere" / "secret.safetensors"
    fake.options["train_network"] = [
        "--artifact",
        "checkpoint",
        str(out / "fake-000001.safetensors"),
        "--artifact",
        "checkpoint",
        str(out / "fake.safetensors"),
        "--artifact",
        "sample",
        str(out / "sample" / "fake_000001_00.png"),
        "--artifact",
        "checkpoint",
        str(outside),
        "--artifact",
        "state",
        str(out / "fake-state"),
    ]
    client = make_app().test_client()
    job = wait_status(client, start(client, "train_network", ready_params(tmp_path))["id"], "done")
    files = {(f["kind"], f["name"]) for f in job["files"]}
    assert files == {
        ("checkpoint", "fake-000001.safetensors"),
        ("checkpoint", "fake.safetensors"),
        ("sample", "sample/fake_000001_00.png"),
    }
    res = client.get(f"/api/jobs/{job['id']}/files/fake.safetensors")
    assert res.status_code == 200 and res.data == b"lora"
    assert "attachment" in res.headers["Content-Disposition"]
    image = client.get(f"/api/jobs/{job['id']}/samples/sample/fake_000001_00.png")
    assert image.status_code == 200 and image.mimetype == "image/png"
    for bad in (
        "../elsewhere/secret.safetensors",
        "..%2F..%2Felsewhere%2Fsecret.safetensors",
        str(outside).lstrip("/"),
        "fake-state",
        "sample/fake_000001_00.png",
    ):
        assert client.get(f"/api/jobs/{job['id']}/files/{bad}").status_code == 404, bad
    assert client.get(f"/api/jobs/{job['id']}/samples/fake.safetensors").status_code == 404
    log = client.get(f"/api/jobs/{job['id']}/log")
    assert log.status_code == 200 and b"train_network line 1" in log.data


@pytest.mark.slow
def test_real_caching_stages_run_as_jobs_on_the_demo(demo: Path, tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws", allow_dirs=(demo, tmp_path))
    client = app.test_client()
    try:
        params = json.loads((demo / "configs" / "demo-t2i.json").read_text())["params"]
        cache = tmp_path / "cache"
        toml = tmp_path / "dataset.toml"
        toml.write_text(
            (demo / "dataset" / "dataset_t2i.toml")
            .read_text()
            .replace(str(demo / "dataset" / "cache" / "t2i"), str(cache)),
            encoding="utf-8",
        )
        params["dataset_config"] = str(toml)
        first = start(client, "cache_latents", params)
        second = start(client, "cache_text_encoder_outputs", params)
        for job in (first, second):
            done = wait_status(client, job["id"], "done", "failed", timeout=240)
            assert done["status"] == "done", done["stages"][0]
        events = [
            json.loads(ln)
            for ln in (tmp_path / "ws" / "jobs" / str(first["id"]) / "events.jsonl").read_text().splitlines()
        ]
        assert [e["type"] for e in events][0] == "started" and events[-1]["type"] == "finished"
        assert any(e["type"] == "progress" and e["done"] == e["total"] for e in events)
        assert len(list(cache.glob("*_qi.safetensors"))) == len(list(cache.glob("*_qi_te.safetensors"))) > 0
    finally:
        studio_of(app).close()


def test_no_zombie_or_stray_process_is_left_by_the_tests() -> None:
    mine = [
        s
        for s in (procs.stat_of(int(p)) for p in os.listdir("/proc") if p.isdigit())
        if s is not None and s.ppid == os.getpid() and s.alive
    ]
    assert mine == []
