"""--compile degrades to uncompiled blocks when the compiler backend fails (no working Triton, ...)."""

from __future__ import annotations

import torch
from torch import nn

from qwen_image_studio.memory.setup import compile_blocks


def test_a_failing_compiler_backend_leaves_the_blocks_working() -> None:
    calls: list[int] = []

    def broken_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        calls.append(1)
        raise RuntimeError("no C compiler for Triton")

    model = nn.Module()
    model.transformer_blocks = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
    x = torch.randn(3, 8)
    expected = [block(x) for block in model.transformer_blocks]
    assert compile_blocks(model, backend=broken_backend) == 2
    got = [block(x) for block in model.transformer_blocks]
    assert calls, "the backend was tried"
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
