"""Cache file names, their parsing, and present / missing / outdated / stale detection."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from safetensors.numpy import save_file

from qwen_image_studio.data.cache_paths import (
    CONTROL_FINGERPRINT_KEY,
    IMAGE_FINGERPRINT_KEY,
    CacheEntry,
    cache_arch,
    cache_state,
    cached_control_fingerprint,
    control_fingerprint,
    control_tensor_key,
    expected_latent_shape,
    latent_cache_current,
    latent_cache_metadata,
    latent_cache_name,
    latent_cache_outdated_reason,
    latent_cache_path,
    latent_cache_shape,
    latent_tensor_key,
    parse_latent_cache_name,
    parse_text_cache_name,
    read_safetensors_header,
    text_cache_caption,
    text_cache_current,
    text_cache_metadata,
    text_cache_name,
    text_cache_outdated_reason,
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


def write_latent(
    path: Path,
    bucket: tuple[int, int],
    controls: tuple[tuple[int, int], ...] = (),
    fingerprint: str | None = None,
    image_fingerprint: str | None = None,
) -> None:
    """A latent cache file laid out like the reference trainer's (plus control / image records if given)."""
    f, h, w = expected_latent_shape(bucket)
    tensors = {latent_tensor_key((f, h, w), "bfloat16"): np.zeros((16, f, h, w), np.float32)}
    for i, b in enumerate(controls):
        f, h, w = expected_latent_shape(b)
        tensors[control_tensor_key(i, (f, h, w), "float8_e4m3fn")] = np.zeros((16, f, h, w), np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=latent_cache_metadata((96, 96), fingerprint, image_fingerprint))


