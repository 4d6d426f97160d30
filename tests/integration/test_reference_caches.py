"""Edit caches and control sizes as the reference trainer (musubi-tuner) lays them out, on the demo models.

* With ``no_resize_control`` and ``control_resolution`` together, controls within the area keep their size
  cropped to 16 px (the reference's documented rule), are cached at that size and train; kept at their
  exact size (120x72, as the reference's dataset code does) the latent is 15x9 cells, which no 2x2 patch
  grid covers.
* Edit caches written in the reference's documented layout (file names ``{name}_{W:04d}x{H:04d}_qie`` and
  ``{name}_qie_te``, tensors ``latents_{F}x{H}x{W}_{dtype}``, ``latents_control_{i}_{F}x{H}x{W}_{dtype}``,
  ``varlen_vl_embed_{dtype}``, metadata ``architecture``, ``width``, ``height``, ``caption1``,
  ``format_version`` and nothing of ours) are accepted and train; a record of ours that disagrees still
  makes a file outdated.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import train_support as ts
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from qwen_image_studio.data.cache_paths import CONTROL_FINGERPRINT_KEY, IMAGE_FINGERPRINT_KEY
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.images import load_image
from qwen_image_studio.data.inspect import inspect_dataset
from qwen_image_studio.data.items import discover_items
from qwen_image_studio.errors import DatasetError
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage
from qwen_image_studio.training import flow_matching as fm
from qwen_image_studio.training.data import collect_items


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118


def _edit_toml(demo: Path, folder: Path, extra: str = "") -> Path:
    """The demo edit dataset (controls 96x96, 120x72, 72x120, 112x112, 128x72, 72x128), two per batch."""
    toml = ts.dataset_toml(demo, folder, edit=True, batch_size=2)
    toml.write_text(toml.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return toml


def _train(demo: Path, toml: Path, out: Path) -> list[float]:
    argv = ts.train_argv(demo, toml, out, dit="dit_2509", model_version="edit-2509", max_train_steps=2)
    assert ts.train(argv) == 0, ts.failure(out / "events.jsonl")
    losses = ts.losses(out / "events.jsonl")
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    return losses


def test_controls_within_the_maximum_area_are_cropped_to_16_cached_and_trained(demo: Path, tmp_path: Path) -> None:
    """control_resolution = [96, 112] with no_resize_control: 112x112 (12544 px > 10752) is scaled down to
    a bucket of that area, 96x112; the others (at most 10752 px) keep their size cropped to 16, e.g.
    120x72 -> 112x64."""
    toml = _edit_toml(demo, tmp_path, "control_resolution = [96, 112]\nno_resize_control = true\n")
    found = discover_items(load_dataset_config(toml).datasets[0], edit=True)
    assert found.problems == []
    assert {i.key: i.control_buckets for i in found.items} == {
        "demo_00": ((96, 96),),
        "demo_01": ((112, 64),),
        "demo_02": ((64, 112),),
        "demo_03": ((96, 112),),
        "demo_04": ((128, 64),),
        "demo_05": ((64, 128),),
    }
    ts.cache(demo, toml, "edit-2509")
    for item in found.items:
        tensors, _ = _read(item.latent_cache_path)
        (cw, ch), (key,) = item.control_buckets[0], [k for k in tensors if k.startswith("latents_control_0_")]
        assert tensors[key].shape == (16, 1, ch // 8, cw // 8)
        assert key.startswith(f"latents_control_0_1x{ch // 8}x{cw // 8}_")
    assert inspect_dataset(toml, edit=True).problems == []
    _train(demo, toml, tmp_path / "run")

    # the control at its exact size, as the reference's dataset code keeps it: a latent of odd size
    from qwen_image_studio.models.loading import load_vae
    from qwen_image_studio.stages.cache_latents import encode_latents, pixels

    vae = load_vae(ts.models(demo)["vae"], dtype=torch.float32)
    control = load_image(demo / "dataset" / "controls" / "demo_01.png")
    assert control.size == (120, 72)
    exact = encode_latents(vae, pixels([control]))
    assert exact.shape == (1, 16, 1, 9, 15)
    with pytest.raises(RuntimeError):
        fm.pack_latents(exact)  # 15x9 cells cannot be cut into 2x2 patches
    cropped = encode_latents(vae, pixels([control.crop((4, 4, 116, 68))]))
    assert fm.pack_latents(cropped).shape == (1, 4 * 7, 64)


def _reference_names(item) -> tuple[str, str]:
    """The reference trainer's file names for an edit-mode item (written out here, not from our code)."""
    w, h = item.size
    return f"{item.image_path.stem}_{w:04d}x{h:04d}_qie.safetensors", f"{item.image_path.stem}_qie_te.safetensors"


