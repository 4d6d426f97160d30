"""Edit-mode text-encoder input size (issue 13, item 3): official by default, the reference's on request.

Official (diffusers' QwenImageEditPipeline / QwenImageEditPlusPipeline): the control image is resized to
the 1024x1024 area (edit) or the 384x384 area (2509, 2511), each side rounded to a multiple of 32.
Reference (musubi-tuner's text-encoder cache and generation): every version at the 384x384 area, the
bucket of that area whose aspect ratio is nearest the image's (width rounded down to 16 and searched two
steps of 16 either side, height = (area // width) rounded down to 16), the image scaled to cover it and
centre-cropped. Either way Qwen2.5-VL's processor then rounds each side to a multiple of 28 (14-px patches
merged 2x2), which sets the image grid and the number of image tokens.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from qwen_image_studio.models.processor import build_processor
from qwen_image_studio.models.text_encoding import encode, load_encoding_pipeline, prompt_images
from qwen_image_studio.params.validate import validate_config


def reference_bucket(width: int, height: int, area: int = 384 * 384, step: int = 16) -> tuple[int, int]:
    """The reference's condition-image bucket, rebuilt from the rule in the module docstring."""
    ratio = width / height
    base = int(math.sqrt(area * ratio)) // step * step
    candidates = [(w, area // w // step * step) for w in (base + i * step for i in range(-2, 3))]
    return min(candidates, key=lambda wh: abs(wh[0] / wh[1] - ratio))


def grid(image: Image.Image) -> tuple[int, int, int]:
    out = build_processor()(
        text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt"
    )
    return tuple(int(x) for x in out["image_grid_thw"][0])


@pytest.mark.parametrize(
    ("size", "version", "pixels", "expected"),
    [
        ((640, 480), "edit", (1184, 896), (1, 64, 84)),  # official edit: 1024x1024 area, sides /32
        ((640, 480), "edit-2509", (448, 320), (1, 22, 32)),  # official 2509/2511: 384x384 area
        ((640, 480), "edit-2511", (448, 320), (1, 22, 32)),
        ((300, 500), "edit", (800, 1312), (1, 94, 58)),  # the processor: 812x1316 (sides /28)
    ],
)
def test_official_size(size: tuple[int, int], version: str, pixels: tuple[int, int], expected: tuple) -> None:
    (image,) = prompt_images(version, [Image.new("RGB", size, "gray")])
    assert image.size == pixels and grid(image) == expected


@pytest.mark.parametrize(
    ("size", "pixels", "expected"),
    [
        ((640, 480), (432, 336), (1, 24, 30)),
        ((300, 500), (304, 480), (1, 34, 22)),
        ((512, 512), (384, 384), (1, 28, 28)),
    ],
)
@pytest.mark.parametrize("version", ["edit", "edit-2509", "edit-2511"])
def test_reference_size(
    size: tuple[int, int], pixels: tuple[int, int], expected: tuple, version: str
) -> None:
    assert reference_bucket(*size) == pixels
    (image,) = prompt_images(version, [Image.new("RGB", size, "gray")], "reference")
    assert image.size == pixels and grid(image) == expected


def test_reference_crops_to_the_bucket_centre() -> None:
    """A 640x480 image whose left and right eighths are red: covering 432x336 scales it to 448x336 and the
    crop takes 8 px off each side, so the red bands stay, narrower, at both edges."""
    image = Image.new("RGB", (640, 480), "white")
    for x0 in (0, 560):
        image.paste((255, 0, 0), (x0, 0, x0 + 80, 480))
    (out,) = prompt_images("edit", [image], "reference")
    assert out.size == (432, 336)
    assert out.getpixel((2, 168))[1] < 50 and out.getpixel((429, 168))[1] < 50  # red at both edges
    assert out.getpixel((216, 168)) == (255, 255, 255)


def test_the_option_changes_the_demo_encoding(demo: Path) -> None:
    """On the demo edit text encoder: the reference size gives the 640x480 control 24x30 patches (180 image
    tokens) instead of 64x84 (1344), and the prompt embedding is that much shorter."""
    comfy = demo / "models" / "comfyui"
    config = validate_config(
        {"text_encoder": str(comfy / "qwen_2.5_vl_7b.safetensors"), "model_version": "edit"}
    )
    pipe = load_encoding_pipeline(config, torch.device("cpu"), torch.float32)
    control = Image.new("RGB", (640, 480), "gray")
    (official,) = encode(pipe, "edit", ["make it red"], [[control]], torch.device("cpu"))
    (reference,) = encode(pipe, "edit", ["make it red"], [[control]], torch.device("cpu"), "reference")
    assert official.shape[0] - reference.shape[0] == (64 * 84 - 24 * 30) // 4
    assert validate_config({}).control_text_encoder_size == "official"  # the default stays official
