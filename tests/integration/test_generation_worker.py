"""The generation worker (issue 15 item 2): the models stay loaded between requests, a LoRA change
re-applies only the LoRA, Stop ends the process and the next request starts a fresh one; LoRAs applied
as output hooks equal LoRAs merged into the weights."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate import _models, _tiny_lora

from qwen_image_studio.events import read_events


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> object:
    yield
    logging.getLogger().handlers.clear()


def test_hooked_loras_equal_merged_loras(demo: Path, tmp_path: Path) -> None:
    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.models.lora_apply import merge_loras, read_lora
    from qwen_image_studio.models.lora_hooks import LoraHooks

    lora = read_lora(_tiny_lora(demo, tmp_path / "lora.safetensors"))
    file = demo / "models" / "comfyui" / "qwen_image_bf16.safetensors"
    hooked = load_dit(file, dtype=torch.float32)
    merged = load_dit(file, dtype=torch.float32)
    merge_loras(merged, [lora], [0.7])
    g = torch.Generator().manual_seed(1)
    inputs = {
        "hidden_states": torch.randn(1, 16, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, 7, hooked.config.joint_attention_dim, generator=g),
        "encoder_hidden_states_mask": torch.ones(1, 7, dtype=torch.long),
        "timestep": torch.tensor([0.5]),
        "img_shapes": [[(1, 4, 4)]],
        "return_dict": False,
    }
    with torch.no_grad():
        base = hooked(**inputs)[0]
        hooks = LoraHooks(hooked, torch.device("cpu"), torch.float32)
        assert hooks.set([lora], [0.7]) and hooks.layers == len(lora.pairs)
        assert not hooks.set([lora], [0.7])  # the same set: nothing to do
        ours, theirs = hooked(**inputs)[0], merged(**inputs)[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        assert not torch.equal(ours, base)
        hooks.clear()
        assert torch.equal(hooked(**inputs)[0], base)  # the base weights were never touched


def _flags(demo: Path, tmp_path: Path, lora: Path, multiplier: float, steps: int = 3) -> list[str]:
    return [*_models(demo), "--prompt", "a red square", "--image_size", "48", "48", "--infer_steps",
            str(steps), "--lora_weight", str(lora), "--lora_multiplier", str(multiplier),
            "--save_path", str(tmp_path / "out")]  # fmt: skip


def _pixels(events: Path) -> np.ndarray:
    found, _ = read_events(events)
    (png,) = [e["path"] for e in found if e["type"] == "artifact"]
    return np.asarray(Image.open(png))


def test_the_worker_keeps_the_models_and_reapplies_only_the_lora(demo: Path, tmp_path: Path) -> None:
    from qwen_image_studio.webui.jobs.generation_worker import GenerationWorker

    lora = _tiny_lora(demo, tmp_path / "lora.safetensors")
    worker = GenerationWorker(tmp_path / "ws", idle_timeout=120)
    (tmp_path / "ws").mkdir()
    replies, images = [], []
    try:
        for job, multiplier in enumerate((0.8, 0.8, 0.0), start=1):
            events = tmp_path / f"events{job}.jsonl"
            log_file = tmp_path / f"log{job}.txt"
            run = worker.submit(
                job, [*_flags(demo, tmp_path, lora, multiplier), "--events_file", str(events)], log_file
            )
            assert run.wait(timeout=300) == 0, log_file.read_text(encoding="utf-8")
            replies.append(worker.reply(job, run.proc, 0) or {})
            images.append(_pixels(events))
            text = log_file.read_text(encoding="utf-8")
            assert ("DiT loaded" in text) == (job == 1) and ("DiT reused" in text) == (job > 1), text
        assert worker.started == 1
        assert np.array_equal(images[0], images[1])  # the same request again: the same image
        assert not np.array_equal(images[1], images[2])  # strength 0: the LoRA no longer applies
        assert "LoRAs applied" in (tmp_path / "log3.txt").read_text(encoding="utf-8")
        pid = worker.pid
        assert pid is not None and worker.release()
        assert worker.pid is None
    finally:
        worker.release()
        worker.close()


@pytest.mark.slow
def test_generation_jobs_run_in_the_worker_and_stop_ends_it(demo: Path, tmp_path: Path) -> None:
    """Through the web UI: two generation jobs share one worker (the second log says the DiT was reused);
    Stop on a long one ends the worker (the GPU is free) and the next job starts a fresh one; a job of
    another kind ends the worker before its stage starts."""
    from test_webui_jobs import ORIGIN, start, studio_of, wait_status

    from qwen_image_studio.params.cli import parse_args
    from qwen_image_studio.params.spec import Stage
    from qwen_image_studio.webui.app import create_app

    app = create_app(tmp_path / "ws", allow_dirs=(demo, tmp_path))
    client = app.test_client()
    worker = studio_of(app).supervisor.worker
    lora = _tiny_lora(demo, tmp_path / "lora.safetensors")

    def params(steps: int) -> dict:
        config, _ = parse_args(Stage.GENERATE, _flags(demo, tmp_path, lora, 1.0, steps=steps))
        return config.model_dump(mode="json")

    def log_of(job: dict) -> str:
        return (tmp_path / "ws" / "jobs" / str(job["id"]) / "log.txt").read_text(encoding="utf-8")

    try:
        first, second = start(client, "generate", params(3)), start(client, "generate", params(3))
        for job in (first, second):
            assert wait_status(client, job["id"], "done", "failed", timeout=300)["status"] == "done", log_of(
                job
            )
        assert "DiT loaded" in log_of(first) and "DiT reused" in log_of(second)
        assert worker.started == 1 and worker.pid is not None
        files = client.get(f"/api/jobs/{second['id']}").get_json()["job"]["files"]
        assert [f["kind"] for f in files] == ["image"]

        long = start(client, "generate", params(1000))
        events = tmp_path / "ws" / "jobs" / str(long["id"]) / "events.jsonl"
        deadline = time.monotonic() + 120
        while not any(e["type"] == "progress" for e in read_events(events)[0]) if events.exists() else True:
            assert time.monotonic() < deadline, log_of(long)
            time.sleep(0.1)
        client.post(f"/api/jobs/{long['id']}/stop", json={}, headers=ORIGIN)
        assert wait_status(client, long["id"], "stopped", "done", "failed", timeout=60)["status"] == "stopped"
        assert worker.pid is None  # the worker (and its memory) is gone

        again = start(client, "generate", params(3))
        assert wait_status(client, again["id"], "done", "failed", timeout=300)["status"] == "done"
        assert "DiT loaded" in log_of(again) and worker.started == 2 and worker.pid is not None

        # another kind of job frees the worker's memory before its stage starts
        dataset = str(demo / "dataset" / "dataset_t2i.toml")
        other = {**params(3), "dataset_config": dataset, "overwrite_captions": True, "max_new_tokens": 2}
        preview = start(client, "caption_preview", other)
        assert wait_status(client, preview["id"], "done", "failed", timeout=300)["status"] == "done", log_of(
            preview
        )
        assert worker.pid is None and "generation worker was ended" in log_of(preview)

        # "Free GPU": nothing to free now; after another image, the worker ends
        free = client.post("/api/jobs/generate/release", json={}, headers=ORIGIN)
        assert free.status_code == 200 and free.get_json()["released"] is False
        last = start(client, "generate", params(3))
        assert wait_status(client, last["id"], "done", "failed", timeout=300)["status"] == "done"
        assert worker.pid is not None
        free = client.post("/api/jobs/generate/release", json={}, headers=ORIGIN)
        assert free.status_code == 200 and free.get_json()["released"] is True and worker.pid is None
    finally:
        worker.release()
        studio_of(app).close()


def test_a_compare_grid_of_two_loras_by_two_strengths(demo: Path, tmp_path: Path) -> None:
    """--grid_loras x --grid_strengths: four cells at one seed and one labelled grid made of them; at
    strength 0 every column is the base model's image, at 1 the two LoRAs differ; the file with the lowest
    validation loss in its header (as training writes it) has its column framed and named in the PNG."""
    from qwen_image_studio.models.lora_info import VALIDATION_LOSS_KEY
    from qwen_image_studio.params.spec import Stage
    from qwen_image_studio.stages.generate_grid import BEST, FRAME, LABEL_H, LABEL_W
    from qwen_image_studio.stages.runner import main as run_stage

    first = _tiny_lora(demo, tmp_path / "epoch1.safetensors")
    second = tmp_path / "epoch2.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(first))
    save_file(tensors, str(first), metadata={VALIDATION_LOSS_KEY: "0.5"})
    save_file(
        {k: (v * 2 if k.endswith("lora_up.weight") else v) for k, v in tensors.items()},
        str(second),
        metadata={VALIDATION_LOSS_KEY: "0.25"},
    )
    events = tmp_path / "events.jsonl"
    argv = [*_models(demo), "--prompt", "a red square", "--image_size", "48", "48", "--infer_steps", "3",
            "--grid_loras", str(first), str(second), "--grid_strengths", "0", "1",
            "--save_path", str(tmp_path / "out"), "--events_file", str(events)]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    found, _ = read_events(events)
    cells = [Path(e["path"]) for e in found if e["type"] == "artifact" and e["kind"] == "image"]
    (grid_path,) = [Path(e["path"]) for e in found if e["type"] == "artifact" and e["kind"] == "grid"]
    assert len(cells) == 4
    grid = np.asarray(Image.open(grid_path).convert("RGB"))
    assert grid.shape == (LABEL_H + 2 * 48, LABEL_W + 2 * 48, 3)
    pixels = {}
    for cell in cells:
        r, c = (int(part[1:]) for part in cell.stem.split("_")[-2:])
        pixels[r, c] = np.asarray(Image.open(cell).convert("RGB"))
        top, left = LABEL_H + r * 48, LABEL_W + c * 48
        inner = slice(FRAME, 48 - FRAME) if c == 1 else slice(0, 48)  # column 1 is framed
        shown = grid[top : top + 48, left : left + 48]
        assert np.array_equal(shown[inner, inner], pixels[r, c][inner, inner])
        if c == 1:
            assert (shown[:, 0] == BEST).all() and (shown[:, -1] == BEST).all()  # its frame
    assert np.array_equal(pixels[0, 0], pixels[0, 1])  # strength 0: no LoRA changes anything
    assert not np.array_equal(pixels[1, 0], pixels[1, 1])
    assert not np.array_equal(pixels[0, 0], pixels[1, 0])
    with Image.open(cells[-1]) as im:  # each cell's PNG records its own LoRA and strength
        assert f'Lora: "{second.stem}:1"' in im.text["parameters"] or f"Lora: {second.stem}:1" in im.text["parameters"]
    info = json.loads(Image.open(grid_path).text["qis_grid"])
    assert info["rows"] == ["strength 0", "strength 1"] and info["columns"] == [str(first), str(second)]
    assert info["validation_losses"] == [0.5, 0.25] and info["lowest_validation"] == 1
    (event,) = [e for e in found if e["type"] == "artifact" and e["kind"] == "grid"]
    assert event["lowest_validation"] == 1


def test_a_merged_dit_is_written_only_where_the_ui_may_write(demo: Path, tmp_path: Path) -> None:
    """--save_merged_model has no input in the form, but a job body may carry it: its folder is checked
    like --save_path (outside the workspace and the allowed folders: refused, naming the field)."""
    from test_webui_jobs import ORIGIN, studio_of

    from qwen_image_studio.params.cli import parse_args
    from qwen_image_studio.params.spec import Stage
    from qwen_image_studio.webui.app import create_app

    app = create_app(tmp_path / "ws", allow_dirs=(demo,))
    client = app.test_client()
    lora = _tiny_lora(demo, tmp_path / "ws" / "lora.safetensors")
    try:
        flags = [
            *_flags(demo, tmp_path / "ws", lora, 1.0),
            "--save_merged_model",
            str(tmp_path / "away" / "m.safetensors"),
        ]
        config, _ = parse_args(Stage.GENERATE, flags)
        res = client.post(
            "/api/jobs", json={"kind": "generate", "params": config.model_dump(mode="json")}, headers=ORIGIN
        )
        assert res.status_code == 400, res.get_json()
        fields = [p["field"] for p in res.get_json()["problems"]]
        assert fields == ["save_merged_model"] and "--allow_dir" in res.get_json()["problems"][0]["message"]
        assert client.get("/api/jobs").get_json()["jobs"] == []
    finally:
        studio_of(app).close()


def test_a_request_the_idle_worker_never_read_goes_to_a_fresh_one(demo: Path, tmp_path: Path) -> None:
    """The worker went idle (exit 75) just as a request arrived: the request runs in a fresh worker and
    the job ends by its real result; a worker that exits 0 without replying fails the job, never 'done'."""
    import subprocess
    import sys

    from qwen_image_studio.params.spec import WORKER_IDLE_EXIT
    from qwen_image_studio.webui.jobs.generation_worker import GenerationWorker, WorkerRun

    lora = _tiny_lora(demo, tmp_path / "lora.safetensors")
    (tmp_path / "ws").mkdir()
    worker = GenerationWorker(tmp_path / "ws", idle_timeout=120)
    events, log_file = tmp_path / "events.jsonl", tmp_path / "log.txt"
    argv = [*_flags(demo, tmp_path, lora, 0.8), "--events_file", str(events)]
    request = (json.dumps({"job": 7, "argv": argv, "log": str(log_file)}) + "\n").encode("utf-8")

    def gone(code: int) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({code})"], stdin=subprocess.PIPE)
        proc.wait(timeout=60)
        return proc

    try:
        run = WorkerRun(worker, gone(WORKER_IDLE_EXIT), 7, request)
        assert run.wait(timeout=300) == 0, log_file.read_text(encoding="utf-8")
        assert worker.started == 1 and run.resent and _pixels(events).size > 0
        assert WorkerRun(worker, gone(0), 8, request).wait(timeout=60) == 1
    finally:
        worker.release()
        worker.close()


def test_a_lora_file_replaced_at_the_same_path_is_applied_again(demo: Path, tmp_path: Path) -> None:
    import os

    from safetensors.torch import load_file, save_file

    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.models.lora_apply import read_lora
    from qwen_image_studio.models.lora_hooks import LoraHooks

    path = _tiny_lora(demo, tmp_path / "lora.safetensors")
    dit = load_dit(demo / "models" / "comfyui" / "qwen_image_bf16.safetensors", dtype=torch.float32)
    hooks = LoraHooks(dit, torch.device("cpu"), torch.float32)
    assert hooks.set([read_lora(path)], [1.0]) and not hooks.set([read_lora(path)], [1.0])
    save_file({k: v * 2 for k, v in load_file(str(path)).items()}, str(path))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a later modification time
    assert hooks.set([read_lora(path)], [1.0])  # the new weights are hooked, not the old ones
    hooks.clear()
