"""Dataset discovery: images, captions, control images, JSON lines, unreadable files and cache paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_studio.data.config import Dataset
from qwen_image_studio.data.images import load_image, load_image_for_bucket, probe_image
from qwen_image_studio.data.items import discover_items, match_controls


def image(path: Path, size: tuple[int, int] = (96, 96), colour: str = "red", **save) -> Path:
    """Write a plain image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, **save)
    return path


def caption(image_path: Path, text: str = "a caption", ext: str = ".txt") -> Path:
    """Write a caption beside an image."""
    path = image_path.with_suffix(ext)
    path.write_text(text, encoding="utf-8")
    return path


def dataset(tmp_path: Path, **kw) -> Dataset:
    """A dataset over tmp_path/images at 64x64 with buckets."""
    kw.setdefault("image_directory", tmp_path / "images")
    kw.setdefault("cache_directory", tmp_path / "cache")
    return Dataset(index=0, resolution=(64, 64), enable_bucket=True, **kw)


def test_images_captions_buckets_and_cache_paths(tmp_path: Path) -> None:
    """Extensions in any case, captions beside, non-images ignored, cache names per the reference trainer."""
    d = tmp_path / "images"
    caption(image(d / "a.png", (120, 72)))
    caption(image(d / "b.JPG", (64, 64)))
    caption(image(d / "c.WebP", (72, 120), format="WEBP"))
    image(d / "d.bmp", (50, 50))
    (d / "notes.md").write_text("x")
    found = discover_items(dataset(tmp_path))
    assert found.image_count == 4 and found.captions_found == 3
    assert [i.key for i in found.items] == ["a", "b", "c"]
    assert found.missing_captions == [d / "d.bmp"]
    a = found.items[0]
    assert (a.size, a.bucket, a.caption) == ((120, 72), (80, 48), "a caption")
    assert a.latent_cache_path == tmp_path / "cache" / "a_0120x0072_qi.safetensors"
    assert a.text_cache_path == tmp_path / "cache" / "a_qi_te.safetensors"
    assert any("lack caption files (.txt)" in p and "d.bmp" in p for p in found.problems)


def test_edit_mode_uses_the_qie_tag(tmp_path: Path) -> None:
    """Edit-mode caches are named like the reference trainer's Qwen-Image-Edit caches."""
    caption(image(tmp_path / "images" / "a.png"))
    image(tmp_path / "controls" / "a.jpg")
    found = discover_items(dataset(tmp_path, control_directory=tmp_path / "controls"), edit=True)
    (a,) = found.items
    assert a.latent_cache_path.name == "a_0096x0096_qie.safetensors"
    assert a.text_cache_path.name == "a_qie_te.safetensors"
    assert a.control_paths == (tmp_path / "controls" / "a.jpg",)
    assert a.control_buckets == ((64, 64),)


def test_control_matching() -> None:
    """Same basename any extension, then name_0, name_1 ... in number order; leftovers reported."""
    images = [Path("i/a.png"), Path("i/b.png"), Path("i/b_1.png"), Path("i/c.png")]
    controls = [
        Path(p) for p in ("c/a.jpg", "c/a_10.png", "c/a_2.png", "c/b_1.png", "c/b_x.png", "c/zzz.png")
    ]
    matched, unmatched = match_controls(images, controls)
    assert matched[Path("i/a.png")] == (Path("c/a.jpg"), Path("c/a_2.png"), Path("c/a_10.png"))
    assert Path("i/b.png") not in matched  # b_1 names another image exactly
    assert matched[Path("i/b_1.png")] == (Path("c/b_1.png"),)
    assert Path("i/c.png") not in matched
    assert unmatched == [Path("c/b_x.png"), Path("c/zzz.png")]


