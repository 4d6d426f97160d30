"""Image files: which files count as images, their size without decoding pixels, and loading into a bucket.

EXIF orientation (as phone cameras write it) is applied both when sizing and when loading, so an image is
trained the way viewers show it and its bucket matches the pixels the caching stage produces. The reference
trainer ignores the tag and trains the stored pixels: :func:`probe_image_orientation` reports the tag so
that ``dataset inspect`` can mark such images.
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
    """An image file that cannot be read; the message is a short reason, ``path`` the file (if known)."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.path = path


_READ_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
"""What Pillow raises for a file it cannot open or decode (truncated, corrupt, unreadable)."""


def read_error_reason(exc: BaseException) -> str:
    """One short line for why Pillow (or the file system) could not read an image."""
    if isinstance(exc, UnidentifiedImageError):
        return "not an image Pillow can read"
    if isinstance(exc, Image.DecompressionBombError):
        return "too many pixels (a decompression-bomb guard)"
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return exc.strerror  # "Permission denied": the caller names the file
    return " ".join(str(exc).split()) or type(exc).__name__


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
    return probe_image_orientation(path, decode)[0]


def probe_image_orientation(path: Path, decode: bool = False) -> tuple[Size, int]:
    """:func:`probe_image` and the image's EXIF orientation (1, upright, when it has none)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1) if im.format in _EXIF_IN_HEADER else 1
                if decode:
                    im.load()
                else:
                    im.verify()
    except _READ_ERRORS as exc:
        raise ImageReadError(read_error_reason(exc), path) from None
    if w <= 0 or h <= 0:
        raise ImageReadError(f"empty image ({w}x{h})", path)
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1  # a malformed tag: Pillow's exif_transpose leaves the picture as it is
    return ((h, w) if orientation_swaps_sides(orientation) else (w, h)), orientation


def orientation_swaps_sides(orientation: int) -> bool:
    """Whether an EXIF orientation turns the picture by 90 degrees (5 to 8), so width and height swap."""
    return orientation in (5, 6, 7, 8)


def load_image(path: Path) -> Image.Image:
    """Decode an image as RGB with its EXIF orientation applied (alpha is dropped)."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def read_image(path: Path) -> Image.Image:
    """:func:`load_image`, but ImageReadError (a short reason and the path) if the file cannot be decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return load_image(path)
    except _READ_ERRORS as exc:
        raise ImageReadError(read_error_reason(exc), path) from None


def read_image_for_bucket(path: Path, bucket: Size) -> Image.Image:
    """:func:`load_image_for_bucket`, but ImageReadError if the file cannot be decoded."""
    return resize_to_bucket(read_image(path), bucket)


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
