"""fp8 weights as files store them (scalar, per-row or per-block scales, or none) become Fp8Linear layers as
they are; the 16-bit upcast stays within rounding of the fp32 one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qwen_image_studio.models.fp8 import dequantize, linear_scales
from qwen_image_studio.models.fp8_linear import (
    FP8,
    Fp8Linear,
    dequantize_weight,
    quantize_weight,
    relative_error,
)


@pytest.mark.parametrize(
    "scale",
    [None, torch.tensor(0.01), torch.full((8,), 0.02), torch.rand(8, 2) + 0.5, torch.rand(8, 1) + 0.5],
    ids=["none", "scalar", "row-1d", "block", "row-2d"],
)
def test_file_scales_become_row_or_block_layout_with_the_same_values(scale: torch.Tensor | None) -> None:
    weight = (torch.randn(8, 128) * 50).to(FP8)
    scales = linear_scales(scale, tuple(weight.shape))
    assert scales.dtype == torch.float32 and scales.shape[0] == 8 and 128 % scales.shape[1] == 0
    layer = Fp8Linear.from_quantized(weight, scales, torch.zeros(8), torch.float32)
    assert layer.weight_fp8 is weight  # the file's bytes, no round trip
    assert torch.equal(layer.weight, dequantize(weight, scale, torch.float32))
    x = torch.randn(3, 128)
    assert torch.allclose(layer(x), x @ layer.weight.T, atol=1e-5)


def test_scales_that_do_not_fit_are_refused() -> None:
    weight = torch.zeros(8, 128).to(FP8)
    with pytest.raises(ValueError, match="does not fit"):
        linear_scales(torch.ones(3), (8, 128))
    with pytest.raises(ValueError, match="do not fit"):
        Fp8Linear.from_quantized(weight, torch.ones(4, 1), None, torch.float32)
    with pytest.raises(ValueError, match="float8_e4m3fn"):
        Fp8Linear.from_quantized(torch.zeros(8, 128), torch.ones(8, 1), None, torch.float32)


@pytest.mark.parametrize("block", [None, 64])
def test_bf16_upcast_stays_within_rounding_of_the_fp32_one(block: int | None) -> None:
    w = torch.randn(64, 256) * 0.02
    q, s = quantize_weight(w, block)
    exact = dequantize_weight(q, s, torch.float32)
    fast = dequantize_weight(q, s, torch.bfloat16)
    assert fast.dtype == torch.bfloat16
    assert relative_error(exact, fast) < 2**-7  # bf16 rounding, far below fp8's own error
    assert relative_error(w, exact) > 10 * relative_error(exact, fast)


def test_quantized_layer_from_a_linear_keeps_its_bias_and_shape() -> None:
    lin = nn.Linear(128, 8)
    layer = Fp8Linear(lin, torch.float32, 64)
    assert layer.in_features == 128 and layer.out_features == 8 and layer.weight_scale.shape == (8, 2)
    assert torch.equal(layer.bias, lin.bias) and not layer.bias.requires_grad
