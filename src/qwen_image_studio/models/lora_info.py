"""What a LoRA file is: its key form, modules, ranks, alphas, dtype, targets and training settings.

Read from the safetensors header alone (no tensor is loaded, no torch import: the web UI uses this), plus
the few bytes of each ``.alpha`` scalar. The forms are those ``lora_apply.read_lora`` accepts:

- ``kohya``: ``lora_unet_<module path, . -> _>.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha`` (what
  the trainer writes, and what ComfyUI and kohya/musubi tools read);
- ``comfyui``: ``diffusion_model.<module path>.lora_A/B.weight`` (or lora_down/lora_up), optional alpha;
- ``diffusers``: PEFT keys ``transformer.<module path>.lora_A/B.weight`` (also bare paths and
  ``base_model.model.``), the scale in the ``lora_adapter_metadata`` header.

Targets are counted per group of the Qwen-Image block: ``attention`` (``attn.*``), ``mlp`` (``img_mlp`` /
``txt_mlp``), ``modulation`` (``img_mod`` / ``txt_mod``) and ``other`` (anything outside those). The
training settings are the header's kohya-style ``ss_*`` entries and our ``qis_training_config`` (the full
configuration as JSON, see ``training/lora.file_metadata``).
"""

from __future__ import annotations

import collections
import json
import math
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from . import keymaps
from .lora_keys import LORA_PREFIX, split_lora_key

MAX_HEADER = 100 * 2**20
METADATA_KEY = "lora_adapter_metadata"
FORM_LABELS = {
    "kohya": "ComfyUI / kohya (lora_unet_)",
    "comfyui": "ComfyUI (diffusion_model.)",
    "diffusers": "diffusers / PEFT (transformer.)",
}
# which key form each download form is; a file already in that form is served as it is
DOWNLOAD_FORMS = {"comfyui": ("kohya", "comfyui"), "diffusers": ("diffusers",)}
_BLOCK = re.compile(r"transformer_blocks[._](\d+)[._]")
_GROUPS = (
    ("modulation", re.compile(r"_(img|txt)_mod_")),
    ("mlp", re.compile(r"_(img|txt)_mlp_")),
    ("attention", re.compile(r"_attn_")),
)
VALIDATION_LOSS_KEY = "qis_validation_loss"  # the header entry training writes with a validation dataset
_SCALAR = {"F32": ("<f", 4), "F64": ("<d", 8), "F16": ("<e", 2)}


@dataclass(frozen=True)
class LoraInfo:
    """A LoRA file's facts, as the details panel and ``GET /api/lora/info`` give them."""

    path: str
    file_size: int
    form: str  # kohya, comfyui or diffusers
    form_label: str
    modules: int
    ranks: list[int]  # distinct, ascending
    rank: int  # the most common one
    alphas: list[float]  # distinct; empty when the file gives none (then the scale is 1)
    alpha_source: str  # "tensors", "header" (PEFT lora_alpha) or "none"
    dtypes: list[str]
    targets: dict[str, int]  # modules per group: attention, mlp, modulation, other
    blocks: int  # how many transformer blocks the LoRA touches
    model_version: str | None
    base_model: str | None
    training: dict[str, str] = field(default_factory=dict)  # the ss_* header entries
    training_config: dict[str, Any] | None = None  # qis_training_config
    hash: str | None = None  # sshs_model_hash
    validation_loss: float | None = None  # qis_validation_loss: the held-out loss when it was saved

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)


