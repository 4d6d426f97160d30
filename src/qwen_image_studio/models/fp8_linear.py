"""fp8 storage for nn.Linear: the weight upcast to the compute dtype for each matmul, or fp8 tensor-core matmuls.

Two scalings (facts §7): per output row (``block_size=None``: scale = max|row| / 448, used by
``--fp8_vl`` and plain ``--fp8_base``), or per block of ``block_size`` input elements of each row
(``--fp8_scaled``: 64-element blocks, scale = max|block| / 448), which follows outliers more closely.
A frozen fp8 weight takes half the memory of bf16; the layer stays an exact drop-in for nn.Linear.
``Fp8Linear.from_quantized`` wraps weights that are already fp8 (an fp8 checkpoint's, with its scales).

Two ways to multiply (``--fp8_matmul``):

- ``upcast`` (the reference trainer's): the weight is dequantised to bf16 for every call, then a bf16 matmul.
- ``native`` (``auto`` picks it on GPUs with fp8 tensor cores, compute capability 8.9+): the forward pass
  (and its recompute under gradient checkpointing) quantises the input to fp8 with one scale per token and
  calls ``torch._scaled_mm`` with the weight's per-row scales: twice the bf16 matmul rate on an H100, and no
  dequantised copy of the weight. Tensor cores take one scale per row, so a block-scaled weight is
  re-quantised per row once when the layer switches to native. The backward pass (gradient to the input;
  the base weight is frozen) upcasts, since it needs the weight transposed. Widths not divisible by 16
  upcast as well; :mod:`placement` keeps the modulation linears (one row per sample) upcast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
SCALED_BLOCK = 64
MATMUL_MODES = ("auto", "native", "upcast")


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


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 rows, fp32 (rows, 1) scales) of a 2-D activation: one scale per token, max|row| / 448.

    The scale is rounded to x's own dtype and the division happens in that dtype: no float32 copy of the
    activation (an MLP input is tokens x 12288); the fp32 scale given to the matmul is that rounded value,
    so the only extra error is bf16's rounding before fp8's, 32x finer. (A power-of-two scale would make
    the division exact but wastes up to one binade: 14 % more block error, measured.)
    """
    amax = x.detach().abs().amax(dim=1, keepdim=True)
    scale = (amax.to(torch.float32) / FP8_MAX).clamp(min=1e-12).to(x.dtype)
    return (x / scale).to(FP8), scale.to(torch.float32)


class _NativeFp8Matmul(torch.autograd.Function):
    """x @ W^T with x quantised per token and W per row, on fp8 tensor cores; the backward upcasts W."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype
    ) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        x_fp8, x_scale = quantize_rows(rows)
        out = torch._scaled_mm(x_fp8, weight.t(), scale_a=x_scale, scale_b=scale.t(), out_dtype=out_dtype)
        ctx.save_for_backward(weight, scale)  # buffers of the layer: saving them costs no memory
        ctx.input_dtype = x.dtype
        return out.reshape(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:  # type: ignore[override]
        weight, scale = ctx.saved_tensors
        grad_x = grad @ dequantize_weight(weight, scale, grad.dtype) if ctx.needs_input_grad[0] else None
        return (None if grad_x is None else grad_x.to(ctx.input_dtype)), None, None, None


def native_unsupported(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why fp8 tensor-core matmuls cannot run on `device` in `dtype` (None when they can)."""
    if not hasattr(torch, "_scaled_mm"):
        return f"this PyTorch ({torch.__version__}) has no torch._scaled_mm"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            name = torch.cuda.get_device_name(device)
            return (
                f"{name} (compute capability {major}.{minor}) has no fp8 tensor cores; they need 8.9 or "
                "newer (RTX 40xx/50xx, L4, L40, H100, H200, B200)"
            )
        if dtype != torch.bfloat16:
            return f"fp8 matmuls with per-row scales write bfloat16, not {str(dtype).removeprefix('torch.')}"
    try:  # the probe catches builds and devices without the kernel
        w = torch.ones(32, 32, device=device).to(FP8)
        ones = torch.ones(32, 1, device=device)
        torch._scaled_mm(w, w.t(), scale_a=ones, scale_b=ones.t(), out_dtype=dtype)
    except (RuntimeError, NotImplementedError) as exc:
        return f"torch._scaled_mm failed on {device}: {str(exc).splitlines()[0]}"
    return None


