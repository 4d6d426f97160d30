"""Write state dicts in the release layouts: ComfyUI single files and (sharded) diffusers/transformers files."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import torch

from qwen_image_studio.models import keymaps


def save_safetensors(
    state: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write tensors to one .safetensors file (parents created); returns the path."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata or {"format": "pt"})
    return path


SAFETENSORS_DTYPES = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2", torch.int64: "I64", torch.int32: "I32",
    torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
}  # fmt: skip


def stream_safetensors(
    state: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write a .safetensors file one tensor at a time (safetensors' save_file builds the whole file in memory
    first: twice a 40 GB DiT's size in RAM). Same format: 8-byte header size, JSON header padded with spaces
    to 8 bytes, then the tensors' little-endian bytes in header order."""
    header: dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for key, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        header[key] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for tensor in state.values():
            if tensor.numel():
                fh.write(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    return path


def save_sharded(
    state: Mapping[str, torch.Tensor], folder: Path, weights_name: str, num_shards: int
) -> list[Path]:
    """Write `stem-0000i-of-0000N.safetensors` shards of similar size plus `weights_name.index.json`."""
    stem = weights_name.removesuffix(".safetensors")
    sizes = {k: v.numel() * v.element_size() for k, v in state.items()}
    total = sum(sizes.values())
    groups: list[dict[str, torch.Tensor]] = [{} for _ in range(num_shards)]
    done = 0
    for key, value in state.items():
        index = min(num_shards - 1, done * num_shards // max(total, 1))
        groups[index][key] = value
        done += sizes[key]
    groups = [g for g in groups if g]
    n = len(groups)
    weight_map: dict[str, str] = {}
    paths = []
    for i, group in enumerate(groups, start=1):
        name = f"{stem}-{i:05d}-of-{n:05d}.safetensors"
        paths.append(save_safetensors(group, folder / name))
        weight_map.update(dict.fromkeys(group, name))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / f"{weights_name}.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


def comfy_dit_state_dict(state: Mapping[str, torch.Tensor], *, edit_2511_flag: bool = False) -> dict:
    """A DiT state dict under ComfyUI names, with the 2511 flag tensor when asked."""
    out = {keymaps.dit_to_comfy(k): v for k, v in state.items()}
    if edit_2511_flag:
        out[keymaps.dit_to_comfy(keymaps.DIT_2511_FLAG)] = torch.tensor([])
    return out


def comfy_vae_state_dict(state: Mapping[str, torch.Tensor]) -> dict:
    """A diffusers VAE state dict under ComfyUI/Wan names."""
    layout = keymaps.vae_layout_from_keys(state)
    return {keymaps.vae_to_comfy(k, layout): v for k, v in state.items()}


def comfy_text_encoder_state_dict(state: Mapping[str, torch.Tensor]) -> dict:
    """A transformers Qwen2.5-VL state dict under the release names (`model.*`, `visual.*`, `lm_head.*`)."""
    return {keymaps.text_encoder_to_comfy(k): v for k, v in state.items()}


def write_json(path: Path, data: Mapping) -> Path:
    """Write a json file the way the release repos do (indent 2, trailing newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
