"""fp8 weight storage: per-row and 64-element block scales, accuracy against full precision."""

from __future__ import annotations

import torch
from torch import nn

from qwen_image_studio.models.fp8_linear import (
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


def test_native_fp8_matmul_matches_the_upcast_layer_within_activation_rounding() -> None:
    """--fp8_matmul native: fp8 x fp8 on tensor cores (torch._scaled_mm; the CPU build runs it too)."""
    gen = torch.Generator().manual_seed(2)
    lin = nn.Linear(256, 64)
    with torch.no_grad():
        lin.weight.copy_(_weight_with_outliers())
    upcast = Fp8Linear(lin, torch.float32, block_size=64)
    native = Fp8Linear(lin, torch.float32, block_size=64)
    native.set_native(True)
    assert native.native and native.weight_scale.shape == (64, 1)  # tensor cores take one scale per row
    assert "native fp8 matmul" in repr(native) and "upcast" in repr(upcast)
    x = torch.randn(2, 32, 256, generator=gen, requires_grad=True)
    ref = lin(x)
    out = native(x)
    assert out.shape == ref.shape
    # the input's per-token fp8 rounding roughly doubles the weight-only error; both stay far below 10 %
    assert relative_error(ref, upcast(x)) < 0.05 and relative_error(ref, out) < 0.08
    # the gradient to the input goes through the layer's own weight, upcast: exactly the upcast path's
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    expected = (2 * out.detach()) @ native.weight
    assert torch.allclose(grad, expected, rtol=1e-5, atol=1e-6)


def test_native_fp8_matmul_needs_widths_divisible_by_16() -> None:
    layer = Fp8Linear(nn.Linear(256, 64), torch.float32, native=True)
    assert layer.native and layer(torch.randn(3, 256)).shape == (3, 64)  # any number of tokens
    odd = Fp8Linear(nn.Linear(20, 8), torch.float32, native=True)
    assert not odd.native  # tensor cores need widths divisible by 16


def test_fp8_matmul_mode_resolution() -> None:
    import pytest

    from qwen_image_studio.models.fp8_linear import use_native_matmul

    cpu = torch.device("cpu")
    assert use_native_matmul("upcast", cpu, torch.float32) is False
    assert use_native_matmul("auto", cpu, torch.float32) is False  # auto: native on capable GPUs only
    assert use_native_matmul("native", cpu, torch.float32) is True  # the CPU build has _scaled_mm
    with pytest.raises(ValueError, match="fp8_matmul"):
        use_native_matmul("fast", cpu, torch.float32)


def test_quantize_linears_native_rescales_layers_already_in_fp8() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 64))
    quantize_linears(model, torch.float32, block_size=16)
    assert model[0].weight_scale.shape == (32, 4) and not model[0].native
    quantize_linears(model, torch.float32, native=True)  # e.g. an fp8 file's layers, then native
    assert all(m.native and m.weight_scale.shape[1] == 1 for m in model)


def test_bf16_activations_quantise_in_bf16_without_overflow() -> None:
    from qwen_image_studio.models.fp8_linear import quantize_rows

    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(64, 256, generator=gen) * torch.logspace(-3, 3, 64).unsqueeze(1)).to(torch.bfloat16)
    x[5] = 0  # an all-zero token
    q, scale = quantize_rows(x)
    assert q.dtype == FP8 and scale.dtype == torch.float32 and scale.shape == (64, 1)
    back = q.to(torch.float32) * scale
    assert not back.isnan().any() and back[5].abs().max() == 0
    assert float(q.to(torch.float32).abs().max()) <= 448
    assert relative_error(x.float(), back) < 0.04


def test_block_scales_are_kept_in_a_16_bit_compute_dtype_without_changing_the_output() -> None:
    lin = nn.Linear(256, 64)
    with torch.no_grad():
        lin.weight.copy_(_weight_with_outliers())
    layer = Fp8Linear(lin, torch.bfloat16, block_size=64)
    assert layer.weight_scale.dtype == torch.bfloat16  # half the memory of fp32 scales
    weight, scale = quantize_weight(lin.weight, 64)
    assert torch.equal(layer.weight, dequantize_weight(weight, scale, torch.bfloat16))  # same bits as before
    assert Fp8Linear(lin, torch.bfloat16).weight_scale.dtype == torch.float32  # row scales: fp32
    assert Fp8Linear(lin, torch.float32, block_size=64).weight_scale.dtype == torch.float32
