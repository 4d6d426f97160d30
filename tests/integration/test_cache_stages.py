"""The two caching stages on the demo models: what they write equals what diffusers computes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import train_support as ts
from safetensors import safe_open

from qwen_image_studio.data.cache_paths import (
    CONTROL_FINGERPRINT_KEY,
    IMAGE_FINGERPRINT_KEY,
    control_fingerprint,
    file_sha256,
)
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.images import load_image, load_image_for_bucket
from qwen_image_studio.data.inspect import inspect_dataset
from qwen_image_studio.data.items import discover_items
from qwen_image_studio.events import read_events
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage

ROOT = Path(__file__).resolve().parents[2]


def _dataset_copy(demo: Path, tmp: Path, edit: bool) -> Path:
    """A dataset TOML over the demo images with its own cache folder (batches of 2)."""
    return ts.dataset_toml(demo, tmp, edit, batch_size=2)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def _models(demo: Path) -> dict[str, Path]:
    diffusers = demo / "models" / "diffusers"
    return {
        **ts.models(demo),
        "t2i_root": diffusers / "Qwen-Image",
        "edit_root": diffusers / "Qwen-Image-Edit-2509",
    }


@pytest.fixture(scope="module")
def edit_caches(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Latent and text caches of the demo dataset in edit-2509 mode, written by the two stages."""
    tmp = tmp_path_factory.mktemp("edit_cache")
    toml = _dataset_copy(demo, tmp, edit=True)
    m = _models(demo)
    common = [
        "--dataset_config",
        str(toml),
        "--model_version",
        "edit-2509",
        "--device",
        "cpu",
        "--events_file",
        str(tmp / "events.jsonl"),
    ]
    assert run_stage(Stage.CACHE_LATENTS, [*common, "--vae", str(m["vae"])]) == 0
    assert run_stage(Stage.CACHE_TEXT, [*common, "--text_encoder", str(m["te"])]) == 0
    return toml