def test_missing_controls_in_edit_mode_are_left_out(tmp_path: Path) -> None:
    """Targets without control images cannot train in edit mode; unmatched controls are reported."""
    d = tmp_path / "images"
    caption(image(d / "a.png"))
    caption(image(d / "b.png"))
    image(tmp_path / "controls" / "a_0.png")
    image(tmp_path / "controls" / "a_1.png", (64, 128))
    image(tmp_path / "controls" / "orphan.png")
    found = discover_items(dataset(tmp_path, control_directory=tmp_path / "controls"), edit=True)
    assert [i.key for i in found.items] == ["a"]
    assert len(found.items[0].control_paths) == 2
    assert found.missing_controls == [d / "b.png"]
    assert found.unmatched_controls == [tmp_path / "controls" / "orphan.png"]
    assert any("1 image(s) have no control image: b.png" in p for p in found.problems)
    assert any("match no target image: orphan.png" in p for p in found.problems)
    # in text-to-image mode the same dataset trains both images
    assert len(discover_items(dataset(tmp_path, control_directory=tmp_path / "controls")).items) == 2


def test_edit_mode_without_controls_says_what_to_set(tmp_path: Path) -> None:
    """No control_directory at all in edit mode."""
    caption(image(tmp_path / "images" / "a.png"))
    found = discover_items(dataset(tmp_path), edit=True)
    assert found.items == []
    assert any(
        "edit mode needs control images: set control_directory in datasets[0]" in p for p in found.problems
    )


def test_control_resolution_and_no_resize(tmp_path: Path) -> None:
    """Control buckets follow control_resolution or keep their own size, and split the batch groups."""
    caption(image(tmp_path / "images" / "a.png", (96, 96)))
    image(tmp_path / "controls" / "a.png", (200, 100))
    ds = dataset(tmp_path, control_directory=tmp_path / "controls", no_resize_control=True)
    (a,) = discover_items(ds, edit=True).items
    assert a.control_buckets == ((192, 96),)
    assert a.batch_key == ((64, 64), (192, 96))
    ds = dataset(tmp_path, control_directory=tmp_path / "controls", control_resolution=(64, 64))
    (a,) = discover_items(ds, edit=True).items
    assert a.control_buckets[0][0] * a.control_buckets[0][1] <= 64 * 64


