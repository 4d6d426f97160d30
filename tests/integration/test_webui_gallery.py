"""The dataset gallery's API on real files: listing, thumbnails, serving rules, caption edits, bulk actions,
undo, read-only datasets and edit pairs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from qwen_image_studio.webui.app import create_app, studio_of

ORIGIN = {"Origin": "http://localhost"}
GENERAL = '[general]\nresolution = [64, 64]\ncaption_extension = ".txt"\nenable_bucket = true\n'


def make_app(workspace: Path, **kwargs: object) -> Flask:
    return create_app(workspace, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path / "ws")
    yield app
    studio_of(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def demo_copy(demo: Path, root: Path) -> tuple[Path, Path]:
    """The demo's images and controls copied to `root`, with a text-to-image and an edit TOML beside them."""
    shutil.copytree(demo / "dataset" / "images", root / "images")
    shutil.copytree(demo / "dataset" / "controls", root / "controls")
    t2i, edit = root / "t2i.toml", root / "edit.toml"
    t2i.write_text(GENERAL + '[[datasets]]\nimage_directory = "images"\ncache_directory = "cache/t2i"\n')
    edit.write_text(
        GENERAL + '[[datasets]]\nimage_directory = "images"\ncontrol_directory = "controls"\n'
        'cache_directory = "cache/edit"\n'
    )
    return t2i, edit


def items(client: FlaskClient, path: Path | str, **query: object) -> dict:
    res = client.get("/api/gallery/items", query_string={"path": str(path), **query})
    assert res.status_code == 200, res.get_json()
    return res.get_json()


def put(client: FlaskClient, path: Path, image: str, expected: str | None, caption: str):
    body = {"path": str(path), "image": image, "expected": expected, "caption": caption}
    return client.put("/api/gallery/caption", json=body, headers=ORIGIN)


def post(client: FlaskClient, url: str, body: dict):
    return client.post(url, json=body, headers=ORIGIN)


def test_items_show_caption_bucket_crop_cache_and_problems(
    client: FlaskClient, demo: Path, tmp_path: Path
) -> None:
    t2i, _ = demo_copy(demo, tmp_path / "ws" / "demo")
    images = t2i.parent / "images"
    Image.new("RGB", (200, 100), "white").save(images / "wide.png")  # a 2:1 image: its sides are cropped
    Image.new("RGB", (64, 64), "white").save(images / "nocap.png")
    (images / "broken.png").write_bytes(b"not a png")
    (images / "broken.txt").write_text("a broken file")
    (images / "wide.txt").write_text("a wide one")
    body = items(client, "demo/t2i.toml")  # relative to the workspace
    assert body["total"] == 9 and body["matched"] == 9 and body["edit"] is False
    by_name = {i["name"]: i for i in body["items"]}
    first = by_name["demo_00.png"]
    assert first["caption"] == (images / "demo_00.txt").read_text().strip()
    assert (
        first["size"] == [96, 96]
        and first["bucket"] == [64, 64]
        and first["crop"]["fraction"] == [0, 0, 1, 1]
    )
    assert first["cache"] == "missing" and first["problems"] == [] and first["controls"] == []
    wide = by_name["wide.png"]
    assert wide["bucket"] == [80, 48] and wide["crop"]["box"] == [
        16.67,
        0.0,
        183.33,
        100.0,
    ]  # 96x48, 8 px cut each side
    assert by_name["nocap.png"]["caption"] is None and "no caption" in by_name["nocap.png"]["problems"][0]
    assert by_name["nocap.png"]["usable"] is False and by_name["nocap.png"]["bucket"] is None
    assert "cannot be read" in by_name["broken.png"]["problems"][0]
    ds = body["datasets"][0]
    assert ds["writable"] is True and ds["read_only"] is None and ds["caption_extension"] == ".txt"
    assert {(b["width"], b["height"]): b["count"] for b in body["buckets"]} == {
        (48, 80): 2,
        (64, 64): 2,
        (80, 48): 3,
    }
    # filters: no caption, problem, bucket, text search (caption or file name); paging
    assert [i["name"] for i in items(client, t2i, filter="no_caption")["items"]] == ["nocap.png"]
    assert {i["name"] for i in items(client, t2i, filter="problem")["items"]} == {"broken.png", "nocap.png"}
    assert items(client, t2i, bucket="80x48")["matched"] == 3
    assert [i["name"] for i in items(client, t2i, q="WIDE")["items"]] == ["wide.png"]
    assert (
        items(client, t2i, filter="uncached")["matched"] == 7
        and items(client, t2i, filter="outdated")["matched"] == 0
    )
    page = items(client, t2i, offset=2, limit=3)
    assert [i["name"] for i in page["items"]] == [i["name"] for i in body["items"][2:5]] and page[
        "matched"
    ] == 9
    for bad in ({"limit": 0}, {"offset": "x"}, {"filter": "pretty"}, {"bucket": "64"}, {"edit": "maybe"}):
        res = client.get("/api/gallery/items", query_string={"path": str(t2i), **bad})
        assert res.status_code == 400 and "\n" not in res.get_json()["error"]
        assert res.get_json()["error"].startswith("'")  # names the field
    missing = client.get("/api/gallery/items", query_string={"path": "nope.toml"})
    assert missing.status_code == 400 and "nope.toml" in missing.get_json()["error"]


