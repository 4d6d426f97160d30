"""Key names of the release files and the module names of diffusers / transformers, both directions.

One table per mapping: the DiT differs only by a prefix, the VAE by the Wan layout (flat
`downsamples`/`upsamples` lists, `residual.N` sub-layers), the text encoder by where transformers 5
nests the language model and the vision tower.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from typing import Literal

Kind = Literal["dit", "vae", "text_encoder", "lora", "unknown"]

# ---- DiT -------------------------------------------------------------------------------------------
DIT_COMFY_PREFIX = "model.diffusion_model."
# Tensor carried by ComfyUI's Qwen-Image-Edit-2511 files: "modulate control tokens with t = 0".
DIT_2511_FLAG = "__index_timestep_zero__"


def dit_to_comfy(key: str) -> str:
    """ComfyUI single-file name of a `QwenImageTransformer2DModel` state-dict key."""
    return DIT_COMFY_PREFIX + key


def dit_from_comfy(key: str) -> str:
    """`QwenImageTransformer2DModel` key of a ComfyUI (or already plain) DiT key."""
    return key[len(DIT_COMFY_PREFIX) :] if key.startswith(DIT_COMFY_PREFIX) else key


# ---- VAE -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VaeLayout:
    """The block structure that decides the flat Wan indices: levels (len(dim_mult)) and res blocks per level."""

    num_levels: int = 4
    num_res_blocks: int = 2


# Sub-layers of a Wan residual block: nn.Sequential(norm, act, conv, norm, act, dropout, conv) + shortcut.
_RESIDUAL_PARTS: tuple[tuple[str, str], ...] = (
    ("residual.0.", "norm1."),
    ("residual.2.", "conv1."),
    ("residual.3.", "norm2."),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
)


@cache
def vae_module_table(layout: VaeLayout = VaeLayout()) -> tuple[tuple[str, str, bool], ...]:
    """Rows (ComfyUI/Wan module prefix, diffusers module prefix, is a residual block) for a layout."""
    rows: list[tuple[str, str, bool]] = [
        ("conv1.", "quant_conv.", False),
        ("conv2.", "post_quant_conv.", False),
    ]
    for part in ("encoder", "decoder"):
        rows += [
            (f"{part}.conv1.", f"{part}.conv_in.", False),
            (f"{part}.middle.0.", f"{part}.mid_block.resnets.0.", True),
            (f"{part}.middle.1.", f"{part}.mid_block.attentions.0.", False),
            (f"{part}.middle.2.", f"{part}.mid_block.resnets.1.", True),
            (f"{part}.head.0.", f"{part}.norm_out.", False),
            (f"{part}.head.2.", f"{part}.conv_out.", False),
        ]
    levels, per_level = layout.num_levels, layout.num_res_blocks
    flat = 0
    for level in range(levels):  # encoder: res blocks then a downsampler, one flat list in both namings
        for _ in range(per_level):
            rows.append((f"encoder.downsamples.{flat}.", f"encoder.down_blocks.{flat}.", True))
            flat += 1
        if level != levels - 1:
            rows.append((f"encoder.downsamples.{flat}.", f"encoder.down_blocks.{flat}.", False))
            flat += 1
    flat = 0
    for level in range(levels):  # decoder: flat in Wan, grouped per level in diffusers
        for j in range(per_level + 1):
            rows.append((f"decoder.upsamples.{flat}.", f"decoder.up_blocks.{level}.resnets.{j}.", True))
            flat += 1
        if level != levels - 1:
            rows.append((f"decoder.upsamples.{flat}.", f"decoder.up_blocks.{level}.upsamplers.0.", False))
            flat += 1
    return tuple(rows)


def _vae_translate(key: str, layout: VaeLayout, to_comfy: bool) -> str:
    src, dst = (1, 0) if to_comfy else (0, 1)
    best: tuple[str, str, bool] | None = None
    for row in vae_module_table(layout):
        if key.startswith(row[src]) and (best is None or len(row[src]) > len(best[src])):
            best = row
    if best is None:
        return key
    rest = key[len(best[src]) :]
    if best[2]:
        for part in _RESIDUAL_PARTS:
            if rest.startswith(part[src]):
                rest = part[dst] + rest[len(part[src]) :]
                break
    return best[dst] + rest


def vae_to_comfy(key: str, layout: VaeLayout = VaeLayout()) -> str:
    """ComfyUI/Wan name of an `AutoencoderKLQwenImage` state-dict key."""
    return _vae_translate(key, layout, to_comfy=True)


def vae_from_comfy(key: str, layout: VaeLayout = VaeLayout()) -> str:
    """`AutoencoderKLQwenImage` key of a ComfyUI/Wan VAE key."""
    return _vae_translate(key, layout, to_comfy=False)


def is_comfy_vae(keys: Iterable[str]) -> bool:
    """Whether VAE keys use the ComfyUI/Wan names (rather than diffusers')."""
    return any(
        k.startswith(("encoder.downsamples.", "decoder.upsamples.", "encoder.head.", "conv1.")) for k in keys
    )


_FLAT_INDEX = re.compile(
    r"^encoder\.(?:downsamples|down_blocks)\.(\d+)\.(resample|residual|shortcut|norm1|conv1)"
)


def vae_layout_from_keys(keys: Iterable[str]) -> VaeLayout:
    """The level / res-block layout read from the encoder's flat block list (either naming)."""
    blocks: dict[int, bool] = {}
    for key in keys:
        m = _FLAT_INDEX.match(key)
        if m:
            idx = int(m.group(1))
            blocks[idx] = blocks.get(idx, False) or m.group(2) == "resample"
    if not blocks:
        return VaeLayout()
    resamples = sorted(i for i, is_resample in blocks.items() if is_resample)
    if not resamples:
        return VaeLayout(num_levels=1, num_res_blocks=len(blocks))
    return VaeLayout(num_levels=len(resamples) + 1, num_res_blocks=resamples[0])


# ---- text encoder -----------------------------------------------------------------------------------
# (release / ComfyUI name prefix, transformers 5 module prefix). The diffusers text_encoder/ shards use
# the release names too (transformers saves them that way).
TEXT_ENCODER_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.", "model.language_model."),
    ("visual.", "model.visual."),
    ("lm_head.", "lm_head."),
)


