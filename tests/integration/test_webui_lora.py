"""LoRA details in the web UI: ``GET /api/lora/info`` and the downloads in both key forms.

A stage script (a real subprocess on the real stage command line) stands in for the trainer: it puts the
trained demo LoRA and a random one into the job's run folder and announces them. The diffusers-form
download is loaded with diffusers' ``QwenImagePipeline.load_lora_weights`` and must render what the
original file renders; without the LoRA the image differs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from test_lora_info import trained_lora  # noqa: F401 - the session fixture
from test_webui_jobs import ready_params, start, wait_status
from test_webui_run_folders import trainer_command

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import LANG_HEADER

ZH = {LANG_HEADER: "zh-CN"}
STAGE = r"""
import argparse, json, os, shutil, sys, time

p = argparse.ArgumentParser()
p.add_argument("--events_file")
p.add_argument("--output_dir")
p.add_argument("--output_name")
a, _ = p.parse_known_args(sys.argv[2:])
ev = open(a.events_file, "a", buffering=1)
def emit(type_, **data):
    ev.write(json.dumps({"t": time.time(), "stage": sys.argv[1], "type": type_, **data}) + "\n")
emit("started", argv=sys.argv[1:], pid=os.getpid())
if sys.argv[1] == "train_network":
    os.makedirs(a.output_dir, exist_ok=True)
    for source, name in SOURCES:
        shutil.copyfile(source, os.path.join(a.output_dir, name))
        emit("artifact", kind="checkpoint", path=os.path.join(a.output_dir, name))
