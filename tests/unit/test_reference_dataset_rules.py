"""Dataset rules rebuilt from the reference trainer's documentation (musubi-tuner's dataset_config.md):
control image sizes with ``control_resolution`` / ``no_resize_control``, and EXIF orientation.

The documented control rules, in our words:

* by default a control image is resized to the target image's bucket;
* ``control_resolution`` gives every control image a bucket of its own of that area (aspect-ratio
  bucketing: a width near ``sqrt(area * ratio)`` in 16-px steps, two steps either side, the height
  ``floor16(area // width)``, the pair nearest the control's aspect ratio);
* ``no_resize_control`` keeps the control's own size, cropped to the 16-px rounding unit; the
  documentation's example: a 512x512 control beside a 960x544 image stays 512x512;
* both: ``control_resolution`` is the maximum area; a control with more pixels than it is resized to it
  (2048x1333 with [1024, 1024] becomes 1264x816), one with at most that many keeps its own size, cropped
  to 16 (777x512 becomes 768x512).

The reference's dataset code keeps a control within the area at exactly 777x512 (no crop); its latent,
97 cells wide, cannot be cut into the DiT's 2x2 patches, so its training stops there (shown end to end in
tests/integration/test_reference_caches.py). Wherever the reference trains, the sizes below agree.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from qwen_image_studio.data.buckets import STEP, control_bucket, round_down
from qwen_image_studio.data.config import Dataset
from qwen_image_studio.data.images import load_image, probe_image, probe_image_orientation
from qwen_image_studio.data.inspect import format_report, inspect_dataset
from qwen_image_studio.data.items import discover_items

MAX = (1024, 1024)
TARGET = (960, 544)


@pytest.mark.parametrize(
    ("control", "both", "resolution_only", "no_resize_only"),
    [
        # the numbers: a large control is scaled down to the area, a small one keeps its size
        ((2048, 1333), (1264, 816), (1264, 816), (2048, 1328)),
        ((777, 512), (768, 512), (1248, 832), (768, 512)),
        # the width picks the height, so a portrait control is not the landscape one turned
        ((1333, 2048), (816, 1280), (816, 1280), (1328, 2048)),
        ((1920, 1080), (1360, 768), (1360, 768), (1920, 1072)),
        ((1080, 1920), (768, 1360), (768, 1360), (1072, 1920)),
        ((4000, 3000), (1184, 880), (1184, 880), (4000, 2992)),
        ((3000, 500), (2496, 416), (2496, 416), (2992, 496)),
        # exactly the area is not "more pixels": kept; one pixel column more is resized
        ((1024, 1024), (1024, 1024), (1024, 1024), (1024, 1024)),
        ((1025, 1024), (1024, 1024), (1024, 1024), (1024, 1024)),
        ((1000, 1000), (992, 992), (1024, 1024), (992, 992)),
        ((1200, 900), (1184, 880), (1184, 880), (1200, 896)),
    ],
)
def test_control_sizes_follow_the_documented_rules(
    control: tuple[int, int],
    both: tuple[int, int],
    resolution_only: tuple[int, int],
    no_resize_only: tuple[int, int],
) -> None:
    """Each option alone and both together, with control_resolution = [1024, 1024]."""
    assert control_bucket(control, TARGET, MAX, no_resize_control=True) == both
    assert control_bucket(control, TARGET, MAX) == resolution_only
    assert control_bucket(control, TARGET, no_resize_control=True) == no_resize_only
    assert control_bucket(control, TARGET) == TARGET


def test_the_documentation_example_of_no_resize_control() -> None:
    """A 512x512 control beside a 960x544 image stays 512x512, with or without a control_resolution."""
    assert control_bucket((512, 512), TARGET, no_resize_control=True) == (512, 512)
    assert control_bucket((512, 512), TARGET, MAX, no_resize_control=True) == (512, 512)


sizes = st.tuples(st.integers(16, 5000), st.integers(16, 5000))
areas = st.tuples(st.integers(4, 128), st.integers(4, 128)).map(lambda r: (r[0] * STEP, r[1] * STEP))


@given(sizes, areas)
def test_control_resolution_with_no_resize_is_a_maximum_area(size: tuple[int, int], res: tuple[int, int]) -> None:
    """Within the area: the own size cropped to 16 (never scaled); above it: the control_resolution bucket."""
    got = control_bucket(size, TARGET, res, no_resize_control=True)
    assert got[0] % STEP == 0 and got[1] % STEP == 0
    if size[0] * size[1] <= res[0] * res[1]:
        assert got == (round_down(size[0]), round_down(size[1]))
    else:
        assert got == control_bucket(size, TARGET, res)
        assert got[0] * got[1] <= res[0] * res[1]


def _png(path: Path, size: tuple[int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _dataset(root: Path, **fields: object) -> Dataset:
    values: dict = {
        "index": 0,
        "image_directory": root / "images",
        "cache_directory": root / "cache",
        "resolution": (64, 64),
        "enable_bucket": True,
        **fields,
    }
    return Dataset(**values)


def test_discovery_uses_the_rule_and_reports_no_conflict(tmp_path: Path) -> None:
    """Both options together are a valid combination (no "ignored" problem); each control gets its size."""
    for name, control in (("big", (300, 200)), ("small", (120, 72))):
        _png(tmp_path / "images" / f"{name}.png", (96, 96)).with_suffix(".txt").write_text("a caption")
        _png(tmp_path / "controls" / f"{name}.png", control)
    ds = _dataset(
        tmp_path, control_directory=tmp_path / "controls", control_resolution=(128, 128), no_resize_control=True
    )
    found = discover_items(ds, edit=True)
    assert found.problems == []
    by_key = {i.key: i.control_buckets for i in found.items}
    assert by_key == {"big": ((160, 96),), "small": ((112, 64),)}


def _jpeg(path: Path, stored: tuple[int, int], orientation: int | None) -> Path:
    """A JPEG written by Pillow whose pixels are ``stored`` (width, height), with an EXIF orientation tag."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", stored, (10, 120, 200))
    im.paste((250, 250, 0), (0, 0, stored[0] // 4, stored[1] // 4))  # a marked top-left corner
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(path, exif=exif.tobytes())
    return path


def test_exif_orientation_is_applied_and_inspect_marks_the_image(tmp_path: Path) -> None:
    """A phone photo stored 96x64 with orientation 6 trains as 64x96 (as viewers show it); inspect says
    that the reference trainer, which ignores EXIF, would use 96x64. Upright images are not marked."""
    rotated = _jpeg(tmp_path / "images" / "phone.jpg", (96, 64), 6)
    upright = _jpeg(tmp_path / "images" / "plain.jpg", (96, 64), 1)
    untagged = _jpeg(tmp_path / "images" / "none.jpg", (96, 64), None)
    flipped = _jpeg(tmp_path / "images" / "upside.jpg", (96, 64), 3)
    mirror = _jpeg(tmp_path / "images" / "mirror.jpg", (96, 64), 2)
    for p in (rotated, upright, untagged, flipped, mirror):
        p.with_suffix(".txt").write_text("a photo")

    assert probe_image_orientation(rotated) == ((64, 96), 6)
    assert probe_image(rotated) == (64, 96) and load_image(rotated).size == (64, 96)
    assert probe_image_orientation(upright) == ((96, 64), 1)
    assert probe_image_orientation(untagged) == ((96, 64), 1)
    with Image.open(rotated) as raw:
        assert raw.size == (96, 64)  # the stored pixels, which the reference trainer uses

    found = discover_items(_dataset(tmp_path))
    sizes = {i.key: i.size for i in found.items}
    assert sizes == {"phone": (64, 96), "plain": (96, 64), "none": (96, 64), "upside": (96, 64), "mirror": (96, 64)}
    assert {r.path.name: r.orientation for r in found.rotated} == {"phone.jpg": 6, "upside.jpg": 3, "mirror.jpg": 2}
    phone = next(i for i in found.items if i.key == "phone")
    assert phone.latent_cache_path.name == "phone_0064x0096_qi.safetensors"

    toml = tmp_path / "dataset.toml"
    toml.write_text(
        f'[general]\nresolution = [64, 64]\n\n[[datasets]]\nimage_directory = "{tmp_path / "images"}"\n'
        f'cache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    report = inspect_dataset(toml)
    (s,) = report.datasets
    notes = {Path(r.path).name: r for r in s.rotated}
    assert set(notes) == {"phone.jpg", "upside.jpg", "mirror.jpg"}
    phone_note = notes["phone.jpg"]
    assert (phone_note.size, phone_note.stored_size) == ((64, 96), (96, 64))
    assert phone_note.note == (
        "rotated by EXIF orientation 6: trained as 64x96, as viewers show it; "
        "the reference trainer ignores EXIF and would use the stored 96x64 pixels"
    )
    assert notes["upside.jpg"].note.startswith("rotated by EXIF orientation 3: trained as 96x64")
    assert notes["mirror.jpg"].note.startswith("mirrored by EXIF orientation 2")
    assert not any("EXIF" in p for p in report.problems), "a note, not a problem"
    text = format_report(report)
    assert "EXIF orientation applied to 3 image(s):" in text
    assert f"{rotated}: rotated by EXIF orientation 6: trained as 64x96" in text
    assert report.model_dump(mode="json")["datasets"][0]["rotated"][0]["orientation"] in (2, 3, 6)


def test_exif_rotated_control_images_are_marked_too(tmp_path: Path) -> None:
    """Edit mode: a control image turned by EXIF is sized as shown and listed once."""
    _png(tmp_path / "images" / "a.png", (64, 96)).with_suffix(".txt").write_text("a caption")
    _jpeg(tmp_path / "controls" / "a.jpg", (96, 64), 8)
    ds = _dataset(tmp_path, control_directory=tmp_path / "controls", no_resize_control=True)
    found = discover_items(ds, edit=True)
    (item,) = found.items
    assert item.control_sizes == ((64, 96),) and item.control_buckets == ((64, 96),)
    assert [(r.path.name, r.orientation, r.stored_size) for r in found.rotated] == [("a.jpg", 8, (96, 64))]
