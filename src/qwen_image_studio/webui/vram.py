"""The memory estimate for the form's values: the chosen model files' architecture and sizes (read from
their safetensors headers, no tensor is loaded), resolution and batch from the dataset, where the stages
run (`--device`, and whether this machine has an NVIDIA GPU), and which common GPU sizes fit.

Training runs on the GPU whenever there is one (`--device` chooses the device of caching, sample prompts
and generation only); on a machine without a GPU every stage runs on the CPU and the answer gives the RAM
training needs. Torch-free, like the rest of the web UI.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..memory.presets import PRESETS
from ..memory.vram_estimate import (
    CUDA_CONTEXT_GB,
    FULL_DIT,
    FULL_TEXT_ENCODER_GB,
    GB,
    DitShape,
    VramOptions,
    estimate_ram,
    estimate_vram,
    text_encoder_gb,
)
from ..models.lora_keys import select_targets
from ..params.schema import StudioConfig
from ..params.validate import lenient_config
from .paths import resolve_in
from .write_check import _linear_shapes

COMMON_GPU_GB = (8, 12, 16, 24, 32, 48, 80)
_SHARD = re.compile(r"^(?P<stem>.+)-\d{5}-of-(?P<n>\d{5})\.safetensors$")
Linears = dict[str, list[int]]


def dataset_shape(config: StudioConfig, workspace: Path) -> tuple[int, int, int, str]:
    """(width, height, batch size, source): the largest resolution and batch of the dataset TOML, if readable."""
    value = config.dataset_config
    if value:
        from ..data.config import load_dataset_config

        try:
            datasets = load_dataset_config(resolve_in(workspace, value), check_paths=False).datasets
        except (DatasetError, OSError, ValueError):  # unreadable, or not a path at all: the default shape
            datasets = []
        if datasets:
            w, h = max((d.resolution for d in datasets), key=lambda r: r[0] * r[1])
            return w, h, max(d.batch_size for d in datasets), "dataset"
    return 1024, 1024, 1, "default"


# ---- the chosen files ------------------------------------------------------------------------------
def model_files(value: str | None, workspace: Path, component: str) -> list[Path]:
    """The safetensors files behind a form's model path: a file (all shards of a shard), a component
    folder, or a diffusers root with a `component` folder; [] when there are none."""
    if not value:
        return []
    try:
        path = resolve_in(workspace, value)
        if path.is_file():
            m = _SHARD.match(path.name)
            return sorted(path.parent.glob(f"{m['stem']}-*-of-{m['n']}.safetensors")) if m else [path]
        folder = path / component if (path / component).is_dir() else path
        return sorted(p for p in folder.glob("*.safetensors") if p.is_file()) if folder.is_dir() else []
    except (OSError, ValueError, RuntimeError):  # not a path this OS can look at
        return []


def _linears(files: list[Path]) -> Linears | None:
    """The 2-D weights of the files by module path (their headers only); None when one is unreadable."""
    if not files:
        return None
    out: Linears = {}
    try:
        for file in files:
            out.update(_linear_shapes(file))
    except (OSError, ValueError, struct.error):
        return None
    return out or None


def _lora_targets(config: StudioConfig, linears: Linears) -> list[str]:
    """The module paths the LoRA trains (--network_args include/exclude patterns); the defaults if unreadable."""
    extra = config.network_arg_dict()
    try:
        return select_targets(
            linears, extra.get("include_patterns"), extra.get("exclude_patterns"), extra.get("targets")
        )
    except re.error:
        return select_targets(linears)


class ChosenModels:
    """What the estimate reads of the chosen DiT, text encoder and VAE files."""

    def __init__(self, config: StudioConfig, workspace: Path) -> None:
        dit = _linears(model_files(config.dit, workspace, "transformer"))
        self.dit: DitShape | None = None
        if dit is not None:
            try:
                self.dit = DitShape.from_linears(dit, _lora_targets(config, dit))
            except (ValueError, KeyError, IndexError, TypeError):
                self.dit = None
        self.text_encoder = _linears(model_files(config.text_encoder, workspace, "text_encoder"))
        vae = model_files(config.vae, workspace, "vae")
        self.vae_bytes = sum(f.stat().st_size for f in vae) if vae else None

    def text_encoder_gb(self, *, fp8: bool, vision: bool, bytes_per_value: int = 2) -> float:
        """The text encoder on its device for prompt encoding (the release's size when its file is unreadable)."""
        if self.text_encoder is None:
            return FULL_TEXT_ENCODER_GB[(fp8, vision)] * bytes_per_value / 2
        try:
            return text_encoder_gb(self.text_encoder, fp8=fp8, vision=vision, bytes_per_value=bytes_per_value)
        except (TypeError, ValueError):
            return FULL_TEXT_ENCODER_GB[(fp8, vision)] * bytes_per_value / 2


# ---- the estimate ----------------------------------------------------------------------------------
Shape = tuple[int, int, int]  # the dataset's largest width and height, and batch size


def _options(config: StudioConfig, models: ChosenModels, shape: Shape, te_gb: float) -> VramOptions:
    width, height, batch = shape
    return VramOptions.from_config(
        config, width=width, height=height, batch_size=batch, dit=models.dit, text_encoder_gb=te_gb
    )


def _stage_gb(config: StudioConfig, models: ChosenModels, shape: Shape) -> dict[str, Any]:
    """The training estimate and the text-encoder stage's, on the GPU, for these values."""
    on_gpu = config.device != "cpu"  # where caching and sample prompts run (training: the GPU)
    te = models.text_encoder_gb(fp8=config.fp8_vl, vision=config.is_edit)
    sampling = bool(config.sample_prompts)
    estimate = estimate_vram(_options(config, models, shape, te if sampling and on_gpu else 0.0))
    cache_text = te + CUDA_CONTEXT_GB if on_gpu else None
    peak = max(estimate.total_gb, cache_text or 0.0)
    return {"estimate": estimate, "text_encoder_gb": te, "cache_text_gb": cache_text, "peak_gb": peak}


def _fits(peak: float) -> list[int]:
    return [size for size in COMMON_GPU_GB if peak <= size]


def _presets(config: StudioConfig, models: ChosenModels, shape: Shape, peak: float) -> dict:
    """Each GPU preset's peak with the other values as they are, and the smallest card one makes fit."""
    fits = _fits(peak)
    smallest = fits[0] if fits else None
    rows, better = [], None
    for preset in PRESETS:
        gb = _stage_gb(preset.apply(config), models, shape)["peak_gb"]
        rows.append({"gpu_gb": preset.gpu_gb, "estimate_gb": round(gb, 1)})
        if better is None and gb <= preset.gpu_gb and (smallest is None or preset.gpu_gb < smallest):
            better = {"gpu_gb": preset.gpu_gb, "estimate_gb": round(gb, 1)}
    return {"presets": rows, "preset": better}


def _this_gpu(gpu: dict[str, Any] | None, peak: float) -> dict[str, Any] | None:
    """This machine's first GPU (training's `cuda:0`) and whether the estimate fits it."""
    gpus = (gpu or {}).get("gpus") or []
    if not gpus:
        return None
    first = gpus[0]
    total = first["memory_total"] / GB
    return {"name": first["name"], "total_gb": round(total, 1), "fits": peak <= total}


def vram_for(params: dict[str, Any], workspace: Path, gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """The estimate for the form's values (GB, with its parts), what it assumed, and where it fits.

    `gpu` is `webui.gpu.gpu_status()` (the machine's GPUs); None or "cpu_only": every stage runs on the CPU.
    """
    config = lenient_config(params)  # a value the form holds that fails its rules counts as the default
    width, height, batch, source = dataset_shape(config, workspace)
    shape = (width, height, batch)
    models = ChosenModels(config, workspace)
    stages = _stage_gb(config, models, shape)
    peak = stages["peak_gb"]
    dit = models.dit or FULL_DIT
    te_ram = models.text_encoder_gb(fp8=config.fp8_vl, vision=config.is_edit, bytes_per_value=4)
    ram = estimate_ram(_options(config, models, shape, te_ram if config.sample_prompts else 0.0))
    gpu_present = bool(gpu and gpu.get("state") == "gpu")
    return {
        "estimate": stages["estimate"].as_json(),
        "width": width,
        "height": height,
        "batch_size": batch,
        "source": source,
        "dit": {
            "source": "file" if models.dit else "default",
            "num_layers": dit.num_layers,
            "hidden": dit.hidden,
            "params": dit.params,
        },
        "text_encoder": {
            "source": "file" if models.text_encoder else "default",
            "gb": round(stages["text_encoder_gb"], 2),
        },
        "vae_gb": None if models.vae_bytes is None else round(models.vae_bytes / GB, 2),
        "cache_text_gb": None if stages["cache_text_gb"] is None else round(stages["cache_text_gb"], 1),
        "peak_gb": round(peak, 2 if peak < 1 else 1),
        "device": "cpu" if config.device == "cpu" else "gpu",
        "gpu_present": gpu_present,
        "ram_gb": round(ram, 1),
        "fits": _fits(peak),
        "sizes": list(COMMON_GPU_GB),
        "this_gpu": _this_gpu(gpu, peak) if gpu_present else None,
        **_presets(config, models, shape, peak),
    }
