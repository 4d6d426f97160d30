"""fp8 weight storage: per-row and 64-element block scales, accuracy against full precision."""

from __future__ import annotations

import torch
from torch import nn

from qwen_image_studio.memory.fp8_linear import (
    FP8,
    Fp8Linear,
    dequantize_weight,
    quantize_linears,
    quantize_weight,
    relative_error,
)


def _weight_with_outliers() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=gen) * 0.02
    w[:, 7] *= 40  # a few large input channels, as real DiT weights have
    return w


def test_block_scales_follow_outliers_better_than_row_scales() -> None:
    w = _weight_with_outliers()
    rows = dequantize_weight(*quantize_weight(w), torch.float32)
    blocks = dequantize_weight(*quantize_weight(w, 64), torch.float32)
    assert quantize_weight(w, 64)[1].shape == (64, 4) and quantize_weight(w)[1].shape == (64, 1)
    assert relative_error(w, blocks) < relative_error(w, rows)
    assert relative_error(w, blocks) < 0.05


def test_fp8_linear_is_a_drop_in_with_bounded_error() -> None:
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(256, 64)
    with torch.no_grad():
        lin.weight.copy_(_weight_with_outliers())
    x = torch.randn(8, 256, generator=gen)
    q = Fp8Linear(lin, torch.float32, block_size=64)
    assert q.weight_fp8.dtype == FP8 and q.weight_fp8.element_size() == 1
    assert relative_error(lin(x), q(x)) < 0.05
    assert q.weight.shape == lin.weight.shape


def test_quantize_linears_replaces_only_included_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)))
    n = quantize_linears(model, torch.float32, include=lambda name: name.startswith("2."))
    assert n == 1 and isinstance(model[2][0], Fp8Linear) and isinstance(model[0], nn.Linear)