def use_native_matmul(mode: str, device: torch.device, dtype: torch.dtype) -> bool:
    """Resolve ``--fp8_matmul``: auto means native on a CUDA GPU that supports it, upcast elsewhere."""
    if mode not in MATMUL_MODES:
        raise ValueError(f"--fp8_matmul: {mode!r} is not one of {', '.join(MATMUL_MODES)}")
    if mode == "upcast":
        return False
    reason = native_unsupported(device, dtype)
    if mode == "auto":
        return device.type == "cuda" and reason is None
    if reason:
        raise ConfigError(f"--fp8_matmul native: {reason}; use --fp8_matmul upcast (or auto)")
    return True


class Fp8Linear(nn.Module):
    """A frozen linear layer whose weight is stored in fp8; upcast per call or multiplied natively."""

    def __init__(
        self,
        linear: nn.Linear,
        compute_dtype: torch.dtype,
        block_size: int | None = None,
        native: bool = False,
    ) -> None:
        super().__init__()
        weight, scale = quantize_weight(linear.weight, None if native else block_size)
        self._setup(weight, scale, linear.bias, compute_dtype)
        self.set_native(native)

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
        # Block scales (one per 64 weights: 1.3 GB in fp32 for the whole DiT) are kept in a 16-bit compute
        # dtype, the precision the upcast multiplies them in anyway; row scales stay fp32 (tensor cores
        # take fp32 scales, and they are few).
        keep = compute_dtype if scale.shape[1] > 1 and compute_dtype in (torch.bfloat16, torch.float16) else None
        self.register_buffer("weight_scale", scale.to(keep or torch.float32))
        self.bias = (
            None if bias is None else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)
        )
        self.native = False

    def set_native(self, native: bool) -> None:
        """Multiply on fp8 tensor cores (re-quantising a block-scaled weight per row once) or upcast."""
        self.native = native and self.in_features % 16 == 0 and self.out_features % 16 == 0
        if self.native and self.weight_scale.shape[1] != 1:
            full = dequantize_weight(self.weight_fp8, self.weight_scale, torch.float32)
            self.weight_fp8, self.weight_scale = quantize_weight(full, None)

    @property
    def weight(self) -> torch.Tensor:
        """The weight in the compute dtype (for code that reads ``.weight``, e.g. LoRA merging)."""
        return dequantize_weight(self.weight_fp8, self.weight_scale, self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x @ W^T + b: on fp8 tensor cores when native, else with W upcast for this call only."""
        if self.native and x.numel():
            out = _NativeFp8Matmul.apply(x, self.weight_fp8, self.weight_scale, self.compute_dtype)
            return out if self.bias is None else out + self.bias
        return F.linear(x.to(self.compute_dtype), self.weight, self.bias)

    def extra_repr(self) -> str:
        blocks = self.weight_scale.shape[1]
        scales = "per row" if blocks == 1 else f"per {self.in_features // blocks} weights"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, scales {scales}, "
            f"{'native fp8 matmul' if self.native else 'upcast to ' + str(self.compute_dtype)}"
        )


def quantize_linears(
    module: nn.Module,
    compute_dtype: torch.dtype,
    include: Callable[[str], bool] = lambda name: True,
    block_size: int | None = None,
    native: bool = False,
) -> int:
    """Replace every nn.Linear below `module` (whose name passes `include`) by an Fp8Linear; returns the count.

    With `native`, every Fp8Linear below `module` (new or already there, e.g. from an fp8 file) multiplies
    on fp8 tensor cores.
    """
    count = 0
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            full = f"{name}.{attr}" if name else attr
            if isinstance(sub, nn.Linear) and include(full):
                setattr(child, attr, Fp8Linear(sub, compute_dtype, block_size, native=native))
                count += 1
            elif native and isinstance(sub, Fp8Linear) and include(full):
                sub.set_native(True)
    return count


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    """||other - reference|| / ||reference|| in fp32."""
    ref = reference.detach().to(torch.float32)
    return float((other.detach().to(torch.float32) - ref).norm() / ref.norm().clamp(min=1e-12))
