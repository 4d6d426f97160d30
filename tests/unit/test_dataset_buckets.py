"""Bucket math: the reference trainer's bucket list, nearest-ratio choice and the resize/crop plan."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from qwen_image_studio.data.buckets import (
    STEP,
    bucket_resolutions,
    center_crop_box,
    control_bucket,
    fit_to_area,
    nearest_bucket,
    resize_plan,
    round_down,
    select_bucket,
)

sides = st.integers(min_value=1, max_value=256).map(lambda n: n * STEP)  # 16 .. 4096
resolutions = st.tuples(sides, sides).filter(lambda r: r[0] * r[1] <= 2048 * 2048)
image_sizes = st.tuples(st.integers(1, 8000), st.integers(1, 8000))


def test_bucket_counts_match_the_reference_trainer() -> None:
    """Known sizes of musubi-tuner's bucket lists for square targets."""
    assert len(bucket_resolutions((1024, 1024))) == 65
    assert len(bucket_resolutions((768, 768))) == 49
    assert len(bucket_resolutions((512, 512))) == 33
    assert (1184, 880) in bucket_resolutions((1024, 1024))
    assert (1168, 880) not in bucket_resolutions((1024, 1024))


def test_small_bucket_list_by_hand() -> None:
    """64x64: area 4096, widths 32, 48, 64 give heights 128, 80, 64, in both orientations."""
    assert bucket_resolutions((64, 64)) == ((32, 128), (48, 80), (64, 64), (80, 48), (128, 32))


def test_tiny_resolution_has_no_zero_sided_bucket() -> None:
    """The reference would divide by zero at 16x16 (first width 0); we start at one step."""
    assert bucket_resolutions((16, 16)) == ((16, 16),)


def test_examples() -> None:
    """A few choices worked out by hand."""
    assert select_bucket((1920, 1080), (1024, 1024)) == nearest_bucket(
        (1920, 1080), bucket_resolutions((1024, 1024))
    )
    assert select_bucket((1024, 1024), (1024, 1024)) == (1024, 1024)
    assert select_bucket((500, 300), (1024, 1024), enable_bucket=False) == (1024, 1024)
    assert select_bucket((500, 300), (1024, 1024), no_upscale=True) == (496, 288)
    assert select_bucket((2000, 2000), (1024, 1024), no_upscale=True) == (1024, 1024)
    assert select_bucket((500, 300), (1024, 1024), enable_bucket=False, no_upscale=True) == (1024, 1024)
    assert select_bucket((120, 72), (64, 64)) == (80, 48)


@given(resolutions)
def test_buckets_keep_the_area_and_the_step(resolution: tuple[int, int]) -> None:
    """Every bucket: sides multiples of 16, area at most the target's, the swapped bucket too."""
    area = resolution[0] * resolution[1]
    buckets = bucket_resolutions(resolution)
    assert buckets
    assert list(buckets) == sorted(set(buckets))
    for w, h in buckets:
        assert w % STEP == 0 and h % STEP == 0 and w >= STEP and h >= STEP
        assert w * h <= area
        assert (h, w) in buckets


