"""Dataset TOML: defaults, [general] overrides, paths, JSON lines, and every error message."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path

import pytest

from qwen_image_studio.data.config import (
    DatasetConfigError,
    load_dataset_config,
    parse_dataset_config,
    write_dataset_config,
)
from qwen_image_studio.errors import DatasetError, UserError


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder with images/, images2/, controls/ and list.jsonl."""
    for name in ("images", "images2", "controls"):
        (tmp_path / name).mkdir()
    (tmp_path / "list.jsonl").write_text('{"image_path": "a.png", "caption": "x"}\n')
    return tmp_path


def write(folder: Path, text: str, name: str = "dataset.toml") -> Path:
    """Write a TOML file and return its path."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> DatasetConfigError:
    """The error loading ``path`` raises."""
    with pytest.raises(DatasetConfigError) as info:
        load_dataset_config(path)
    message = str(info.value)
    assert "\n" not in message
    return info.value


def test_minimal_config_takes_the_reference_defaults(folder: Path) -> None:
    """Defaults: 960x544, no buckets, .txt captions, batch 1, repeats 1, cache in the image folder."""
    config = load_dataset_config(write(folder, '[[datasets]]\nimage_directory = "images"\n'))
    (d,) = config.datasets
    assert d.resolution == (960, 544)
    assert (d.enable_bucket, d.bucket_no_upscale) == (False, False)
    assert (d.caption_extension, d.batch_size, d.num_repeats) == (".txt", 1, 1)
    assert d.image_directory == (folder / "images").resolve()
    assert d.cache_directory == d.image_directory
    assert d.label == "datasets[0]"


def test_general_applies_and_datasets_override(folder: Path) -> None:
    """Each [general] key reaches every dataset unless the dataset sets its own."""
    text = """
[general]
resolution = [1024, 768]
caption_extension = ".caption"
batch_size = 2
num_repeats = 3
enable_bucket = true
bucket_no_upscale = true

[[datasets]]
image_directory = "images"
cache_directory = "cache/a"

