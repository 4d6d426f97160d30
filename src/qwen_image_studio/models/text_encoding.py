"""Prompt encoding with Qwen2.5-VL, exactly as diffusers' Qwen-Image pipelines do it (caching and sampling).

The prompt templates, the dropped prefix and the control-image preparation are diffusers' own:
`QwenImagePipeline.encode_prompt` (text-to-image), `QwenImageEditPipeline.encode_prompt` (edit) and
`QwenImageEditPlusPipeline.encode_prompt` (2509/2511, "Picture N:" per control image), called on
pipelines that hold only the text encoder, tokenizer and processor.

The size a control image has when Qwen2.5-VL sees it (``--control_text_encoder_size``):

- ``official`` (default), as diffusers' and the official pipelines: edit at the 1024x1024 area, 2509/2511
  at the 384x384 area, each side rounded to 32, resized without cropping;
- ``reference``, as the reference trainer (musubi-tuner) caches and generates: every version at the
  384x384 area, the bucket of that area nearest the image's aspect ratio (sides multiples of 16, the
  width searched two steps either side), the image scaled to cover it and centre-cropped (Lanczos when
  enlarging; box averaging where the reference uses OpenCV's INTER_AREA, so pixels may differ slightly).

The processor then rounds each side to 28 (14-px patches merged 2x2), so the two give other image grids
and token counts: reproduce a reference-trained LoRA's conditioning with ``reference``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from .loading import load_prompt_encoder

if TYPE_CHECKING:
    from ..params.schema import StudioConfig

CONTROL_TE_SIZES = ("official", "reference")
REFERENCE_CONTROL_RESOLUTION = (384, 384)  # the reference trainer's condition-image area


def _model_root(path: str | None) -> Path | None:
    """The diffusers root a --text_encoder folder belongs to (its tokenizer/ and processor/ live there)."""
    if not path:
        return None
    p = Path(path).expanduser()
    for candidate in (p, p.parent):
        if candidate.is_dir() and (candidate / "tokenizer").is_dir():
            return candidate
    return None


def load_encoding_pipeline(config: StudioConfig, device: torch.device, dtype: torch.dtype) -> Any:
    """`config`'s text encoder as an encoding pipeline: without lm_head, the vision tower only in edit modes,
    each layer placed on `device` as it is read (in fp8 with --fp8_vl)."""
    te = load_prompt_encoder(
        config.text_encoder,  # type: ignore[arg-type]
        dtype=dtype,
        device=device,
        fp8_linears=config.fp8_vl,
        vision=config.model_version != "original",
    )
    return build_encoding_pipeline(te, config.model_version, config.tokenizer, config.text_encoder)


def build_encoding_pipeline(
    text_encoder: torch.nn.Module,
    model_version: str,
    tokenizer_path: str | None,
    text_encoder_path: str | None,
) -> Any:
    """The diffusers pipeline whose `encode_prompt` matches `model_version`, holding only what encoding needs."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline, QwenImagePipeline

    from .processor import build_processor, load_processor
    from .tokenizer import resolve_tokenizer

    root = _model_root(text_encoder_path)
    tokenizer = resolve_tokenizer(tokenizer_path or (root / "tokenizer" if root else None))
    common = {
        "scheduler": None,
        "vae": None,
        "transformer": None,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
    }
    if model_version == "original":
        return QwenImagePipeline(**common)
    has_processor = root is not None and (root / "processor").is_dir()
    processor = load_processor(root) if has_processor else build_processor(tokenizer)
    cls = QwenImageEditPipeline if model_version == "edit" else QwenImageEditPlusPipeline
    return cls(**common, processor=processor)


def prompt_images(
    model_version: str, controls: list[Image.Image], size: str = "official"
) -> list[Image.Image]:
    """Control images resized for the text encoder: as the diffusers pipeline does before `encode_prompt`
    for this version (`size` "official"), or as the reference trainer does ("reference")."""
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit as edit
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus

    if size == "reference":
        from ..data.buckets import fit_to_area
        from ..data.images import resize_to_bucket

        return [resize_to_bucket(im, fit_to_area(im.size, REFERENCE_CONTROL_RESOLUTION)) for im in controls]
    if size != "official":
        raise ValueError(f"unknown control size {size!r}; one of {', '.join(CONTROL_TE_SIZES)}")
    resize = VaeImageProcessor(vae_scale_factor=16).resize
    out = []
    for image in controls:
        ratio = image.size[0] / image.size[1]
        if model_version == "edit":
            width, height, _ = edit.calculate_dimensions(1024 * 1024, ratio)
        else:
            width, height = plus.calculate_dimensions(plus.CONDITION_IMAGE_SIZE, ratio)
        out.append(resize(image, height, width))
    return out


@torch.no_grad()
def encode(
    pipe: Any,
    model_version: str,
    captions: list[str],
    controls: list[list[Image.Image]] | None,
    device: torch.device,
    control_size: str = "official",
) -> list[torch.Tensor]:
    """Per caption, the text-encoder output with padding and the template prefix removed: (T_i, D);
    `control_size` is how control images are sized for the text encoder (see the module docstring)."""
    if model_version == "original":
        embeds, mask = pipe.encode_prompt(prompt=captions, device=device)
        lengths = [embeds.shape[1]] * len(captions) if mask is None else mask.sum(dim=1).tolist()
        return [embeds[i, : int(n)] for i, n in enumerate(lengths)]
    assert controls is not None
    out = []
    for caption, images in zip(captions, controls, strict=True):
        prepared = prompt_images(model_version, images, control_size)
        image_arg: Any = prepared[0] if model_version == "edit" else prepared
        embeds, _ = pipe.encode_prompt(prompt=[caption], image=image_arg, device=device)
        out.append(embeds[0])
    return out
