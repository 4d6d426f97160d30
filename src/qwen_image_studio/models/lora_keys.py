"""Which DiT linears a LoRA targets and how they are named in the file (facts §6): the one source of truth.

A LoRA file holds, per targeted module ``M`` (a diffusers module path such as
``transformer_blocks.0.attn.to_q``), the tensors ``lora_unet_{M with . -> _}.lora_down.weight`` [r, in],
``.lora_up.weight`` [out, r] and ``.alpha`` (scalar); the update is ``up @ down * alpha / r``. ComfyUI
loads these keys as they are and diffusers' ``load_lora_weights`` converts them.

Target sets (``--network_args targets=...``):

- ``default``: the twelve attention and MLP linears of every block (ours);
- ``musubi``: every linear of every block, i.e. those twelve plus the modulation linears ``img_mod.1`` and
  ``txt_mod.1`` — the reference trainer's default network (its exclusion pattern ``.*(_mod_).*`` matches
  none of them).

``include_patterns`` adds modules, ``exclude_patterns`` removes targets. Patterns are regular expressions
matched (``re.fullmatch``) against the module path, several separated by ``,`` or written as the reference
trainer writes them, a Python list (``exclude_patterns=['.*img_mlp.*']``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Literal

LORA_PREFIX = "lora_unet_"
DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"

# The key forms a LoRA file may use: ours/kohya's (``lora_unet_...``), ComfyUI's (``diffusion_model.``) and
# diffusers'/PEFT's (``transformer.`` or no prefix, ``lora_A``/``lora_B``).
LoraForm = Literal["lora_unet", "comfyui", "diffusers"]
FORM_PREFIXES: tuple[tuple[str, LoraForm], ...] = (
    ("diffusion_model.", "comfyui"),
    ("transformer.", "diffusers"),
    ("base_model.model.", "diffusers"),
)
ROLE_SUFFIXES: tuple[tuple[tuple[str, ...], str], ...] = (
    ((DOWN, ".lora_A.weight", ".lora_A.default.weight"), "down"),
    ((UP, ".lora_B.weight", ".lora_B.default.weight"), "up"),
    ((ALPHA,), "alpha"),
)


def split_lora_key(key: str) -> tuple[str, str, LoraForm] | None:
    """(module name, role "down"/"up"/"alpha", form) of a LoRA tensor name; None for any other tensor."""
    if key.startswith(LORA_PREFIX):
        name, dot, rest = key.partition(".")
        role = {DOWN[1:]: "down", UP[1:]: "up", ALPHA[1:]: "alpha"}.get(rest)
        return (name, role, "lora_unet") if dot and role else None
    body, form = key, "diffusers"
    for prefix, prefix_form in FORM_PREFIXES:
        if key.startswith(prefix):
            body, form = key[len(prefix) :], prefix_form
            break
    for suffixes, role in ROLE_SUFFIXES:
        for suffix in suffixes:
            if body.endswith(suffix):
                return body[: -len(suffix)], role, form  # type: ignore[return-value]
    return None

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
MODULATION_LINEARS: tuple[str, ...] = ("img_mod.1", "txt_mod.1")
TARGET_SETS: dict[str, tuple[str, ...]] = {
    "default": BLOCK_LINEARS,
    "musubi": BLOCK_LINEARS + MODULATION_LINEARS,
}
_BLOCK = re.compile(r"^transformer_blocks\.\d+\.(?P<leaf>.+)$")


def lora_name(module_path: str) -> str:
    """``lora_unet_`` plus the module path with dots replaced by underscores."""
    return LORA_PREFIX + module_path.replace(".", "_")


def split_patterns(value: str | None) -> list[str]:
    """The patterns of an include/exclude value: ``a,b`` or the reference's Python list ``['a', 'b']``."""
    text = (value or "").strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            items = None
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return [i for i in items if i]
    return [p.strip() for p in text.split(",") if p.strip()]


def _patterns(value: str | None) -> list[re.Pattern[str]]:
    return [re.compile(p) for p in split_patterns(value)]


def select_targets(
    linear_paths: Iterable[str],
    include_patterns: str | None = None,
    exclude_patterns: str | None = None,
    targets: str | None = None,
) -> list[str]:
    """The module paths (of the DiT's nn.Linear layers) a LoRA trains, in model order."""
    leaves = TARGET_SETS[targets or "default"]
    include, exclude = _patterns(include_patterns), _patterns(exclude_patterns)
    chosen_paths = []
    for path in linear_paths:
        m = _BLOCK.match(path)
        default = m is not None and m.group("leaf") in leaves
        chosen = default or any(p.fullmatch(path) for p in include)
        if chosen and not any(p.fullmatch(path) for p in exclude):
            chosen_paths.append(path)
    return chosen_paths
