"""GPU-size presets: which memory options each size turns on (defined once; the web form applies them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .vram_estimate import VramOptions, estimate_vram


@dataclass(frozen=True)
class MemoryPreset:
    """The memory options for one GPU size."""

    gpu_gb: int
    values: dict[str, Any]

    def estimate_gb(self, base: VramOptions | None = None) -> float:
        """The estimate with these options at 1024x1024, batch 1 (or the given options)."""
        b = base or VramOptions()
        opts = VramOptions(
            width=b.width,
            height=b.height,
            batch_size=b.batch_size,
            network_dim=b.network_dim,
            optimizer=b.optimizer,
            edit=b.edit,
            gradient_checkpointing=bool(self.values["gradient_checkpointing"]),
            fp8_base=bool(self.values["fp8_base"]),
            fp8_scaled=bool(self.values["fp8_scaled"]),
            blocks_to_swap=int(self.values["blocks_to_swap"]),
            checkpoint_offload=bool(self.values["gradient_checkpointing_cpu_offload"]),
        )
        return estimate_vram(opts).total_gb


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