[[datasets]]
image_directory = "images2"
cache_directory = "cache/b"
resolution = 512
caption_extension = ".txt"
batch_size = 4
num_repeats = 1
enable_bucket = false
bucket_no_upscale = false
control_directory = "controls"
control_resolution = [256, 256]
no_resize_control = true
"""
    a, b = load_dataset_config(write(folder, text)).datasets
    assert (a.resolution, a.caption_extension, a.batch_size, a.num_repeats) == ((1024, 768), ".caption", 2, 3)
    assert (a.enable_bucket, a.bucket_no_upscale) == (True, True)
    assert (b.resolution, b.caption_extension, b.batch_size, b.num_repeats) == ((512, 512), ".txt", 4, 1)
    assert (b.enable_bucket, b.bucket_no_upscale) == (False, False)
    assert b.control_directory == (folder / "controls").resolve()
    assert (b.control_resolution, b.no_resize_control) == ((256, 256), True)
    assert a.cache_directory == (folder / "cache" / "a").resolve()


def test_relative_paths_resolve_against_the_toml_folder(folder: Path, tmp_path_factory, monkeypatch) -> None:
    """The working folder does not matter; ~ is expanded."""
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    monkeypatch.setenv("HOME", str(folder))
    path = write(folder, '[[datasets]]\nimage_directory = "./images"\ncache_directory = "~/c"\n')
    (d,) = load_dataset_config(path).datasets
    assert d.image_directory == (folder / "images").resolve()
    assert d.cache_directory == (folder / "c").resolve()


def test_jsonl_dataset_needs_its_own_cache_directory(folder: Path) -> None:
    """A JSON-lines dataset has no image folder to default the cache to."""
    ok = load_dataset_config(
        write(folder, '[[datasets]]\nimage_jsonl_file = "list.jsonl"\ncache_directory = "c"\n')
    )
    assert ok.datasets[0].image_jsonl_file == (folder / "list.jsonl").resolve()
    assert ok.datasets[0].source == ok.datasets[0].image_jsonl_file
    err = error_of(write(folder, '[[datasets]]\nimage_jsonl_file = "list.jsonl"\n'))
    assert "datasets[0]: cache_directory is required with image_jsonl_file" in str(err)


def test_missing_folder_names_file_dataset_key_and_path(folder: Path) -> None:
    """The message says which file, which dataset, which key and which path."""
    path = write(folder, '[[datasets]]\nimage_directory = "images"\n[[datasets]]\nimage_directory = "nope"\n')
    message = str(error_of(path))
    assert str(path) in message
    assert f"datasets[1]: image_directory {(folder / 'nope').resolve()} does not exist" in message


def test_missing_control_directory_and_jsonl(folder: Path) -> None:
    """control_directory and image_jsonl_file are checked too."""
    text = '[[datasets]]\nimage_directory = "images"\ncontrol_directory = "ctrl"\n'
    assert "control_directory" in str(error_of(write(folder, text)))
    text = '[[datasets]]\nimage_jsonl_file = "missing.jsonl"\ncache_directory = "c"\n'
    assert "image_jsonl_file" in str(error_of(write(folder, text))) and "not a file" in str(
        error_of(write(folder, text))
    )


def test_check_paths_false_skips_existence(folder: Path) -> None:
    """A configuration for folders still to be created can be validated without them."""
    config = parse_dataset_config(
        {"datasets": [{"image_directory": "later"}]}, base_dir=folder, check_paths=False
    )
    assert config.datasets[0].image_directory == (folder / "later").resolve()


def test_image_directory_and_jsonl_both_or_neither(folder: Path) -> None:
    """Exactly one source per dataset."""
    both = '[[datasets]]\nimage_directory = "images"\nimage_jsonl_file = "list.jsonl"\n'
    assert "set image_directory or image_jsonl_file, not both" in str(error_of(write(folder, both)))
    neither = '[[datasets]]\ncache_directory = "c"\n'
    assert "datasets[0]: set image_directory" in str(error_of(write(folder, neither)))


def test_shared_cache_directory(folder: Path) -> None:
    """Two datasets may not write to one cache folder, whether set or defaulted."""
    text = '[[datasets]]\nimage_directory = "images"\ncache_directory = "c"\n'
    text += '[[datasets]]\nimage_directory = "images2"\ncache_directory = "./c/"\n'
    message = str(error_of(write(folder, text)))
    assert f"datasets[0] and datasets[1] share cache_directory {(folder / 'c').resolve()}" in message
    text = '[[datasets]]\nimage_directory = "images"\n[[datasets]]\nimage_directory = "images"\ncache_directory = "c"\n'
    text += '[[datasets]]\nimage_directory = "images"\n'
    message = str(error_of(write(folder, text)))
    assert "datasets[0] and datasets[2] share" in message and "defaults to image_directory" in message


@pytest.mark.parametrize(
    "value",
    ["[1000, 1000]", "[1024, 8]", "[8192, 1024]", "0", "[0, 0]"],
)
def test_invalid_resolution_names_the_allowed_range(folder: Path, value: str) -> None:
    """Sides must be multiples of 16 from 16 to 4096; the message shows a fix."""
    message = str(
        error_of(
            write(folder, f'[general]\nresolution = {value}\n[[datasets]]\nimage_directory = "images"\n')
        )
    )
    assert f"[general]: resolution = {value}" in message
    assert "multiple of 16 from 16 to 4096" in message


@pytest.mark.parametrize("value", ["[1024]", "[1024, 1024, 3]", '"1024"', "true", "[1024.0, 1024]"])
def test_malformed_resolution(folder: Path, value: str) -> None:
    """Anything but [W, H] or one integer."""
    text = f'[[datasets]]\nimage_directory = "images"\ncontrol_resolution = {value}\n'
    message = str(error_of(write(folder, text)))
    assert (
        "datasets[0]: control_resolution" in message and "expected [width, height] or one integer" in message
    )


def test_resolution_fix_suggestion(folder: Path) -> None:
    """The nearest valid value is suggested."""
    text = '[general]\nresolution = [1000, 1030]\n[[datasets]]\nimage_directory = "images"\n'
    assert "e.g. [1008, 1024]" in str(error_of(write(folder, text)))


def test_unknown_keys_list_the_allowed_names(folder: Path) -> None:
    """Typos get a suggestion and the allowed names."""
    message = str(error_of(write(folder, '[[datasets]]\nimage_directory = "images"\nnum_repeat = 2\n')))
    assert "datasets[0]: unknown key 'num_repeat' (did you mean 'num_repeats'?)" in message
    assert "allowed: resolution, caption_extension" in message and "image_jsonl_file" in message
    message = str(error_of(write(folder, '[general]\nfoo = 1\n[[datasets]]\nimage_directory = "images"\n')))
    assert "[general]: unknown key 'foo'" in message
    assert "image_directory" not in message.split("allowed:")[1]


def test_unknown_top_level_and_misplaced_keys(folder: Path) -> None:
    """Top-level keys other than the two tables; dataset-only keys in [general]; video keys."""
    assert "unknown top-level key 'dataset'" in str(
        error_of(write(folder, '[[dataset]]\nimage_directory = "i"\n'))
    )
    text = '[general]\nimage_directory = "images"\n[[datasets]]\nimage_directory = "images"\n'
    assert "'image_directory' belongs in a [[datasets]] table" in str(error_of(write(folder, text)))
    text = '[[datasets]]\nvideo_directory = "images"\n'
    assert "video-dataset key" in str(error_of(write(folder, text)))


def test_wrong_types(folder: Path) -> None:
    """Strings where numbers belong, zero repeats, flags that are not booleans."""
    base = '[[datasets]]\nimage_directory = "images"\n'
    assert 'batch_size = "2": expected a whole number' in str(
        error_of(write(folder, base + 'batch_size = "2"\n'))
    )
    assert "num_repeats = 0: must be at least 1" in str(error_of(write(folder, base + "num_repeats = 0\n")))
    assert "enable_bucket = 1: expected true or false" in str(
        error_of(write(folder, base + "enable_bucket = 1\n"))
    )
    assert "caption_extension = 5" in str(error_of(write(folder, base + "caption_extension = 5\n")))


def test_caption_extension_needs_a_dot(folder: Path) -> None:
    """'txt' would look for 'imagetxt'."""
    text = '[[datasets]]\nimage_directory = "images"\ncaption_extension = "txt"\n'
    assert "must start with a dot, e.g. '.txt'" in str(error_of(write(folder, text)))


def test_control_directory_must_differ_from_images(folder: Path) -> None:
    """Otherwise every image would be its own control."""
    text = '[[datasets]]\nimage_directory = "images"\ncontrol_directory = "images"\n'
    assert "control_directory must differ from image_directory" in str(error_of(write(folder, text)))


def test_file_level_errors(folder: Path) -> None:
    """A missing file, bad TOML and a TOML without datasets."""
    assert "does not exist" in str(error_of(folder / "missing.toml"))
    assert "not valid TOML" in str(error_of(write(folder, "[general\n")))
    assert "no [[datasets]] table" in str(error_of(write(folder, "[general]\nbatch_size = 1\n")))


def test_every_problem_is_collected(folder: Path) -> None:
    """All problems are listed; the message starts with the first and counts the rest."""
    text = (
        '[[datasets]]\nimage_directory = "nope"\n[[datasets]]\nimage_directory = "images"\nbatch_size = 0\n'
    )
    err = error_of(write(folder, text))
    assert len(err.problems) == 2
    assert "and 1 more" in str(err)
    assert isinstance(err, DatasetError) and isinstance(err, UserError)


def test_deprecated_keys_are_read_under_their_new_names(folder: Path) -> None:
    """The reference trainer's older edit keys still work."""
    text = '[[datasets]]\nimage_directory = "images"\nqwen_image_edit_no_resize_control = true\n'
    text += "qwen_image_edit_control_resolution = [512, 512]\n"
    (d,) = load_dataset_config(write(folder, text)).datasets
    assert d.no_resize_control is True and d.control_resolution == (512, 512)


