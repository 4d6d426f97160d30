"""``dataset inspect`` on the demo dataset and on broken copies of it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from qwen_image_studio.data.cache_paths import (
    control_fingerprint,
    control_tensor_key,
    expected_latent_shape,
    latent_cache_metadata,
    latent_tensor_key,
    text_cache_metadata,
    text_tensor_key,
)
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.inspect import DatasetReport, format_report, inspect_dataset, run_inspect
from qwen_image_studio.data.items import discover_items
from qwen_image_studio.demo.dataset import create_demo_dataset
from qwen_image_studio.errors import DatasetError


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo dataset, built once."""
    root = tmp_path_factory.mktemp("demo_template")
    create_demo_dataset(root)
    return root


@pytest.fixture
def demo(tmp_path: Path) -> dict[str, Path]:
    """A fresh demo dataset per test, safe to break."""
    return create_demo_dataset(tmp_path / "demo")


def test_demo_dataset_t2i(demo: dict[str, Path]) -> None:
    """Six images, captions for all, three buckets of two, nothing cached yet, no problems."""
    report = inspect_dataset(demo["t2i_toml"])
    assert report.problems == [] and report.arch == "qi"
    (s,) = report.datasets
    assert (s.image_count, s.usable, s.captions_found, s.captions_missing) == (6, 6, 6, [])
    assert [(b.width, b.height, b.images) for b in s.buckets] == [(48, 80, 2), (64, 64, 2), (80, 48, 2)]
    assert s.latent_cache.present == 0 and len(s.latent_cache.missing) == 6
    assert s.cache_directory == str(demo["cache_t2i"])
    assert s.controls is None
    text = format_report(report)
    assert "No problems found." in text and "80x48" in text


def test_demo_dataset_edit(demo: dict[str, Path]) -> None:
    """Every target has one control image; caches carry the qie tag."""
    report = inspect_dataset(demo["edit_toml"], edit=True)
    assert report.problems == []
    (s,) = report.datasets
    assert s.controls is not None
    assert (s.controls.matched, s.controls.missing, s.controls.unmatched) == (6, [], [])
    assert s.controls.per_image == {"1": 6}
    assert all(p.endswith("_qie.safetensors") for p in s.latent_cache.missing)
    assert s.cache_directory == str(demo["cache_edit"])


def test_demo_is_deterministic(demo_template: Path, tmp_path: Path) -> None:
    """Same seed, same bytes; another seed, other images."""

    def digest(root: Path) -> str:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".png", ".txt"))
        return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in files)).hexdigest()

    create_demo_dataset(tmp_path / "same", seed=0)
    create_demo_dataset(tmp_path / "other", seed=1)
    assert digest(tmp_path / "same") == digest(demo_template)
    assert digest(tmp_path / "other") != digest(demo_template)


def test_num_repeats_and_batch_size_show_in_buckets(demo: dict[str, Path]) -> None:
    """repeats multiply samples; batches are counted per bucket."""
    path = demo["t2i_toml"]
    path.write_text(
        path.read_text()
        .replace("num_repeats = 1", "num_repeats = 3")
        .replace("batch_size = 1", "batch_size = 4")
    )
    (s,) = inspect_dataset(path).datasets
    assert [(b.samples, b.batches) for b in s.buckets] == [(6, 2), (6, 2), (6, 2)]
    assert (s.samples_per_epoch, s.batches_per_epoch) == (18, 6)
    assert "2 image(s) x 3 = 6 sample(s), 2 batch(es)" in format_report(inspect_dataset(path))


