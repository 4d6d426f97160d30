"""Items that are present but cannot be read: their real cause is reported and their cache files are kept."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_studio.data import items as items_module
from qwen_image_studio.data.cache_paths import stale_cache_files
from qwen_image_studio.data.config import Dataset
from qwen_image_studio.data.images import ImageReadError, read_image, read_image_for_bucket
from qwen_image_studio.data.items import discover_items


def image(path: Path, size: tuple[int, int] = (96, 96), **save) -> Path:
    """Write a plain image with a caption beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, "red").save(path, **save)
    path.with_suffix(".txt").write_text(f"a caption of {path.stem}", encoding="utf-8")
    return path


def dataset(tmp_path: Path, **kw) -> Dataset:
    """A dataset over tmp_path/images at 64x64 with buckets."""
    if "image_jsonl_file" not in kw:
        kw.setdefault("image_directory", tmp_path / "images")
    kw.setdefault("cache_directory", tmp_path / "cache")
    return Dataset(index=0, resolution=(64, 64), enable_bucket=True, **kw)


def touch_caches(cache: Path, *names: str) -> list[Path]:
    """Empty files with cache-file names."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = [cache / n for n in names]
    for p in paths:
        p.write_bytes(b"cache")
    return paths


def test_a_caption_that_is_not_utf8_names_the_byte_and_is_not_missing(tmp_path: Path) -> None:
    d = tmp_path / "images"
    image(d / "a.png")
    image(d / "b.png").with_suffix(".txt").write_bytes(b"abc\xff\xfe bad")
    found = discover_items(dataset(tmp_path))
    assert [i.key for i in found.items] == ["a"]
    assert found.missing_captions == [] and found.captions_found == 1
    (u,) = found.unreadable_captions
    assert u.path == d / "b.txt"
    assert u.reason == f"caption {d / 'b.txt'} is not UTF-8 text (byte 0xff at offset 3)"
    assert [p for p in found.problems if "b.txt" in p] == [
        f"{u.reason}; its image is left out; its cache files are kept"
    ]
    assert not any("lack" in p for p in found.problems)
    assert found.kept_keys == {"b"}


def test_a_caption_without_read_permission_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Simulated: the tests may run as root, who reads any file.)"""
    d = tmp_path / "images"
    image(d / "a.png")
    image(d / "b.png")
    real = items_module.read_caption

    def read(path: Path) -> str:
        if path.name == "b.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(items_module, "read_caption", read)
    found = discover_items(dataset(tmp_path))
    (u,) = found.unreadable_captions
    assert u.reason == f"caption {d / 'b.txt'} cannot be read (Permission denied)"
    assert found.missing_captions == [] and found.kept_keys == {"b"}


