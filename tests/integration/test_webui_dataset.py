"""The dataset panel's API (inspect, create from a folder) and the helpers beside the form (VRAM, presets)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from qwen_image_studio.memory.presets import PRESETS
from qwen_image_studio.webui.app import create_app, studio_of

ORIGIN = {"Origin": "http://localhost"}


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    app = create_app(tmp_path / "ws")
    yield app.test_client()
    studio_of(app).close()


def post(client: FlaskClient, url: str, body: object):
    return client.post(url, json=body, headers=ORIGIN)


def image_folder(root: Path, n: int = 3, captions: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (64, 48), (i * 40, 10, 10)).save(root / f"img_{i}.png")
        if captions and i:
            (root / f"img_{i}.txt").write_text(f"caption {i} <b>bold</b>", encoding="utf-8")
    return root


def test_inspect_reports_images_captions_buckets_and_problems(client: FlaskClient, tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "ws" / "pics")
    (tmp_path / "ws" / "ds.toml").write_text(
        '[general]\nresolution = [64, 64]\n[[datasets]]\nimage_directory = "pics"\n', encoding="utf-8"
    )
    res = post(client, "/api/dataset/inspect", {"path": "ds.toml"})  # relative to the workspace
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    report = body["report"]
    assert body["path"] == str(tmp_path / "ws" / "ds.toml")
    ds = report["datasets"][0]
    assert (report["images"], ds["captions_found"], len(ds["captions_missing"])) == (3, 2, 1)
    assert ds["buckets"] and ds["latent_cache"]["present"] == 0
    assert str(folder / "img_0.png") in ds["captions_missing"][0] or "img_0" in ds["captions_missing"][0]
    assert report["problems"]


def test_inspect_errors_name_the_file_and_problem(client: FlaskClient, tmp_path: Path) -> None:
    res = post(client, "/api/dataset/inspect", {"path": "missing.toml"})
    assert res.status_code == 400 and res.get_json()["code"] == "dataset_invalid"
    assert str(tmp_path / "ws" / "missing.toml") in res.get_json()["error"]
    (tmp_path / "ws" / "bad.toml").write_text('[[datasets]]\nimage_directory = "nope"\nfoo = 1\n')
    problems = post(client, "/api/dataset/inspect", {"path": "bad.toml"}).get_json()["problems"]
    assert any("unknown key 'foo'" in p for p in problems)


def test_create_from_a_folder_writes_inside_the_workspace_and_never_overwrites(
    client: FlaskClient, tmp_path: Path
) -> None:
    folder = image_folder(tmp_path / "outside" / "pics")
    controls = image_folder(tmp_path / "outside" / "ctrl", captions=False)
    body = {
        "name": "mine",
        "image_directory": str(folder),
        "control_directory": str(controls),
        "resolution": [512, 512],
        "num_repeats": 3,
    }
    res = post(client, "/api/dataset/create", body)
    assert res.status_code == 200, res.get_json()
    path = Path(res.get_json()["path"])
    assert path == tmp_path / "ws" / "datasets" / "mine.toml"
    text = path.read_text()
    assert "num_repeats = 3" in text and "resolution = [512, 512]" in text and str(controls) in text
    report = res.get_json()["report"]
    assert (
        report["edit"] is True and report["datasets"][0]["controls"]["matched"] == 2
    )  # img_0 has no caption
    assert report["datasets"][0]["cache_directory"] == str(tmp_path / "ws" / "datasets" / "mine_cache")
    again = post(client, "/api/dataset/create", {**body, "num_repeats": 1})
    assert again.status_code == 409 and again.get_json()["code"] == "exists"
    assert path.read_text() == text  # the existing file is untouched
    for bad in ("../escape", "a/b", ""):
        assert post(client, "/api/dataset/create", {**body, "name": bad}).status_code == 400
    assert not (tmp_path / "escape.toml").exists()
    wrong = post(client, "/api/dataset/create", {**body, "name": "x", "image_directory": "no/such/folder"})
    assert wrong.status_code == 400 and "does not exist" in wrong.get_json()["error"]
    odd = post(client, "/api/dataset/create", {**body, "name": "y", "resolution": [500, 500]})
    assert odd.status_code == 400 and "16" in odd.get_json()["error"]


def test_vram_estimate_follows_the_form_and_the_dataset(client: FlaskClient, tmp_path: Path) -> None:
    from qwen_image_studio.memory.vram_estimate import VramOptions, estimate_vram
    from qwen_image_studio.params.schema import StudioConfig

    base = post(client, "/api/vram", {"params": {}}).get_json()
    defaults = VramOptions.from_config(StudioConfig())
    assert base["estimate"] == estimate_vram(defaults).as_json() and base["source"] == "default"
    fp8 = post(client, "/api/vram", {"params": {"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 16}})
    fp8_gb = fp8.get_json()["estimate"]["total_gb"]
    assert 18 < fp8_gb < base["estimate"]["total_gb"] - 20
    # the options the estimator was measured with move the form's estimate too
    offload = {"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 16, "gradient_checkpointing_cpu_offload": True}
    assert post(client, "/api/vram", {"params": offload}).get_json()["estimate"]["total_gb"] < fp8_gb
    upcast = {"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 16, "fp8_matmul": "upcast"}
    assert post(client, "/api/vram", {"params": upcast}).get_json()["estimate"]["total_gb"] > fp8_gb
    shutil.copytree(image_folder(tmp_path / "p"), tmp_path / "ws" / "p")
    (tmp_path / "ws" / "big.toml").write_text(
        '[general]\nresolution = [1328, 1328]\nbatch_size = 2\n[[datasets]]\nimage_directory = "p"\n'
    )
    big = post(
        client, "/api/vram", {"params": {"dataset_config": "big.toml", "network_dim": "oops"}}
    ).get_json()
    assert (big["width"], big["height"], big["batch_size"], big["source"]) == (1328, 1328, 2, "dataset")
    assert big["estimate"]["total_gb"] > base["estimate"]["total_gb"]


def test_presets_are_served_once_from_the_memory_package(client: FlaskClient) -> None:
    served = client.get("/api/presets").get_json()["presets"]
    assert [p["gpu_gb"] for p in served] == [p.gpu_gb for p in PRESETS]
    assert [p["values"] for p in served] == [p.values for p in PRESETS]
    assert all(p["estimate_gb"] <= p["gpu_gb"] for p in served)
    for preset in served:
        assert post(client, "/api/validate", {"params": preset["values"]}).get_json()["ok"] is True
