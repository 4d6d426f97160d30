"""Cache file names, their parsing, and present / missing / outdated / stale detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from qwen_image_studio.data.cache_paths import (
    CacheEntry,
    cache_arch,
    cache_state,
    control_tensor_key,
    expected_latent_shape,
    latent_cache_metadata,
    latent_cache_name,
    latent_cache_path,
    latent_cache_shape,
    latent_tensor_key,
    parse_latent_cache_name,
    parse_text_cache_name,
    read_safetensors_header,
    text_cache_caption,
    text_cache_metadata,
    text_cache_name,
    text_cache_path,
    text_tensor_key,
)

keys = st.text(st.characters(categories=("L", "N"), include_characters="_-. "), min_size=1, max_size=30)


def test_tensor_keys_and_metadata() -> None:
    """Tensor names and metadata as the reference trainer writes them."""
    assert latent_tensor_key((1, 6, 10), "torch.bfloat16") == "latents_1x6x10_bfloat16"
    assert control_tensor_key(1, (1, 8, 8), "float32") == "latents_control_1_1x8x8_float32"
    assert text_tensor_key("bfloat16") == "varlen_vl_embed_bfloat16"
    assert latent_cache_metadata((120, 72))["width"] == "120"
    assert text_cache_metadata("a cat")["caption1"] == "a cat"


def test_names_follow_the_reference_trainer() -> None:
    """``{basename}_{W:04d}x{H:04d}_qi.safetensors`` and ``{basename}_qi_te.safetensors``."""
    assert latent_cache_name("cat_01", (1024, 768)) == "cat_01_1024x0768_qi.safetensors"
    assert text_cache_name("cat_01") == "cat_01_qi_te.safetensors"
    assert latent_cache_name("cat", (64, 64), cache_arch(edit=True)) == "cat_0064x0064_qie.safetensors"
    assert text_cache_path(Path("/c"), "cat", "qie") == Path("/c/cat_qie_te.safetensors")
    assert latent_cache_path(Path("/c"), "x", (12345, 7)) == Path("/c/x_12345x0007_qi.safetensors")


@given(keys, st.tuples(st.integers(1, 20000), st.integers(1, 20000)), st.sampled_from(["qi", "qie"]))
def test_names_parse_back(key: str, size: tuple[int, int], arch: str) -> None:
    """Every name parses back to its parts, and a latent name is never taken for a text name or back."""
    latent = latent_cache_name(key, size, arch)
    text = text_cache_name(key, arch)
    assert parse_latent_cache_name(latent) == (key, size, arch)
    assert parse_text_cache_name(text) == (key, arch)
    assert parse_text_cache_name(latent) is None
    assert parse_latent_cache_name(text) is None


def write_latent(path: Path, bucket: tuple[int, int], controls: tuple[tuple[int, int], ...] = ()) -> None:
    """A latent cache file laid out like the reference trainer's."""
    f, h, w = expected_latent_shape(bucket)
    tensors = {latent_tensor_key((f, h, w), "bfloat16"): np.zeros((16, f, h, w), np.float32)}
    for i, b in enumerate(controls):
        f, h, w = expected_latent_shape(b)
        tensors[control_tensor_key(i, (f, h, w), "float8_e4m3fn")] = np.zeros((16, f, h, w), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=latent_cache_metadata((96, 96)))


def write_text(path: Path, caption: str) -> None:
    """A text-encoder cache file with its caption in the metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {"varlen_vl_embed_bf16": np.zeros((3, 8), np.float32)}, str(path), metadata={"caption1": caption}
    )


def entry(
    cache: Path, key: str, size=(96, 96), bucket=(64, 64), controls=(), caption="c", arch="qi"
) -> CacheEntry:
    """The cache entry of one item."""
    return CacheEntry(
        key=key,
        latent_path=latent_cache_path(cache, key, size, arch),
        text_path=text_cache_path(cache, key, arch),
        bucket=bucket,
        control_buckets=controls,
        caption=caption,
    )


def test_header_reading(tmp_path: Path) -> None:
    """Shapes and captions come from the header alone; garbage raises ValueError."""
    write_latent(tmp_path / "a.safetensors", (80, 48), ((64, 64), (32, 128)))
    info = latent_cache_shape(tmp_path / "a.safetensors")
    assert info.target == (1, 6, 10)
    assert info.controls == ((1, 8, 8), (1, 16, 4))
    write_text(tmp_path / "t.safetensors", "hello")
    assert text_cache_caption(tmp_path / "t.safetensors") == "hello"
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ValueError):
        read_safetensors_header(tmp_path / "bad.safetensors")
    (tmp_path / "bad2.safetensors").write_bytes((100).to_bytes(8, "little") + b"{")
    with pytest.raises(ValueError):
        read_safetensors_header(tmp_path / "bad2.safetensors")


def test_cache_state(tmp_path: Path) -> None:
    """Present, missing, outdated (other bucket, other controls, other caption, unreadable) and stale files."""
    cache = tmp_path / "cache"
    ok, wrong_bucket, wrong_ctrl, missing = (
        entry(cache, "ok", controls=((64, 64),)),
        entry(cache, "wb"),
        entry(cache, "wc", controls=((64, 64), (64, 64))),
        entry(cache, "missing"),
    )
    write_latent(ok.latent_path, (64, 64), ((64, 64),))
    write_text(ok.text_path, "c")
    write_latent(wrong_bucket.latent_path, (80, 48))
    write_text(wrong_bucket.text_path, "an older caption")
    write_latent(wrong_ctrl.latent_path, (64, 64), ((64, 64),))
    wrong_ctrl.text_path.write_bytes(b"junk")
    stale = [
        cache / "gone_0100x0100_qi.safetensors",
        cache / "gone_qi_te.safetensors",
        cache / "ok_0200x0100_qi.safetensors",
    ]
    for p in stale:
        p.write_bytes(b"")
    others = [
        cache / "ok_0096x0096_qie.safetensors",
        cache / "readme.txt",
        cache / "x_0064x0064_wan.safetensors",
    ]
    for p in others:
        p.write_bytes(b"")

    state = cache_state([ok, wrong_bucket, wrong_ctrl, missing], cache, "qi")
    assert state.latents_present == [ok.latent_path, wrong_bucket.latent_path, wrong_ctrl.latent_path]
    assert state.latents_missing == [missing.latent_path]
    assert state.latents_outdated == [wrong_bucket.latent_path, wrong_ctrl.latent_path]
    assert state.text_present == [ok.text_path, wrong_bucket.text_path, wrong_ctrl.text_path]
    assert state.text_missing == [missing.text_path]
    assert state.text_outdated == [wrong_bucket.text_path, wrong_ctrl.text_path]
    assert state.stale == sorted(stale)


def test_cache_state_without_a_folder(tmp_path: Path) -> None:
    """Nothing cached yet: all missing, nothing stale."""
    state = cache_state([entry(tmp_path / "none", "a")], tmp_path / "none", "qi")
    assert len(state.latents_missing) == 1 and state.stale == []