@given(resolutions)
def test_bucket_widths_follow_the_rule(resolution: tuple[int, int]) -> None:
    """The generating widths run from floor16(sqrt(area)/2) to sqrt(area)+15, h = floor16(area // w)."""
    area = resolution[0] * resolution[1]
    side = math.isqrt(area)
    expected = set()
    for w in range(max(round_down(side // 2), STEP), side + STEP, STEP):
        h = round_down(area // w)
        if h >= STEP:
            expected |= {(w, h), (h, w)}
    assert set(bucket_resolutions(resolution)) == expected


@given(resolutions, image_sizes)
def test_chosen_bucket_has_the_nearest_aspect_ratio(
    resolution: tuple[int, int], size: tuple[int, int]
) -> None:
    """No other bucket is closer in aspect ratio; the area never exceeds the target's."""
    chosen = select_bucket(size, resolution)
    ratio = size[0] / size[1]
    err = abs(chosen[0] / chosen[1] - ratio)
    assert all(err <= abs(w / h - ratio) for w, h in bucket_resolutions(resolution))
    assert chosen[0] * chosen[1] <= resolution[0] * resolution[1]


@given(resolutions, image_sizes)
def test_no_upscale_keeps_small_images_small(resolution: tuple[int, int], size: tuple[int, int]) -> None:
    """A small image keeps its size rounded down to 16; a large one takes a bucket; never above the area."""
    chosen = select_bucket(size, resolution, no_upscale=True)
    assert chosen[0] % STEP == 0 and chosen[1] % STEP == 0
    assert chosen[0] * chosen[1] <= resolution[0] * resolution[1]
    if size[0] * size[1] <= resolution[0] * resolution[1]:
        assert chosen == (size[0] - size[0] % STEP, size[1] - size[1] % STEP)
        assert chosen[0] <= size[0] and chosen[1] <= size[1]
    else:
        assert chosen in bucket_resolutions(resolution)


@given(resolutions, image_sizes)
def test_without_buckets_everything_goes_to_the_resolution(
    resolution: tuple[int, int], size: tuple[int, int]
) -> None:
    """enable_bucket = false: one bucket, the resolution itself."""
    assert select_bucket(size, resolution, enable_bucket=False, no_upscale=True) == resolution


@given(image_sizes, st.tuples(sides, sides))
def test_resize_plan_covers_and_crops_inside(size: tuple[int, int], bucket: tuple[int, int]) -> None:
    """The scaled image covers the bucket, keeps the aspect ratio and the centred crop box lies inside it."""
    scaled, box = resize_plan(size, bucket)
    left, top, right, bottom = box
    assert scaled[0] >= bucket[0] and scaled[1] >= bucket[1]
    assert left >= 0 and top >= 0 and right <= scaled[0] and bottom <= scaled[1]
    assert (right - left, bottom - top) == bucket
    assert abs((scaled[0] - right) - left) <= 1 and abs((scaled[1] - bottom) - top) <= 1
    # one side matches the bucket (up to rounding); the other keeps the ratio to within a pixel of rounding
    scale = max(bucket[0] / size[0], bucket[1] / size[1])
    assert abs(scaled[0] - size[0] * scale) <= 1 and abs(scaled[1] - size[1] * scale) <= 1


def test_resize_plan_identity_and_centre() -> None:
    """An image already at its bucket is untouched; a wide one is cropped equally left and right."""
    assert resize_plan((64, 64), (64, 64)) == ((64, 64), (0, 0, 64, 64))
    assert resize_plan((200, 100), (64, 64)) == ((128, 64), (32, 0, 96, 64))
    assert center_crop_box((81, 64), (64, 64)) == (8, 0, 72, 64)


@given(image_sizes, resolutions)
def test_fit_to_area_keeps_area_and_step(size: tuple[int, int], resolution: tuple[int, int]) -> None:
    """A control_resolution bucket: multiples of 16, at most the area."""
    w, h = fit_to_area(size, resolution)
    assert w % STEP == 0 and h % STEP == 0 and w >= STEP and h >= STEP
    assert w * h <= resolution[0] * resolution[1]


def test_control_bucket_modes() -> None:
    """Target bucket by default; own size rounded down with no_resize_control; own bucket with a resolution;
    with both, the resolution caps the area (300x200 has more pixels than 128x128, so it is scaled down)."""
    assert control_bucket((300, 200), (64, 64)) == (64, 64)
    assert control_bucket((300, 200), (64, 64), no_resize_control=True) == (288, 192)
    assert control_bucket((300, 200), (64, 64), (128, 128), no_resize_control=True) == (160, 96)
    assert control_bucket((300, 200), (64, 64), (512, 512), no_resize_control=True) == (288, 192)
    w, h = control_bucket((300, 200), (64, 64), (128, 128))
    assert w * h <= 128 * 128 and abs(w / h - 1.5) < 0.2
