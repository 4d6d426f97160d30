"""Convert a Qwen-Image LoRA file between the ComfyUI/kohya form and the diffusers/PEFT form.

The trainer's ``lora_unet_...`` file with ``.alpha`` loads as it is in ComfyUI and in diffusers'
``load_lora_weights`` (tests/integration/test_lora_interop.py proves both), so conversion is only for
tools that read PEFT state dicts directly (``transformer.<module>.lora_A/B.weight``; alpha folded into
``lora_B`` and a ``lora_adapter_metadata`` header as diffusers writes it) or to bring a diffusers/PEFT
LoRA back to the ComfyUI/kohya form.
"""

from __future__ import annotations

import collections
import json
import re
from functools import cache
from pathlib import Path
from typing import Literal

import torch

from qwen_image_studio.models.lora_apply import METADATA_KEY, LoraFile, LoraPair, read_lora, resolve_modules
from qwen_image_studio.models.lora_keys import ALPHA, DOWN, UP, lora_name

Target = Literal["comfyui", "diffusers"]
TARGETS: tuple[str, ...] = ("comfyui", "diffusers")
_BLOCK_INDEX = re.compile(r"transformer_blocks[._](\d+)[._]")


@cache
def dit_linear_paths(num_layers: int) -> tuple[str, ...]:
    """Module paths of every nn.Linear of a Qwen-Image DiT with `num_layers` blocks (names only, no weights)."""
    from accelerate import init_empty_weights
    from diffusers import QwenImageTransformer2DModel

    from qwen_image_studio.models import configs

    cfg = {**configs.dit_config("tiny"), "num_layers": num_layers}
    with init_empty_weights():
        model = QwenImageTransformer2DModel(**cfg)
    return tuple(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))


def _num_layers(lora: LoraFile) -> int:
    indexes = [int(m.group(1)) for name in lora.pairs if (m := _BLOCK_INDEX.search(name))]
    return max(indexes, default=0) + 1


def module_pairs(lora: LoraFile) -> dict[str, LoraPair]:
    """The file's pairs keyed by diffusers module path (lora_unet_ names resolved against the DiT layout)."""
    if lora.form != "lora_unet":
        return dict(lora.pairs)
    return resolve_modules(lora, dit_linear_paths(_num_layers(lora)))


def to_comfyui(lora: LoraFile) -> dict[str, torch.Tensor]:
    """``lora_unet_`` keys with lora_down/lora_up/alpha (alpha = rank when the source has none)."""
    out: dict[str, torch.Tensor] = {}
    for path, pair in module_pairs(lora).items():
        name = lora_name(path)
        out[name + DOWN] = pair.down.contiguous()
        out[name + UP] = pair.up.contiguous()
        alpha = pair.alpha if pair.alpha is not None else float(pair.rank)
        out[name + ALPHA] = torch.tensor(alpha, dtype=torch.float32)
    return out


def to_diffusers(lora: LoraFile) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """PEFT keys ``transformer.<module>.lora_A/B.weight`` (scale folded into lora_B) and their header."""
    out: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for path, pair in module_pairs(lora).items():
        out[f"transformer.{path}.lora_A.weight"] = pair.down.contiguous()
        scaled_up = (pair.up.float() * pair.scale).to(pair.up.dtype)
        out[f"transformer.{path}.lora_B.weight"] = scaled_up.contiguous()
        ranks[path] = pair.rank
    r = collections.Counter(ranks.values()).most_common(1)[0][0]
    rank_pattern = {p: k for p, k in ranks.items() if k != r}
    config = {
        "r": r,
        "lora_alpha": r,  # scale 1: alpha / rank is already in lora_B
        "rank_pattern": rank_pattern,
        "alpha_pattern": dict(rank_pattern),
        "target_modules": sorted(ranks),
        "use_dora": False,
        "lora_bias": False,
    }
    header = {METADATA_KEY: json.dumps({f"transformer.{k}": v for k, v in config.items()}, sort_keys=True)}
    return out, header


def convert_lora(src: str | Path, dst: str | Path, to: Target) -> Path:
    """Write `src` (any supported form) to `dst` in the `to` form, keeping the source's other header entries."""
    from safetensors import safe_open

    from qwen_image_studio.atomic import atomic_save_safetensors
    from qwen_image_studio.errors import ConfigError

    if to not in TARGETS:
        raise ConfigError(f"--to: {to!r} is not allowed; choose one of {', '.join(TARGETS)}")
    lora = read_lora(src, flag="lora convert")
    out = Path(dst).expanduser()
    if out.exists() and out.resolve() == lora.path.resolve():
        raise ConfigError(f"lora convert: the output {out} is the input file; name another file")
    with safe_open(str(lora.path), framework="pt") as f:
        header = {k: v for k, v in (f.metadata() or {}).items() if k != METADATA_KEY}
    if to == "comfyui":
        tensors = to_comfyui(lora)
    else:
        tensors, extra = to_diffusers(lora)
        header.update(extra)
    header.setdefault("format", "pt")
    return atomic_save_safetensors(tensors, out, header)