def text_encoder_to_comfy(key: str) -> str:
    """Release (`model.*` / `visual.*` / `lm_head.*`) name of a transformers 5 Qwen2.5-VL key."""
    for disk, module in sorted(TEXT_ENCODER_PREFIXES, key=lambda p: -len(p[1])):
        if key.startswith(module):
            return disk + key[len(module) :]
    return key


def text_encoder_from_comfy(key: str) -> str:
    """transformers 5 Qwen2.5-VL key of a release name (already-nested names pass through)."""
    if key.startswith(("model.language_model.", "model.visual.")):
        return key
    for disk, module in TEXT_ENCODER_PREFIXES:
        if key.startswith(disk):
            return module + key[len(disk) :]
    return key


# ---- shared ------------------------------------------------------------------------------------------
def rename_keys(keys: Iterable[str], fn: Callable[[str], str]) -> dict[str, str]:
    """{new name: old name} for a key mapping; raises ValueError when two keys map to one name."""
    out: dict[str, str] = {}
    for key in keys:
        new = fn(key)
        if new in out:
            raise ValueError(f"keys {out[new]!r} and {key!r} both map to {new!r}")
        out[new] = key
    return out


KIND_NAMES: dict[str, str] = {
    "dit": "a Qwen-Image DiT (diffusion model)",
    "vae": "a Qwen-Image VAE",
    "text_encoder": "a Qwen2.5-VL text encoder",
    "lora": "a LoRA file",
    "unknown": "not a Qwen-Image model file",
}


def detect_kind(keys: Iterable[str]) -> Kind:
    """Which model a set of tensor names belongs to (either naming, any prefix used by the releases)."""
    keys = list(keys)
    if any(".lora_down." in k or ".lora_A." in k or k.startswith("lora_unet_") for k in keys):
        return "lora"
    plain = {dit_from_comfy(k) for k in keys}
    if any(k.startswith("transformer_blocks.") for k in plain) and any(
        k.startswith("img_in.") for k in plain
    ):
        return "dit"
    if any(k.startswith(("encoder.", "decoder.")) for k in keys) and any(
        k.startswith(("conv1.", "quant_conv.", "post_quant_conv.", "conv2.")) for k in keys
    ):
        return "vae"
    if any(k.startswith(("model.layers.", "model.language_model.layers.")) for k in keys) and any(
        "embed_tokens." in k for k in keys
    ):
        return "text_encoder"
    return "unknown"