def test_outdated_cache_is_found(client: FlaskClient, demo: Path, t2i: Path, tmp_path: Path) -> None:
    """The t2i fixture has both caches written; a caption changed since makes its text cache outdated."""
    root = tmp_path / "ws" / "cached"
    shutil.copytree(t2i.parent / "cache", root / "cache")
    shutil.copytree(demo / "dataset" / "images", root / "images")  # caches record content, not paths
    toml = root / "t2i.toml"
    toml.write_text(
        t2i.read_text().replace(str(demo / "dataset" / "images"), "images").replace(str(t2i.parent), ".")
    )
    body = items(client, toml)
    usable = [i for i in body["items"] if i["usable"]]
    assert usable and all(i["cache"] == "cached" for i in usable), [i["cache_reasons"] for i in usable]
    first = usable[0]
    assert put(client, toml, first["image"], first["caption"], "a different caption").status_code == 200
    after = items(client, toml, filter="outdated")
    assert [i["image"] for i in after["items"]] == [first["image"]]
    assert "another caption" in after["items"][0]["cache_reasons"][0]


def _exif_rotated(path: Path) -> None:
    """A 40x20 JPEG whose EXIF says: turn 90 degrees (orientation 6), so viewers show it 20x40."""
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif.tobytes())


def test_thumbnails_are_made_once_inside_the_workspace(
    client: FlaskClient, demo: Path, tmp_path: Path
) -> None:
    t2i, _ = demo_copy(demo, tmp_path / "ws" / "demo")
    _exif_rotated(t2i.parent / "images" / "turned.jpg")
    body = items(client, t2i)
    by_name = {i["name"]: i for i in body["items"]}
    res = client.get(by_name["turned.jpg"]["thumb"])
    assert res.status_code == 200 and res.mimetype == "image/webp"
    assert "immutable" in res.headers["Cache-Control"]
    thumbs = list((tmp_path / "ws" / ".thumbs").rglob("*.webp"))
    assert len(thumbs) == 1
    with Image.open(thumbs[0]) as im:
        assert im.size == (20, 40)  # EXIF orientation applied
    made = thumbs[0].stat().st_mtime_ns
    time.sleep(0.01)
    assert client.get(by_name["turned.jpg"]["thumb"]).status_code == 200
    assert thumbs[0].stat().st_mtime_ns == made  # served from the cache, not made again
    big = client.get(
        "/api/gallery/thumb", query_string={"path": str(t2i), "image": by_name["demo_00.png"]["image"]}
    )
    assert big.status_code == 200 and big.headers["Cache-Control"] == "private, no-cache"
    with (
        Image.open(t2i.parent / "images" / "demo_00.png") as original,
        Image.open(next(p for p in (tmp_path / "ws" / ".thumbs").rglob("*.webp") if p != thumbs[0])) as small,
    ):
        assert small.size == original.size  # never enlarged (96 px fits in 256)
    Image.new("RGB", (30, 60), "blue").save(t2i.parent / "images" / "turned.jpg")  # changed on disk
    fresh = {i["name"]: i for i in items(client, t2i)["items"]}["turned.jpg"]
    assert fresh["thumb"] != by_name["turned.jpg"]["thumb"] and client.get(fresh["thumb"]).status_code == 200
    assert len(list((tmp_path / "ws" / ".thumbs").rglob("*.webp"))) == 3
    full = client.get(by_name["demo_00.png"]["url"])
    assert full.status_code == 200 and full.data == (t2i.parent / "images" / "demo_00.png").read_bytes()
    (t2i.parent / "images" / "bad.png").write_bytes(b"garbage")
    bad = client.get(
        "/api/gallery/thumb", query_string={"path": str(t2i), "image": str(t2i.parent / "images" / "bad.png")}
    )
    assert bad.status_code == 422 and "cannot be read" in bad.get_json()["error"]