def write_text(path: Path, caption: str, fingerprint: str | None = None) -> None:
    """A text-encoder cache file with its caption (and control record, if given) in the metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"caption1": caption}
    if fingerprint is not None:
        meta[CONTROL_FINGERPRINT_KEY] = fingerprint
    save_file({"varlen_vl_embed_bf16": np.zeros((3, 8), np.float32)}, str(path), metadata=meta)


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


def test_control_fingerprint_is_the_sha256_of_each_file_in_order(tmp_path: Path) -> None:
    """One SHA-256 of the bytes per control image, comma-joined in order; names and times do not count."""
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"first image")
    b.write_bytes(b"second image")
    da, db = (hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b))
    assert control_fingerprint([a]) == da
    assert control_fingerprint([a, b]) == f"{da},{db}"
    assert control_fingerprint([b, a]) == f"{db},{da}", "the order of the control images counts"
    assert control_fingerprint([]) == ""
    copy = tmp_path / "sub" / "copy of a.png"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    os.utime(copy, ns=(1, 1))
    assert control_fingerprint([copy]) == da, "content-based: a copy elsewhere, with other times, matches"
    with pytest.raises(OSError):
        control_fingerprint([tmp_path / "missing.png"])


def test_control_fingerprint_sees_a_rewrite_with_the_same_size_and_mtime(tmp_path: Path) -> None:
    """Digests are remembered per process, but a rewritten file is hashed again even if its mtime is put back."""
    a = tmp_path / "a.png"
    a.write_bytes(b"AAAA")
    before = control_fingerprint([a])
    stat = a.stat()
    a.write_bytes(b"BBBB")
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert control_fingerprint([a]) == hashlib.sha256(b"BBBB").hexdigest() != before


def test_metadata_records_the_control_fingerprint() -> None:
    """Edit-mode files carry ``control_sha256``; text-to-image files do not."""
    assert text_cache_metadata("c", "ab,cd")[CONTROL_FINGERPRINT_KEY] == "ab,cd"
    assert latent_cache_metadata((64, 64), "ab")[CONTROL_FINGERPRINT_KEY] == "ab"
    assert CONTROL_FINGERPRINT_KEY not in text_cache_metadata("c")
    assert CONTROL_FINGERPRINT_KEY not in latent_cache_metadata((64, 64))


def test_a_changed_control_image_makes_edit_caches_outdated(tmp_path: Path) -> None:
    """Caption and control record are both checked; a file without the record (the reference trainer's)
    is current, one whose record disagrees is outdated."""
    controls = [tmp_path / "c1.png", tmp_path / "c2.png"]
    for i, c in enumerate(controls):
        c.write_bytes(f"control {i}".encode())
    e = entry(tmp_path / "cache", "k", controls=((64, 64), (64, 64)), arch="qie")
    e.control_paths = tuple(controls)
    fingerprint = control_fingerprint(controls)
    write_latent(e.latent_path, (64, 64), ((64, 64), (64, 64)), fingerprint)
    write_text(e.text_path, "c", fingerprint)
    assert cached_control_fingerprint(e.text_path) == fingerprint
    assert text_cache_current(e) and latent_cache_current(e)

    controls[1].write_bytes(b"another control image")
    why = f"control image {controls[1]} changed since it was cached"
    assert text_cache_outdated_reason(e) == why and latent_cache_outdated_reason(e) == why
    state = cache_state([e], tmp_path / "cache", "qie")
    assert state.text_outdated == [e.text_path] and state.latents_outdated == [e.latent_path]
    assert state.outdated_reasons == {e.text_path: why, e.latent_path: why}

    e.control_paths = (controls[0],)
    assert text_cache_outdated_reason(e) == "made with 2 control image(s), now 1"
    e.control_paths = tuple(controls)
    e.caption = "another caption"
    assert text_cache_outdated_reason(e) == "made from another caption"

    e.caption = "c"
    write_text(e.text_path, "c")  # no control record: the reference trainer or an older version wrote it
    assert text_cache_outdated_reason(e) is None and text_cache_current(e)
    write_latent(e.latent_path, (64, 64), ((64, 64), (64, 64)))
    assert latent_cache_outdated_reason(e) is None and latent_cache_current(e)
    write_latent(e.latent_path, (64, 64), ((64, 64), (32, 32)))  # no record, but other control sizes
    assert latent_cache_outdated_reason(e).startswith("made for other control image sizes")
    e.control_paths = ()  # text-to-image (or a caller that does not check controls)
    assert text_cache_outdated_reason(e) is None


def test_a_replaced_target_image_makes_the_latent_cache_outdated(tmp_path: Path) -> None:
    """``image_sha256`` is checked in both modes; a latent file without it (older version, reference
    trainer) stays current; the text cache does not depend on the image."""
    image = tmp_path / "img.png"
    image.write_bytes(b"original image")
    e = entry(tmp_path / "cache", "img")
    e.image_path = image
    meta = latent_cache_metadata((96, 96), None, hashlib.sha256(b"original image").hexdigest())
    assert meta[IMAGE_FINGERPRINT_KEY] == hashlib.sha256(b"original image").hexdigest()
    assert IMAGE_FINGERPRINT_KEY not in latent_cache_metadata((96, 96))
    write_latent(e.latent_path, (64, 64), image_fingerprint=meta[IMAGE_FINGERPRINT_KEY])
    write_text(e.text_path, "c")
    assert latent_cache_current(e) and text_cache_current(e)

    image.write_bytes(b"another image, same name")
    why = f"image {image} changed since it was cached"
    assert latent_cache_outdated_reason(e) == why
    assert text_cache_outdated_reason(e) is None
    state = cache_state([e], tmp_path / "cache", "qi")
    assert state.latents_outdated == [e.latent_path] and state.text_outdated == []
    assert state.outdated_reasons == {e.latent_path: why}
    e.image_path = None  # a caller that does not check the image
    assert latent_cache_outdated_reason(e) is None
    e.image_path = tmp_path / "gone.png"
    assert latent_cache_outdated_reason(e).startswith("image cannot be read")

    # edit mode: the image is checked beside the control images
    control = tmp_path / "c.png"
    control.write_bytes(b"control")
    e.image_path, e.control_buckets, e.control_paths = image, ((64, 64),), (control,)
    write_latent(e.latent_path, (64, 64), ((64, 64),), control_fingerprint([control]))
    assert latent_cache_outdated_reason(e) is None, "no image record: not outdated on that account"
    old_digest = meta[IMAGE_FINGERPRINT_KEY]
    write_latent(e.latent_path, (64, 64), ((64, 64),), control_fingerprint([control]), old_digest)
    assert latent_cache_outdated_reason(e) == why
    e.control_buckets, e.control_paths = (), ()

    write_latent(e.latent_path, (64, 64))  # no image record: an older version or the reference trainer
    assert IMAGE_FINGERPRINT_KEY not in read_safetensors_header(e.latent_path)["__metadata__"]
    assert latent_cache_outdated_reason(e) is None and latent_cache_current(e)


def test_file_digests_are_remembered_until_the_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unchanged file is read once per process; a touched one is hashed again (to the same digest)."""
    from qwen_image_studio.data import cache_paths

    monkeypatch.setattr(cache_paths, "_RECENT_S", -1e9)  # treat every file as old enough to remember
    a = tmp_path / "a.png"
    a.write_bytes(b"AAAA")
    digest = cache_paths.file_sha256(a)
    hits = cache_paths._digest_memo.cache_info().hits
    assert cache_paths.file_sha256(a) == digest
    assert cache_paths._digest_memo.cache_info().hits == hits + 1
    os.utime(a, ns=(5, 5))
    misses = cache_paths._digest_memo.cache_info().misses
    assert cache_paths.file_sha256(a) == digest
    assert cache_paths._digest_memo.cache_info().misses == misses + 1