def _rewrite_as_reference(item, cache: Path) -> None:
    """Replace our two cache files of ``item`` by files in the reference's layout holding the same values in
    bfloat16 (the reference caches in the VAE's and text encoder's bf16), without any record of ours."""
    latent_name, text_name = _reference_names(item)
    assert (cache / latent_name).is_file() and (cache / text_name).is_file()
    tensors, _ = _read(cache / latent_name)
    out = {}
    for name, value in tensors.items():
        _, f, hh, ww = value.shape
        if name.startswith("latents_control_"):
            index = int(name.split("_")[2])
            out[f"latents_control_{index}_{f}x{hh}x{ww}_bfloat16"] = value.to(torch.bfloat16).contiguous()
        else:
            out[f"latents_{f}x{hh}x{ww}_bfloat16"] = value.to(torch.bfloat16).contiguous()
    w, h = item.size
    meta = {"architecture": "qwen_image", "width": str(w), "height": str(h), "format_version": "1.0.1"}
    save_file(out, str(cache / latent_name), metadata=meta)
    (embed,) = _read(cache / text_name)[0].values()
    text_meta = {"architecture": "qwen_image", "caption1": item.caption, "format_version": "1.0.1"}
    save_file({"varlen_vl_embed_bfloat16": embed.to(torch.bfloat16).contiguous()}, str(cache / text_name), text_meta)


def _files(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.iterdir())}


def test_edit_caches_in_the_reference_layout_are_accepted_and_train(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No record of ours is needed; only a record that disagrees makes a file outdated."""
    toml = _edit_toml(demo, tmp_path)
    cache = tmp_path / "cache"
    ts.cache(demo, toml, "edit-2509")
    items = discover_items(load_dataset_config(toml).datasets[0], edit=True).items
    assert len(items) == 6
    for item in items:
        _rewrite_as_reference(item, cache)
        for path in _reference_names(item):
            meta = _read(cache / path)[1]
            assert CONTROL_FINGERPRINT_KEY not in meta and IMAGE_FINGERPRINT_KEY not in meta
    assert sorted(p.name for p in cache.iterdir()) == sorted(n for i in items for n in _reference_names(i))

    report = inspect_dataset(toml, edit=True)
    (s,) = report.datasets
    assert (s.latent_cache.present, s.text_cache.present) == (6, 6)
    assert (s.latent_cache.outdated, s.text_cache.outdated, report.problems) == ([], [], [])
    config = StudioConfig(dataset_config=str(toml), model_version="edit-2509")
    assert len(collect_items(config)) == 6
    before = _files(cache)
    capsys.readouterr()
    common = ["--dataset_config", str(toml), "--model_version", "edit-2509", "--device", "cpu", "--skip_existing"]
    assert run_stage(Stage.CACHE_LATENTS, [*common, "--vae", str(ts.models(demo)["vae"])]) == 0
    assert "0 item(s) left to encode (0 missing, 0 outdated)" in capsys.readouterr().err
    assert _files(cache) == before, "nothing is encoded again"
    _train(demo, toml, tmp_path / "run")

    # a control record that disagrees (another control image than the one beside the target) is outdated
    changed = items[3]
    control = changed.control_paths[0]
    latent_name, text_name = _reference_names(changed)
    for name in (latent_name, text_name):
        tensors, meta = _read(cache / name)
        save_file(tensors, str(cache / name), metadata={**meta, CONTROL_FINGERPRINT_KEY: "0" * 64})
    why = f"control image {control} changed since it was cached"
    (s,) = inspect_dataset(toml, edit=True).datasets
    assert s.latent_cache.reasons == {str(cache / latent_name): why}
    assert s.text_cache.reasons == {str(cache / text_name): why}
    with pytest.raises(DatasetError, match="changed since it was cached"):
        collect_items(config)
    capsys.readouterr()
    assert run_stage(Stage.CACHE_LATENTS, [*common, "--vae", str(ts.models(demo)["vae"])]) == 0
    assert "1 item(s) left to encode (0 missing, 1 outdated)" in capsys.readouterr().err


def test_a_reference_cache_of_an_exact_size_control_is_outdated_for_its_control_size(
    demo: Path, tmp_path: Path
) -> None:
    """The reference keeps a 120x72 control at that size with both options and caches a 15x9 latent; here
    the control is 112x64 (a 14x8 latent), so that file is encoded again rather than trained."""
    toml = _edit_toml(demo, tmp_path, "control_resolution = [1024, 1024]\nno_resize_control = true\n")
    item = next(i for i in discover_items(load_dataset_config(toml).datasets[0], edit=True).items if i.key == "demo_01")
    assert item.control_buckets == ((112, 64),)
    latent_name, text_name = _reference_names(item)
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    target = torch.zeros(16, 1, item.bucket[1] // 8, item.bucket[0] // 8, dtype=torch.bfloat16)
    tensors = {
        f"latents_1x{target.shape[2]}x{target.shape[3]}_bfloat16": target,
        "latents_control_0_1x9x15_bfloat16": torch.zeros(16, 1, 9, 15, dtype=torch.bfloat16),
    }
    meta = {"architecture": "qwen_image", "width": "120", "height": "72", "format_version": "1.0.1"}
    save_file(tensors, str(cache / latent_name), metadata=meta)
    with Image.open(item.image_path) as im:
        assert im.size == item.size
    (s,) = inspect_dataset(toml, edit=True).datasets
    reason = s.latent_cache.reasons[str(cache / latent_name)]
    assert reason == "made for other control image sizes (control latents 1x9x15, now 1x8x14)"
