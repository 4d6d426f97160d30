"""Stage 2: encode captions (with control images in edit mode) with Qwen2.5-VL, one trimmed embedding per item.

The encoding itself (diffusers' prompt templates, dropped prefix and control-image preparation) is
``models/text_encoding``'s, shared with the sample prompts of training.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import torch
from PIL import Image

from ..data.cache_paths import control_fingerprint, text_cache_metadata, text_tensor_key
from ..data.images import read_image
from ..data.items import DatasetItem
from ..events import EventWriter
from ..models.text_encoding import encode, load_encoding_pipeline
from ..params.schema import StudioConfig
from .common import BatchEncoder, Unreadable, read_items, run_cache_stage, save_cache_file

log = logging.getLogger(__name__)


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None:
    """Cache the text-encoder outputs of every usable item of every dataset.

    The text encoder is loaded without lm_head (and without the vision tower for text-to-image), one
    decoder layer at a time; with --fp8_vl its decoder-layer linears are stored in fp8 as they arrive, so
    the device never holds the bf16 language model (see `load_prompt_encoder` for the figures).
    """

    def load(device: torch.device, dtype: torch.dtype) -> BatchEncoder:
        pipe = load_encoding_pipeline(config, device, dtype)
        size = config.control_text_encoder_size
        return lambda batch: _encode_batch(pipe, config.model_version, batch, device, size)

    run_cache_stage(config, events, "text", load)


def _encode_batch(
    pipe: Any, model_version: str, batch: list[DatasetItem], device: torch.device, size: str = "official"
) -> list[Unreadable]:
    """Encode one batch of captions (with their control images in edit mode) and write one file per item.

    In edit mode each file records the control images the text encoder saw (``control_sha256``, hashed
    before they are read for encoding, so a file changed meanwhile shows up as outdated next time) and the
    ``--control_text_encoder_size`` they were sized by (``control_vl_size``); items whose control images
    cannot be decoded are left out (their files untouched) and returned with why.
    """
    unreadable: list[Unreadable] = []
    controls = None
    fingerprints: list[str | None] = [None] * len(batch)
    vl_size = size if model_version != "original" else None  # text-to-image: no control image, no record
    if model_version != "original":
        read, unreadable = read_items(batch, _read_controls)
        if not read:
            return unreadable
        batch = [item for item, _, _ in read]
        fingerprints = [fingerprint for _, fingerprint, _ in read]
        controls = [images for _, _, images in read]
    embeds = encode(pipe, model_version, [i.caption for i in batch], controls, device, size)
    for item, embed, fingerprint in zip(batch, embeds, fingerprints, strict=True):
        meta = text_cache_metadata(item.caption, fingerprint, vl_size)
        save_cache_file({text_tensor_key(embed.dtype): embed}, item.text_cache_path, meta)
    return unreadable


def _read_controls(item: DatasetItem) -> tuple[DatasetItem, str, list[Image.Image]]:
    """An item with its control images' fingerprint (taken first) and the decoded images."""
    fingerprint = control_fingerprint(item.control_paths)
    return item, fingerprint, [read_image(p) for p in item.control_paths]