def test_latents_equal_diffusers_vae_encode_and_normalisation(demo: Path, edit_caches: Path) -> None:
    from diffusers import AutoencoderKLQwenImage, QwenImageEditPlusPipeline

    m = _models(demo)
    vae = AutoencoderKLQwenImage.from_pretrained(m["edit_root"], subfolder="vae", dtype=torch.float32)
    pipe = QwenImageEditPlusPipeline(
        scheduler=None, vae=vae, text_encoder=None, tokenizer=None, processor=None, transformer=None
    )
    items = discover_items(load_dataset_config(edit_caches).datasets[0], edit=True).items
    assert len(items) == 6
    for item in items:
        tensors, meta = _read(item.latent_cache_path)
        assert meta["width"] == str(item.size[0]) and meta["architecture"] == "qwen_image"
        w, h = item.bucket
        target = next(v for k, v in tensors.items() if k.startswith("latents_1x"))
        image = pipe.image_processor.preprocess(load_image_for_bucket(item.image_path, item.bucket), h, w)
        expected = pipe._encode_vae_image(image.unsqueeze(2), generator=None)[0]
        assert target.shape == (16, 1, h // 8, w // 8)
        torch.testing.assert_close(target, expected, rtol=1e-4, atol=1e-4)
        control = next(v for k, v in tensors.items() if k.startswith("latents_control_0_"))
        cw, ch = item.control_buckets[0]
        cimage = pipe.image_processor.preprocess(
            load_image_for_bucket(item.control_paths[0], (cw, ch)), ch, cw
        )
        torch.testing.assert_close(
            control, pipe._encode_vae_image(cimage.unsqueeze(2), generator=None)[0], rtol=1e-4, atol=1e-4
        )


def test_edit_plus_embeddings_equal_diffusers_encode_prompt(demo: Path, edit_caches: Path) -> None:
    from diffusers import QwenImageEditPlusPipeline
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit_plus import (
        CONDITION_IMAGE_SIZE,
        calculate_dimensions,
    )

    from qwen_image_studio.models.processor import load_processor

    m = _models(demo)
    pipe = QwenImageEditPlusPipeline.from_pretrained(
        m["edit_root"], processor=load_processor(m["edit_root"]), dtype=torch.float32
    )
    items = discover_items(load_dataset_config(edit_caches).datasets[0], edit=True).items
    for item in items[:3]:
        tensors, meta = _read(item.text_cache_path)
        assert meta["caption1"] == item.caption
        (embed,) = tensors.values()
        control = load_image(item.control_paths[0])
        w, h = calculate_dimensions(CONDITION_IMAGE_SIZE, control.size[0] / control.size[1])
        expected, mask = pipe.encode_prompt(
            prompt=item.caption, image=[pipe.image_processor.resize(control, h, w)], device="cpu"
        )
        assert mask is None or bool(mask.all())
        torch.testing.assert_close(embed, expected[0], rtol=1e-4, atol=1e-4)


def test_text_to_image_embeddings_equal_diffusers_and_padding_is_trimmed(demo: Path, tmp_path: Path) -> None:
    from diffusers import QwenImagePipeline

    captions = [
        "a red square",
        "a small blue circle on a bright yellow background, centred",
        "dot",
        "一只红色的正方形",
        "a green triangle 🙂",
        "shapes",
    ]
    lines = [
        json.dumps({"image_path": str(p), "caption": c})
        for p, c in zip(sorted((demo / "dataset" / "images").glob("*.png")), captions, strict=True)
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    toml = tmp_path / "jsonl.toml"
    toml.write_text(
        f"[general]\nresolution = [64, 64]\nenable_bucket = true\n[[datasets]]\n"
        f'image_jsonl_file = "{tmp_path / "list.jsonl"}"\ncache_directory = "{tmp_path / "c"}"\n',
        encoding="utf-8",
    )
    m = _models(demo)
    argv = [
        "--dataset_config",
        str(toml),
        "--text_encoder",
        str(m["te"]),
        "--batch_size",
        "3",
        "--device",
        "cpu",
    ]
    assert run_stage(Stage.CACHE_TEXT, argv) == 0
    pipe = QwenImagePipeline.from_pretrained(m["t2i_root"], dtype=torch.float32)
    items = discover_items(load_dataset_config(toml).datasets[0]).items
    lengths = set()
    for item in items:
        (embed,) = _read(item.text_cache_path)[0].values()
        expected, _ = pipe.encode_prompt(prompt=[item.caption], device="cpu")
        torch.testing.assert_close(embed, expected[0], rtol=1e-4, atol=1e-4)
        lengths.add(embed.shape[0])
    assert len(lengths) >= 4, "captions of different lengths keep their own lengths (no padding)"


def test_skip_existing_encodes_nothing_and_stale_files_go(
    demo: Path, edit_caches: Path, tmp_path: Path
) -> None:
    m = _models(demo)
    cache = edit_caches.parent / "cache"
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    stale = cache / "gone_0064x0064_qie.safetensors"
    stale.write_bytes(b"x")
    events = tmp_path / "ev.jsonl"
    argv = [
        "--dataset_config",
        str(edit_caches),
        "--model_version",
        "edit-2509",
        "--device",
        "cpu",
        "--skip_existing",
        "--events_file",
        str(events),
    ]
    assert run_stage(Stage.CACHE_LATENTS, [*argv, "--vae", str(m["vae"]), "--keep_cache"]) == 0
    assert stale.exists()
    assert run_stage(Stage.CACHE_TEXT, [*argv, "--text_encoder", str(m["te"])]) == 0
    assert run_stage(Stage.CACHE_LATENTS, [*argv, "--vae", str(m["vae"])]) == 0
    assert not stale.exists()
    after = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert after == before
    metrics = [e for e in read_events(events)[0] if e["type"] == "metric"]
    assert [e["written"] for e in metrics] == [0, 0, 0]


def _cli(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--vae", "text_encoder", "--vae: "),
        ("--vae", "missing", "--vae: not found: "),
    ],
)
def test_bad_model_file_fails_clearly_and_keeps_caches(
    demo: Path, tmp_path: Path, flag: str, value: str, expected: str
) -> None:
    toml = _dataset_copy(demo, tmp_path, edit=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    keep = cache / "demo_00_0096x0096_qi.safetensors"
    keep.write_bytes(b"old cache")
    path = _models(demo)["te"] if value == "text_encoder" else tmp_path / "nope.safetensors"
    out = _cli(
        "qwen_image_cache_latents.py", "--dataset_config", str(toml), flag, str(path), "--device", "cpu"
    )
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0] and str(path) in lines[0], out.stderr
    assert keep.read_bytes() == b"old cache"


def test_missing_image_folder_and_shared_cache_are_reported(demo: Path, tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(f'[[datasets]]\nimage_directory = "{tmp_path / "nowhere"}"\n', encoding="utf-8")
    out = _cli(
        "qwen_image_cache_text_encoder_outputs.py",
        "--dataset_config",
        str(toml),
        "--text_encoder",
        str(_models(demo)["te"]),
    )
    assert out.returncode == 2
    assert "image_directory" in out.stderr and str(tmp_path / "nowhere") in out.stderr
    images = demo / "dataset" / "images"
    toml.write_text(
        f'[[datasets]]\nimage_directory = "{images}"\ncache_directory = "{tmp_path}"\n'
        f'[[datasets]]\nimage_directory = "{images}"\ncache_directory = "{tmp_path}"\n',
        encoding="utf-8",
    )
    out = _cli(
        "qwen_image_cache_latents.py", "--dataset_config", str(toml), "--vae", str(_models(demo)["vae"])
    )
    assert out.returncode == 2 and "cache_directory" in out.stderr


def test_fp8_vl_caches_close_to_full_precision(demo: Path, tmp_path: Path) -> None:
    toml = _dataset_copy(demo, tmp_path, edit=False)
    m = _models(demo)
    argv = ["--dataset_config", str(toml), "--text_encoder", str(m["te"]), "--device", "cpu"]
    assert run_stage(Stage.CACHE_TEXT, argv) == 0
    item = discover_items(load_dataset_config(toml).datasets[0]).items[0]
    (full,) = _read(item.text_cache_path)[0].values()
    assert run_stage(Stage.CACHE_TEXT, [*argv, "--fp8_vl"]) == 0
    (fp8,) = _read(item.text_cache_path)[0].values()
    rel = (fp8 - full).norm() / full.norm()
    assert 0 < rel < 0.1, rel


def test_original_edit_embeddings_equal_diffusers_edit_pipeline(demo: Path, tmp_path: Path) -> None:
    from diffusers import QwenImageEditPipeline
    from diffusers.pipelines.qwenimage.pipeline_qwenimage_edit import calculate_dimensions

    from qwen_image_studio.models.processor import load_processor

    toml = _dataset_copy(demo, tmp_path, edit=True)
    m = _models(demo)
    argv = [
        "--dataset_config",
        str(toml),
        "--text_encoder",
        str(m["te"]),
        "--model_version",
        "edit",
        "--device",
        "cpu",
    ]
    assert run_stage(Stage.CACHE_TEXT, argv) == 0
    pipe = QwenImageEditPipeline.from_pretrained(
        m["edit_root"], processor=load_processor(m["edit_root"]), dtype=torch.float32
    )
    item = discover_items(load_dataset_config(toml).datasets[0], edit=True).items[1]
    (embed,) = _read(item.text_cache_path)[0].values()
    control = load_image(item.control_paths[0])
    w, h, _ = calculate_dimensions(1024 * 1024, control.size[0] / control.size[1])
    expected, _ = pipe.encode_prompt(
        prompt=item.caption, image=pipe.image_processor.resize(control, h, w), device="cpu"
    )
    torch.testing.assert_close(embed, expected[0], rtol=1e-4, atol=1e-4)


def test_missing_captions_and_unreadable_images_are_listed_and_skipped(demo: Path, tmp_path: Path) -> None:
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    for name in ("demo_00", "demo_01"):
        shutil.copy(demo / "dataset" / "images" / f"{name}.png", images)
        shutil.copy(demo / "dataset" / "images" / f"{name}.txt", images)
    shutil.copy(demo / "dataset" / "images" / "demo_02.png", images)  # no caption
    (images / "broken.png").write_bytes(b"not a png")
    (images / "broken.txt").write_text("broken", encoding="utf-8")
    toml = tmp_path / "ds.toml"
    toml.write_text(
        f"[general]\nresolution = [64, 64]\nenable_bucket = true\n[[datasets]]\n"
        f'image_directory = "{images}"\ncache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    events = tmp_path / "ev.jsonl"
    out = _cli(
        "qwen_image_cache_latents.py",
        "--dataset_config",
        str(toml),
        "--vae",
        str(_models(demo)["vae"]),
        "--device",
        "cpu",
        "--events_file",
        str(events),
    )
    assert out.returncode == 0, out.stderr
    warnings = [e["message"] for e in read_events(events)[0] if e["type"] == "warning"]
    assert any("demo_02" in w and "caption" in w for w in warnings), warnings
    assert any("broken.png" in w for w in warnings), warnings
    assert "warning:" in out.stderr
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "demo_00_0096x0096_qi.safetensors",
        "demo_01_0120x0072_qi.safetensors",
    ]


def _files(cache: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) per cache file: a file written again (atomically, by rename) gets a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cache.iterdir()}


def test_skip_existing_encodes_an_item_again_when_its_control_image_changes(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Edit mode: both caches record their control images; replacing one (same size, so the same bucket)
    makes inspect flag that item alone, and --skip_existing re-encodes exactly it."""
    from PIL import Image, ImageOps

    shutil.copytree(demo / "dataset", tmp_path / "ws" / "dataset")
    toml = ts.dataset_toml(tmp_path / "ws", tmp_path, edit=True, batch_size=2)
    cache = tmp_path / "cache"
    m = _models(demo)
    events = tmp_path / "events.jsonl"
    common = ["--dataset_config", str(toml), "--model_version", "edit-2509", "--device", "cpu"]
    common += ["--events_file", str(events)]
    latents = [*common, "--vae", str(m["vae"])]
    text = [*common, "--text_encoder", str(m["te"])]
    assert run_stage(Stage.CACHE_LATENTS, latents) == 0
    assert run_stage(Stage.CACHE_TEXT, text) == 0

    items = discover_items(load_dataset_config(toml).datasets[0], edit=True).items
    for item in items:
        for path in (item.latent_cache_path, item.text_cache_path):
            assert _read(path)[1][CONTROL_FINGERPRINT_KEY] == control_fingerprint(item.control_paths)
    assert inspect_dataset(toml, edit=True).problems == []

    changed = items[3]
    (control,) = changed.control_paths
    with Image.open(control) as im:
        ImageOps.invert(im.convert("RGB")).save(control)
    old_embed = _read(changed.text_cache_path)[0]
    before = _files(cache)
    (s,) = inspect_dataset(toml, edit=True).datasets
    assert s.text_cache.outdated == [str(changed.text_cache_path)]
    assert s.latent_cache.outdated == [str(changed.latent_cache_path)]
    assert str(control) in s.text_cache.reasons[str(changed.text_cache_path)]
    # training refuses the stale caches and says why
    from types import SimpleNamespace

    from qwen_image_studio.errors import DatasetError
    from qwen_image_studio.training.data import collect_items

    config = SimpleNamespace(dataset_config=toml, model_version="edit-2509", is_edit=True)
    with pytest.raises(DatasetError) as err:
        collect_items(config)
    assert f"{changed.text_cache_path}: control image {control} changed since it was cached" in str(err.value)

    capsys.readouterr()
    assert run_stage(Stage.CACHE_TEXT, [*text, "--skip_existing"]) == 0
    assert run_stage(Stage.CACHE_LATENTS, [*latents, "--skip_existing"]) == 0
    log = capsys.readouterr().err
    assert f"encoding {changed.text_cache_path.name} again: control image {control} changed" in log
    assert f"encoding {changed.latent_cache_path.name} again: control image {control} changed" in log
    assert "1 item(s) left to encode (0 missing, 1 outdated)" in log
    after = _files(cache)
    assert sorted(n for n in after if after[n] != before[n]) == sorted(
        [changed.latent_cache_path.name, changed.text_cache_path.name]
    )
    metrics = [e["written"] for e in read_events(events)[0] if e["type"] == "metric"]
    assert metrics[-2:] == [1, 1]
    (new,) = _read(changed.text_cache_path)[0].values()
    (old,) = old_embed.values()
    assert not torch.equal(new, old), "the text encoder saw the new control image"
    assert inspect_dataset(toml, edit=True).problems == []


def test_skip_existing_encodes_an_item_again_when_its_image_changes(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text-to-image: latent files record their image; replacing one (same name and size, so the same
    bucket) makes inspect flag its latent cache alone, and --skip_existing re-encodes exactly it. A latent
    file without the record (older version, reference trainer) stays accepted."""
    from PIL import Image, ImageOps
    from safetensors.torch import save_file

    shutil.copytree(demo / "dataset", tmp_path / "ws" / "dataset")
    toml = ts.dataset_toml(tmp_path / "ws", tmp_path, edit=False, batch_size=2)
    cache = tmp_path / "cache"
    m = _models(demo)
    events = tmp_path / "events.jsonl"
    common = ["--dataset_config", str(toml), "--device", "cpu", "--events_file", str(events)]
    latents = [*common, "--vae", str(m["vae"])]
    text = [*common, "--text_encoder", str(m["te"])]
    assert run_stage(Stage.CACHE_LATENTS, latents) == 0
    assert run_stage(Stage.CACHE_TEXT, text) == 0

    items = discover_items(load_dataset_config(toml).datasets[0]).items
    for item in items:
        assert _read(item.latent_cache_path)[1][IMAGE_FINGERPRINT_KEY] == file_sha256(item.image_path)
        assert IMAGE_FINGERPRINT_KEY not in _read(item.text_cache_path)[1]
    assert inspect_dataset(toml).problems == []

    changed = items[2]
    with Image.open(changed.image_path) as im:
        size = im.size
        ImageOps.invert(im.convert("RGB")).save(changed.image_path)
    with Image.open(changed.image_path) as im:
        assert im.size == size
    old_latent = _read(changed.latent_cache_path)[0]
    before = _files(cache)
    why = f"image {changed.image_path} changed since it was cached"
    report = inspect_dataset(toml)
    (s,) = report.datasets
    assert s.latent_cache.outdated == [str(changed.latent_cache_path)]
    assert s.latent_cache.reasons == {str(changed.latent_cache_path): why}
    assert s.text_cache.outdated == [], "the text cache does not depend on the image"
    assert any(why in p for p in report.problems)
    from types import SimpleNamespace

    from qwen_image_studio.errors import DatasetError
    from qwen_image_studio.training.data import collect_items

    config = SimpleNamespace(dataset_config=toml, model_version="original", is_edit=False)
    with pytest.raises(DatasetError) as err:
        collect_items(config)
    assert f"{changed.latent_cache_path}: {why}" in str(err.value)

    capsys.readouterr()
    assert run_stage(Stage.CACHE_LATENTS, [*latents, "--skip_existing"]) == 0
    log = capsys.readouterr().err
    assert f"encoding {changed.latent_cache_path.name} again: {why}" in log
    assert "1 item(s) left to encode (0 missing, 1 outdated)" in log
    after = _files(cache)
    assert [n for n in after if after[n] != before[n]] == [changed.latent_cache_path.name]
    metrics = [e["written"] for e in read_events(events)[0] if e["type"] == "metric"]
    assert metrics[-1] == 1
    tensors, meta = _read(changed.latent_cache_path)
    assert meta[IMAGE_FINGERPRINT_KEY] == file_sha256(changed.image_path)
    (new,) = tensors.values()
    (old,) = old_latent.values()
    assert not torch.equal(new, old), "the VAE saw the new image"
    assert inspect_dataset(toml).problems == []

    # a latent file without the record (older version, reference trainer) is accepted as it is
    other = items[0]
    tensors, meta = _read(other.latent_cache_path)
    del meta[IMAGE_FINGERPRINT_KEY]
    save_file(tensors, str(other.latent_cache_path), metadata=meta)
    assert IMAGE_FINGERPRINT_KEY not in _read(other.latent_cache_path)[1]
    assert inspect_dataset(toml).problems == []
    collect_items(config)
    before = _files(cache)
    capsys.readouterr()
    assert run_stage(Stage.CACHE_LATENTS, [*latents, "--skip_existing"]) == 0
    assert "0 item(s) left to encode (0 missing, 0 outdated)" in capsys.readouterr().err
    assert _files(cache) == before


def test_text_to_image_latents_ignore_a_control_directory(demo: Path, tmp_path: Path) -> None:
    """A dataset with control_directory cached for text-to-image: targets only, no control record."""
    toml = ts.dataset_toml(demo, tmp_path, edit=True)  # has control_directory
    argv = ["--dataset_config", str(toml), "--vae", str(_models(demo)["vae"]), "--device", "cpu"]
    assert run_stage(Stage.CACHE_LATENTS, argv) == 0
    items = discover_items(load_dataset_config(toml).datasets[0]).items
    for item in items:
        tensors, meta = _read(item.latent_cache_path)
        assert [k for k in tensors if k.startswith("latents_control_")] == []
        assert CONTROL_FINGERPRINT_KEY not in meta
    assert inspect_dataset(toml).problems == []
