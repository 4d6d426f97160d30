"""Cache file names: the single source of truth for where cached latents and text-encoder outputs live.

Names follow the reference trainer (musubi-tuner's ``get_latent_cache_path`` /
``get_text_encoder_output_cache_path``) so caches line up with what its users know:

* latents: ``{basename}_{W:04d}x{H:04d}_{arch}.safetensors``, where W x H is the image's *original* size
  (the bucket is derived from it again at training time) and ``basename`` is the image file name without
  its extension;
* text-encoder outputs: ``{basename}_{arch}_te.safetensors``;
* ``arch`` is ``qi`` for Qwen-Image and ``qie`` for Qwen-Image-Edit, both in the dataset's cache_directory.

Inside, tensors are named like the reference's: ``latents_{F}x{H}x{W}_{dtype}`` (one per image),
``latents_control_{i}_{F}x{H}x{W}_{dtype}`` (edit) and ``varlen_vl_embed_{dtype}``, with ``dtype`` the
torch name (``bfloat16``); the text file's metadata keeps the caption as ``caption1``.

Because the name does not carry the bucket, a cache written before ``resolution`` changed keeps its name;
:func:`latent_cache_shape` reads the latent shape from the safetensors header (without torch) so such a
file can be told apart from a current one.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

ARCH_T2I = "qi"
ARCH_EDIT = "qie"
ARCH_FULL_NAME = "qwen_image"  # the ``architecture`` metadata of both kinds of cache file, both modes
FORMAT_VERSION = "1.0.1"
TEXT_EMBED_PREFIX = "varlen_vl_embed"
LATENT_SCALE = 8
"""Pixels per latent cell (the VAE's spatial compression)."""

_LATENT_RE = re.compile(r"^(?P<key>.+)_(?P<w>\d{4,})x(?P<h>\d{4,})_(?P<arch>[a-z0-9]+)\.safetensors$")
_TEXT_RE = re.compile(r"^(?P<key>.+)_(?P<arch>[a-z0-9]+)_te\.safetensors$")
_LATENT_KEY_RE = re.compile(r"^latents_(?P<f>\d+)x(?P<h>\d+)x(?P<w>\d+)_[a-z0-9_]+$")
_CONTROL_KEY_RE = re.compile(r"^latents_control_(?P<i>\d+)_(?P<f>\d+)x(?P<h>\d+)x(?P<w>\d+)_[a-z0-9_]+$")
_MAX_HEADER = 100 * 1024 * 1024


def cache_arch(edit: bool) -> str:
    """The architecture tag in cache file names: ``qie`` for edit mode, ``qi`` otherwise."""
    return ARCH_EDIT if edit else ARCH_T2I


def item_key(image_path: Path | str) -> str:
    """The cache key of an image: its file name without the extension."""
    return Path(image_path).stem


def latent_cache_name(key: str, original_size: tuple[int, int], arch: str = ARCH_T2I) -> str:
    """``{key}_{W:04d}x{H:04d}_{arch}.safetensors`` for an image of ``original_size``."""
    return f"{key}_{original_size[0]:04d}x{original_size[1]:04d}_{arch}.safetensors"


def text_cache_name(key: str, arch: str = ARCH_T2I) -> str:
    """``{key}_{arch}_te.safetensors``."""
    return f"{key}_{arch}_te.safetensors"


def latent_cache_path(
    cache_dir: Path, key: str, original_size: tuple[int, int], arch: str = ARCH_T2I
) -> Path:
    """Where the latents of one image are cached."""
    return Path(cache_dir) / latent_cache_name(key, original_size, arch)


def text_cache_path(cache_dir: Path, key: str, arch: str = ARCH_T2I) -> Path:
    """Where the text-encoder output of one caption is cached."""
    return Path(cache_dir) / text_cache_name(key, arch)


def parse_latent_cache_name(name: str) -> tuple[str, tuple[int, int], str] | None:
    """(key, original size, arch) of a latent cache file name, or None if it is not one."""
    m = _LATENT_RE.match(name)
    if m is None:
        return None
    return m["key"], (int(m["w"]), int(m["h"])), m["arch"]


def parse_text_cache_name(name: str) -> tuple[str, str] | None:
    """(key, arch) of a text-encoder cache file name, or None if it is not one."""
    m = _TEXT_RE.match(name)
    return (m["key"], m["arch"]) if m else None


def dtype_name(dtype: object) -> str:
    """The dtype part of tensor names: ``torch.bfloat16`` -> ``bfloat16`` (a string passes through)."""
    return str(dtype).rsplit(".", 1)[-1]


def latent_tensor_key(shape: tuple[int, int, int], dtype: object) -> str:
    """``latents_{F}x{H}x{W}_{dtype}``: the target latent's name inside a latent cache file."""
    f, h, w = shape
    return f"latents_{f}x{h}x{w}_{dtype_name(dtype)}"


def control_tensor_key(index: int, shape: tuple[int, int, int], dtype: object) -> str:
    """``latents_control_{i}_{F}x{H}x{W}_{dtype}``: one control image's latent inside a latent cache file."""
    f, h, w = shape
    return f"latents_control_{index}_{f}x{h}x{w}_{dtype_name(dtype)}"


def text_tensor_key(dtype: object) -> str:
    """``varlen_vl_embed_{dtype}``: the text-encoder output's name inside a text cache file."""
    return f"{TEXT_EMBED_PREFIX}_{dtype_name(dtype)}"


def latent_cache_metadata(original_size: tuple[int, int]) -> dict[str, str]:
    """The safetensors metadata of a latent cache file, as the reference trainer writes it."""
    return {
        "architecture": ARCH_FULL_NAME,
        "width": str(original_size[0]),
        "height": str(original_size[1]),
        "format_version": FORMAT_VERSION,
    }


def text_cache_metadata(caption: str) -> dict[str, str]:
    """The safetensors metadata of a text cache file; ``caption1`` lets inspect spot a changed caption."""
    return {"architecture": ARCH_FULL_NAME, "caption1": caption, "format_version": FORMAT_VERSION}


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor names, shapes, ``__metadata__``); ValueError if bad."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{path} has an implausible safetensors header")
        text = f.read(length)
    if len(text) != length:
        raise ValueError(f"{path} is truncated")
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} has an unreadable safetensors header") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} has an unreadable safetensors header")
    return header