def test_unreadable_items_keep_their_cache_files_and_gone_ones_do_not(tmp_path: Path) -> None:
    """A corrupt image (whatever size its old cache file records), a bad caption and an unreadable control
    image keep their cache files; a deleted image's files are stale."""
    d, c = tmp_path / "images", tmp_path / "controls"
    for name in ("good", "cut", "badcap", "badctl"):
        image(d / f"{name}.png")
        image(c / f"{name}.png").with_suffix(".txt").unlink()
    good = (d / "good.png").read_bytes()
    (d / "cut.png").write_bytes(good[: len(good) // 2])
    (d / "badcap.txt").write_bytes(b"\xff\xfe bad")
    (c / "badctl.png").write_bytes(b"not a png")
    cache = tmp_path / "cache"
    kept = touch_caches(
        cache,
        *(f"{n}_0120x0072_qie.safetensors" for n in ("cut", "badcap", "badctl")),
        *(f"{n}_qie_te.safetensors" for n in ("cut", "badcap", "badctl")),
    )
    gone = touch_caches(cache, "gone_0096x0096_qie.safetensors", "gone_qie_te.safetensors")
    found = discover_items(dataset(tmp_path, control_directory=c), edit=True)
    assert [i.key for i in found.items] == ["good"]
    assert sorted(p.name for p in found.unreadable_items) == ["badcap.png", "badctl.png", "cut.png"]
    assert found.kept_keys == {"cut", "badcap", "badctl"}
    entries = [i.cache_entry() for i in found.items]
    assert stale_cache_files(cache, entries, "qie", found.kept_keys) == sorted(gone)
    assert sorted(stale_cache_files(cache, entries, "qie")) == sorted(kept + gone), "without keys: all"
    assert any(f"control image {c / 'badctl.png'} cannot be read (" in p for p in found.problems)
    assert any(f"image {d / 'cut.png'} cannot be read (" in p and "kept" in p for p in found.problems)


def test_a_control_image_is_not_needed_in_text_to_image_mode(tmp_path: Path) -> None:
    d, c = tmp_path / "images", tmp_path / "controls"
    image(d / "a.png")
    c.mkdir()
    (c / "a.png").write_bytes(b"not a png")
    found = discover_items(dataset(tmp_path, control_directory=c))
    assert [i.key for i in found.items] == ["a"] and found.unreadable_items == []


def test_many_unreadable_files_are_named_up_to_a_limit(tmp_path: Path) -> None:
    d = tmp_path / "images"
    image(d / "ok.png")
    for n in range(25):
        image(d / f"bad{n:02d}.png").write_bytes(b"junk")
    found = discover_items(dataset(tmp_path))
    assert len(found.unreadable_items) == 25
    named = [p for p in found.problems if p.startswith("image ")]
    assert len(named) == 20
    assert "5 more image(s) cannot be read (dataset inspect --json lists them all)" in found.problems


def test_jsonl_lines_that_cannot_be_read_lose_only_themselves(tmp_path: Path) -> None:
    """A line that is not UTF-8 or not JSON is skipped alone (the rest is usable, a BOM is fine); since
    nothing shows which images those lines named, the listing is incomplete."""
    d = tmp_path / "images"
    for name in ("a", "b", "c"):
        image(d / f"{name}.png")
    lines = [
        json.dumps({"image_path": str(d / "a.png"), "caption": "a caption"}).encode(),
        b'{"image_path": "' + str(d / "b.png").encode() + b'", "caption": "caf\xe9"}',
        b'{"image_path": oops}',
        json.dumps({"image_path": str(d / "c.png"), "caption": "ça va"}, ensure_ascii=False).encode(),
    ]
    listing = tmp_path / "list.jsonl"
    listing.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    found = discover_items(dataset(tmp_path, image_jsonl_file=listing))
    assert [(i.key, i.caption) for i in found.items] == [("a", "a caption"), ("c", "ça va")]
    assert found.unreadable_lines == 2 and not found.listing_complete
    offset = 3 + len(lines[0]) + 1 + lines[1].index(b"\xe9")
    assert f"{listing} line 2: not UTF-8 text (byte 0xe9 at offset {offset}); line skipped" in found.problems
    assert any(p.startswith(f"{listing} line 3: not valid JSON") for p in found.problems)


def test_a_jsonl_file_that_cannot_be_read_is_an_incomplete_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    listing = tmp_path / "list.jsonl"
    listing.write_text("{}\n", encoding="utf-8")
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == listing:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    found = discover_items(dataset(tmp_path, image_jsonl_file=listing))
    assert found.items == [] and not found.listing_complete
    assert f"{listing} cannot be read (Permission denied); no cache file is removed" in found.problems


def test_read_image_names_the_file_and_pillows_reason(tmp_path: Path) -> None:
    """A truncated JPEG passes the header check; decoding it raises ImageReadError with the path."""
    path = tmp_path / "a.jpg"
    Image.effect_noise((256, 256), 64).convert("RGB").save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as err:
        read_image_for_bucket(path, (64, 64))
    assert err.value.path == path and "truncated" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ImageReadError) as err:
        read_image(tmp_path / "nope.png")
    assert str(err.value) == "No such file or directory" and err.value.path == tmp_path / "nope.png"