def test_missing_captions_and_corrupt_image(demo: dict[str, Path]) -> None:
    """Problems are listed by file; the rest of the dataset is still usable."""
    (demo["images"] / "demo_01.txt").unlink()
    (demo["images"] / "demo_02.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    report = inspect_dataset(demo["t2i_toml"])
    (s,) = report.datasets
    assert s.usable == 4
    assert s.captions_missing == [str(demo["images"] / "demo_01.png")]
    assert [u.path for u in s.unreadable] == [str(demo["images"] / "demo_02.png")]
    assert any("demo_01.png" in p and "lack caption files" in p for p in report.problems)
    assert any("demo_02.png" in p and "cannot be read" in p for p in report.problems)
    assert all(p.startswith("datasets[0]: ") for p in report.problems)


def test_missing_and_unmatched_controls(demo: dict[str, Path]) -> None:
    """A target without control and a control without target."""
    (demo["controls"] / "demo_03.png").rename(demo["controls"] / "stray.png")
    (s,) = inspect_dataset(demo["edit_toml"], edit=True).datasets
    assert s.usable == 5
    assert s.controls.missing == [str(demo["images"] / "demo_03.png")]
    assert s.controls.unmatched == [str(demo["controls"] / "stray.png")]


def fake_cache(config_path: Path, edit: bool = False, record_controls: bool = True) -> list:
    """Write cache files for every item as the caching stages would (shapes, caption and control metadata).

    ``record_controls=False`` writes edit-mode files as older versions did, without ``control_sha256``.
    """
    (dataset,) = load_dataset_config(config_path).datasets
    items = discover_items(dataset, edit=edit).items
    for item in items:
        fingerprint = None
        if record_controls and item.encoded_controls:
            fingerprint = control_fingerprint(item.encoded_controls)
        shape = expected_latent_shape(item.bucket)
        tensors = {latent_tensor_key(shape, "bfloat16"): np.zeros((16, *shape), np.float32)}
        for i, b in enumerate(item.control_buckets):
            c = expected_latent_shape(b)
            tensors[control_tensor_key(i, c, "bfloat16")] = np.zeros((16, *c), np.float32)
        item.latent_cache_path.parent.mkdir(parents=True, exist_ok=True)
        meta = latent_cache_metadata(item.size, fingerprint)
        save_file(tensors, str(item.latent_cache_path), metadata=meta)
        emb = {text_tensor_key("bfloat16"): np.zeros((4, 8), np.float32)}
        save_file(emb, str(item.text_cache_path), metadata=text_cache_metadata(item.caption, fingerprint))
    return items


def test_caches_present_outdated_and_stale(demo: dict[str, Path]) -> None:
    """A full cache is clean; a changed resolution and caption make files outdated; a deleted image leaves stale files."""
    items = fake_cache(demo["edit_toml"], edit=True)
    report = inspect_dataset(demo["edit_toml"], edit=True)
    (s,) = report.datasets
    assert (s.latent_cache.present, s.text_cache.present, report.problems) == (6, 6, [])

    (demo["images"] / "demo_00.txt").write_text("a new caption")
    (demo["images"] / "demo_05.png").unlink()
    path = demo["edit_toml"]
    path.write_text(path.read_text().replace("resolution = [64, 64]", "resolution = [128, 128]"))
    report = inspect_dataset(path, edit=True)
    (s,) = report.datasets
    assert len(s.latent_cache.outdated) == 5
    assert s.text_cache.outdated == [str(items[0].text_cache_path)]
    assert sorted(s.stale_cache_files) == sorted(
        [str(items[5].latent_cache_path), str(items[5].text_cache_path)]
    )
    assert any("belong to no current image" in p for p in report.problems)
    assert any("latent cache file(s) were made with other settings" in p for p in report.problems)
    # the text-to-image view of the same folder does not count edit caches as its own
    assert inspect_dataset(demo["t2i_toml"]).datasets[0].stale_cache_files == []


def _replace_keeping_size(path: Path) -> None:
    """Write another picture of the same size (and so the same bucket) under the same name."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        ImageOps.invert(im.convert("RGB")).save(path)


def test_a_replaced_control_image_makes_both_caches_outdated(demo: dict[str, Path], capsys) -> None:
    """Only the item whose control image changed is outdated, with a reason naming that control image."""
    items = fake_cache(demo["edit_toml"], edit=True)
    control = demo["controls"] / "demo_03.png"
    assert items[3].control_paths == (control,)
    _replace_keeping_size(control)
    report = inspect_dataset(demo["edit_toml"], edit=True)
    (s,) = report.datasets
    latent, text = str(items[3].latent_cache_path), str(items[3].text_cache_path)
    assert s.latent_cache.outdated == [latent] and s.text_cache.outdated == [text]
    for cache, path in ((s.latent_cache, latent), (s.text_cache, text)):
        assert cache.reasons == {path: f"control image {control} changed since it was cached"}
    assert len(report.problems) == 2
    assert all("demo_03" in p and str(control) in p for p in report.problems)

    assert run_inspect([str(demo["edit_toml"]), "--edit", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["datasets"][0]["text_cache"]["outdated"] == [text]
    assert str(control) in data["datasets"][0]["text_cache"]["reasons"][text]
    assert run_inspect([str(demo["edit_toml"]), "--edit"]) == 0
    out = capsys.readouterr().out
    assert f"outdated: demo_03_qie_te.safetensors: control image {control} changed" in out
    assert "text cache: 6 present, 0 missing, 1 outdated" in out

    fake_cache(demo["edit_toml"], edit=True)  # cached again from the new control image
    assert inspect_dataset(demo["edit_toml"], edit=True).problems == []


def test_edit_caches_without_a_control_record_are_current(demo: dict[str, Path]) -> None:
    """Edit-mode files without control_sha256 (the reference trainer's, older versions') are current (one
    whose record disagrees is not: see above); text-to-image files never carry the record."""
    fake_cache(demo["edit_toml"], edit=True, record_controls=False)
    report = inspect_dataset(demo["edit_toml"], edit=True)
    (s,) = report.datasets
    assert (s.latent_cache.present, s.text_cache.present, report.problems) == (6, 6, [])
    assert s.latent_cache.outdated == [] and s.text_cache.outdated == []
    fake_cache(demo["t2i_toml"])
    assert inspect_dataset(demo["t2i_toml"]).problems == []


def test_a_copied_dataset_keeps_its_caches_valid(demo_template: Path, tmp_path: Path) -> None:
    """The control record is content-based: a copy (new paths, inodes and times) needs no re-caching."""

    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        toml = dst / "dataset_edit.toml"
        toml.write_text(toml.read_text().replace(src.as_posix(), dst.as_posix()))
        return toml

    fake_cache(copy(demo_template, tmp_path / "original"), edit=True)
    toml = copy(tmp_path / "original", tmp_path / "copy")
    report = inspect_dataset(toml, edit=True)
    (s,) = report.datasets
    assert (s.latent_cache.present, s.text_cache.present, report.problems) == (6, 6, [])


def test_shared_cache_directory_is_an_invalid_config(demo: dict[str, Path], capsys) -> None:
    """Two datasets over one cache folder: inspect refuses with exit code 2 and a one-line message."""
    path = demo["root"] / "shared.toml"
    images = demo["images"].as_posix()
    path.write_text(
        f'[[datasets]]\nimage_directory = "{images}"\n[[datasets]]\nimage_directory = "{images}"\n'
    )
    with pytest.raises(DatasetError, match="share cache_directory"):
        inspect_dataset(path)
    assert run_inspect([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "datasets[0] and datasets[1] share cache_directory" in err
    assert err.count("\n") == 1
    assert run_inspect([str(path), "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert "share cache_directory" in out["error"] and len(out["problems"]) == 1


def test_run_inspect_exit_codes_and_json(demo: dict[str, Path], capsys) -> None:
    """0 with a report (problems included), 2 for an invalid config or bad arguments; --json parses."""
    assert run_inspect([str(demo["t2i_toml"]), "--json"]) == 0
    report = DatasetReport.model_validate_json(capsys.readouterr().out)
    assert report.usable == 6

    (demo["images"] / "demo_04.txt").unlink()
    assert run_inspect([str(demo["edit_toml"]), "--edit", "--deep"]) == 0
    out = capsys.readouterr().out
    assert "1 problem(s):" in out and "demo_04.png" in out

    assert run_inspect([str(demo["root"] / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_inspect([]) == 2
    assert run_inspect(["--help"]) == 0
    assert "dataset inspect" in capsys.readouterr().out


def test_inspect_survives_a_broken_copy_of_every_kind(demo_template: Path, tmp_path: Path) -> None:
    """Several faults at once still give a full report."""
    root = tmp_path / "copy"
    shutil.copytree(demo_template, root)
    images = root / "images"
    (images / "demo_00.txt").unlink()
    (images / "demo_01.png").write_bytes(b"")
    (images / "demo_02.txt").write_text("   ")
    (images / "extra.jpeg").write_bytes(b"junk")
    toml = root / "dataset_edit.toml"
    toml.write_text(toml.read_text().replace(demo_template.as_posix(), root.as_posix()))
    report = inspect_dataset(toml, edit=True)
    (s,) = report.datasets
    assert s.image_count == 7 and s.usable == 4
    assert len(report.problems) >= 4
    assert s.captions_empty == [str(images / "demo_02.png")]
