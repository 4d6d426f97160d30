"""Importing uploaded images (loose or zipped) into a new dataset folder with its TOML (issue 14 item 4).

Each case builds real files: PNG/JPEG images made with Pillow, zips made with zipfile (including hostile ones:
'..' members, a symbolic link, a member that unpacks past the limit), and checks what lands on disk, what is
listed as skipped, and that the TOML loads and finds the images (and control images) as training would.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.dataset_import import (
    ImportLimits,
    ImportRefused,
    Upload,
    check_dataset_name,
    import_dataset,
    parse_resolution,
)
from qwen_image_studio.data.gallery import build_gallery


def png(color: str = "red", size: tuple[int, int] = (48, 32), fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def upload(name: str, data: bytes) -> Upload:
    stream = tempfile.TemporaryFile()  # noqa: SIM115 - the test keeps it open for the import
    stream.write(data)
    stream.seek(0)
    return Upload(name, stream)


def zipped(name: str, members: dict[str, bytes], links: tuple[str, ...] = ()) -> Upload:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for member, data in members.items():
            zf.writestr(member, data)
        for link in links:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return upload(name, buf.getvalue())


def leftovers(datasets: Path) -> list[str]:
    return sorted(p.name for p in datasets.iterdir()) if datasets.exists() else []


def reasons(result) -> dict[str, str]:
    return {s.file: s.key for s in result.skipped}


def test_loose_images_and_a_caption_make_a_dataset_that_loads(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    files = [upload("cat.png", png("red")), upload("dog.jpg", png("blue", fmt="JPEG"))]
    files.append(upload("cat.txt", "\ufeffa red cat".encode()))  # Notepad's byte-order mark is dropped
    result = import_dataset(datasets, "pets", files)
    folder = datasets / "pets"
    assert result.folder == folder and result.toml == folder / "dataset.toml"
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["cat.png", "cat.txt", "dog.jpg"]
    assert (folder / "images" / "cat.txt").read_text(encoding="utf-8") == "a red cat"
    assert (folder / "images" / "cat.png").read_bytes() == png("red")  # copied byte for byte
    assert result.captions == 1 and len(result.images) == 2 and not result.controls and not result.skipped
    config = load_dataset_config(result.toml)
    (ds,) = config.datasets
    assert ds.image_directory == folder / "images" and ds.cache_directory == folder / "cache"
    assert ds.control_directory is None
    assert (ds.resolution, ds.caption_extension, ds.batch_size, ds.enable_bucket) == (
        (1024, 1024),
        ".txt",
        1,
        True,
    )
    text = result.toml.read_text(encoding="utf-8")
    assert f'image_directory = "{(folder / "images").as_posix()}"' in text  # absolute: same for the reference
    (gallery,) = build_gallery(config, None)
    assert [(e.name, e.caption) for e in gallery.entries] == [("cat.png", "a red cat"), ("dog.jpg", None)]
    assert leftovers(datasets) == ["pets"]  # no staging folder left


def test_a_zip_with_nested_folders_is_flattened_and_junk_is_ignored_or_listed(tmp_path: Path) -> None:
    members = {
        "shoot/day1/a.png": png("red"),
        "shoot/day1/a.txt": b"caption of a",
        "shoot/day2/b.webp": png("green", fmt="WEBP"),
        "shoot/notes.pdf": b"%PDF-1.4",
        "shoot/inner.zip": b"PK\x03\x04",
        "__MACOSX/shoot/day1/._a.png": b"resource fork",
        "shoot/.DS_Store": b"finder",
        "shoot/day2/": b"",
    }
    result = import_dataset(
        tmp_path / "datasets", "shoot", [zipped("shoot.zip", members)], resolution=(512, 768)
    )
    images = tmp_path / "datasets" / "shoot" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["a.png", "a.txt", "b.webp"]
    assert reasons(result) == {
        "shoot.zip!shoot/notes.pdf": "import.skip_not_image",
        "shoot.zip!shoot/inner.zip": "import.skip_nested_zip",
    }
    assert "images: .bmp, .jpeg, .jpg, .png, .webp" in result.skipped[0].reason
    assert load_dataset_config(result.toml).datasets[0].resolution == (512, 768)


def test_zip_slip_members_and_links_are_never_written_outside(tmp_path: Path) -> None:
    members = {"../../evil.png": png(), "/abs/evil2.png": png(), "C:/win/evil3.png": png(), "ok.png": png()}
    result = import_dataset(
        tmp_path / "ws" / "datasets", "safe", [zipped("x.zip", members, links=("link.png",))]
    )
    assert reasons(result) == {
        "x.zip!../../evil.png": "import.skip_unsafe",
        "x.zip!/abs/evil2.png": "import.skip_unsafe",
        "x.zip!C:/win/evil3.png": "import.skip_unsafe",
        "x.zip!link.png": "import.skip_link",
    }
    assert [p.name for p in result.images] == ["ok.png"]
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["ws/datasets/safe/dataset.toml", "ws/datasets/safe/images/ok.png"]


def test_a_zip_bomb_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    bomb = zipped("bomb.zip", {"big.png": b"\0" * (8 * 2**20), "small.png": png()})
    assert bomb.stream.seek(0, io.SEEK_END) < 100_000  # small on the wire
    with pytest.raises(ImportRefused) as err:
        import_dataset(datasets, "bomb", [bomb], limits=ImportLimits(max_unpacked=2**20))
    assert err.value.status == 413 and err.value.key == "import.too_large"
    assert "more than 1 MiB (bomb.zip)" in str(err.value) and "nothing was written" in str(err.value)
    assert leftovers(datasets) == []


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    many = zipped("many.zip", {f"{i}.txt": b"x" for i in range(6)})
    with pytest.raises(ImportRefused) as err:
        import_dataset(tmp_path / "d", "many", [many], limits=ImportLimits(max_members=5))
    assert err.value.status == 413 and "many.zip has 6 entries; at most 5" in str(err.value)
    assert leftovers(tmp_path / "d") == []


def test_the_same_name_in_two_folders_is_refused_naming_both(tmp_path: Path) -> None:
    members = {"a/cat.png": png(), "b/Cat.jpg": png(fmt="JPEG")}
    with pytest.raises(ImportRefused) as err:
        import_dataset(tmp_path / "d", "dup", [zipped("two.zip", members)])
    msg = str(err.value)
    assert err.value.status == 400
    assert "two target images have the name Cat" in msg and "two.zip!a/cat.png and two.zip!b/Cat.jpg" in msg
    assert leftovers(tmp_path / "d") == []


def test_a_broken_image_is_skipped_and_listed_not_fatal(tmp_path: Path) -> None:
    truncated = png("red", (64, 64))[:-40]
    files = [upload("good.png", png()), upload("bad.png", b"not an image"), upload("cut.png", truncated)]
    files.append(upload("bad.txt", b"caption of a broken image"))
    result = import_dataset(tmp_path / "d", "mixed", files)
    assert [p.name for p in result.images] == ["good.png"]
    assert reasons(result) == {
        "bad.png": "import.skip_unreadable",
        "cut.png": "import.skip_unreadable",
        "bad.txt": "import.skip_no_image",
    }
    assert sorted(p.name for p in (tmp_path / "d" / "mixed" / "images").iterdir()) == ["good.png"]


def test_only_broken_files_refuse_the_import_and_leave_nothing(tmp_path: Path) -> None:
    with pytest.raises(ImportRefused) as err:
        import_dataset(tmp_path / "d", "none", [upload("bad.png", b"xx"), upload("readme.md", b"hi")])
    assert err.value.key == "import.no_images" and "from the 2 file(s) given" in str(err.value)
    assert leftovers(tmp_path / "d") == []


def test_an_existing_name_is_refused_and_kept(tmp_path: Path) -> None:
    datasets = tmp_path / "d"
    first = import_dataset(datasets, "pets", [upload("a.png", png("red"))])
    before = first.images[0].read_bytes()
    with pytest.raises(ImportRefused) as err:
        import_dataset(datasets, "Pets", [upload("a.png", png("blue"))])  # letter case ignored
    assert err.value.status == 409 and f"a dataset named Pets exists already ({datasets / 'pets'})" in str(
        err.value
    )
    (datasets / "made.toml").write_text("# the dataset panel's file")
    with pytest.raises(ImportRefused) as err:
        import_dataset(datasets, "made", [upload("a.png", png())])
    assert err.value.status == 409 and "made.toml" in str(err.value)
    assert first.images[0].read_bytes() == before
    assert leftovers(datasets) == ["made.toml", "pets"]


@pytest.mark.parametrize("name", ["", "   ", "a/b", "..", ".hidden", "-x", "a" * 65, "x.", "a\nb", 5])
def test_bad_names_name_the_field_and_what_is_allowed(name: object) -> None:
    with pytest.raises(ImportRefused) as err:
        check_dataset_name(name)
    assert str(err.value).startswith("'name': use 1 to 64 letters, digits, '-', '_' or '.'")


def test_good_names() -> None:
    assert [check_dataset_name(n) for n in (" pets ", "猫_v2", "a.b-c")] == ["pets", "猫_v2", "a.b-c"]


def test_resolution_text() -> None:
    assert parse_resolution("") == (1024, 1024)
    assert parse_resolution("768") == (768, 768)
    assert parse_resolution("1024x768") == (1024, 768)
    with pytest.raises(ImportRefused) as err:
        parse_resolution("1000x768")
    assert str(err.value).startswith("'resolution': each side must be a multiple of 16")


def test_a_control_folder_makes_an_edit_dataset_with_numbered_controls(tmp_path: Path) -> None:
    members = {
        "set/images/shoe.png": png("red"),
        "set/images/shoe.txt": b"make it red",
        "set/images/hat.png": png("blue"),
        "set/control/shoe_0.png": png("white"),
        "set/control/shoe_1.png": png("gray"),
        "set/controls/hat.jpg": png("black", fmt="JPEG"),
        "set/control/orphan.png": png("pink"),
        "set/control/shoe_0.txt": b"not used",
    }
    result = import_dataset(tmp_path / "d", "edit", [zipped("edit.zip", members)])
    folder = tmp_path / "d" / "edit"
    assert sorted(p.name for p in result.controls) == ["hat.jpg", "shoe_0.png", "shoe_1.png"]
    assert reasons(result) == {
        "edit.zip!set/control/shoe_0.txt": "import.skip_control_caption",
        "edit.zip!set/control/orphan.png": "import.skip_unmatched_control",
    }
    config = load_dataset_config(result.toml)
    assert config.datasets[0].control_directory == folder / "control"
    (gallery,) = build_gallery(config, None)
    assert gallery.edit
    pairs = {e.name: [c.path.name for c in e.controls] for e in gallery.entries}
    assert pairs == {"hat.png": ["hat.jpg"], "shoe.png": ["shoe_0.png", "shoe_1.png"]}
    assert not gallery.unmatched_controls and not gallery.missing_controls


def test_uploads_with_folder_names_pair_controls_too(tmp_path: Path) -> None:
    files = [upload("pairs/a.png", png()), upload("pairs/control/a.png", png("blue"))]
    result = import_dataset(tmp_path / "d", "p", files)
    assert [p.name for p in result.controls] == ["a.png"] and result.missing_controls == []


def test_a_caption_beside_its_image_wins(tmp_path: Path) -> None:
    members = {"x/a.png": png(), "x/a.txt": b"beside", "captions/a.txt": b"elsewhere", "b.png": png()}
    result = import_dataset(tmp_path / "d", "c", [zipped("c.zip", members)])
    assert (tmp_path / "d" / "c" / "images" / "a.txt").read_text() == "beside"
    assert reasons(result) == {"c.zip!captions/a.txt": "import.skip_caption_other"}


def test_a_failure_midway_leaves_nothing(tmp_path: Path) -> None:
    datasets = tmp_path / "d"
    noise = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(noise, "PNG")  # about 12 KB
    unsized = Upload("big.png", io.BytesIO(noise.getvalue()))  # no file size known before copying
    with pytest.raises(ImportRefused) as err:
        import_dataset(
            datasets, "half", [upload("a.png", png()), unsized], limits=ImportLimits(max_unpacked=3000)
        )
    assert err.value.key == "import.too_large"  # the limit is checked again while copying
    assert leftovers(datasets) == []


def test_an_unreadable_upload_is_skipped(tmp_path: Path) -> None:
    bad = upload("a.png", png())
    bad.stream.close()
    result = import_dataset(tmp_path / "d", "one", [upload("b.png", png()), bad])
    assert [p.name for p in result.images] == ["b.png"] and reasons(result) == {
        "a.png": "import.skip_member_error"
    }


def test_a_damaged_zip_member_is_skipped_and_the_rest_imported(tmp_path: Path) -> None:
    noise = io.BytesIO()
    Image.frombytes("RGB", (32, 32), os.urandom(32 * 32 * 3)).save(noise, "PNG")
    data = bytearray(zipped("z.zip", {"bad.png": noise.getvalue(), "good.png": png()}).stream.read())
    start = data.index(b"bad.png") + len(b"bad.png")  # the local header's name, then the member's bytes
    data[start + 100] ^= 0xFF
    result = import_dataset(tmp_path / "d", "z", [upload("z.zip", bytes(data))])
    assert [p.name for p in result.images] == ["good.png"]
    assert reasons(result) == {"z.zip!bad.png": "import.skip_member_error"}


def test_a_datasets_path_that_is_a_file_is_a_clear_refusal(tmp_path: Path) -> None:
    (tmp_path / "datasets").write_text("not a folder")
    with pytest.raises(ImportRefused) as err:
        import_dataset(tmp_path / "datasets", "x", [upload("a.png", png())])
    assert err.value.key == "import.write_failed" and "nothing was left behind" in str(err.value)
