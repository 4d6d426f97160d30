"""GPU-size presets: which memory options each size turns on (defined once; the web form applies them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .vram_estimate import VramOptions, estimate_vram

if TYPE_CHECKING:
    from ..params.schema import StudioConfig


@dataclass(frozen=True)
class MemoryPreset:
    """The memory options for one GPU size."""

    gpu_gb: int
    values: dict[str, Any]

    def apply(self, config: StudioConfig) -> StudioConfig:
        """`config` with this preset's options turned on (the other values as they are)."""
        return config.model_copy(update=self.values)

    def estimate_gb(self, config: StudioConfig | None = None) -> float:
        """The estimate of `config` (the schema defaults) with these options, at 1024x1024, batch 1."""
        from ..params.schema import StudioConfig

        return estimate_vram(VramOptions.from_config(self.apply(config or StudioConfig()))).total_gb


def _preset(
    gpu_gb: int, fp8: bool, swap: int, fp8_vl: bool, checkpointing: bool = True, offload: bool = False
) -> MemoryPreset:
    return MemoryPreset(
        gpu_gb,
        {
            "fp8_base": fp8,
            "fp8_scaled": fp8,
            "fp8_vl": fp8_vl,
            "blocks_to_swap": swap,
            "gradient_checkpointing": checkpointing,
            "gradient_checkpointing_cpu_offload": offload,
        },
    )


# Measured on an H100 (vram_estimate): fp8 + 45 swapped blocks 12.6 GB, with checkpoint offload 11.1 GB;
# fp8 + 16 swapped 23.0 GB; bf16 46.8 GB; 16 GB sits between. 80 GB turns gradient checkpointing off
# (faster; estimated, not measured).
PRESETS: tuple[MemoryPreset, ...] = (
    _preset(12, fp8=True, swap=45, fp8_vl=True, offload=True),
    _preset(16, fp8=True, swap=36, fp8_vl=True, offload=True),
    _preset(24, fp8=True, swap=16, fp8_vl=False),
    _preset(48, fp8=False, swap=0, fp8_vl=False),
    _preset(80, fp8=False, swap=0, fp8_vl=False, checkpointing=False),
)


def preset_for(gpu_gb: int) -> MemoryPreset:
    """The preset of a GPU size (KeyError for sizes without one)."""
    for preset in PRESETS:
        if preset.gpu_gb == gpu_gb:
            return preset
    raise KeyError(f"no preset for {gpu_gb} GB; presets: {', '.join(str(p.gpu_gb) for p in PRESETS)}")