def test_skip_corrupted_cache_is_accepted_and_warns_that_it_has_no_effect(folder: Path, caplog) -> None:
    """The reference trainer's key loads (type-checked, in [general] or a dataset) and warns once per table."""
    text = '[general]\nskip_corrupted_cache = true\n[[datasets]]\nimage_directory = "images"\n'
    text += "skip_corrupted_cache = false\n"
    with caplog.at_level(logging.WARNING, logger="qwen_image_studio.data.config"):
        (d,) = load_dataset_config(write(folder, text)).datasets
    warnings = [r.getMessage() for r in caplog.records if "skip_corrupted_cache" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].endswith(
        "[general]: key 'skip_corrupted_cache' has no effect here and is ignored: cache files are never "
        "skipped, so every process and a resumed run see the same batches; a cache file with an unreadable "
        "header is reported before training with the command that remakes it"
    )
    assert "datasets[0]: key 'skip_corrupted_cache' has no effect here" in warnings[1]
    assert d.skip_corrupted_cache is False
    base = '[[datasets]]\nimage_directory = "images"\n'
    assert "skip_corrupted_cache = 1: expected true or false" in str(
        error_of(write(folder, base + "skip_corrupted_cache = 1\n"))
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qwen_image_studio.data.config"):
        load_dataset_config(write(folder, base))
    assert not caplog.records


def test_json_config(folder: Path) -> None:
    """The reference trainer reads .json dataset configs too."""
    path = write(folder, '{"datasets": [{"image_directory": "images", "resolution": [64, 64]}]}', "d.json")
    assert load_dataset_config(path).datasets[0].resolution == (64, 64)


def test_write_round_trip(folder: Path) -> None:
    """write then load gives the same datasets; [general] stays [general]; per-dataset overrides stay."""
    text = """
[general]
resolution = [512, 512]
enable_bucket = true
num_repeats = 2

[[datasets]]
image_directory = "images"
cache_directory = "cache/a"
control_directory = "controls"

[[datasets]]
image_directory = "images2"
num_repeats = 5
control_resolution = 256
"""
    config = load_dataset_config(write(folder, text))
    out = write_dataset_config(config, folder / "out" / "copy.toml")
    data = tomllib.loads(out.read_text())
    assert data["general"] == {"resolution": [512, 512], "enable_bucket": True, "num_repeats": 2}
    assert data["datasets"][1] == {
        "image_directory": str((folder / "images2").resolve()),
        "num_repeats": 5,
        "control_resolution": [256, 256],
    }
    again = load_dataset_config(out)
    assert [d.model_dump() for d in again.datasets] == [d.model_dump() for d in config.datasets]
    assert "[[datasets]]" in out.read_text() and "resolution = [512, 512]" in out.read_text()


def test_write_relative(folder: Path) -> None:
    """relative=True writes paths inside the TOML's folder relative to it, and they load back the same."""
    config = load_dataset_config(
        write(folder, '[[datasets]]\nimage_directory = "images"\ncache_directory = "c"\n')
    )
    out = write_dataset_config(config, folder / "rel.toml", relative=True)
    data = tomllib.loads(out.read_text())
    assert data["datasets"][0] == {"image_directory": "images", "cache_directory": "c"}
    assert load_dataset_config(out).datasets == config.datasets


def test_create_from_the_ui_and_refuse_invalid(folder: Path) -> None:
    """A form's dict validates like a file; an invalid configuration is never written."""
    form = {
        "general": {"resolution": [512, 512]},
        "datasets": [{"image_directory": "images", "num_repeats": 2}],
    }
    config = parse_dataset_config(form, base_dir=folder)
    out = write_dataset_config(config, folder / "ui.toml")
    assert load_dataset_config(out).datasets == config.datasets

    bad = config.model_copy(
        update={"datasets": [config.datasets[0].model_copy(update={"resolution": (1000, 1000)})]}
    )
    with pytest.raises(DatasetConfigError, match="multiple of 16"):
        write_dataset_config(bad, folder / "bad.toml")
    assert not (folder / "bad.toml").exists()
