"""The streaming .safetensors writer (merged models) writes files safetensors reads back exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from qwen_image_studio.models.writing import stream_safetensors


def test_stream_safetensors_round_trips_every_dtype_shape_and_metadata(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    state = {
        "a.weight": torch.randn(5, 3, generator=g).to(torch.bfloat16),
        "b.fp8": torch.randn(4, 16, generator=g).to(torch.float8_e4m3fn),
        "c.half": torch.randn(7, generator=g).half(),
        "d.scalar": torch.tensor(2.5),
        "e.empty": torch.tensor([]),
        "f.long": torch.arange(3),
        "g.view": torch.randn(6, 4, generator=g).t(),  # not contiguous
    }
    path = stream_safetensors(state, tmp_path / "x.safetensors", {"note": "merged"})
    back = load_file(str(path))
    assert back.keys() == state.keys()
    for key, tensor in state.items():
        assert back[key].dtype == tensor.dtype and back[key].shape == tensor.shape
        assert torch.equal(back[key].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), key
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == {"note": "merged"}
