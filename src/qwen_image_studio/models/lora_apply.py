"""Read Qwen-Image LoRA files in the forms users have and merge them into a loaded DiT.

Forms read (facts §3b, §6; ComfyUI's and diffusers' loaders accept the same ones):

- ours / kohya / musubi: ``lora_unet_<module path with . -> _>.lora_down.weight`` [r, in],
  ``.lora_up.weight`` [out, r], ``.alpha`` (the form the trainer writes);
- ComfyUI: ``diffusion_model.<module path>.lora_A.weight`` / ``.lora_B.weight`` (or ``lora_down``/``lora_up``),
  optional ``.alpha``;
- diffusers / PEFT: ``transformer.<module path>.lora_A.weight`` / ``.lora_B.weight`` (also bare module paths,
  ``base_model.model.`` prefixes and ``.lora_A.default.weight``), scaled by the ``lora_adapter_metadata``
  header (``lora_alpha`` / ``r``) when present.

The update of a module is ``multiplier * scale * up @ down`` with ``scale = alpha / rank`` (1 without alpha).

Decision: generation merges LoRAs into the Linear weights (no per-step overhead, and fp8 storage can be
applied after merging). No reversible/hook variant is needed: samples during training are drawn with the
live, LoRA-wrapped training network (``training/sampling.py``), never by merging into the frozen base.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from qwen_image_studio.errors import ModelFileError
from qwen_image_studio.models.lora_keys import LoraForm, lora_name, split_lora_key

FLAG = "--lora_weight"
METADATA_KEY = "lora_adapter_metadata"  # diffusers' safetensors header entry (a PEFT LoraConfig as JSON)


@dataclass(frozen=True)
class LoraPair:
    """One module's LoRA factors as the file holds them."""

    down: torch.Tensor  # [r, in]
    up: torch.Tensor  # [out, r]
    alpha: float | None

    @property
    def rank(self) -> int:
        """The LoRA rank r."""
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """alpha / r, or 1 when the file gives no alpha."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def delta(self, multiplier: float = 1.0) -> torch.Tensor:
        """The weight update ``multiplier * scale * up @ down`` in fp32, [out, in]."""
        return (self.up.float() @ self.down.float()) * (multiplier * self.scale)


@dataclass
class LoraFile:
    """A LoRA file read from disk: its form and, per module name as written, the factors."""

    path: Path
    flag: str
    form: LoraForm
    pairs: dict[str, LoraPair]  # "lora_unet_..." names, or dotted module paths for the other forms

    def error(self, what: str) -> ModelFileError:
        """A ModelFileError naming the flag and the file."""
        return ModelFileError(f"{self.flag}: {self.path}: {what}")

    @property
    def ranks(self) -> list[int]:
        """The distinct ranks of the file's modules."""
        return sorted({p.rank for p in self.pairs.values()})


