"""The device a run uses and the dtype of its frozen model weights: one rule each, for every stage.

The dtype rule (training, caching, sampling and generation alike): float32 on the CPU, where bf16 matmuls
are unusably slow; on a GPU fp16 with ``--mixed_precision fp16`` and bf16 otherwise, ``no`` included (the
frozen weights stay bf16 as in the reference trainer; the LoRA weights train in float32).
"""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(name: str | None) -> torch.device:
    """The device asked for, else CUDA when available, else the CPU (a CUDA device on a machine without
    CUDA is a ConfigError)."""
    if name:
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_dtype(device: torch.device, precision: str = "bf16") -> torch.dtype:
    """The dtype of frozen model weights on `device` for ``--mixed_precision`` `precision` (see above)."""
    if device.type == "cpu":
        return torch.float32
    return torch.float16 if precision == "fp16" else torch.bfloat16
