"""One job never changes another job's results: each web-UI job's train stage writes into its own run folder
`<output_dir>/job-<id>/`, and its file list and downloads come from there.

A small stage script (a real subprocess that takes the real stage command line, writes the files a
trainer writes and announces them as events) runs the same configuration twice; the last test runs the
real training stage twice through the UI and once on the command line, which keeps the reference names.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import train_support as ts
from flask import Flask
from flask.testing import FlaskClient
from test_webui_jobs import job_of, ready_params, start, wait_status

from qwen_image_studio.params.cli import to_argv
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.jobs.store import Job
from qwen_image_studio.webui.jobs.supervisor import run_folder
from qwen_image_studio.webui.store import DB_NAME, MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]

# Takes a stage's real command line; the train stage writes what the reference trainer writes into
# --output_dir (an epoch checkpoint, a sample, the final LoRA), each file's bytes unique to this run.
TRAINER_STAGE = r"""
import argparse, json, os, sys, time

p = argparse.ArgumentParser()
p.add_argument("--events_file")
p.add_argument("--output_dir")
p.add_argument("--output_name")
a, _ = p.parse_known_args(sys.argv[2:])
stage = sys.argv[1]
ev = open(a.events_file, "a", buffering=1)
def emit(type_, **data):
    ev.write(json.dumps({"t": time.time(), "stage": stage, "type": type_, **data}) + "\n")
