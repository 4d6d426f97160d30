"""LoRAs added to a model's layer outputs, without touching its weights (the generation worker's way).

Each hooked linear layer (``nn.Linear`` or an fp8 ``Fp8Linear``) returns ``base(x) + sum_i m_i * s_i *
up_i(down_i(x))`` (``s`` = alpha / rank, ``m`` the strength). Changing the LoRAs or their strengths
replaces the hooks only, so the base weights (bf16 or fp8, swapped or not) stay exactly as loaded and a
kept model serves any LoRA set. Results equal merging ``m * s * up @ down`` into the weights up to
rounding (the CLI's `generate` merges; see ``lora_apply.merge_loras``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qwen_image_studio.models.fp8_linear import Fp8Linear
from qwen_image_studio.models.lora_apply import LoraFile, multipliers_for, resolve_modules


def _features(layer: nn.Module) -> tuple[int, int]:
    """(in, out) features of a linear layer, plain or fp8."""
    weight = layer.weight_fp8 if isinstance(layer, Fp8Linear) else layer.weight
    return int(weight.shape[1]), int(weight.shape[0])


def hookable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer of a model (plain or fp8) by module path."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Linear, Fp8Linear))}


def _state(path: Path) -> tuple[str, int, int]:
    """A LoRA file as it now stands (a file replaced at the same path is applied again)."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path), 0, 0)
    return (str(path), stat.st_mtime_ns, stat.st_size)


class LoraHooks:
    """The LoRA set applied to one model through forward hooks (see the module)."""

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self._handles: list[Any] = []
        self.key: tuple[tuple[str, int, int, float], ...] = ()  # (path, mtime, size, strength) per file

    def set(self, loras: Sequence[LoraFile], multipliers: Sequence[float] | None = None) -> bool:
        """Apply these LoRAs with these strengths (replacing the previous set); False when it is the
        same set already applied (nothing done). Every file is checked before any hook changes."""
        factors = multipliers_for(len(loras), multipliers)
        key = tuple((*_state(lora.path), float(m)) for lora, m in zip(loras, factors, strict=True))
        if key == self.key and self._handles is not None:
            return False
        layers = hookable_layers(self.model)
        adds: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
        for lora, m in zip(loras, factors, strict=True):
            pairs = resolve_modules(lora, layers)
            for path, pair in pairs.items():
                inner, outer = _features(layers[path])
                if pair.down.shape[1] != inner or pair.up.shape[0] != outer:
                    raise lora.error(
                        f"module {path}: the LoRA maps {pair.down.shape[1]} -> {pair.up.shape[0]} features "
                        f"but the DiT's layer maps {inner} -> {outer}; is it a LoRA for another model?"
                    )
                if m != 0.0:
                    down = pair.down.to(self.device, self.dtype)
                    up = pair.up.to(self.device, self.dtype)
                    adds.setdefault(path, []).append((down, up, m * pair.scale))
        self.clear()
        self._handles = [layers[path].register_forward_hook(_adder(items)) for path, items in adds.items()]
        self.key = key
        return True

    def clear(self) -> None:
        """Remove every hook: the model computes its base outputs again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.key = ()

    @property
    def layers(self) -> int:
        """How many layers carry a LoRA now."""
        return len(self._handles)


def _adder(items: list[tuple[torch.Tensor, torch.Tensor, float]]) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        for down, up, factor in items:
            low = torch.nn.functional.linear(x.to(down.device, down.dtype), down)
            output = output + (torch.nn.functional.linear(low, up) * factor).to(output.dtype)
        return output

    return hook
