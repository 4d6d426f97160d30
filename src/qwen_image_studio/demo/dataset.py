"""A small generated dataset: coloured shapes a LoRA can overfit in a few steps, with control images for edit.

Six targets in three aspect ratios (two square, two landscape, two portrait) with captions beside them, one
control image per target (the same scene with the shape in grey) and two TOMLs at 64x64 with buckets on:
``dataset_t2i.toml`` and ``dataset_edit.toml``, each with its own cache directory. Two more captioned
scenes in ``validation/`` are held out for the validation loss (``dataset_validation.toml``, its own cache
directory; text-to-image). Everything is deterministic from the seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from qwen_image_studio.data.config import Dataset, DatasetConfig, GeneralSettings, write_dataset_config

RESOLUTION = (64, 64)
# (width, height): at 64x64 these fall in the buckets 64x64, 80x48 and 48x80.
SIZES = [(96, 96), (120, 72), (72, 120), (112, 112), (128, 72), (72, 128)]
VALIDATION_SIZES = [(104, 104), (72, 120)]  # held out: buckets 64x64 and 48x80
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle")
CONTROL_GREY = (128, 128, 128)


def _draw(
    size: tuple[int, int], shape: str, fill: tuple[int, int, int], background: tuple[int, int, int]
) -> Image.Image:
    """One scene: a shape centred on a plain background."""
    w, h = size
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    r = min(w, h) * 3 // 10
    cx, cy = w // 2, h // 2
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    return image


def create_demo_dataset(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write the demo images, captions, control images and both TOMLs under ``root``; return their paths."""
    root = Path(root).resolve()
    images, controls = root / "images", root / "controls"
    images.mkdir(parents=True, exist_ok=True)
    controls.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = list(COLOURS)
    for index, size in enumerate(SIZES):
        shape = SHAPES[index % len(SHAPES)]
        colour, background = (
            rng.sample([n for n in names if n not in ("white", "black")], 1)[0],
            rng.choice(["white", "black"]),
        )
        stem = f"demo_{index:02d}"
        _draw(size, shape, COLOURS[colour], COLOURS[background]).save(images / f"{stem}.png")
        _draw(size, shape, CONTROL_GREY, COLOURS[background]).save(controls / f"{stem}.png")
        caption = f"a {colour} {shape} on a {background} background"
        (images / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")
    validation = root / "validation"
    validation.mkdir(parents=True, exist_ok=True)
    # drawn after the training scenes, which therefore stay as they were
    for index, size in enumerate(VALIDATION_SIZES):
        shape = SHAPES[(index + 1) % len(SHAPES)]
        colour = rng.sample([n for n in names if n not in ("white", "black")], 1)[0]
        background = rng.choice(["white", "black"])
        stem = f"val_{index:02d}"
        _draw(size, shape, COLOURS[colour], COLOURS[background]).save(validation / f"{stem}.png")
        caption = f"a {colour} {shape} on a {background} background"
        (validation / f"{stem}.txt").write_text(caption + "\n", encoding="utf-8")

    paths = {
        "root": root,
        "images": images,
        "controls": controls,
        "cache_t2i": root / "cache" / "t2i",
        "cache_edit": root / "cache" / "edit",
        "t2i_toml": root / "dataset_t2i.toml",
        "edit_toml": root / "dataset_edit.toml",
        "validation": validation,
        "cache_validation": root / "cache" / "validation",
        "validation_toml": root / "dataset_validation.toml",
    }
    general = GeneralSettings(
        resolution=RESOLUTION, caption_extension=".txt", batch_size=1, num_repeats=1, enable_bucket=True
    )
    common = {"resolution": RESOLUTION, "enable_bucket": True, "image_directory": images}
    t2i = Dataset(index=0, cache_directory=paths["cache_t2i"], **common)
    edit = Dataset(index=0, cache_directory=paths["cache_edit"], control_directory=controls, **common)
    write_dataset_config(DatasetConfig(general=general, datasets=[t2i]), paths["t2i_toml"])
    write_dataset_config(DatasetConfig(general=general, datasets=[edit]), paths["edit_toml"])
    held_out = Dataset(
        index=0, cache_directory=paths["cache_validation"], **{**common, "image_directory": validation}
    )
    write_dataset_config(DatasetConfig(general=general, datasets=[held_out]), paths["validation_toml"])
    return paths