def _fail(flag: str, path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{flag}: {path}: {what}")


def _few(items: Iterable[str], n: int = 3) -> str:
    items = sorted(items)
    shown = ", ".join(items[:n])
    return shown + (f" (and {len(items) - n} more)" if len(items) > n else "")


def _metadata_scale(metadata: dict[str, str]) -> tuple[float | None, int | None, dict, dict]:
    """(lora_alpha, r, alpha_pattern, rank_pattern) of a diffusers/PEFT header, Nones when absent."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return None, None, {}, {}
    try:
        cfg = json.loads(raw)
    except ValueError:
        return None, None, {}, {}
    cfg = {k.removeprefix("transformer."): v for k, v in cfg.items()} if isinstance(cfg, dict) else {}
    alpha, rank = cfg.get("lora_alpha"), cfg.get("r")
    return (
        float(alpha) if isinstance(alpha, int | float) else None,
        int(rank) if isinstance(rank, int) else None,
        cfg.get("alpha_pattern") or {},
        cfg.get("rank_pattern") or {},
    )


def _pattern_value(module: str, patterns: dict, default: float | None) -> float | None:
    for pattern, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{pattern}", module):
            return float(value)
    return default


def read_lora(path: str | Path, *, flag: str = FLAG) -> LoraFile:
    """Read and check a LoRA file (any supported form); raises ModelFileError with a one-line reason."""
    from safetensors import SafetensorError, safe_open

    from qwen_image_studio.models import keymaps

    p = Path(path).expanduser()
    if not p.is_file():
        raise _fail(
            flag,
            p,
            "does not exist" if not p.exists() else "is a folder; a LoRA .safetensors file is expected",
        )
    try:
        with safe_open(str(p), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError) as exc:
        raise _fail(flag, p, f"is not a readable .safetensors file ({exc})") from None
    if not tensors:
        raise _fail(flag, p, "holds no tensors")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    forms: set[LoraForm] = set()
    unknown: list[str] = []
    for key, tensor in tensors.items():
        split = split_lora_key(key)
        if split is None:
            unknown.append(key)
            continue
        name, role, form = split
        parts.setdefault(name, {})[role] = tensor
        forms.add(form)
    if not any("down" in v or "up" in v for v in parts.values()):
        kind = keymaps.detect_kind(tensors)
        what = keymaps.KIND_NAMES[kind] if kind not in ("lora", "unknown") else "a file of another kind"
        raise _fail(
            flag, p, f"is not a LoRA file: it is {what} (tensors like {', '.join(sorted(tensors)[:2])})"
        )
    if unknown:
        raise _fail(flag, p, f"holds tensors that are not LoRA factors or alphas: {_few(unknown)}")
    if len(forms) > 1:
        raise _fail(flag, p, f"mixes LoRA key forms ({', '.join(sorted(forms))}); convert it to one form")
    meta_alpha, meta_rank, alpha_pattern, rank_pattern = _metadata_scale(metadata)
    pairs: dict[str, LoraPair] = {}
    for name, roles in parts.items():
        if "down" not in roles or "up" not in roles:
            missing = "down (lora_A)" if "down" not in roles else "up (lora_B)"
            raise _fail(flag, p, f"module {name} lacks its {missing} matrix")
        down, up = roles["down"], roles["up"]
        if down.ndim != 2 or up.ndim != 2:
            raise _fail(
                flag,
                p,
                f"module {name}: only Linear LoRA factors (2-D) are supported, got "
                f"{tuple(down.shape)} and {tuple(up.shape)}",
            )
        if down.shape[0] != up.shape[1]:
            raise _fail(
                flag,
                p,
                f"rank mismatch in module {name}: lora_down has rank {down.shape[0]}, "
                f"lora_up has rank {up.shape[1]}",
            )
        alpha = float(roles["alpha"].float().item()) if "alpha" in roles else None
        if alpha is None and meta_alpha is not None:
            # PEFT: scale = lora_alpha / r with the configured rank (the factors' rank under rank_pattern)
            alpha = _pattern_value(name, alpha_pattern, meta_alpha)
            rank = _pattern_value(name, rank_pattern, float(meta_rank) if meta_rank else None)
            if alpha is not None and rank:
                alpha = alpha * down.shape[0] / rank
        pairs[name] = LoraPair(down, up, alpha)
    return LoraFile(p, flag, forms.pop(), pairs)


def linear_paths(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of a model by module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def resolve_modules(lora: LoraFile, module_paths: Iterable[str]) -> dict[str, LoraPair]:
    """The file's pairs keyed by the model's module paths; errors on names that match no module."""
    paths = list(module_paths)
    table = {lora_name(p): p for p in paths} if lora.form == "lora_unet" else {p: p for p in paths}
    out: dict[str, LoraPair] = {}
    unmatched = []
    for name, pair in lora.pairs.items():
        path = table.get(name)
        if path is None:
            unmatched.append(name)
        else:
            out[path] = pair
    if unmatched:
        raise lora.error(
            f"{len(unmatched)} of {len(lora.pairs)} LoRA modules match no Linear layer of this DiT: "
            f"{_few(unmatched)}; is it a LoRA for another model?"
        )
    return out


def check_shapes(lora: LoraFile, resolved: dict[str, LoraPair], linears: dict[str, nn.Linear]) -> None:
    """Raise when a LoRA's factor shapes do not fit the model's layer (a LoRA for another model size)."""
    for path, pair in resolved.items():
        layer = linears[path]
        if pair.down.shape[1] != layer.in_features or pair.up.shape[0] != layer.out_features:
            raise lora.error(
                f"module {path}: the LoRA maps {pair.down.shape[1]} -> {pair.up.shape[0]} features but the "
                f"DiT's layer maps {layer.in_features} -> {layer.out_features}; is it a LoRA for another model?"
            )


def multipliers_for(count: int, multipliers: Sequence[float] | None) -> list[float]:
    """One multiplier per LoRA: none given -> 1.0 each; one given -> that for all; else one each."""
    values = list(multipliers or [])
    if not values:
        return [1.0] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        from qwen_image_studio.errors import ConfigError

        raise ConfigError(
            f"--lora_multiplier: {len(values)} values for {count} --lora_weight files; "
            "give one value, or one per file"
        )
    return values


@torch.no_grad()
def merge_loras(
    model: nn.Module, loras: Sequence[LoraFile], multipliers: Sequence[float] | None = None
) -> int:
    """Add each LoRA's update times its multiplier to the model's Linear weights; returns the layers changed."""
    linears = linear_paths(model)
    factors = multipliers_for(len(loras), multipliers)
    resolved = []
    for lora in loras:  # check every file before changing any weight
        pairs = resolve_modules(lora, linears)
        check_shapes(lora, pairs, linears)
        resolved.append(pairs)
    changed: set[str] = set()
    for pairs, multiplier in zip(resolved, factors, strict=True):
        if multiplier == 0.0:
            continue
        for path, pair in pairs.items():
            weight = linears[path].weight
            delta = pair.delta(multiplier).to(weight.device)
            weight.copy_((weight.float() + delta).to(weight.dtype))
            changed.add(path)
    return len(changed)