emit("started", argv=sys.argv[1:], pid=os.getpid())
if stage == "train_network":
    mark = f"{a.events_file} {time.time_ns()}".encode()
    name = a.output_name
    for kind, rel, data in (
        ("checkpoint", f"{name}-000001.safetensors", b"epoch 1 of " + mark),
        ("sample", f"sample/{name}_000001_00.png", b"\x89PNG\r\n\x1a\n" + mark),
        ("checkpoint", f"{name}.safetensors", b"final of " + mark),
    ):
        path = os.path.join(a.output_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:  # like the trainer: a file of that name is replaced
            fh.write(data)
        emit("artifact", kind=kind, path=path, **({"step": 1, "index": 0} if kind == "sample" else {}))
emit("finished")
"""

NAMES = {"fake-000001.safetensors", "sample/fake_000001_00.png", "fake.safetensors"}


def trainer_command(script: Path) -> Callable[[Stage, StudioConfig, Path], list[str]]:
    """The real stage command line (`to_argv`), run by the stage script instead of the package's CLI."""

    def command(stage: Stage, config: StudioConfig, events_file: Path) -> list[str]:
        return [
            sys.executable,
            str(script),
            stage.value,
            *to_argv(config, stage),
            "--events_file",
            str(events_file),
        ]

    return command


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    script = tmp_path / "trainer_stage.py"
    script.write_text(TRAINER_STAGE, encoding="utf-8")
    apps: list[Flask] = []

    def make(workspace: str = "ws") -> Flask:
        app = create_app(
            tmp_path / workspace, command=trainer_command(script), stop_timeout=2.0, allow_dirs=(tmp_path,)
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        state = studio_of(app)
        state.supervisor.wait_idle(20)
        state.close()


def files_of(job: dict[str, Any]) -> set[str]:
    return {f["name"] for f in job["files"]}


def download(client: FlaskClient, job_id: int, name: str) -> bytes:
    res = client.get(f"/api/jobs/{job_id}/files/{name}")
    assert res.status_code == 200, (job_id, name, res.get_data(as_text=True))
    return res.data


def train_argv(job: dict[str, Any]) -> list[str]:
    return next(s["argv"] for s in job["stages"] if s["stage"] == Stage.TRAIN.value)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_two_runs_of_one_configuration_keep_their_own_files(make_app, tmp_path: Path) -> None:
    client = make_app().test_client()
    params = ready_params(tmp_path)
    out = tmp_path / "ws" / "output"
    first = wait_status(client, start(client, "pipeline", params)["id"], "done", "failed")
    assert first["status"] == "done", first
    served = {name: download(client, first["id"], name) for name in NAMES if name.endswith(".safetensors")}
    sample = client.get(f"/api/jobs/{first['id']}/samples/sample/fake_000001_00.png").data

    second = wait_status(client, start(client, "pipeline", params)["id"], "done", "failed")
    assert second["status"] == "done", second
    for job in (first, second):
        job = job_of(client, job["id"])
        run = out / f"job-{job['id']}"
        # the snapshot keeps what the user chose; the job records the folder its train stage got
        assert job["params"]["output_dir"] == str(out)
        assert job["run_dir"] == job["output_folder"] == str(run)
        assert flag(train_argv(job), "--output_dir") == str(run)
        assert flag(train_argv(job), "--output_name") == "fake"
        assert files_of(job) == NAMES
        assert all((run / name).is_file() for name in NAMES)
        log = (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text(encoding="utf-8")
        assert f"--output_dir {run} " in log  # the shown command line is the one that ran
    # job 1's links still serve what job 1 wrote, not job 2's files of the same names
    for name, data in served.items():
        assert download(client, first["id"], name) == data
        assert download(client, second["id"], name) != data
    assert client.get(f"/api/jobs/{first['id']}/samples/sample/fake_000001_00.png").data == sample
    assert sorted(p.name for p in out.iterdir()) == [f"job-{first['id']}", f"job-{second['id']}"]


def test_a_run_folder_that_holds_files_is_never_reused(make_app, tmp_path: Path) -> None:
    out = tmp_path / "ws" / "output"
    for taken in ("job-1", "job-1-2"):  # left by an earlier database whose ids started at 1 too
        (out / taken).mkdir(parents=True)
        (out / taken / "fake.safetensors").write_bytes(b"somebody else's LoRA")
    (out / "job-1-3").mkdir()  # an empty folder holds nobody's files
    (out / "job-2").write_bytes(b"a file, not a folder")
    client = make_app().test_client()
    params = ready_params(tmp_path)
    first = wait_status(client, start(client, "train_network", params)["id"], "done", "failed")
    second = wait_status(client, start(client, "train_network", params)["id"], "done", "failed")
    assert (first["id"], second["id"]) == (1, 2)
    assert job_of(client, 1)["output_folder"] == str(out / "job-1-3")
    assert job_of(client, 2)["output_folder"] == str(out / "job-2-2")
    for taken in ("job-1", "job-1-2"):
        assert [p.name for p in (out / taken).iterdir()] == ["fake.safetensors"]
        assert (out / taken / "fake.safetensors").read_bytes() == b"somebody else's LoRA"
    assert (out / "job-2").read_bytes() == b"a file, not a folder"
    assert download(client, 1, "fake.safetensors").startswith(b"final of ")
    # the rule itself, on a folder of its own
    assert run_folder(tmp_path / "none", 7) == tmp_path / "none" / "job-7"


def test_a_second_workspace_on_the_same_output_folder_keeps_the_first_ones_files(
    make_app, tmp_path: Path
) -> None:
    params = {**ready_params(tmp_path), "output_dir": str(tmp_path / "shared")}
    first_app, second_app = make_app("ws"), make_app("ws2")  # a fresh database: its ids start at 1 again
    a, b = first_app.test_client(), second_app.test_client()
    one = wait_status(a, start(a, "train_network", params)["id"], "done")
    kept = download(a, one["id"], "fake.safetensors")
    other = wait_status(b, start(b, "train_network", params)["id"], "done")
    assert one["id"] == other["id"] == 1
    assert job_of(a, 1)["output_folder"] == str(tmp_path / "shared" / "job-1")
    assert job_of(b, 1)["output_folder"] == str(tmp_path / "shared" / "job-1-2")
    assert download(a, 1, "fake.safetensors") == kept != download(b, 1, "fake.safetensors")


def test_the_run_folder_survives_a_rebuilt_database(make_app, tmp_path: Path) -> None:
    app = make_app()
    client = app.test_client()
    job = wait_status(client, start(client, "train_network", ready_params(tmp_path))["id"], "done")
    kept = download(client, job["id"], "fake.safetensors")
    state = studio_of(app)
    state.supervisor.wait_idle(20)
    state.close()
    (tmp_path / "ws" / DB_NAME).write_bytes(b"not a database any more" * 100)
    rebuilt = make_app().test_client()  # rebuilt from the job folders' job.json
    again = job_of(rebuilt, job["id"])
    assert again["output_folder"] == str(tmp_path / "ws" / "output" / f"job-{job['id']}")
    assert files_of(again) == NAMES
    assert download(rebuilt, job["id"], "fake.safetensors") == kept


def test_jobs_from_before_run_folders_keep_their_files(make_app, tmp_path: Path) -> None:
    workspace, out = tmp_path / "ws", tmp_path / "ws" / "output"
    workspace.mkdir()
    # a database of the previous version with a finished job whose files lie in its output_dir
    version = MIGRATIONS.index(next(m for m in MIGRATIONS if "run_dir" in m))
    with sqlite3.connect(workspace / DB_NAME) as db:
        for number, script in enumerate(MIGRATIONS[:version], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        params = {**ready_params(tmp_path), "output_dir": str(out), "output_name": "old"}
        db.execute(
            "INSERT INTO jobs (id, kind, status, params, created_at, started_at, finished_at) "
            "VALUES (1, 'train_network', 'done', ?, 1.0, 1.0, 2.0)",
            (json.dumps(params),),
        )
        argv = ["python", "-m", "qwen_image_studio.cli", "train", "--output_dir", str(out)]
        db.execute(
            "INSERT INTO job_stages (job_id, idx, stage, argv, status, exit_code) "
            "VALUES (1, 0, 'train_network', ?, 'done', 0)",
            (json.dumps(argv),),
        )
    db.close()
    out.mkdir()
    (out / "old.safetensors").write_bytes(b"an old job's LoRA")
    folder = workspace / "jobs" / "1"
    folder.mkdir(parents=True)
    event = {"t": 1.5, "stage": "train_network", "type": "artifact", "kind": "checkpoint"}
    (folder / "events.jsonl").write_text(json.dumps({**event, "path": str(out / "old.safetensors")}) + "\n")
    client = make_app().test_client()
    job = job_of(client, 1)
    assert job["run_dir"] is None and job["output_folder"] == str(out)
    assert files_of(job) == {"old.safetensors"}
    assert download(client, 1, "old.safetensors") == b"an old job's LoRA"
    # and a job snapshot written before run folders (no run_dir) still reads
    record = Job(1, "train_network", "done", None, params, 1.0, 1.0, 2.0, False).record()
    del record["run_dir"]
    assert Job.from_record(record).run_dir is None


@pytest.mark.slow
def test_real_training_twice_in_the_ui_and_once_on_the_command_line(demo: Path, tmp_path: Path) -> None:
    toml = ts.dataset_toml(demo, tmp_path / "data", edit=False)
    ts.cache(demo, toml)
    params = json.loads((demo / "configs" / "demo-t2i.json").read_text())["params"]
    out = tmp_path / "output"
    params.update(
        dataset_config=str(toml),
        output_dir=str(out),
        logging_dir=str(tmp_path / "logs"),
        log_with="none",
        max_train_epochs=1,
        max_train_steps=2,
        sample_every_n_epochs=None,
        sample_prompts=None,
        validation_dataset_config=None,  # the demo's validation data is not cached here
        validate_every_n_epochs=None,
    )
    app = create_app(tmp_path / "ws", allow_dirs=(demo, tmp_path))
    client = app.test_client()
    try:
        first = wait_status(
            client, start(client, "train_network", params)["id"], "done", "failed", timeout=240
        )
        assert first["status"] == "done", first["stages"]
        lora = out / f"job-{first['id']}" / "demo_t2i.safetensors"
        assert files_of(first) == {"demo_t2i.safetensors"} and lora.is_file()
        served, stat = download(client, first["id"], "demo_t2i.safetensors"), lora.stat()
        second = wait_status(
            client, start(client, "train_network", params)["id"], "done", "failed", timeout=240
        )
        assert second["status"] == "done", second["stages"]
        assert (out / f"job-{second['id']}" / "demo_t2i.safetensors").is_file()
        assert download(client, first["id"], "demo_t2i.safetensors") == served
        assert (lora.stat().st_ino, lora.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)  # untouched
        assert not (out / "demo_t2i.safetensors").exists()
    finally:
        state = studio_of(app)
        state.supervisor.wait_idle(20)
        state.close()
    # the command-line stage writes where --output_dir says, with the reference trainer's names
    cli_out = tmp_path / "cli"
    argv = to_argv(StudioConfig(**{**params, "output_dir": str(cli_out)}), Stage.TRAIN)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "qwen_image_studio.cli", "train", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in cli_out.iterdir()) == ["demo_t2i.safetensors"]
