"""Thumbnails of dataset images, made with Pillow on first request and kept in a cache folder.

A thumbnail is the image as viewers show it (EXIF orientation applied, transparency on grey), scaled to fit
a square of ``size`` pixels, saved as WebP. Its file name is a hash of the image's path, modification time
and size and of the thumbnail size, so an image changed on disk gets a new thumbnail and an unchanged one
is never decoded twice. The folder is a cache: a thumbnail's modification time says when it was last used
(refreshed at most hourly), and `prune_thumbnails` removes the least recently used ones beyond a size.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from qwen_image_studio.atomic import atomic_write
from qwen_image_studio.data.images import _READ_ERRORS, ImageReadError, read_error_reason

SIZES = (128, 256, 384, 512)
DEFAULT_SIZE = 256
VERSION = 1  # bump when the way thumbnails are made changes
BACKGROUND = (128, 128, 128)
MEDIA_TYPE = "image/webp"
USED_EVERY_S = 3600  # how stale a thumbnail's "last used" time may get before a use refreshes it


def thumbnail_path(cache_dir: Path, image: Path, size: int = DEFAULT_SIZE) -> Path:
    """Where the thumbnail of the current version of ``image`` is kept (OSError if it cannot be stat'ed)."""
    st = image.stat()
    key = hashlib.sha256(f"{image}|{st.st_mtime_ns}|{st.st_size}|{size}|v{VERSION}".encode()).hexdigest()
    return cache_dir / key[:2] / f"{key}.webp"


def render_thumbnail(image: Path, size: int = DEFAULT_SIZE) -> bytes:
    """The WebP bytes of a thumbnail of ``image``; ImageReadError if it cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(image) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (size, size))  # decode at a reduced scale: much faster
                oriented = ImageOps.exif_transpose(im)
                oriented.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
                if oriented.mode in ("RGBA", "LA", "PA") or "transparency" in oriented.info:
                    rgba = oriented.convert("RGBA")
                    flat = Image.new("RGB", rgba.size, BACKGROUND)
                    flat.paste(rgba, mask=rgba.getchannel("A"))
                else:
                    flat = oriented.convert("RGB")
    except _READ_ERRORS as exc:
        raise ImageReadError(read_error_reason(exc), image) from None
    out = io.BytesIO()
    flat.save(out, "WEBP", quality=80, method=2)
    return out.getvalue()


def ensure_thumbnail(cache_dir: Path, image: Path, size: int = DEFAULT_SIZE) -> Path:
    """The thumbnail file of ``image``, made (atomically) when it does not exist yet."""
    path = thumbnail_path(cache_dir, image, size)
    try:
        if time.time() - path.stat().st_mtime > USED_EVERY_S:
            os.utime(path)  # used now: pruning keeps it
        return path
    except FileNotFoundError:
        pass
    data = render_thumbnail(image, size)
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
    return path


def prune_thumbnails(cache_dir: Path, max_bytes: int, target: float = 0.8) -> int:
    """When the thumbnails in ``cache_dir`` take more than ``max_bytes``, remove the least recently used
    until they take at most ``target`` of it; returns how many were removed. Only ``*.webp`` files in the
    hash sub-folders are touched; one removed by someone else meanwhile is skipped."""
    found: list[tuple[float, int, Path]] = []
    for path in cache_dir.glob("??/*.webp"):
        try:
            st = path.stat()
        except OSError:
            continue
        found.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in found)
    if total <= max_bytes:
        return 0
    removed = 0
    for _, size, path in sorted(found):
        if total <= max_bytes * target:
            break
        try:
            path.unlink()
        except OSError:
            continue
        total -= size
        removed += 1
    return removed
