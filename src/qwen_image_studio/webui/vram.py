"""The VRAM estimate for the form's values: options from the values, resolution and batch from the dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..memory.vram_estimate import VramOptions, estimate_vram
from ..params.schema import EDIT_VERSIONS, StudioConfig
from .paths import resolve_in

_DEFAULTS = StudioConfig()


def _value(params: dict[str, Any], name: str, kind: type) -> Any:
    """A value of the right type, else the schema default (the form may hold an invalid value)."""
    value = params.get(name, getattr(_DEFAULTS, name))
    if kind is bool:
        return value if isinstance(value, bool) else getattr(_DEFAULTS, name)
    try:
        return kind(value)
    except (TypeError, ValueError):
        return getattr(_DEFAULTS, name)


def dataset_shape(params: dict[str, Any], workspace: Path) -> tuple[int, int, int, str]:
    """(width, height, batch size, source): the largest resolution and batch of the dataset TOML, if readable."""
    value = params.get("dataset_config")
    if isinstance(value, str) and value:
        from ..data.config import load_dataset_config

        try:
            datasets = load_dataset_config(resolve_in(workspace, value), check_paths=False).datasets
        except (DatasetError, OSError, ValueError):  # unreadable, or not a path at all: the default shape
            datasets = []
        if datasets:
            w, h = max((d.resolution for d in datasets), key=lambda r: r[0] * r[1])
            return w, h, max(d.batch_size for d in datasets), "dataset"
    return 1024, 1024, 1, "default"


def vram_for(params: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """The estimate (GB, with its parts) and the resolution and batch it assumed."""
    width, height, batch, source = dataset_shape(params, workspace)
    opts = VramOptions(
        width=width,
        height=height,
        batch_size=batch,
        network_dim=max(1, _value(params, "network_dim", int)),
        optimizer=str(params.get("optimizer_type") or _DEFAULTS.optimizer_type),
        gradient_checkpointing=_value(params, "gradient_checkpointing", bool),
        fp8_base=_value(params, "fp8_base", bool),
        fp8_scaled=_value(params, "fp8_scaled", bool),
        blocks_to_swap=max(0, _value(params, "blocks_to_swap", int)),
        edit=params.get("model_version") in EDIT_VERSIONS,
        checkpoint_offload=_value(params, "gradient_checkpointing_cpu_offload", bool),
        fp8_upcast=params.get("fp8_matmul") == "upcast",
    )
    return {
        "estimate": estimate_vram(opts).as_json(),
        "width": width,
        "height": height,
        "batch_size": batch,
        "source": source,
    }
