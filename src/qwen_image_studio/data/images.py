"""Image files: which files count as images, their size without decoding pixels, and loading into a bucket.

EXIF orientation (as phone cameras write it) is applied both when sizing and when loading, so an image is
trained the way viewers show it and its bucket matches the pixels the caching stage produces.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from qwen_image_studio.data.buckets import Size, resize_plan

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
_EXIF_ORIENTATION = 0x0112
_EXIF_IN_HEADER = {"JPEG", "MPO", "WEBP"}  # formats whose EXIF Pillow reads without decoding the pixels


class ImageReadError(Exception):
    """An image file that cannot be read; the message is a short reason."""


def is_image_file(path: Path) -> bool:
    """Whether ``path`` has one of the image extensions (any letter case)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (not in sub-folders), sorted by name."""
    return sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file())


def probe_image(path: Path, decode: bool = False) -> Size:
    """The displayed (width, height) of an image, read lazily; ImageReadError if it is unreadable.

    Without ``decode`` only the header is read (and PNG chunk checksums checked); with it every pixel is
    decoded, which also catches truncated JPEGs.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                swap = im.format in _EXIF_IN_HEADER and im.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
                if decode:
                    im.load()
                else:
                    im.verify()
    except UnidentifiedImageError:
        raise ImageReadError("not an image Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageReadError("too many pixels (a decompression-bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(str(exc) or type(exc).__name__) from None
    if w <= 0 or h <= 0:
        raise ImageReadError(f"empty image ({w}x{h})")
    return (h, w) if swap else (w, h)


def load_image(path: Path) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied (alpha is dropped)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def resize_to_bucket(image: Image.Image, bucket: Size) -> Image.Image:
    """Scale an image to cover ``bucket`` (Lanczos up, box-average down) and centre-crop it to that size."""
    if image.size == tuple(bucket):
        return image
    scaled, box = resize_plan(image.size, bucket)
    enlarge = scaled[0] > image.size[0] or scaled[1] > image.size[1]
    resample = Image.Resampling.LANCZOS if enlarge else Image.Resampling.BOX
    return image.resize(scaled, resample).crop(box)


def load_image_for_bucket(path: Path, bucket: Size) -> Image.Image:
    """An image file decoded, oriented, resized and cropped to ``bucket``."""
    return resize_to_bucket(load_image(path), bucket)
