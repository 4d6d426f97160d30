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

In edit mode both files also depend on the control images (the VAE encodes them into the latent file;
Qwen2.5-VL sees them when encoding the caption), so both record them in the metadata key
``control_sha256``: see :func:`control_fingerprint`. A file whose record differs from the current control
images is outdated. An edit-mode file without the record (the reference trainer, which writes only its own
keys, or an older version of this program wrote it) is taken as current, as a latent file without
``image_sha256`` is: nothing shows it is stale, and its shapes are still checked. Text-to-image files never
carry or need the record. The reference trainer ignores the extra key.

An edit-mode text file also depends on the size each control image had when Qwen2.5-VL saw it, chosen by
``--control_text_encoder_size``; it records that choice (``official`` or ``reference``) in the metadata key
``control_vl_size``. A caller that knows the configured choice (the text-caching stage, training, ``dataset
inspect --control_text_encoder_size``) sets :attr:`CacheEntry.control_vl_size`, and a file whose record
names the other choice is outdated; a file without the record (the reference trainer or an older version
wrote it) is taken as current, by the same rule as the control record, and a caller that does not know the
choice checks nothing.

Latent files of both modes also record the SHA-256 of the target image they were encoded from, as
``image_sha256`` (:func:`file_sha256`), so that an image replaced under the same name and with the same
size (hence the same file name and bucket) is found. Unlike the control record, a latent file without
``image_sha256`` (an older version of this program or the reference trainer wrote it) is taken as current:
nothing shows it is stale, and asking everyone to re-cache for it would cost more than it saves.

Because the name does not carry the bucket, a cache written before ``resolution`` changed keeps its name;
:func:`latent_cache_shape` reads the latent shape from the safetensors header (without torch) so such a
file can be told apart from a current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ARCH_T2I = "qi"
ARCH_EDIT = "qie"
ARCH_FULL_NAME = "qwen_image"  # the ``architecture`` metadata of both kinds of cache file, both modes
FORMAT_VERSION = "1.0.1"
TEXT_EMBED_PREFIX = "varlen_vl_embed"
LATENT_SCALE = 8
"""Pixels per latent cell (the VAE's spatial compression)."""
CONTROL_FINGERPRINT_KEY = "control_sha256"
"""The metadata key of both edit-mode cache files that records their control images."""
IMAGE_FINGERPRINT_KEY = "image_sha256"
"""The metadata key of latent cache files (both modes) that records their target image's SHA-256."""
CONTROL_VL_SIZE_KEY = "control_vl_size"
"""The metadata key of edit-mode text cache files that records ``--control_text_encoder_size``."""

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


def latent_cache_metadata(
    original_size: tuple[int, int],
    control_fingerprint: str | None = None,
    image_fingerprint: str | None = None,
) -> dict[str, str]:
    """The safetensors metadata of a latent cache file, as the reference trainer writes it.

    ``control_fingerprint`` (edit mode: :func:`control_fingerprint` of the item's control images) is
    stored as ``control_sha256`` so that a replaced control image makes the file outdated;
    ``image_fingerprint`` (:func:`file_sha256` of the target image) as ``image_sha256``, likewise.
    """
    meta = {
        "architecture": ARCH_FULL_NAME,
        "width": str(original_size[0]),
        "height": str(original_size[1]),
        "format_version": FORMAT_VERSION,
    }
    if control_fingerprint is not None:
        meta[CONTROL_FINGERPRINT_KEY] = control_fingerprint
    if image_fingerprint is not None:
        meta[IMAGE_FINGERPRINT_KEY] = image_fingerprint
    return meta


def text_cache_metadata(
    caption: str, control_fingerprint: str | None = None, control_vl_size: str | None = None
) -> dict[str, str]:
    """The safetensors metadata of a text cache file; ``caption1`` lets inspect spot a changed caption.

    In edit mode ``control_fingerprint`` (:func:`control_fingerprint` of the control images the text
    encoder saw) is stored as ``control_sha256`` so that a replaced control image is spotted too, and
    ``control_vl_size`` (the ``--control_text_encoder_size`` they were sized by) as ``control_vl_size``.
    """
    meta = {"architecture": ARCH_FULL_NAME, "caption1": caption, "format_version": FORMAT_VERSION}
    if control_fingerprint is not None:
        meta[CONTROL_FINGERPRINT_KEY] = control_fingerprint
    if control_vl_size is not None:
        meta[CONTROL_VL_SIZE_KEY] = control_vl_size
    return meta