def test_nothing_outside_the_named_folders_is_served(client: FlaskClient, demo: Path, tmp_path: Path) -> None:
    t2i, _ = demo_copy(demo, tmp_path / "ws" / "demo")
    images = t2i.parent / "images"
    Image.new("RGB", (8, 8)).save(tmp_path / "ws" / "private.png")
    (images / "link.png").symlink_to(tmp_path / "ws" / "private.png")  # a link the user put there is theirs
    (images / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(images / "sub" / "deep.png")
    tries = [
        str(images / ".." / ".." / "private.png"),
        str(tmp_path / "ws" / "private.png"),
        str(images / "demo_00.txt"),
        str(t2i),
        str(images / "sub" / "deep.png"),
        "../private.png",
        "/etc/passwd",
        str(images / "demo_00.png") + "\x00.png",
        "",
    ]
    for kind in ("thumb", "image"):
        for raw in tries:
            res = client.get(f"/api/gallery/{kind}", query_string={"path": str(t2i), "image": raw})
            assert res.status_code == 404, (kind, raw)
            assert "is not served" in res.get_json()["error"] and "\n" not in res.get_json()["error"]
        ok = client.get(
            f"/api/gallery/{kind}", query_string={"path": str(t2i), "image": str(images / "demo_01.png")}
        )
        assert ok.status_code == 200
    # the caption endpoints take only images the listing has
    res = put(client, t2i, str(tmp_path / "ws" / "private.png"), None, "x")
    assert res.status_code == 404 and not (tmp_path / "ws" / "private.txt").exists()


def test_edit_a_caption_reload_conflict_and_undo(client: FlaskClient, demo: Path, tmp_path: Path) -> None:
    t2i, _ = demo_copy(demo, tmp_path / "ws" / "demo")
    first = items(client, t2i)["items"][0]
    caption_file = Path(first["image"]).with_suffix(".txt")
    original = caption_file.read_bytes()
    res = put(client, t2i, first["image"], first["caption"], "a sks circle")
    assert res.status_code == 200 and res.get_json()["changed"] is True
    assert caption_file.read_text() == "a sks circle\n"
    assert items(client, t2i)["items"][0]["caption"] == "a sks circle"  # a reload shows it
    stale = put(client, t2i, first["image"], first["caption"], "from an old page")  # loaded before the edit
    assert stale.status_code == 409 and stale.get_json()["code"] == "caption_changed"
    assert "changed on disk since it was loaded" in stale.get_json()["error"]
    assert caption_file.read_text() == "a sks circle\n"
    caption_file.write_text("edited in a text editor")  # changed outside the UI
    res = put(client, t2i, first["image"], "a sks circle", "mine")
    assert res.status_code == 409 and res.get_json()["conflicts"][0]["now"] == "edited in a text editor"
    caption_file.write_bytes(b"a sks circle\n")
    history = client.get("/api/gallery/history", query_string={"path": str(t2i)}).get_json()["batches"]
    assert history[0]["changes"] == [
        {"image": first["image"], "before": first["caption"], "after": "a sks circle"}
    ]
    undo = post(client, "/api/gallery/undo", {"path": str(t2i)})
    assert undo.status_code == 200 and undo.get_json()["restored"] == [first["image"]]
    assert caption_file.read_bytes() == original
    again = post(client, "/api/gallery/undo", {"path": str(t2i)})
    assert again.status_code == 409 and "nothing to undo" in again.get_json()["error"]
    # the page must send JSON from this origin, like every write
    assert client.put("/api/gallery/caption", json={}).status_code == 403


def test_bulk_trigger_word_with_preview_apply_and_undo(
    client: FlaskClient, demo: Path, tmp_path: Path
) -> None:
    t2i, _ = demo_copy(demo, tmp_path / "ws" / "demo")
    images = t2i.parent / "images"
    Image.new("RGB", (64, 64)).save(images / "nocap.png")
    before = {p.name: p.read_bytes() for p in images.glob("*.txt")}
    action = {"op": "prepend", "text": "sks"}
    preview = post(client, "/api/gallery/bulk/preview", {"path": str(t2i), "action": action}).get_json()
    assert len(preview["changes"]) == 6 and preview["skipped"] == [str(images / "nocap.png")]
    assert all(c["after"] == "sks, " + c["before"] for c in preview["changes"])
    assert {p.name: p.read_bytes() for p in images.glob("*.txt")} == before  # a preview writes nothing
    no_expected = post(client, "/api/gallery/bulk/apply", {"path": str(t2i), "action": action})
    assert no_expected.status_code == 400 and no_expected.get_json()["error"].startswith("'expected'")
    expected = [{"image": c["image"], "before": c["before"]} for c in preview["changes"]]
    (images / "demo_03.txt").write_text("changed meanwhile")
    conflict = post(
        client, "/api/gallery/bulk/apply", {"path": str(t2i), "action": action, "expected": expected}
    )
    assert conflict.status_code == 409 and "demo_03" in json.dumps(conflict.get_json()["conflicts"])
    assert (images / "demo_00.txt").read_bytes() == before["demo_00.txt"]  # all or nothing
    (images / "demo_03.txt").write_bytes(before["demo_03.txt"])
    res = post(client, "/api/gallery/bulk/apply", {"path": str(t2i), "action": action, "expected": expected})
    assert res.status_code == 200 and res.get_json()["changed"] == 6
    assert all(i["caption"].startswith("sks, ") for i in items(client, t2i, filter="usable")["items"])
    replace = {"op": "replace", "find": "background", "replace": "backdrop"}
    preview2 = post(
        client, "/api/gallery/bulk/preview", {"path": str(t2i), "action": replace, "q": "white"}
    ).get_json()
    assert preview2["changes"] and all("white" in c["before"] for c in preview2["changes"])
    expected2 = [{"image": c["image"], "before": c["before"]} for c in preview2["changes"]]
    assert (
        post(
            client, "/api/gallery/bulk/apply", {"path": str(t2i), "action": replace, "expected": expected2}
        ).status_code
        == 200
    )
    assert post(client, "/api/gallery/undo", {"path": str(t2i)}).status_code == 200  # the replace
    assert post(client, "/api/gallery/undo", {"path": str(t2i)}).status_code == 200  # the trigger word
    assert {p.name: p.read_bytes() for p in images.glob("*.txt")} == before
    batches = client.get("/api/gallery/history", query_string={"path": str(t2i)}).get_json()["batches"]
    assert [b["undone"] for b in batches] == [True, True] and batches[1]["label"] == "prepend 'sks'"
    bad = post(client, "/api/gallery/bulk/preview", {"path": str(t2i), "action": {"op": "shout"}})
    assert bad.status_code == 400 and bad.get_json()["error"].startswith("action.op")


def test_jsonl_dataset_captions_are_edited_in_the_list(
    client: FlaskClient, demo: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ws" / "jl"
    demo_copy(demo, root)
    lines = [
        json.dumps(
            {
                "image_path": f"images/demo_0{i}.png",
                "control_path": f"controls/demo_0{i}.png",
                "caption": f"c{i}",
            }
        )
        for i in range(3)
    ]
    (root / "list.jsonl").write_text("\n".join(lines) + "\n")
    toml = root / "jl.toml"
    toml.write_text(GENERAL + '[[datasets]]\nimage_jsonl_file = "list.jsonl"\ncache_directory = "cache/jl"\n')
    body = items(client, toml)
    assert body["edit"] is True and body["datasets"][0]["kind"] == "jsonl" and body["total"] == 3
    second = body["items"][1]
    assert second["caption"] == "c1" and second["controls"][0]["name"] == "demo_01.png"
    assert client.get(second["controls"][0]["thumb"]).status_code == 200  # a listed control is served
    assert put(client, toml, second["image"], "c1", "new one").status_code == 200
    text = (root / "list.jsonl").read_text().split("\n")
    assert text[0] == lines[0] and text[2] == lines[2] and json.loads(text[1])["caption"] == "new one"
    assert post(client, "/api/gallery/undo", {"path": str(toml)}).status_code == 200
    assert (root / "list.jsonl").read_text() == "\n".join(lines) + "\n"


def test_a_dataset_outside_the_workspace_is_read_only_until_allowed(demo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    t2i, _ = demo_copy(demo, outside)
    captions = {p: p.read_bytes() for p in (outside / "images").glob("*.txt")}
    app = make_app(tmp_path / "ws")
    try:
        client = app.test_client()
        body = items(client, t2i)  # shown
        ds = body["datasets"][0]
        assert ds["writable"] is False and f"--allow_dir {outside / 'images'}" in ds["read_only"]
        first = body["items"][0]
        res = put(client, t2i, first["image"], first["caption"], "changed")
        assert res.status_code == 403 and "read-only here" in res.get_json()["error"]
        assert "--allow_dir" in res.get_json()["error"]
        preview = post(
            client, "/api/gallery/bulk/preview", {"path": str(t2i), "action": {"op": "append", "text": "x"}}
        )
        assert preview.get_json()["writable"] is False
        expected = [{"image": c["image"], "before": c["before"]} for c in preview.get_json()["changes"]]
        apply = post(
            client,
            "/api/gallery/bulk/apply",
            {"path": str(t2i), "action": {"op": "append", "text": "x"}, "expected": expected},
        )
        assert apply.status_code == 403
        zh = client.get(
            "/api/gallery/items", query_string={"path": str(t2i)}, headers={"X-Studio-Lang": "zh-CN"}
        )
        assert "只读" in zh.get_json()["datasets"][0]["read_only"]
    finally:
        studio_of(app).close()
    assert {p: p.read_bytes() for p in (outside / "images").glob("*.txt")} == captions
    allowed = make_app(tmp_path / "ws", allow_dirs=(outside,))
    try:
        client = allowed.test_client()
        first = items(client, t2i)["items"][0]
        assert items(client, t2i)["datasets"][0]["writable"] is True
        assert put(client, t2i, first["image"], first["caption"], "changed").status_code == 200
    finally:
        studio_of(allowed).close()


@pytest.fixture
def read_only_disk(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "ws" / "ro"
    target.mkdir(parents=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(target)], capture_output=True, text=True
    )
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs for the read-only folder test: {result.stderr.strip()}")
        pytest.skip(f"needs root to mount a small tmpfs: {result.stderr.strip()}")
    yield target
    subprocess.run(["umount", str(target)], check=False)


def test_a_read_only_folder_gives_a_clear_message(
    client: FlaskClient, demo: Path, read_only_disk: Path
) -> None:
    t2i, _ = demo_copy(demo, read_only_disk)
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_disk)], check=True)
    first = items(client, t2i)["items"][0]
    res = put(client, t2i, first["image"], first["caption"], "changed")
    assert res.status_code == 403 and res.get_json()["code"] == "not_writable"
    assert (
        "read-only" in res.get_json()["error"] and str(read_only_disk / "images") in res.get_json()["error"]
    )
    history = client.get("/api/gallery/history", query_string={"path": str(t2i)}).get_json()
    assert history["batches"] == []  # nothing pending to undo