def test_unreadable_images_are_listed_not_fatal(tmp_path: Path) -> None:
    """Garbage, an empty file and a truncated PNG are skipped with a reason."""
    d = tmp_path / "images"
    caption(image(d / "good.png"))
    caption(d / "junk.png").parent.mkdir(exist_ok=True)
    (d / "junk.png").write_bytes(b"this is not an image")
    caption(d / "empty.jpg")
    (d / "empty.jpg").write_bytes(b"")
    good = (d / "good.png").read_bytes()
    caption(d / "cut.png")
    (d / "cut.png").write_bytes(good[: len(good) // 2])
    found = discover_items(dataset(tmp_path))
    assert [i.key for i in found.items] == ["good"]
    assert sorted(u.path.name for u in found.unreadable) == ["cut.png", "empty.jpg", "junk.png"]
    assert all(u.reason for u in found.unreadable)
    for name in ("cut.png", "empty.jpg", "junk.png"):  # one line per file, naming it
        assert sum(f"image {d / name} cannot be read (" in p for p in found.problems) == 1, found.problems
    assert sorted(p.name for p in found.unreadable_items) == ["cut.png", "empty.jpg", "junk.png"]


def test_truncated_jpeg_needs_decode(tmp_path: Path) -> None:
    """A JPEG cut short opens lazily; decoding it finds the damage."""
    path = image(tmp_path / "a.jpg", (256, 256), "blue", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    assert probe_image(path) == (256, 256)
    with pytest.raises(Exception, match="truncated"):
        probe_image(path, decode=True)


def test_exif_orientation_swaps_the_size(tmp_path: Path) -> None:
    """A portrait photo stored landscape with EXIF orientation 6 is sized and loaded upright."""
    exif = Image.Exif()
    exif[0x0112] = 6
    path = image(tmp_path / "p.jpg", (120, 72), exif=exif.tobytes())
    assert probe_image(path) == (72, 120)
    assert load_image(path).size == (72, 120)
    assert load_image_for_bucket(path, (48, 80)).size == (48, 80)


def test_load_image_for_bucket(tmp_path: Path) -> None:
    """Up- and down-scaling both give exactly the bucket's size in RGB."""
    small = image(tmp_path / "s.png", (30, 20))
    big = image(tmp_path / "b.png", (300, 200))
    rgba = tmp_path / "t.png"
    Image.new("RGBA", (64, 64), (1, 2, 3, 0)).save(rgba)
    assert load_image_for_bucket(small, (64, 48)).size == (64, 48)
    assert load_image_for_bucket(big, (64, 48)).size == (64, 48)
    assert load_image(rgba).mode == "RGB"


def test_captions_empty_unreadable_and_other_extension(tmp_path: Path) -> None:
    """Empty captions are flagged (kept); a non-UTF-8 caption is unreadable, not missing; caption_extension
    is used."""
    d = tmp_path / "images"
    caption(image(d / "a.png"), "", ".caption")
    caption(image(d / "b.png"), "  b text \n", ".caption")
    image(d / "c.png")
    (d / "c.caption").write_bytes(b"\xff\xfe\xfa")
    found = discover_items(dataset(tmp_path, caption_extension=".caption"))
    assert [(i.key, i.caption) for i in found.items] == [("a", ""), ("b", "b text")]
    assert found.empty_captions == [d / "a.png"]
    assert found.missing_captions == []
    assert [u.path for u in found.unreadable_captions] == [d / "c.caption"]
    assert found.unreadable_items == [d / "c.png"] and found.kept_keys == {"c"}
    assert any(
        f"caption {d / 'c.caption'} is not UTF-8 text (byte 0xff at offset 0)" in p for p in found.problems
    )


def test_duplicate_basenames_share_cache_files(tmp_path: Path) -> None:
    """a.png and a.jpg would write the same cache files: the second is left out and reported."""
    d = tmp_path / "images"
    caption(image(d / "a.png"))
    image(d / "a.jpg")
    found = discover_items(dataset(tmp_path))
    assert len(found.items) == 1
    assert any("same basename 'a'" in p for p in found.problems)


def test_too_small_with_no_upscale(tmp_path: Path) -> None:
    """An image under 16 px rounds to a zero side with bucket_no_upscale and is left out."""
    caption(image(tmp_path / "images" / "tiny.png", (10, 40)))
    found = discover_items(dataset(tmp_path, bucket_no_upscale=True))
    assert found.items == [] and found.too_small == [tmp_path / "images" / "tiny.png"]


def test_jsonl_source(tmp_path: Path) -> None:
    """Relative paths from the file's folder, control_path as string, list or numbered keys, bad lines reported."""
    image(tmp_path / "imgs" / "a.png")
    image(tmp_path / "imgs" / "b.png", (120, 72))
    image(tmp_path / "imgs" / "c.png")
    for name in ("ca.png", "cb0.png", "cb1.png", "cc.png"):
        image(tmp_path / "ctrl" / name)
    lines = [
        {"image_path": "imgs/a.png", "caption": "A", "control_path": "ctrl/ca.png"},
        {
            "image_path": str(tmp_path / "imgs" / "b.png"),
            "caption": "B",
            "control_path": ["ctrl/cb0.png", "ctrl/cb1.png"],
        },
        {
            "image_path": "imgs/c.png",
            "caption": "C",
            "control_path_1": "ctrl/cb1.png",
            "control_path_0": "ctrl/cc.png",
        },
        {"image_path": "imgs/missing.png", "caption": "M"},
        {"image_path": "imgs/a.png"},
        {"caption": "no image"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n\n"
    (tmp_path / "list.jsonl").write_text(text)
    ds = Dataset(
        index=0,
        resolution=(64, 64),
        enable_bucket=True,
        image_jsonl_file=tmp_path / "list.jsonl",
        cache_directory=tmp_path / "cache",
    )
    found = discover_items(ds, edit=True)
    assert [(i.key, i.caption, len(i.control_paths)) for i in found.items] == [
        ("a", "A", 1),
        ("b", "B", 2),
        ("c", "C", 2),
    ]
    assert found.items[2].control_paths == (tmp_path / "ctrl" / "cc.png", tmp_path / "ctrl" / "cb1.png")
    assert found.items[1].bucket == (80, 48)
    assert [u.path.name for u in found.unreadable] == ["missing.png"]
    assert found.missing_captions == [tmp_path / "imgs" / "a.png"]
    assert any("line 6" in p and "image_path" in p for p in found.problems)
    assert any("line 7: not valid JSON" in p for p in found.problems)
