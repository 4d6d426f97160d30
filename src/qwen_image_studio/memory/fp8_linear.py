"""Weight-only fp8 storage for nn.Linear: float8_e4m3fn weights with one scale per output row,
upcast to the compute dtype for each matmul (about half the memory of bf16 weights)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, fp32 scale per row) with scale = max|w| / 448 for each output row."""
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (w / scale).to(FP8), scale


class Fp8Linear(nn.Module):
    """A frozen linear layer whose weight is stored in fp8 and dequantised on the fly."""

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        weight, scale = quantize_rows(linear.weight)
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(compute_dtype),
                                                                 requires_grad=False)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight in the compute dtype."""
        return (self.weight_fp8.to(torch.float32) * self.weight_scale).to(self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W^T + b with W upcast for this call only."""
        return F.linear(x.to(self.compute_dtype), self.dequantized_weight(), self.bias)


def quantize_linears(module: nn.Module, compute_dtype: torch.dtype,
                     include: Callable[[str], bool] = lambda name: True) -> int:
    """Replace every nn.Linear below `module` (whose name passes `include`) by an Fp8Linear; returns the count."""
    count = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and include(full):
                setattr(child, attr, Fp8Linear(sub, compute_dtype))
                count += 1
    return count