def test_edit_pairs_numbered_controls_unmatched_missing_and_mixed(
    client: FlaskClient, demo: Path, tmp_path: Path
) -> None:
    _, edit = demo_copy(demo, tmp_path / "ws" / "demo")
    controls = edit.parent / "controls"
    (controls / "demo_01.png").rename(controls / "demo_01_0.png")
    for n in (1, 2, 10):
        shutil.copy(controls / "demo_01_0.png", controls / f"demo_01_{n}.png")
    (controls / "demo_02.png").unlink()
    Image.new("RGB", (64, 64)).save(controls / "stray.png")
    body = items(client, edit)
    assert body["edit"] is True
    by_name = {i["name"]: i for i in body["items"]}
    assert [c["name"] for c in by_name["demo_01.png"]["controls"]] == [
        "demo_01_0.png",
        "demo_01_1.png",
        "demo_01_2.png",
        "demo_01_10.png",
    ]  # numbered in order (10 after 2)
    assert [c["index"] for c in by_name["demo_01.png"]["controls"]] == [0, 1, 2, 3]
    assert by_name["demo_01.png"]["controls"][0]["bucket"] == [80, 48]
    assert (
        by_name["demo_02.png"]["controls"] == []
        and "no control image" in by_name["demo_02.png"]["problems"][0]
    )
    info = body["datasets"][0]["edit"]
    assert info["unmatched_controls"] == [str(controls / "stray.png")]
    assert info["missing_controls"] == [str(edit.parent / "images" / "demo_02.png")]
    assert info["control_counts"] == {"0": 1, "1": 4, "4": 1} and info["mixed"] is True
    assert client.get(by_name["demo_01.png"]["controls"][3]["thumb"]).status_code == 200
    t2i_view = items(client, edit, edit="0")
    assert t2i_view["edit"] is False and t2i_view["datasets"][0]["edit"]["missing_controls"] == []