emit("finished")
"""


def _random_lora(demo: Path, path: Path) -> Path:
    """A LoRA on the default targets with strong random factors (its effect is plain to see)."""
    from qwen_image_studio.models.loading import load_dit
    from qwen_image_studio.models.lora_apply import linear_paths
    from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name, select_targets

    dit = load_dit(demo / "models" / "comfyui" / "qwen_image_bf16.safetensors", dtype=torch.float32)
    linears = linear_paths(dit)
    g = torch.Generator().manual_seed(3)
    sd = {}
    for module in select_targets(linears):
        name = lora_name(module)
        sd[name + DOWN] = torch.randn(4, linears[module].in_features, generator=g) * 0.3
        sd[name + UP] = torch.randn(linears[module].out_features, 4, generator=g) * 0.3
        sd[name + ALPHA] = torch.tensor(2.0)
    save_file(sd, str(path), metadata={"ss_network_dim": "4"})
    return path


@pytest.fixture
def served(demo: Path, trained_lora: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:  # noqa: F811
    """An app whose train job announced `fake.safetensors` (the trained LoRA) and `fake-000001` (random)."""
    strong = _random_lora(demo, tmp_path / "strong.safetensors")
    script = tmp_path / "stage.py"
    sources = [(str(trained_lora), "fake.safetensors"), (str(strong), "fake-000001.safetensors")]
    script.write_text(f"SOURCES = {sources!r}\n" + STAGE, encoding="utf-8")
    app = create_app(tmp_path / "ws", command=trainer_command(script), stop_timeout=2.0, allow_dirs=(tmp_path,))
    client = app.test_client()
    job = wait_status(client, start(client, "train_network", ready_params(tmp_path))["id"], "done", "failed")
    assert job["status"] == "done", job["stages"]
    try:
        yield {"app": app, "client": client, "job": job["id"], "trained": trained_lora, "strong": strong,
               "tmp": tmp_path}  # fmt: skip
    finally:
        state = studio_of(app)
        state.supervisor.wait_idle(20)
        state.close()


def _header(data: bytes) -> dict[str, Any]:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length])


def test_the_details_of_a_jobs_lora(served: dict[str, Any]) -> None:
    client, job = served["client"], served["job"]
    res = client.get(f"/api/lora/info?job={job}&name=fake.safetensors")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    info = body["info"]
    assert (info["form"], info["modules"], info["rank"], info["alphas"]) == ("kohya", 24, 4, [4.0])
    assert info["targets"]["attention"] == 16 and info["model_version"] == "original"
    assert info["training"]["ss_steps"] == "3" and info["training_config"]["network_dim"] == 4
    assert body["downloads"] == {
        "comfyui": f"/api/jobs/{job}/files/fake.safetensors?form=comfyui",
        "diffusers": f"/api/jobs/{job}/files/fake.safetensors?form=diffusers",
    }
    missing = client.get(f"/api/lora/info?job={job}&name=other.safetensors", headers=ZH)
    assert missing.status_code == 404 and missing.get_json()["error"] == f"任务 #{job} 的输出中没有 LoRA 文件 other.safetensors"


def test_downloads_in_both_forms(served: dict[str, Any]) -> None:
    client, job, trained = served["client"], served["job"], served["trained"]
    url = f"/api/jobs/{job}/files/fake.safetensors"
    assert client.get(url).data == trained.read_bytes()  # as before: the file itself
    comfy = client.get(url + "?form=comfyui")
    assert comfy.status_code == 200 and comfy.data == trained.read_bytes()  # already in that form
    assert 'filename=fake.safetensors' in comfy.headers["Content-Disposition"]
    peft = client.get(url + "?form=diffusers")
    assert peft.status_code == 200, peft.get_json()
    assert "filename=fake_diffusers.safetensors" in peft.headers["Content-Disposition"]
    header = _header(peft.data)
    keys = [k for k in header if k != "__metadata__"]
    assert keys and all(k.startswith("transformer.") and ".lora_" in k for k in keys)
    assert header["__metadata__"]["ss_network_dim"] == "4"  # the training settings travel along
    cache = studio_of(served["app"]).scratch / "lora-forms"
    (cached,) = cache.glob("*.safetensors")
    inode = cached.stat().st_ino  # a conversion writes a new file (atomically): another inode
    assert client.get(url + "?form=diffusers").data == peft.data  # the second download is the cached file
    assert [p.stat().st_ino for p in cache.glob("*.safetensors")] == [inode]
    bad = client.get(url + "?form=peft", headers=ZH)
    assert bad.status_code == 400 and bad.get_json()["error"] == "'form'：必须是 comfyui 或 diffusers（当前为 peft）"


def test_the_downloaded_diffusers_form_loads_in_diffusers(demo: Path, served: dict[str, Any]) -> None:
    from diffusers import QwenImagePipeline

    client, job, tmp = served["client"], served["job"], served["tmp"]
    res = client.get(f"/api/jobs/{job}/files/fake-000001.safetensors?form=diffusers")
    assert res.status_code == 200, res.get_json()
    peft = tmp / "downloaded_diffusers.safetensors"
    peft.write_bytes(res.data)
    pipe = QwenImagePipeline.from_pretrained(demo / "models" / "diffusers" / "Qwen-Image", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def image() -> np.ndarray:
        out = pipe(prompt="a red square", height=32, width=32, num_inference_steps=2, true_cfg_scale=1.0,
                   generator=torch.Generator().manual_seed(0), output_type="np")  # fmt: skip
        return out.images[0].astype(np.float64)

    base = image()
    images = {}
    for name, file in (("original", served["strong"]), ("downloaded", peft)):
        pipe.load_lora_weights(str(file), adapter_name=name)
        images[name] = image()
        pipe.unload_lora_weights()
    assert np.abs(images["downloaded"] - images["original"]).max() * 255 < 0.5
    assert np.abs(images["original"] - base).max() * 255 > 8


def test_a_path_is_read_only_inside_the_workspace_and_the_allowed_folders(served: dict[str, Any]) -> None:
    client, tmp, trained = served["client"], served["tmp"], served["trained"]
    inside = tmp / "mine.safetensors"
    inside.write_bytes(trained.read_bytes())
    ok = client.get("/api/lora/info", query_string={"path": str(inside)})
    assert ok.status_code == 200 and ok.get_json()["info"]["modules"] == 24
    file = client.get(ok.get_json()["downloads"]["diffusers"])
    assert file.status_code == 200 and all(k.startswith("transformer.") for k in _header(file.data) if k != "__metadata__")
    (tmp / "ws" / "loras").mkdir()
    (tmp / "ws" / "loras" / "w.safetensors").write_bytes(trained.read_bytes())
    relative = client.get("/api/lora/info", query_string={"path": "loras/w.safetensors"})
    assert relative.status_code == 200, relative.get_json()  # a relative path is taken from the workspace
    outside = client.get("/api/lora/info", query_string={"path": str(trained)})  # the pytest session folder
    assert outside.status_code == 403 and "outside the workspace and the allowed folders" in outside.get_json()["error"]
    garbage = tmp / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file" * 4)
    bad = client.get("/api/lora/info", query_string={"path": str(garbage)})
    assert bad.status_code == 400
    assert bad.get_json()["error"] == f"cannot read this LoRA file: {garbage}: is not a .safetensors file (no valid header)"
    zh = client.get("/api/lora/info", query_string={"path": str(garbage)}, headers=ZH).get_json()["error"]
    assert zh.startswith("无法读取该 LoRA 文件：")
    assert client.get("/api/lora/info", query_string={"path": str(tmp / "x.txt")}).status_code == 400
    assert client.get("/api/lora/info", query_string={"path": str(tmp / "none.safetensors")}).status_code == 404
    assert client.get("/api/lora/info").status_code == 400
    assert client.get("/api/lora/info?job=abc").status_code == 400
