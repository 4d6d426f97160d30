"""How large an image is when the VLM sees it (``--max_size``): a pure rule, then a resize.

The rule the reference's caption script documents: keep the aspect ratio, keep the area between 256x256
and ``max_size x max_size``, and make both sides multiples of 28 (Qwen2.5-VL's 14-pixel patches merged
2x2). The size is the image's own, rounded to 28; when that area is outside the bounds, the image's size
scaled to the area of the nearer bound, sides rounded to 28 towards the inside (up when enlarging, down when
shrinking);
of that size and its neighbours one 28-pixel step wider, narrower, taller or shorter, those within the area
bounds are candidates and the one whose aspect ratio is nearest the image's wins (the first on a tie, in
the order: as rounded, then narrower, shorter, wider, taller); when none of them is within the bounds (a
very elongated image), the nearest aspect ratio among all sizes within them. The image is scaled to cover that size and
centre-cropped (``data.images.resize_to_bucket``), so the processor sees it as it is.
"""

from __future__ import annotations

import math

from PIL import Image

FACTOR = 28
MIN_SIDE = 256  # the smallest area is MIN_SIDE x MIN_SIDE
DEFAULT_MAX_SIZE = 1280


def vlm_size(width: int, height: int, max_size: int = DEFAULT_MAX_SIZE) -> tuple[int, int]:
    """The (width, height) an image of this size is given to the VLM at (see the module docstring)."""
    if width < 1 or height < 1:
        raise ValueError(f"image size {width}x{height} has no pixels")
    low, high = MIN_SIDE * MIN_SIDE, max_size * max_size
    if high < low:
        raise ValueError(f"max_size {max_size} is below {MIN_SIDE}")
    rounded = (_nearest(width), _nearest(height))
    area = rounded[0] * rounded[1]
    if area < low or area > high:
        scale = math.sqrt((low if area < low else high) / (width * height))
        snap = math.ceil if area < low else math.floor
        rounded = (
            max(FACTOR, snap(width * scale / FACTOR) * FACTOR),
            max(FACTOR, snap(height * scale / FACTOR) * FACTOR),
        )
    w, h = rounded
    steps = [(w, h), (w - FACTOR, h), (w, h - FACTOR), (w + FACTOR, h), (w, h + FACTOR)]
    fits = [(cw, ch) for cw, ch in steps if cw > 0 and ch > 0 and low <= cw * ch <= high]
    aspect = width / height
    if not fits:  # a very elongated image: per width (a multiple of FACTOR), the height within the bounds
        for cw in range(FACTOR, high // FACTOR + 1, FACTOR):  # nearest the image's aspect ratio
            lo_h, hi_h = math.ceil(low / cw / FACTOR) * FACTOR, math.floor(high / cw / FACTOR) * FACTOR
            if max(lo_h, FACTOR) <= hi_h:
                ch = min(max(round(cw / aspect / FACTOR) * FACTOR, lo_h, FACTOR), hi_h)
                fits.append((cw, ch))
    return min(fits, key=lambda size: abs(size[0] / size[1] - aspect))


def _nearest(side: int) -> int:
    """`side` rounded to the nearest multiple of FACTOR (halves up), at least FACTOR."""
    return max(FACTOR, math.floor(side / FACTOR + 0.5) * FACTOR)


def resize_for_vlm(image: Image.Image, max_size: int = DEFAULT_MAX_SIZE) -> Image.Image:
    """The image at its `vlm_size`, scaled to cover and centre-cropped."""
    from ..data.images import resize_to_bucket

    return resize_to_bucket(image, vlm_size(*image.size, max_size))
