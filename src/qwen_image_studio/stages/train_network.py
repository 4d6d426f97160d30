"""Stage 3: train a LoRA from the cached latents and text-encoder outputs (qwen_image_train_network.py)."""

from __future__ import annotations

import argparse
import logging

from ..errors import ConfigError
from ..events import EventWriter
from ..params.schema import StudioConfig

log = logging.getLogger(__name__)



def check_supported(config: StudioConfig) -> None:
    """Refuse options this version does not implement yet, naming the flag."""
    if config.blocks_to_swap:
        raise ConfigError(
            "--blocks_to_swap is not available in this version yet; use --fp8_base, "
            "--gradient_checkpointing or a lower resolution to save memory"
        )


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None:
    """Train as the configuration says (the runner handles started/finished/failed events)."""
    from ..training.loop import train

    check_supported(config)
    if config.sdpa:
        log.info("--sdpa: attention runs through torch's scaled_dot_product_attention (diffusers' default)")
    else:
        events.warning("--no_sdpa has no effect: diffusers' Qwen-Image attention always uses torch's SDPA")
    summary = train(config, events)
    log.info(
        "training finished: %d steps, average loss %.5f, %s",
        summary["steps"],
        summary["loss_avg"],
        summary["lora"],
    )