@dataclass(frozen=True)
class LatentCacheInfo:
    """What a latent cache file holds: target latent (F, H, W) and one (F, H, W) per control image."""

    target: tuple[int, int, int] | None
    controls: tuple[tuple[int, int, int], ...] = ()


def latent_cache_shape(path: Path) -> LatentCacheInfo:
    """The latent sizes stored in a latent cache file, from its header alone."""
    target = None
    controls: dict[int, tuple[int, int, int]] = {}
    for name in read_safetensors_header(path):
        if m := _CONTROL_KEY_RE.match(name):
            controls[int(m["i"])] = (int(m["f"]), int(m["h"]), int(m["w"]))
        elif m := _LATENT_KEY_RE.match(name):
            target = (int(m["f"]), int(m["h"]), int(m["w"]))
    return LatentCacheInfo(target, tuple(controls[i] for i in sorted(controls)))


def expected_latent_shape(bucket: tuple[int, int]) -> tuple[int, int, int]:
    """The (F, H, W) latent of an image trained at ``bucket`` (width, height)."""
    return 1, bucket[1] // LATENT_SCALE, bucket[0] // LATENT_SCALE


def text_cache_caption(path: Path) -> str | None:
    """The caption a text-encoder cache file was made from (its ``caption1`` metadata), if recorded."""
    meta = read_safetensors_header(path).get("__metadata__") or {}
    caption = meta.get("caption1")
    return caption if isinstance(caption, str) else None


@dataclass
class CacheEntry:
    """The cache files one dataset item needs."""

    key: str
    latent_path: Path
    text_path: Path
    bucket: tuple[int, int]
    control_buckets: tuple[tuple[int, int], ...] = ()
    caption: str | None = None


@dataclass
class CacheState:
    """Which cache files exist, are missing, are outdated or belong to no current item."""

    latents_present: list[Path] = field(default_factory=list)
    latents_missing: list[Path] = field(default_factory=list)
    latents_outdated: list[Path] = field(default_factory=list)
    text_present: list[Path] = field(default_factory=list)
    text_missing: list[Path] = field(default_factory=list)
    text_outdated: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)


def _latent_outdated(entry: CacheEntry) -> bool:
    """Whether a present latent cache was made for another bucket or another set of control images."""
    try:
        info = latent_cache_shape(entry.latent_path)
    except (OSError, ValueError):
        return True
    if info.target != expected_latent_shape(entry.bucket):
        return True
    if entry.control_buckets:
        return info.controls != tuple(expected_latent_shape(b) for b in entry.control_buckets)
    return False


def _text_outdated(entry: CacheEntry) -> bool:
    """Whether a present text cache was made from another caption."""
    if entry.caption is None:
        return False
    try:
        cached = text_cache_caption(entry.text_path)
    except (OSError, ValueError):
        return True
    return cached is not None and cached != entry.caption


def latent_cache_current(entry: CacheEntry) -> bool:
    """Whether the entry's latent file exists and was made for its current bucket and control sizes."""
    return entry.latent_path.is_file() and not _latent_outdated(entry)


def text_cache_current(entry: CacheEntry) -> bool:
    """Whether the entry's text file exists and was made from its current caption."""
    return entry.text_path.is_file() and not _text_outdated(entry)


def cache_state(
    entries: list[CacheEntry], cache_dir: Path, arch: str, check_contents: bool = True
) -> CacheState:
    """Compare the cache files a dataset needs with those in its cache folder."""
    state = CacheState()
    for e in entries:
        if e.latent_path.is_file():
            state.latents_present.append(e.latent_path)
            if check_contents and _latent_outdated(e):
                state.latents_outdated.append(e.latent_path)
        else:
            state.latents_missing.append(e.latent_path)
        if e.text_path.is_file():
            state.text_present.append(e.text_path)
            if check_contents and _text_outdated(e):
                state.text_outdated.append(e.text_path)
        else:
            state.text_missing.append(e.text_path)
    state.stale = stale_cache_files(cache_dir, entries, arch)
    return state


def stale_cache_files(cache_dir: Path, entries: list[CacheEntry], arch: str) -> list[Path]:
    """Cache files of this ``arch`` in ``cache_dir`` that belong to no current item."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    wanted = {e.latent_path.name for e in entries} | {e.text_path.name for e in entries}
    stale = []
    for p in sorted(cache_dir.iterdir()):
        if p.name in wanted or not p.is_file():
            continue
        latent = parse_latent_cache_name(p.name)
        text = parse_text_cache_name(p.name)
        if (latent is not None and latent[2] == arch) or (text is not None and text[1] == arch):
            stale.append(p)
    return stale
