"""Aspect-ratio buckets: which size each image is trained at, and how it is resized and cropped to it.

The rule follows the reference trainer (musubi-tuner's ``BucketSelector``) so that a dataset gives the same
buckets in both tools:

* step 16 px (VAE 8x times patch 2);
* ``area = W * H`` of ``resolution``; ``s = floor(sqrt(area))``; widths ``w`` run from ``floor16(s // 2)`` up
  to ``s + 15`` in 16-px steps; ``h = floor16(area // w)``; each ``(w, h)`` is added in both orientations;
* an image takes the bucket whose aspect ratio ``w / h`` is nearest to its own (the first in sorted order on
  a tie);
* with ``bucket_no_upscale`` an image whose area is at most ``area`` keeps its own size rounded down to 16;
* without buckets every image goes to ``resolution``;
* the image is scaled to cover the bucket (``round(side * scale)``) and centre-cropped.
* edit-mode control images take the target's bucket, or their own size or area with ``no_resize_control``
  and ``control_resolution``: see :func:`control_bucket`.

Every function here is pure: sizes in, sizes out.
"""

from __future__ import annotations

import math
from functools import lru_cache

STEP = 16
"""Bucket sides are multiples of this (the VAE's 8x compression times the DiT's 2x2 patches)."""

Size = tuple[int, int]
"""(width, height) in pixels."""

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in pixels, as PIL's ``crop`` takes it."""


def round_down(value: int, step: int = STEP) -> int:
    """``value`` rounded down to a multiple of ``step``."""
    return value - value % step


@lru_cache(maxsize=64)
def bucket_resolutions(resolution: Size, step: int = STEP) -> tuple[Size, ...]:
    """All buckets for a target resolution, sorted by (width, height)."""
    area = resolution[0] * resolution[1]
    side = math.isqrt(area)
    found: set[Size] = set()
    for w in range(round_down(side // 2, step), side + step, step):
        if w < step:
            continue
        h = round_down(area // w, step)
        if h < step:
            continue
        found.add((w, h))
        found.add((h, w))
    return tuple(sorted(found))


def nearest_bucket(image_size: Size, buckets: tuple[Size, ...]) -> Size:
    """The bucket whose aspect ratio is nearest to the image's (the first one on a tie)."""
    ratio = image_size[0] / image_size[1]
    best = buckets[0]
    best_err = abs(best[0] / best[1] - ratio)
    for bucket in buckets[1:]:
        err = abs(bucket[0] / bucket[1] - ratio)
        if err < best_err:
            best, best_err = bucket, err
    return best


def select_bucket(
    image_size: Size, resolution: Size, enable_bucket: bool = True, no_upscale: bool = False
) -> Size:
    """The (width, height) an image of ``image_size`` is trained at; a side may be 0 for a tiny image."""
    if not enable_bucket:
        return resolution
    if no_upscale and image_size[0] * image_size[1] <= resolution[0] * resolution[1]:
        return round_down(image_size[0]), round_down(image_size[1])
    return nearest_bucket(image_size, bucket_resolutions(resolution))


def fit_to_area(image_size: Size, resolution: Size, step: int = STEP) -> Size:
    """A per-image bucket of at most the area of ``resolution`` with the image's aspect ratio.

    Used for edit-mode control images with ``control_resolution``: a width near ``sqrt(area * ratio)``
    (within two steps either side) whose ``h = floor16(area // w)`` gives the nearest aspect ratio.
    """
    area = resolution[0] * resolution[1]
    ratio = image_size[0] / image_size[1]
    base_w = round_down(int(math.sqrt(area * ratio)), step)
    best: Size | None = None
    best_err = math.inf
    for i in range(-2, 3):
        w = base_w + i * step
        if w < step:
            continue
        h = round_down(area // w, step)
        if h < step:
            continue
        err = abs(w / h - ratio)
        if err < best_err:
            best, best_err = (w, h), err
    if best is None:  # an extreme aspect ratio: the thinnest strip that fits
        best = (step, round_down(area // step, step)) if ratio < 1 else (round_down(area // step, step), step)
    return best


def control_bucket(
    control_size: Size,
    target_bucket: Size,
    control_resolution: Size | None = None,
    no_resize_control: bool = False,
) -> Size:
    """The size an edit-mode control image is encoded at.

    * neither option: the target's bucket;
    * ``control_resolution`` alone: a bucket of its own of that area (:func:`fit_to_area`);
    * ``no_resize_control`` alone: its own size cropped to multiples of 16;
    * both: ``control_resolution`` is a maximum area. A control with more pixels than it is scaled down to
      :func:`fit_to_area` (2048x1333 with 1024x1024 gives 1264x816); one with at most that many keeps its
      own size cropped to multiples of 16 (777x512 gives 768x512), as the reference's documentation says.
      The reference's code keeps such a control at exactly 777x512, whose latent (97 cells wide) its
      training cannot cut into the DiT's 2x2 patches, so that run stops at its first step; wherever the
      reference trains, the sizes agree.
    """
    if no_resize_control:
        area = control_size[0] * control_size[1]
        if control_resolution is not None and area > control_resolution[0] * control_resolution[1]:
            return fit_to_area(control_size, control_resolution)
        return round_down(control_size[0]), round_down(control_size[1])
    if control_resolution is not None:
        return fit_to_area(control_size, control_resolution)
    return target_bucket


def scaled_size(image_size: Size, bucket: Size) -> Size:
    """The size an image is resized to so that it covers ``bucket`` (before the centre crop)."""
    if image_size == bucket:
        return image_size
    scale = max(bucket[0] / image_size[0], bucket[1] / image_size[1])
    w = max(int(image_size[0] * scale + 0.5), bucket[0])
    h = max(int(image_size[1] * scale + 0.5), bucket[1])
    return w, h


def center_crop_box(scaled: Size, bucket: Size) -> Box:
    """The centred ``bucket``-sized box inside an image of size ``scaled``."""
    left = (scaled[0] - bucket[0]) // 2
    top = (scaled[1] - bucket[1]) // 2
    return left, top, left + bucket[0], top + bucket[1]


def resize_plan(image_size: Size, bucket: Size) -> tuple[Size, Box]:
    """Resize-to-cover size and centre-crop box that turn an image into its bucket."""
    scaled = scaled_size(image_size, bucket)
    return scaled, center_crop_box(scaled, bucket)
