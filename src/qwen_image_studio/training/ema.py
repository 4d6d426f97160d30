"""An exponential moving average (EMA) of the trained LoRA weights (``--ema_decay``).

After every optimizer step each shadow weight becomes ``decay * shadow + (1 - decay) * weight`` (float32,
on the weight's device or with ``--ema_on_cpu`` in CPU memory); it starts as the initial weights, so
``--ema_decay 0`` is always the plain weights. Every LoRA save also writes ``{stem}-ema.safetensors`` (the
same keys, alpha and header, plus ``qis_ema_decay``); ``--save_state`` keeps the shadow in the state
folder so ``--resume`` continues the same average. With ``--ema_for_eval`` the samples and the validation
loss are computed with the shadow weights swapped in (and the plain ones put back after).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from .lora import LoRANetwork

EMA_FILE = "ema.safetensors"  # in a --save_state folder
DECAY_KEY = "qis_ema_decay"


def ema_path(lora_file: Path) -> Path:
    """Where the EMA file of a LoRA file goes: ``NAME-ema.safetensors`` beside it."""
    return lora_file.with_name(f"{lora_file.stem}-ema{lora_file.suffix}")


class LoraEma:
    """The shadow copy of a network's LoRA weights."""

    def __init__(self, network: LoRANetwork, decay: float, on_cpu: bool = False) -> None:
        self.network, self.decay = network, float(decay)
        self.params = network.parameters()
        self.shadow = [
            p.detach().to("cpu" if on_cpu else p.device, torch.float32, copy=True) for p in self.params
        ]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the weights after an optimizer step into the average."""
        for s, p in zip(self.shadow, self.params, strict=True):
            s.lerp_(p.detach().to(s.device, torch.float32), 1.0 - self.decay)

    @contextlib.contextmanager
    @torch.no_grad()
    def swapped_in(self) -> Iterator[None]:
        """The network holds the shadow weights while the block runs (its own weights are put back after)."""
        saved = [p.detach().clone() for p in self.params]
        for s, p in zip(self.shadow, self.params, strict=True):
            p.copy_(s.to(p.device, p.dtype))
        try:
            yield
        finally:
            for saved_p, p in zip(saved, self.params, strict=True):
                p.copy_(saved_p)

    def save(self, lora_file: Path, dtype: torch.dtype, metadata: dict[str, str]) -> Path:
        """Write the EMA file beside `lora_file` (the network's own weights are unchanged after)."""
        with self.swapped_in():
            return self.network.save(ema_path(lora_file), dtype, {**metadata, DECAY_KEY: repr(self.decay)})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The shadow weights for a state folder."""
        return {f"shadow.{i}": s.detach().to("cpu").contiguous() for i, s in enumerate(self.shadow)}

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the shadow weights of a state folder (same network layout)."""
        if len(tensors) != len(self.shadow):
            raise ValueError(f"the state's EMA has {len(tensors)} tensors, the network {len(self.shadow)}")
        for i, s in enumerate(self.shadow):
            s.copy_(tensors[f"shadow.{i}"].to(s.device, s.dtype))
