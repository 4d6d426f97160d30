"""The captioning rules that need no model: the --max_size sizing rule (the reference's documented rule:
aspect kept, area between 256x256 and max_size x max_size, sides multiples of 28), the prompt templates,
--prompt's \\n escape and the trigger word."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qwen_image_studio.captioning.prompts import EDIT_PAIR_PROMPT, TEMPLATES, caption_prompt, with_trigger
from qwen_image_studio.captioning.sizing import resize_for_vlm, vlm_size


@pytest.mark.parametrize(
    ("size", "max_size", "expected"),
    [
        # 96x96 rounds to 84x84 (7056 px, under 256x256): scaled to 256x256, sides rounded up to 28
        # (256 / 28 = 9.14 -> 10 -> 280); square stays square.
        ((96, 96), 1280, (280, 280)),
        ((1, 1), 1280, (280, 280)),
        # 1920x1080 rounds to 1932x1092 (2.1 Mpx, over 1280x1280): scaled to 1707x960, sides rounded down
        # to 28: 1680x952 (1.765); its 28-px neighbours 1652x952 (1.735), 1680x924 (1.818), 1708x952 (1.794)
        # are further from 16:9 (1.778), and 1680x980 is over the area.
        ((1920, 1080), 1280, (1680, 952)),
        # 1000x600 rounds to 1008x588 (inside the bounds); 980x588 has the image's own ratio 5:3.
        ((1000, 600), 1280, (980, 588)),
        # --max_size 512: 1024x1024 rounds to 1036x1036, scaled to the 512x512 area: 504x504.
        ((1024, 1024), 512, (504, 504)),
    ],
)
def test_vlm_size_by_hand(size: tuple[int, int], max_size: int, expected: tuple[int, int]) -> None:
    assert vlm_size(*size, max_size) == expected


@settings(max_examples=200, deadline=None)
@given(w=st.integers(1, 6000), h=st.integers(1, 6000), max_size=st.integers(280, 2048))
def test_vlm_size_keeps_the_bounds(w: int, h: int, max_size: int) -> None:
    vw, vh = vlm_size(w, h, max_size)
    assert vw % 28 == 0 and vh % 28 == 0 and vw >= 28 and vh >= 28
    if 1 / 8 <= w / h <= 8:  # extreme strips can leave no 28-multiple inside the bounds; ordinary ones fit
        assert 256 * 256 <= vw * vh <= max_size * max_size


def test_resize_for_vlm_gives_that_size() -> None:
    image = Image.new("RGB", (120, 72), (200, 10, 10))
    assert resize_for_vlm(image, 1280).size == vlm_size(120, 72, 1280)


def test_prompts() -> None:
    assert set(TEMPLATES) == {"detailed", "short", "tags", "style_neutral"}
    assert caption_prompt(None, "tags") == TEMPLATES["tags"]
    assert caption_prompt(None, "detailed", edit_pairs=True) == EDIT_PAIR_PROMPT
    # the reference's --prompt takes \n (backslash, n) for a new line
    assert caption_prompt("A caption for this image is:\\n", "detailed") == "A caption for this image is:\n"
    assert with_trigger("a red circle", "sks") == "sks, a red circle"
    assert with_trigger("sks, a red circle", "sks") == "sks, a red circle"
    assert with_trigger("a red circle", None) == "a red circle"
