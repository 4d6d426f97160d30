"""Which DiT linears a LoRA targets and how they are named in the file (facts §6): the one source of truth.

A LoRA file holds, per targeted module ``M`` (a diffusers module path such as
``transformer_blocks.0.attn.to_q``), the tensors ``lora_unet_{M with . -> _}.lora_down.weight`` [r, in],
``.lora_up.weight`` [out, r] and ``.alpha`` (scalar); the update is ``up @ down * alpha / r``. ComfyUI
loads these keys as they are and diffusers' ``load_lora_weights`` converts them.

Default targets are the twelve attention and MLP linears of every block. The modulation linears
(``img_mod.1``, ``txt_mod.1``), which the reference trainer also trains, are opt-in with
``--network_args include_patterns=...``; ``exclude_patterns`` removes targets. Patterns are regular
expressions matched (``re.fullmatch``) against the module path, several separated by ``,``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

LORA_PREFIX = "lora_unet_"
DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"

BLOCK_LINEARS: tuple[str, ...] = (
    "attn.to_q",
    "attn.to_k",
    "attn.to_v",
    "attn.add_q_proj",
    "attn.add_k_proj",
    "attn.add_v_proj",
    "attn.to_out.0",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)
_BLOCK = re.compile(r"^transformer_blocks\.\d+\.(?P<leaf>.+)$")


def lora_name(module_path: str) -> str:
    """``lora_unet_`` plus the module path with dots replaced by underscores."""
    return LORA_PREFIX + module_path.replace(".", "_")


def _patterns(value: str | None) -> list[re.Pattern[str]]:
    return [re.compile(p.strip()) for p in (value or "").split(",") if p.strip()]


def select_targets(
    linear_paths: Iterable[str], include_patterns: str | None = None, exclude_patterns: str | None = None
) -> list[str]:
    """The module paths (of the DiT's nn.Linear layers) a LoRA trains, in model order."""
    include, exclude = _patterns(include_patterns), _patterns(exclude_patterns)
    targets = []
    for path in linear_paths:
        m = _BLOCK.match(path)
        default = m is not None and m.group("leaf") in BLOCK_LINEARS
        chosen = default or any(p.fullmatch(path) for p in include)
        if chosen and not any(p.fullmatch(path) for p in exclude):
            targets.append(path)
    return targets
