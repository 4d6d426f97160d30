"""Weight-only fp8 storage for nn.Linear, upcast to the compute dtype for each matmul.

Two scalings (facts §7): per output row (``block_size=None``: scale = max|row| / 448, used by
``--fp8_vl`` and plain ``--fp8_base``), or per block of ``block_size`` input elements of each row
(``--fp8_scaled``: 64-element blocks, scale = max|block| / 448), which follows outliers more closely.
A frozen fp8 weight takes half the memory of bf16; the layer stays an exact drop-in for nn.Linear.
``Fp8Linear.from_quantized`` wraps weights that are already fp8 (an fp8 checkpoint's, with its scales).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
SCALED_BLOCK = 64


def quantize_weight(weight: torch.Tensor, block_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, fp32 scales): scales have shape (out, 1) per row or (out, in // block_size) per block."""
    w = weight.detach().to(torch.float32)
    out_features, in_features = w.shape
    if block_size is None or in_features % block_size:
        scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
        return (w / scale).to(FP8), scale
    blocks = w.reshape(out_features, in_features // block_size, block_size)
    scale = (blocks.abs().amax(dim=2) / FP8_MAX).clamp(min=1e-12)
    return (blocks / scale.unsqueeze(2)).reshape(out_features, in_features).to(FP8), scale


def dequantize_weight(weight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The weight times its row or block scales, in `dtype`.

    16-bit compute dtypes multiply in that dtype (an e4m3 value is exact in bf16/fp16; the scale rounds to
    8 or 11 bits, far below fp8's own 4-bit precision), which halves the memory traffic of the upcast on
    a GPU; float32 multiplies in float32.
    """
    work = dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32
    w = weight.to(work)
    s = scale.to(work)
    if s.shape[1] == 1:
        return (w * s).to(dtype)
    out_features, in_features = w.shape
    blocks = s.shape[1]
    return (w.view(out_features, blocks, in_features // blocks) * s.unsqueeze(2)).view(w.shape).to(dtype)


class Fp8Linear(nn.Module):
    """A frozen linear layer whose weight is stored in fp8 and dequantised on the fly."""

    def __init__(self, linear: nn.Linear, compute_dtype: torch.dtype, block_size: int | None = None) -> None:
        super().__init__()
        weight, scale = quantize_weight(linear.weight, block_size)
        self._setup(weight, scale, linear.bias, compute_dtype)

    @classmethod
    def from_quantized(
        cls,
        weight_fp8: torch.Tensor,
        scale: torch.Tensor,
        bias: torch.Tensor | None,
        compute_dtype: torch.dtype,
    ) -> Fp8Linear:
        """A layer around an already quantised weight (e.g. read from an fp8 file) and its (out, k) scales."""
        if weight_fp8.dtype != FP8 or weight_fp8.ndim != 2:
            raise ValueError(
                f"expected a 2-D float8_e4m3fn weight, got {weight_fp8.dtype} {tuple(weight_fp8.shape)}"
            )
        out_features, in_features = weight_fp8.shape
        if scale.ndim != 2 or scale.shape[0] != out_features or in_features % scale.shape[1]:
            raise ValueError(
                f"scales of shape {tuple(scale.shape)} do not fit a weight of {tuple(weight_fp8.shape)}"
            )
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._setup(weight_fp8, scale.to(torch.float32), bias, compute_dtype)
        return layer

    def _setup(
        self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, compute_dtype: torch.dtype
    ) -> None:
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = compute_dtype
        self.register_buffer("weight_fp8", weight)
        self.register_buffer("weight_scale", scale)
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)
        )

    @property
    def weight(self) -> torch.Tensor:
        """The weight in the compute dtype (for code that reads ``.weight``, e.g. LoRA merging)."""
        return dequantize_weight(self.weight_fp8, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W^T + b with W upcast for this call only."""
        return F.linear(x.to(self.compute_dtype), self.weight, self.bias)


def quantize_linears(
    module: nn.Module,
    compute_dtype: torch.dtype,
    include: Callable[[str], bool] = lambda name: True,
    block_size: int | None = None,
) -> int:
    """Replace every nn.Linear below `module` (whose name passes `include`) by an Fp8Linear; returns the count."""
    count = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and include(full):
                setattr(child, attr, Fp8Linear(sub, compute_dtype, block_size))
                count += 1
    return count


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """||other - reference|| / ||reference|| in fp32."""
    ref = reference.to(torch.float32)
    return float((other.to(torch.float32) - ref).norm() / ref.norm().clamp(min=1e-12))