def _fail(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{path}: {what}")


def read_header(path: str | Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """(tensor entries by name, the ``__metadata__`` strings, where the data section starts) of a
    safetensors file; ModelFileError (one line) when it is not one."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise _fail(p, "does not exist" if not p.exists() else "is a folder; a LoRA .safetensors file is expected")
    try:
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _fail(p, "is not a .safetensors file (too short)")
            (length,) = struct.unpack("<Q", head)
            if length > MAX_HEADER or length > p.stat().st_size - 8:
                raise _fail(p, "is not a .safetensors file (no valid header)")
            header = json.loads(fh.read(length))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise _fail(p, f"is not a readable .safetensors file ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _fail(p, "is not a .safetensors file (its header is not a JSON object)")
    raw_meta = header.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in raw_meta.items()} if isinstance(raw_meta, dict) else {}
    tensors = {k: v for k, v in header.items() if isinstance(v, dict) and "shape" in v and "dtype" in v}
    return tensors, metadata, 8 + length


def split_key(key: str) -> tuple[str, str, str] | None:
    """(module name, role "down"/"up"/"alpha", form) of a LoRA tensor name (`lora_keys.split_lora_key`,
    with the ``lora_unet_`` form named "kohya"); None for any other tensor."""
    split = split_lora_key(key)
    if split is None:
        return None
    name, role, form = split
    return name, role, "kohya" if form == "lora_unet" else form


def target_group(module: str) -> str:
    """attention, mlp, modulation or other: the part of the block a module name (either naming) is in."""
    text = "_" + module.removeprefix(LORA_PREFIX).replace(".", "_") + "_"
    return next((group for group, pattern in _GROUPS if pattern.search(text)), "other")


def _scalar(path: Path, entry: dict[str, Any], data_start: int) -> float | None:
    """The value of a one-element tensor, read from its bytes (F32, F64, F16, BF16)."""
    dtype, (begin, end) = entry.get("dtype"), entry.get("data_offsets", (0, 0))
    with open(path, "rb") as fh:
        fh.seek(data_start + int(begin))
        raw = fh.read(int(end) - int(begin))
    if dtype == "BF16" and len(raw) == 2:
        return struct.unpack("<f", b"\0\0" + raw)[0]
    if dtype in _SCALAR and len(raw) == _SCALAR[dtype][1]:
        return struct.unpack(_SCALAR[dtype][0], raw)[0]
    return None


def _peft_alpha(metadata: dict[str, str]) -> float | None:
    try:
        cfg = json.loads(metadata.get(METADATA_KEY) or "null")
    except ValueError:
        return None
    if not isinstance(cfg, dict):
        return None
    alpha = {k.removeprefix("transformer."): v for k, v in cfg.items()}.get("lora_alpha")
    return float(alpha) if isinstance(alpha, int | float) else None


def _training_config(metadata: dict[str, str]) -> dict[str, Any] | None:
    try:
        cfg = json.loads(metadata.get("qis_training_config") or "null")
    except ValueError:
        return None
    return cfg if isinstance(cfg, dict) else None


def lora_info(path: str | Path) -> LoraInfo:
    """The facts of a LoRA file (any supported form); ModelFileError with one line for any other file."""
    p = Path(path).expanduser()
    tensors, metadata, data_start = read_header(p)
    if not tensors:
        raise _fail(p, "holds no tensors")
    parts: dict[str, dict[str, dict[str, Any]]] = {}
    forms: set[str] = set()
    unknown = []
    for key, entry in tensors.items():
        split = split_key(key)
        if split is None:
            unknown.append(key)
            continue
        name, role, form = split
        parts.setdefault(name, {})[role] = entry
        forms.add(form)
    if not any("down" in roles or "up" in roles for roles in parts.values()):
        kind = keymaps.detect_kind(tensors)
        what = keymaps.KIND_NAMES[kind] if kind not in ("lora", "unknown") else "a file of another kind"
        raise _fail(p, f"is not a LoRA file: it is {what} (tensors like {', '.join(sorted(tensors)[:2])})")
    if unknown:
        raise _fail(p, f"holds tensors that are not LoRA factors or alphas, e.g. {sorted(unknown)[0]}")
    if len(forms) > 1:
        raise _fail(p, f"mixes LoRA key forms ({', '.join(sorted(forms))})")
    ranks: list[int] = []
    alphas: set[float] = set()
    groups: collections.Counter[str] = collections.Counter()
    blocks: set[int] = set()
    for name, roles in parts.items():
        if "down" not in roles or "up" not in roles:
            missing = "down (lora_A)" if "down" not in roles else "up (lora_B)"
            raise _fail(p, f"module {name} lacks its {missing} matrix")
        down, up = roles["down"]["shape"], roles["up"]["shape"]
        if len(down) != 2 or len(up) != 2 or down[0] != up[1]:
            raise _fail(p, f"module {name}: the factors' shapes {down} and {up} do not form a LoRA")
        ranks.append(int(down[0]))
        if "alpha" in roles and (value := _scalar(p, roles["alpha"], data_start)) is not None:
            alphas.add(round(value, 6))
        groups[target_group(name)] += 1
        if m := _BLOCK.search(name.removeprefix(LORA_PREFIX) + "."):
            blocks.add(int(m.group(1)))
    source = "tensors" if alphas else "none"
    if not alphas and (peft := _peft_alpha(metadata)) is not None:
        alphas, source = {peft}, "header"
    config = _training_config(metadata)
    form = forms.pop()
    return LoraInfo(
        path=str(p),
        file_size=p.stat().st_size,
        form=form,
        form_label=FORM_LABELS[form],
        modules=len(parts),
        ranks=sorted(set(ranks)),
        rank=collections.Counter(ranks).most_common(1)[0][0],
        alphas=sorted(alphas),
        alpha_source=source,
        dtypes=sorted({str(e["dtype"]) for e in tensors.values()}),
        targets={g: groups.get(g, 0) for g in ("attention", "mlp", "modulation", "other")},
        blocks=len(blocks),
        model_version=metadata.get("ss_model_version") or (config or {}).get("model_version"),
        base_model=metadata.get("ss_base_model") or None,
        training={k: v for k, v in sorted(metadata.items()) if k.startswith("ss_")},
        training_config=config,
        hash=metadata.get("sshs_model_hash"),
        validation_loss=validation_loss_of(metadata),
    )


def validation_loss_of(metadata: dict[str, str]) -> float | None:
    """The validation loss a training run wrote into a LoRA header (None: none, or not a number)."""
    try:
        value = float(metadata[VALIDATION_LOSS_KEY])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None
