"""Attention kernels: torch's SDPA by default; flash-attention 2/3 or xformers through diffusers' backends.

diffusers 0.42 dispatches every attention call through ``attention_dispatch``; its Qwen-Image processor
reads the backend from the processor instance. The fast kernels take no attention mask, and Qwen-Image
needs one only when a batch holds captions of different lengths, so our processor picks the fast backend
per call and falls back to SDPA for masked batches (batch size 1 never has a mask).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..params.schema import StudioConfig

log = logging.getLogger(__name__)

MODES: dict[str, tuple[str, str]] = {  # flag -> (diffusers backend, package to install)
    "flash_attn": ("flash", "flash-attn 2 (pip install flash-attn --no-build-isolation)"),
    "flash3": ("_flash_3", "flash-attn 3 (the Hopper build of flash-attention, flash_attn_interface)"),
    "xformers": ("xformers", "xformers (pip install xformers, matching your torch)"),
}


def attention_mode(config: StudioConfig) -> str:
    """The attention flag a configuration selects: one of MODES, or "sdpa"."""
    chosen = [flag for flag in MODES if getattr(config, flag)]
    if len(chosen) > 1:
        raise ConfigError(f"choose one attention kernel, not {' and '.join('--' + f for f in chosen)}")
    return chosen[0] if chosen else "sdpa"


def check_backend(mode: str, device: torch.device) -> str:
    """Raise ConfigError unless the kernel of `mode` is installed and usable on `device`; returns its name."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    backend, package = MODES[mode]
    try:
        _check_attention_backend_requirements(AttentionBackendName(backend))
    except (RuntimeError, ImportError) as exc:
        raise ConfigError(
            f"--{mode} needs {package}, which is not installed or too old here ({exc}); "
            "leave the flag out to use PyTorch's SDPA"
        ) from None
    if device.type != "cuda":
        raise ConfigError(f"--{mode} runs on CUDA GPUs only (this run uses {device}); leave it out for SDPA")
    return backend


def _processor_class() -> type:
    from diffusers.models.attention_dispatch import AttentionBackendName
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    class MaskAwareProcessor(QwenDoubleStreamAttnProcessor2_0):
        """Qwen-Image joint attention on a fast backend; calls with a text padding mask use SDPA."""

        def __init__(self, backend: str) -> None:
            super().__init__()
            self.fast = AttentionBackendName(backend)

        def __call__(  # the parent's exact signature: diffusers passes only the keywords it names
            self,
            attn: Any,
            hidden_states: torch.Tensor,
            encoder_hidden_states: torch.Tensor | None = None,
            encoder_hidden_states_mask: torch.Tensor | None = None,
            attention_mask: torch.Tensor | None = None,
            image_rotary_emb: torch.Tensor | None = None,
        ) -> Any:
            masked = encoder_hidden_states_mask is not None
            self._attention_backend = AttentionBackendName.NATIVE if masked else self.fast
            return super().__call__(
                attn,
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                encoder_hidden_states_mask=encoder_hidden_states_mask,
                attention_mask=attention_mask,
                image_rotary_emb=image_rotary_emb,
            )

    return MaskAwareProcessor


def set_attention(dit: torch.nn.Module, mode: str, device: torch.device) -> str:
    """Route the DiT's attention through `mode`'s kernel (checked first); returns a log line."""
    if mode == "sdpa":
        return "attention: PyTorch scaled_dot_product_attention (SDPA)"
    backend = check_backend(mode, device)
    from diffusers.models.transformers.transformer_qwenimage import QwenDoubleStreamAttnProcessor2_0

    cls = _processor_class()
    count = 0
    for module in dit.modules():
        if isinstance(getattr(module, "processor", None), QwenDoubleStreamAttnProcessor2_0):
            module.set_processor(cls(backend))
            count += 1
    return f"attention: --{mode} (diffusers backend {backend!r}) in {count} blocks; padded batches use SDPA"
