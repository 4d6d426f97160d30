"""Stage 3: train a LoRA from the cached latents and text-encoder outputs (qwen_image_train_network.py)."""

from __future__ import annotations

import argparse
import logging

from ..events import EventWriter
from ..models.configs import version_name_warning
from ..params.schema import StudioConfig

log = logging.getLogger(__name__)


def check_supported(config: StudioConfig) -> None:
    """Fail before any model loads when the chosen attention kernel cannot run here."""
    import torch

    from ..memory.attention import attention_mode, check_backend

    mode = attention_mode(config)
    if mode != "sdpa":
        check_backend(mode, torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None:
    """Train as the configuration says (the runner handles started/finished/failed events)."""
    from ..training.loop import train

    check_supported(config)
    mismatch = version_name_warning(str(config.dit), config.model_version)
    if mismatch:
        events.warning(mismatch)
    if not config.sdpa and not any((config.flash_attn, config.flash3, config.xformers)):
        events.warning(
            "--no_sdpa has no effect on its own: attention uses PyTorch's SDPA unless --flash_attn, "
            "--flash3 or --xformers is given"
        )
    summary = train(config, events)
    log.info(
        "training finished: %d steps, average loss %.5f, %s",
        summary["steps"],
        summary["loss_avg"],
        summary["lora"],
    )