def test_two_thousand_images_page_quickly(client: FlaskClient, tmp_path: Path) -> None:
    images = tmp_path / "ws" / "many" / "images"
    images.mkdir(parents=True)
    tile = Image.new("RGB", (32, 24), "green")
    for i in range(2000):
        tile.save(images / f"im_{i:04d}.png")
        if i % 10:
            (images / f"im_{i:04d}.txt").write_text(f"picture number {i}")
    toml = images.parent / "many.toml"
    toml.write_text(
        '[general]\nresolution = 32\nenable_bucket = true\n[[datasets]]\nimage_directory = "images"\ncache_directory = "c"\n'
    )
    start = time.perf_counter()
    first = items(client, toml, limit=40)
    cold = time.perf_counter() - start
    assert first["total"] == 2000 and len(first["items"]) == 40 and first["items"][0]["name"] == "im_0000.png"
    start = time.perf_counter()
    names = []
    for offset in range(0, 2000, 500):
        names += [i["name"] for i in items(client, toml, offset=offset, limit=500)["items"]]
    warm = (time.perf_counter() - start) / 4
    assert names == sorted(f"im_{i:04d}.png" for i in range(2000))
    assert items(client, toml, filter="no_caption")["matched"] == 200
    assert items(client, toml, q="number 1999")["matched"] == 1
    assert cold < 20 and warm < cold, (cold, warm)  # the listing is kept while nothing changes on disk