def file_sha256(path: Path | str) -> str:
    """The SHA-256 (hex) of a file's bytes; OSError if it cannot be read.

    Digests are remembered per process, keyed by the file's device, inode, size, mtime and ctime, so that
    inspecting a dataset again (the web UI does it often) reads no unchanged file twice. The key only
    decides when to hash again: the digest itself depends on the content alone, so a copied or touched
    file keeps its digest. As git does with its index, a file changed in the last few seconds is always
    hashed (file times are coarse, so a quick same-size rewrite could keep its key), and so is one that
    changes while it is read.
    """
    real = os.path.realpath(path)
    before = os.stat(real)
    key = _stat_key(before)
    if time.time() - max(before.st_mtime_ns, before.st_ctime_ns) / 1e9 < _RECENT_S:
        return _hash_file(real)
    digest = _digest_memo(real, key)
    if _stat_key(os.stat(real)) != key:
        return _hash_file(real)  # written to while read: hash again (the old key never comes back)
    return digest


_RECENT_S = 3.0
"""Files changed less than this many seconds ago are hashed every time (see :func:`file_sha256`)."""


def _stat_key(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@lru_cache(maxsize=65536)
def _digest_memo(real: str, key: tuple[int, ...]) -> str:
    """``_hash_file(real)``, remembered while ``key`` (the file's identity and stat) stays the same."""
    return _hash_file(real)


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def control_fingerprint(paths: Sequence[Path | str]) -> str:
    """The record of an item's control images kept in its edit-mode cache files: ``control_sha256``.

    It is the SHA-256 of each control file's bytes (:func:`file_sha256`), in the order the images are
    fed to the models, joined by commas. Choices:

    * file bytes rather than decoded or resized pixels: no image is decoded to check a cache, and the
      record does not change when Pillow or diffusers resize differently; a file re-saved with the same
      pixels counts as changed (one needless re-encode, never a stale cache);
    * content rather than names or modification times: copying or moving a dataset with its caches keeps
      them valid, while a control image replaced under the same name is found;
    * one digest per image, in order, so a report can name the control image that changed and a
      reordered set of controls (``Picture 1`` / ``Picture 2`` in 2509/2511 prompts) counts as changed.
    """
    return ",".join(file_sha256(p) for p in paths)


def _split_fingerprint(value: str) -> tuple[str, ...]:
    return tuple(value.split(",")) if value else ()


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


def cache_file_metadata(path: Path) -> dict[str, str]:
    """The ``__metadata__`` of a cache file (string values only); ValueError if it is no safetensors file."""
    meta = read_safetensors_header(path).get("__metadata__") or {}
    if not isinstance(meta, dict):
        return {}
    return {k: v for k, v in meta.items() if isinstance(v, str)}


def text_cache_caption(path: Path) -> str | None:
    """The caption a text-encoder cache file was made from (its ``caption1`` metadata), if recorded."""
    return cache_file_metadata(path).get("caption1")


def cached_control_fingerprint(path: Path) -> str | None:
    """The ``control_sha256`` record of a cache file (see :func:`control_fingerprint`), if it has one."""
    return cache_file_metadata(path).get(CONTROL_FINGERPRINT_KEY)


@dataclass
class CacheEntry:
    """The cache files one dataset item needs."""

    key: str
    latent_path: Path
    text_path: Path
    bucket: tuple[int, int]
    control_buckets: tuple[tuple[int, int], ...] = ()
    caption: str | None = None
    control_paths: tuple[Path, ...] = ()
    """Edit mode: the control images both cache files are made from, checked against ``control_sha256``;
    empty (text-to-image, or a caller that does not check) skips the check."""
    image_path: Path | None = None
    """The target image the latent file is made from, checked against its ``image_sha256`` (when the file
    has one); None (a caller that does not check) skips the check."""
    control_vl_size: str | None = None
    """Edit mode: the configured ``--control_text_encoder_size``, checked against the text file's
    ``control_vl_size`` (when it has one); None (a caller that does not know it) skips the check."""


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
    outdated_reasons: dict[Path, str] = field(default_factory=dict)
    """Why each file in ``latents_outdated`` / ``text_outdated`` is outdated (one short phrase)."""


def _shape_text(shape: tuple[int, int, int] | None) -> str:
    return "none" if shape is None else "x".join(map(str, shape))


def _files_reason(what: str, paths: Sequence[Path], recorded: str) -> str | None:
    """Why a recorded fingerprint (comma-joined :func:`file_sha256` digests, in order) no longer matches
    ``paths``, if it does not; ``what`` names the files in the reason ("control image", "image")."""
    old = _split_fingerprint(recorded)
    try:
        now = [file_sha256(p) for p in paths]
    except OSError as exc:
        return f"{what} cannot be read: {exc}"
    if len(old) != len(now):
        return f"made with {len(old)} {what}(s), now {len(now)}"
    changed = [p for p, a, b in zip(paths, old, now, strict=True) if a != b]
    if not changed:
        return None
    more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
    return f"{what} {changed[0]} changed since it was cached{more}"


def _control_reason(entry: CacheEntry, recorded: str | None) -> str | None:
    """Why a cache file's ``control_sha256`` record does not match the entry's control images, if it does not.

    A file without the record (the reference trainer or an older version wrote it) is not outdated for it.
    """
    if not entry.control_paths or recorded is None:
        return None  # no record (the reference trainer or an older version wrote it): nothing disagrees
    return _files_reason("control image", entry.control_paths, recorded)


def _image_reason(entry: CacheEntry, recorded: str | None) -> str | None:
    """Why a latent file's ``image_sha256`` record does not match the entry's target image, if it does not.

    A file without the record (an older version or the reference trainer wrote it) is not outdated for it.
    """
    if entry.image_path is None or recorded is None:
        return None
    return _files_reason("image", (entry.image_path,), recorded)


def _vl_size_reason(entry: CacheEntry, recorded: str | None) -> str | None:
    """Why an edit-mode text file's ``control_vl_size`` record disagrees with the configured size, if it does.

    A file without the record (the reference trainer or an older version wrote it) is not outdated for it.
    """
    if not entry.control_paths or entry.control_vl_size is None or recorded is None:
        return None
    if recorded == entry.control_vl_size:
        return None
    return f"encoded with --control_text_encoder_size {recorded} (now {entry.control_vl_size})"


def latent_cache_outdated_reason(entry: CacheEntry) -> str | None:
    """Why the entry's present latent file is outdated (other bucket, control sizes, target image or control
    images), or None."""
    try:
        info = latent_cache_shape(entry.latent_path)
        meta = cache_file_metadata(entry.latent_path) if entry.control_paths or entry.image_path else {}
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    want = expected_latent_shape(entry.bucket)
    if info.target != want:
        return f"made for another bucket (latent {_shape_text(info.target)}, now {_shape_text(want)})"
    if entry.control_buckets:
        want_controls = tuple(expected_latent_shape(b) for b in entry.control_buckets)
        if info.controls != want_controls:
            return (
                "made for other control image sizes (control latents "
                f"{', '.join(map(_shape_text, info.controls)) or 'none'}, now "
                f"{', '.join(map(_shape_text, want_controls))})"
            )
    return _image_reason(entry, meta.get(IMAGE_FINGERPRINT_KEY)) or _control_reason(
        entry, meta.get(CONTROL_FINGERPRINT_KEY)
    )


def text_cache_outdated_reason(entry: CacheEntry) -> str | None:
    """Why the entry's present text file is outdated (another caption, other control images or another
    ``--control_text_encoder_size``), or None.

    A file without a recorded caption is taken as made from the current one (the reference trainer's
    files always have one), and so is an edit-mode file without a control or size record (see the module
    doc).
    """
    try:
        meta = cache_file_metadata(entry.text_path)
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    cached = meta.get("caption1")
    if entry.caption is not None and cached is not None and cached != entry.caption:
        return "made from another caption"
    return _control_reason(entry, meta.get(CONTROL_FINGERPRINT_KEY)) or _vl_size_reason(
        entry, meta.get(CONTROL_VL_SIZE_KEY)
    )


def latent_cache_current(entry: CacheEntry) -> bool:
    """Whether the entry's latent file exists and was made for its current bucket, image and control images."""
    return entry.latent_path.is_file() and latent_cache_outdated_reason(entry) is None


def text_cache_current(entry: CacheEntry) -> bool:
    """Whether the entry's text file exists and was made from its current caption and control images (at
    the configured size, when the entry knows it)."""
    return entry.text_path.is_file() and text_cache_outdated_reason(entry) is None


def cache_state(
    entries: list[CacheEntry],
    cache_dir: Path,
    arch: str,
    check_contents: bool = True,
    kept_keys: Collection[str] = (),
) -> CacheState:
    """Compare the cache files a dataset needs with those in its cache folder (``kept_keys``: see
    :func:`stale_cache_files`)."""
    state = CacheState()
    for e in entries:
        if e.latent_path.is_file():
            state.latents_present.append(e.latent_path)
            if check_contents and (reason := latent_cache_outdated_reason(e)) is not None:
                state.latents_outdated.append(e.latent_path)
                state.outdated_reasons[e.latent_path] = reason
        else:
            state.latents_missing.append(e.latent_path)
        if e.text_path.is_file():
            state.text_present.append(e.text_path)
            if check_contents and (reason := text_cache_outdated_reason(e)) is not None:
                state.text_outdated.append(e.text_path)
                state.outdated_reasons[e.text_path] = reason
        else:
            state.text_missing.append(e.text_path)
    state.stale = stale_cache_files(cache_dir, entries, arch, kept_keys)
    return state


def stale_cache_files(
    cache_dir: Path, entries: list[CacheEntry], arch: str, kept_keys: Collection[str] = ()
) -> list[Path]:
    """Cache files of this ``arch`` in ``cache_dir`` that belong to no current item.

    Files whose key is in ``kept_keys`` (items still in the dataset that could not be read this time:
    ``DatasetItems.kept_keys``) are never stale, whatever size their name records.
    """
    kept = set(kept_keys)
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
        key_arch = (latent[0], latent[2]) if latent is not None else text
        if key_arch is not None and key_arch[1] == arch and key_arch[0] not in kept:
            stale.append(p)
    return stale
