"""fp8 checkpoints: recognise their scale tensors, dequantise on load, and write them (for tests and demos).

Layouts met in the wild: plain float8_e4m3fn weights; ComfyUI "scaled" files with a `<module>.scale_weight`
tensor per weight (older, plus a `scaled_fp8` marker) or `<module>.weight_scale` (newer, plus
`input_scale` / `comfy_quant` entries). A scale may be a scalar, one value per output row, or one value
per block of each row.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FP8_DTYPE_CODES = frozenset({"F8_E4M3", "F8_E5M2", "F8_E4M3FN", "F8_E5M2FNUZ", "F8_E4M3FNUZ"})
WEIGHT_SCALE_SUFFIXES: tuple[str, ...] = (".scale_weight", ".weight_scale")
# Entries that only matter to fp8 matmul kernels or mark the format; dropped on load.
IGNORED_SUFFIXES: tuple[str, ...] = (".scale_input", ".input_scale", ".comfy_quant")
MARKER_NAMES: frozenset[str] = frozenset({"scaled_fp8"})
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def is_fp8_code(dtype_code: str) -> bool:
    """Whether a safetensors dtype code is an 8-bit float."""
    return dtype_code.upper() in FP8_DTYPE_CODES


def is_fp8_auxiliary(key: str) -> bool:
    """Whether a tensor name is a scale, input scale, quant descriptor or format marker rather than a weight."""
    leaf = key.rsplit(".", 1)[-1]
    return key.endswith(WEIGHT_SCALE_SUFFIXES + IGNORED_SUFFIXES) or leaf in MARKER_NAMES


def weight_scale_key(weight_key: str, keys: Mapping[str, object]) -> str | None:
    """The scale tensor paired with a `<module>.weight` key, if the file has one."""
    if not weight_key.endswith(".weight"):
        return None
    module = weight_key[: -len(".weight")]
    for suffix in WEIGHT_SCALE_SUFFIXES:
        if module + suffix in keys:
            return module + suffix
    return None


def dequantize(weight: torch.Tensor, scale: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """An fp8 weight times its scale (scalar, per row or per row block), in `dtype`."""
    w = weight.to(torch.float32)
    if scale is not None:
        s = scale.to(device=w.device, dtype=torch.float32)
        rows = w.shape[0] if w.ndim else 1
        if s.numel() == 1:
            w = w * s.reshape(())
        elif s.numel() % rows == 0 and w.ndim >= 2:
            blocks = s.numel() // rows
            shape = w.shape
            w = (w.reshape(rows, blocks, -1) * s.reshape(rows, blocks, 1)).reshape(shape)
        else:
            raise ValueError(
                f"scale of shape {tuple(scale.shape)} does not fit a weight of shape {tuple(w.shape)}"
            )
    return w.to(dtype)


def linear_scales(scale: torch.Tensor | None, weight_shape: tuple[int, ...]) -> torch.Tensor:
    """A file's scale (none, scalar, per row or per row block) as the (out, blocks) fp32 layout of Fp8Linear."""
    out_features, in_features = weight_shape
    if scale is None:
        return torch.ones(out_features, 1)
    s = scale.detach().to(torch.float32)
    if s.numel() == 1:
        return s.reshape(1, 1).expand(out_features, 1).contiguous()
    if s.numel() % out_features == 0 and in_features % (s.numel() // out_features) == 0:
        return s.reshape(out_features, s.numel() // out_features).contiguous()
    raise ValueError(
        f"scale of shape {tuple(scale.shape)} does not fit a weight of shape {tuple(weight_shape)}"
    )


def quantize_fp8(
    state_dict: Mapping[str, torch.Tensor],
    *,
    scaled: bool,
    scale_suffix: str = ".weight_scale",
    targets: tuple[str, ...] = ("transformer_blocks.",),
) -> dict[str, torch.Tensor]:
    """A copy with 2-D `.weight`s under `targets` in float8_e4m3fn, plus per-tensor scales when `scaled`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not (key.endswith(".weight") and value.ndim == 2 and any(t in key for t in targets)):
            out[key] = value
            continue
        w = value.to(torch.float32)
        if scaled:
            scale = (w.abs().amax() / FP8_MAX).clamp(min=1e-12)
            out[key] = (w / scale).to(torch.float8_e4m3fn)
            out[key[: -len(".weight")] + scale_suffix] = scale.reshape(()).to(torch.float32)
        else:
            out[key] = w.to(torch.float8_e4m3fn)
    return out
