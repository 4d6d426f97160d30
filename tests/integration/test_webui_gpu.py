"""The GPU panel and the memory estimate through the real API, on this machine (no NVIDIA GPU): the header's
"cpu only" state, the estimate for the demo's tiny models, and a job's peak GPU memory from its events.

The job's stage is a small real subprocess that ends the way a stage on a GPU ends (its `finished` event
carries `peak_gpu_memory_bytes`, as stages/runner.py writes it after CUDA was used); this machine cannot run
a CUDA stage.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.webui import gpu
from qwen_image_studio.webui.app import create_app, studio_of

ORIGIN = {"Origin": "http://localhost"}
PEAK = 23_400_000_000
STAGE = r"""
import json, sys, time
events, stage, peak = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(events, "a") as fh:
    for type_, extra in (("started", {}), ("finished", {"peak_gpu_memory_bytes": peak} if peak else {})):
        fh.write(json.dumps({"t": time.time(), "stage": stage, "type": type_, **extra}) + "\n")
"""


@pytest.fixture
def app(tmp_path: Path, demo: Path) -> Iterator[Flask]:
    script = tmp_path / "stage.py"
    script.write_text(STAGE, encoding="utf-8")

    def command(stage: Stage, config: StudioConfig, events_file: Path) -> list[str]:
        peak = PEAK if stage is Stage.TRAIN else 0  # the caching stages ran on the CPU
        return [sys.executable, str(script), str(events_file), stage.value, str(peak)]

    made = create_app(tmp_path / "ws", command=command, stop_timeout=2.0, allow_dirs=(tmp_path, demo))
    yield made  # the demo's cache folders are allowed; the fake stages write nothing there
    state = studio_of(made)
    state.supervisor.wait_idle(20)
    state.close()


def demo_params(demo: Path, name: str) -> dict[str, Any]:
    return json.loads((demo / "configs" / f"{name}.json").read_text())["params"]


def test_the_header_says_cpu_only_without_a_gpu(app: Flask) -> None:
    if gpu.nvml()[0] is not None:
        pytest.skip("this machine has an NVIDIA driver")
    answer = app.test_client().get("/api/gpu").get_json()
    assert answer["state"] == "cpu_only" and answer["gpus"] == [] and answer["reason"]


def test_the_estimate_for_the_demo_on_this_machine(app: Flask, demo: Path) -> None:
    if gpu.nvml()[0] is not None:
        pytest.skip("this machine has an NVIDIA driver")
    res = app.test_client().post("/api/vram", json={"params": demo_params(demo, "demo-t2i")}, headers=ORIGIN)
    answer = res.get_json()
    assert res.status_code == 200 and answer["gpu_present"] is False and answer["this_gpu"] is None
    assert answer["dit"]["num_layers"] == 2 and answer["peak_gb"] < 1 and answer["ram_gb"] < 1
    assert answer["fits"] == answer["sizes"] == [8, 12, 16, 24, 32, 48, 80]


def test_a_job_shows_the_peak_gpu_memory_its_stages_recorded(app: Flask, demo: Path, tmp_path: Path) -> None:
    client = app.test_client()
    params = {**demo_params(demo, "demo-t2i"), "output_dir": "output", "logging_dir": "logs"}
    res = client.post("/api/jobs", json={"kind": "pipeline", "params": params}, headers=ORIGIN)
    assert res.status_code == 200, res.get_json()
    job_id = res.get_json()["job"]["id"]
    end = time.monotonic() + 60
    while (job := client.get(f"/api/jobs/{job_id}").get_json()["job"])["status"] not in ("done", "failed"):
        assert time.monotonic() < end, job
        time.sleep(0.05)
    assert job["status"] == "done", job
    assert (job["peak_gpu_memory_bytes"], job["peak_gpu_memory_stage"]) == (PEAK, "train_network")
