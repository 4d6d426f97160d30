"""Caption files as the user's data: bulk actions, atomic writes beside the image or in the JSON-lines list,
conflicts with changes on disk, and undo from the history that keeps every previous text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_studio.data.caption_bulk import BulkAction, parse_action, tidy
from qwen_image_studio.data.caption_history import CaptionHistory
from qwen_image_studio.data.captions import (
    CaptionConflict,
    CaptionEdit,
    CaptionPlace,
    CaptionWriteError,
    apply_edits,
    read_captions,
    undo_batch,
)
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.gallery import build_gallery, crop_of, served_file
from qwen_image_studio.errors import ConfigError


def test_trigger_words_go_before_or_after_once() -> None:
    before, after = BulkAction("prepend", text="sks"), BulkAction("append", text="sks style")
    assert before.apply("a red circle") == "sks, a red circle"
    assert before.apply(before.apply("a red circle")) == "sks, a red circle"  # applying twice adds it once
    assert before.apply("") == "sks"
    assert after.apply("a red circle") == "a red circle, sks style"
    assert after.apply("a red circle, sks style") == "a red circle, sks style"
    assert BulkAction("prepend", text="sks", separator=" ").apply("a dog") == "sks a dog"


def test_find_replace_and_strip_a_phrase() -> None:
    assert (
        BulkAction("replace", find="red", replace="blue").apply("a red circle, red sky")
        == "a blue circle, blue sky"
    )
    assert BulkAction("replace", find="RED", replace="blue").apply("a red circle") == "a red circle"
    insensitive = BulkAction("replace", find="RED", replace="blue", case_sensitive=False)
    assert insensitive.apply("a Red circle") == "a blue circle"
    strip = BulkAction("strip", text="high quality")
    assert strip.apply("high quality, a red circle, on white") == "a red circle, on white"
    assert strip.apply("a red circle, high quality, on white") == "a red circle, on white"
    assert strip.apply("a red circle") == "a red circle"  # untouched when the phrase is absent
    assert tidy("a ,  b,, c ,") == "a, b, c"


def test_bad_actions_are_one_line_naming_the_field() -> None:
    for body, field in (
        ({"op": "shout"}, "action.op"),
        ({"op": "prepend"}, "action.text"),
        ({"op": "replace", "find": ""}, "action.find"),
        ({"op": "prepend", "text": "x", "case_sensitive": "yes"}, "action.case_sensitive"),
        ("prepend", "action"),
    ):
        with pytest.raises(ConfigError) as err:
            parse_action(body)
        assert str(err.value).startswith(field) and "\n" not in str(err.value)
    assert parse_action({"op": "replace", "find": "a", "replace": ""}).replace == ""


def _folder(root: Path) -> Path:
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), (i * 60, 0, 0)).save(images / f"img_{i}.png")
    (images / "img_0.txt").write_bytes(b"first caption\n")
    (images / "img_1.txt").write_bytes(b"second caption")
    return images


def test_edits_are_written_beside_the_image_and_undone_exactly(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    history = CaptionHistory(tmp_path / "ws" / "history.sqlite3")
    places = [CaptionPlace(images / f"img_{i}.png", file=images / f"img_{i}.txt") for i in range(3)]
    edits = [
        CaptionEdit(places[0], "first caption", "  changed first  "),
        CaptionEdit(places[1], "second caption", "changed second"),
        CaptionEdit(places[2], None, "a new caption"),  # no caption file yet
    ]
    batch = apply_edits(edits, history, tmp_path / "ds.toml", "test")
    assert batch is not None
    assert (images / "img_0.txt").read_bytes() == b"changed first\n"  # its trailing newline is kept
    assert (images / "img_1.txt").read_bytes() == b"changed second"
    assert (images / "img_2.txt").read_bytes() == b"a new caption"
    assert not list(images.glob(".*.tmp"))  # atomic writes leave no temporary file
    kept = history.changes(batch)
    assert [c.before for c in kept] == [b"first caption\n", b"second caption", None]
    assert all(c.written for c in kept)
    assert (
        apply_edits([CaptionEdit(places[1], "changed second", "changed second")], history, tmp_path, "x")
        is None
    )
    undo_batch(history, batch)
    assert (images / "img_0.txt").read_bytes() == b"first caption\n"
    assert (images / "img_1.txt").read_bytes() == b"second caption"
    assert not (images / "img_2.txt").exists()  # it had none: the new file is removed
    assert history.batch(batch).undone_at is not None and len(history.changes(batch)) == 3  # kept


def test_a_caption_changed_on_disk_is_never_overwritten(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    history = CaptionHistory(tmp_path / "h.sqlite3")
    place = CaptionPlace(images / "img_0.png", file=images / "img_0.txt")
    other = CaptionPlace(images / "img_1.png", file=images / "img_1.txt")
    (images / "img_0.txt").write_text("edited in another program")
    with pytest.raises(CaptionConflict) as err:
        apply_edits(
            [CaptionEdit(other, "second caption", "x"), CaptionEdit(place, "first caption", "y")],
            history,
            tmp_path,
            "t",
        )
    assert err.value.conflicts == [(images / "img_0.png", "first caption", "edited in another program")]
    assert (images / "img_1.txt").read_bytes() == b"second caption"  # all or nothing
    assert history.batches(tmp_path) == []
    batch = apply_edits([CaptionEdit(place, "edited in another program", "mine")], history, tmp_path, "t")
    (images / "img_0.txt").write_text("changed again")
    with pytest.raises(CaptionConflict):
        undo_batch(history, batch)  # undo does not overwrite a newer change either
    assert (images / "img_0.txt").read_text() == "changed again"


def test_jsonl_captions_are_rewritten_atomically_other_lines_unchanged(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    lines = [
        json.dumps({"image_path": "images/img_0.png", "caption": "zero", "extra": [1, 2]}),
        "   ",
        json.dumps({"image_path": str(images / "img_1.png"), "caption": "één"}, ensure_ascii=True),
        json.dumps({"image_path": "images/img_2.png"}),
    ]
    listing = tmp_path / "list.jsonl"
    listing.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    original = listing.read_bytes()
    history = CaptionHistory(tmp_path / "h.sqlite3")
    places = [CaptionPlace(images / f"img_{i}.png", jsonl=listing) for i in range(3)]
    assert read_captions(places) == {p.image: c for p, c in zip(places, ["zero", "één", None], strict=True)}
    batch = apply_edits(
        [CaptionEdit(places[0], "zero", "nul"), CaptionEdit(places[2], None, "twee")], history, tmp_path, "t"
    )
    data = listing.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    new_lines = data[3:].split(b"\n")
    old_lines = original[3:].split(b"\n")
    assert new_lines[1:3] == old_lines[1:3] and new_lines[4:] == old_lines[4:]  # untouched, byte for byte
    assert json.loads(new_lines[0]) == {"image_path": "images/img_0.png", "caption": "nul", "extra": [1, 2]}
    assert new_lines[0].endswith(b"\r") and json.loads(new_lines[3])["caption"] == "twee"
    assert read_captions(places)[places[0].image] == "nul"
    undo_batch(history, batch)
    assert listing.read_bytes() == original


def test_a_folder_that_cannot_be_written_keeps_nothing_pending(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    history = CaptionHistory(tmp_path / "h.sqlite3")
    (images / "img_0.txt").unlink()
    (images / "img_0.txt").mkdir()  # a folder where the caption file should be: the rename fails
    place = CaptionPlace(images / "img_0.png", file=images / "img_0.txt")
    with pytest.raises(CaptionWriteError) as err:
        apply_edits([CaptionEdit(place, None, "text")], history, tmp_path, "t")
    assert str(images) in str(err.value)
    assert history.batches(tmp_path) == []  # the failed write left no batch to undo


def test_crop_box_is_what_the_centre_crop_keeps() -> None:
    crop = crop_of((200, 100), (64, 64))  # scaled to 128x64, 32 px cut from each side
    assert crop.box == (50.0, 0.0, 150.0, 100.0)
    assert crop.fraction == (0.25, 0.0, 0.75, 1.0)
    assert crop_of((96, 96), (64, 64)).fraction == (0.0, 0.0, 1.0, 1.0)


def test_only_images_the_toml_names_are_served(tmp_path: Path) -> None:
    images = _folder(tmp_path)
    (images / "sub").mkdir()
    Image.new("RGB", (8, 8)).save(images / "sub" / "deep.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.png")
    toml = tmp_path / "ds.toml"
    toml.write_text(
        '[general]\nresolution = 64\n[[datasets]]\nimage_directory = "images"\ncache_directory = "c"\n'
    )
    config = load_dataset_config(toml)
    galleries = build_gallery(config)
    assert served_file(config, galleries, str(images / "img_0.png")) == images / "img_0.png"
    for raw in (
        str(images / ".." / "secret.png"),
        str(tmp_path / "secret.png"),
        str(images / "img_0.txt"),
        str(images / "sub" / "deep.png"),
        str(images / "missing.png"),
        "images/img_0.png",
        str(images / "img_0.png") + "\x00",
        str(toml),
    ):
        assert served_file(config, galleries, raw) is None, raw


def test_the_gallery_discovers_exactly_as_training_does(tmp_path: Path) -> None:
    """The gallery runs discovery's steps itself (to keep the images it saw): same items, same problems."""
    from qwen_image_studio.data.gallery import discover_with_candidates
    from qwen_image_studio.data.items import discover_items

    images = _folder(tmp_path)
    controls = tmp_path / "controls"
    controls.mkdir()
    Image.new("RGB", (48, 80)).save(controls / "img_0.png")
    Image.new("RGB", (48, 80)).save(controls / "stray.png")
    (images / "bad.png").write_bytes(b"nope")
    toml = tmp_path / "ds.toml"
    toml.write_text(
        '[general]\nresolution = 64\nenable_bucket = true\n[[datasets]]\nimage_directory = "images"\n'
        'control_directory = "controls"\ncache_directory = "c"\n'
    )
    ds = load_dataset_config(toml).datasets[0]
    for edit in (False, True):
        found, cands = discover_with_candidates(ds, edit)
        assert found == discover_items(ds, edit=edit)
        assert [c.image_path for c in cands] == sorted(images.glob("*.png"))
