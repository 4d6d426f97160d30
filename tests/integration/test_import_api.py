"""POST /api/datasets/import on a real app: uploads (loose files and zips) become a new dataset of the workspace
whose TOML the gallery shows; refusals are 4xx answers in the page's language and leave nothing behind."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.dataset_import import ImportLimits
from qwen_image_studio.webui import api_import
from qwen_image_studio.webui.app import create_app, studio_of

UPLOAD = {"Origin": "http://localhost", "X-Studio-Upload": "1"}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app(tmp_path / "ws")
    yield app
    studio_of(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def image(color: str = "red", size: tuple[int, int] = (40, 24), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def send(client: FlaskClient, files: list[tuple[str, bytes]], lang: str = "en", **fields: str):
    data: dict[str, object] = dict(fields)
    data["files"] = [(io.BytesIO(body), name) for name, body in files]
    headers = {**UPLOAD, "X-Studio-Lang": lang}
    return client.post("/api/datasets/import", data=data, content_type="multipart/form-data", headers=headers)


def workspace(app: Flask) -> Path:
    return studio_of(app).workspace


def test_images_and_a_caption_become_a_dataset_the_gallery_shows(app: Flask, client: FlaskClient) -> None:
    files = [("cat.png", image("red")), ("dog.png", image("blue")), ("cat.txt", b"a red cat")]
    files.append(("notes.pdf", b"%PDF"))
    res = send(client, files, name="pets", resolution="512x512")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    folder = workspace(app) / "datasets" / "pets"
    toml = folder / "dataset.toml"
    assert body["toml"] == str(toml) and body["folder"] == str(folder)
    assert (body["images"], body["controls"], body["captions"], body["edit"]) == (2, 0, 1, False)
    assert body["message"] == f"2 image(s) imported into {folder}; dataset TOML written: {toml}"
    assert body["message_i18n"]["key"] == "import.done"
    (skip,) = body["skipped"]
    assert skip["file"] == "notes.pdf" and skip["reason"].startswith("not an image or a caption")
    assert load_dataset_config(toml).datasets[0].resolution == (512, 512)
    listing = client.get("/api/gallery/items", query_string={"path": str(toml)}).get_json()
    assert [(i["name"], i["caption"]) for i in listing["items"]] == [
        ("cat.png", "a red cat"),
        ("dog.png", None),
    ]
    assert listing["datasets"][0]["writable"] is True  # inside the workspace: captions can be edited
    assert list((workspace(app) / ".tmp" / "uploads").iterdir()) == []  # the upload's files are gone


def test_a_zip_with_a_control_folder_makes_an_edit_dataset(app: Flask, client: FlaskClient) -> None:
    members = {
        "pairs/images/shoe.png": image("red"),
        "pairs/images/shoe.txt": b"make the shoe red",
        "pairs/control/shoe_0.png": image("white"),
        "pairs/control/shoe_1.png": image("gray"),
        "pairs/images/bad.png": b"broken",
    }
    res = send(client, [("pairs.zip", zip_of(members))], name="shoes")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert (body["images"], body["controls"], body["edit"]) == (1, 2, True)
    assert body["message_i18n"]["key"] == "import.done_edit"
    assert [s["file"] for s in body["skipped"]] == ["pairs.zip!pairs/images/bad.png"]
    listing = client.get("/api/gallery/items", query_string={"path": body["toml"]}).get_json()
    assert listing["edit"] is True
    (item,) = listing["items"]
    assert [c["name"] for c in item["controls"]] == ["shoe_0.png", "shoe_1.png"]


def test_an_existing_name_is_refused_in_the_pages_language(app: Flask, client: FlaskClient) -> None:
    assert send(client, [("a.png", image("red"))], name="pets").status_code == 200
    kept = (workspace(app) / "datasets" / "pets" / "images" / "a.png").read_bytes()
    res = send(client, [("a.png", image("blue"))], lang="zh-CN", name="pets")
    assert res.status_code == 409
    body = res.get_json()
    assert body["code"] == "exists" and body["error"].startswith("名为 pets 的数据集已存在")
    assert body["error_i18n"]["key"] == "import.exists"
    assert (workspace(app) / "datasets" / "pets" / "images" / "a.png").read_bytes() == kept
    assert sorted(p.name for p in (workspace(app) / "datasets").iterdir()) == ["pets"]


@pytest.mark.parametrize(
    ("fields", "files", "status", "start"),
    [
        ({"name": "../up"}, [("a.png", image())], 400, "'name': use 1 to 64 letters"),
        ({}, [("a.png", image())], 400, "'name': use 1 to 64 letters"),
        ({"name": "x"}, [], 400, "'files': choose images"),
        ({"name": "x", "resolution": "1000"}, [("a.png", image())], 400, "'resolution': each side must be"),
        ({"name": "x"}, [("bad.png", b"no")], 400, "no image could be imported from the 1 file(s)"),
    ],
)
def test_bad_requests_name_the_field(
    app: Flask, client: FlaskClient, fields: dict, files: list, status: int, start: str
) -> None:
    res = send(client, files, **fields)
    assert res.status_code == status and res.get_json()["error"].startswith(start), res.get_json()
    assert not (workspace(app) / "datasets").exists() or list((workspace(app) / "datasets").iterdir()) == []


def test_a_duplicate_name_is_refused_with_both_paths(client: FlaskClient) -> None:
    res = send(client, [("d.zip", zip_of({"a/x.png": image(), "b/x.png": image()}))], name="dup")
    assert res.status_code == 400
    assert "two target images have the name x" in res.get_json()["error"]
    zh = send(client, [("d.zip", zip_of({"a/x.png": image(), "b/x.png": image()}))], lang="zh-CN", name="dup")
    assert "两张目标图像同名 x" in zh.get_json()["error"]


def test_an_upload_larger_than_the_app_limit_is_taken_here(app: Flask, client: FlaskClient) -> None:
    big = Image.new("RGB", (1100, 1100), "white")
    buf = io.BytesIO()
    big.save(buf, "BMP")  # about 3.6 MB: over the 2 MiB every other request may send
    assert len(buf.getvalue()) > 2 * 2**20
    res = send(client, [("big.bmp", buf.getvalue())], name="big")
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["images"] == 1


def test_over_the_upload_limit_and_a_zip_bomb_are_413(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_import, "MAX_UPLOAD_BYTES", 100_000)
    monkeypatch.setattr(api_import, "MAX_UPLOAD_TEXT", "100 KB")
    res = send(client, [("a.bmp", b"\0" * 200_000)], name="big")
    assert res.status_code == 413 and res.get_json()["error"].startswith("the upload is larger than 100 KB")
    monkeypatch.setattr(api_import, "LIMITS", ImportLimits(max_unpacked=2**20))
    res = send(client, [("bomb.zip", zip_of({"a.png": b"\0" * 5 * 2**20}))], name="bomb")
    assert res.status_code == 413 and res.get_json()["code"] == "too_large"
    assert "nothing was written" in res.get_json()["error"]
    assert not (workspace(app) / "datasets").exists() or list((workspace(app) / "datasets").iterdir()) == []


def test_uploads_need_this_pages_origin_and_the_upload_header(client: FlaskClient) -> None:
    data = {"name": "x", "files": [(io.BytesIO(image()), "a.png")]}
    res = client.post("/api/datasets/import", data=data, content_type="multipart/form-data", headers={})
    assert res.status_code == 403
    data = {"name": "x", "files": [(io.BytesIO(image()), "a.png")]}
    headers = {"Origin": "http://localhost"}
    res = client.post("/api/datasets/import", data=data, content_type="multipart/form-data", headers=headers)
    assert res.status_code == 415


def test_a_file_name_with_dot_dots_stays_inside_the_dataset(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    res = send(client, [("../../../escape.png", image())], name="safe")
    assert res.status_code == 200, res.get_json()
    assert (workspace(app) / "datasets" / "safe" / "images" / "escape.png").is_file()
    assert not any(tmp_path.glob("escape.png")) and not any(tmp_path.parent.glob("escape.png"))


def test_file_names_with_folders_from_a_dropped_folder_pair_controls(client: FlaskClient) -> None:
    files = [
        ("set/a.png", image("red")),
        ("set/control/a_0.png", image("white")),
        ("set/a.txt", b"make it red"),
    ]
    res = send(client, files, name="dropped")
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    assert (body["images"], body["controls"], body["captions"], body["edit"]) == (1, 1, 1, True)
    listing = client.get("/api/gallery/items", query_string={"path": body["toml"]}).get_json()
    assert [(i["name"], [c["name"] for c in i["controls"]]) for i in listing["items"]] == [
        ("a.png", ["a_0.png"])
    ]
