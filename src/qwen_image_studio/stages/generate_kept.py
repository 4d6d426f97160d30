"""The models a generation worker keeps loaded between requests (`stages/generate_worker.py`).

The DiT (placed with its memory options) and the VAE stay on the device while later requests use the same
files and options; LoRAs are applied as output hooks (`models.lora_hooks`), so another LoRA set or
strength re-applies only the LoRA. Prompt embeddings are kept by text, so a prompt seen before needs no
text encoder; for a new one the text encoder is loaded, used and freed (the DiT and VAE keep the memory).
Each load or reuse is logged ("DiT loaded ..." / "DiT reused ...") so a job's log says what it cost.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from ..memory.options import MemoryOptions
from ..memory.placement import load_placed_dit
from ..memory.setup import configure_dit
from ..models.loading import load_vae
from ..models.lora_apply import LoraFile
from ..models.lora_hooks import LoraHooks
from ..params.schema import StudioConfig
from ..training.sampling import PreparedSamples, free_memory, prepare_sample_embeddings

log = logging.getLogger(__name__)


def _file_key(path: str | None) -> tuple[str, int, int] | None:
    """A model path as it now stands: resolved, with the modification time and size of it (or of the folder's
    newest file), so a replaced file is loaded again."""
    if not path:
        return None
    p = Path(path).expanduser().resolve()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    stats = [f.stat() for f in files]
    return (str(p), max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats))


@dataclasses.dataclass
class KeptModels:
    """What a worker holds between requests; `loads` lists what the current request loaded."""

    dit_key: tuple[Any, ...] | None = None
    dit: Any = None
    memory: Any = None  # configure_dit's handle, closed when the DiT is replaced
    hooks: LoraHooks | None = None
    vae_key: tuple[Any, ...] | None = None
    vae: Any = None
    embeddings: dict[tuple[Any, ...], dict[tuple[Any, ...], Any]] = dataclasses.field(default_factory=dict)
    loads: list[str] = dataclasses.field(default_factory=list)

    def models(
        self,
        config: StudioConfig,
        device: torch.device,
        dtype: torch.dtype,
        loras: list[LoraFile],
        multipliers: list[float],
    ) -> tuple[Any, Any]:
        """The DiT (with these LoRAs hooked in) and the VAE for this request, loaded only when changed."""
        options = MemoryOptions.from_config(config)
        dit_key = (_file_key(config.dit), config.model_version, str(device), str(dtype), options)
        if dit_key != self.dit_key:
            self.release_dit(device)
            self.dit, plan = load_placed_dit(config.dit, config.model_version, options, device, dtype)  # type: ignore[arg-type]
            self.memory = configure_dit(self.dit, plan, options, device, training=False)
            self.hooks = LoraHooks(self.dit, device, dtype)
            self.dit_key = dit_key
            self.loads.append("dit")
            log.info("DiT loaded: %s (kept for the next requests)", config.dit)
        else:
            log.info("DiT reused: %s (already loaded)", config.dit)
        assert self.hooks is not None
        if self.hooks.set(loras, multipliers):
            names = ", ".join(f"{lora.path.name} x {m:g}" for lora, m in zip(loras, multipliers, strict=True))
            log.info("LoRAs applied: %s (%d layers)", names or "none", self.hooks.layers)
        vae_key = (_file_key(config.vae), str(device), str(dtype), config.vae_enable_tiling)
        if vae_key != self.vae_key:
            self.vae = None
            free_memory(device)
            self.vae = load_vae(config.vae, dtype=dtype, device=device)  # type: ignore[arg-type]
            if config.vae_enable_tiling:
                self.vae.enable_tiling()
            self.vae_key = vae_key
            self.loads.append("vae")
            log.info("VAE loaded: %s", config.vae)
        return self.dit, self.vae

    def prepared(self, config: StudioConfig, prompts: list[Any]) -> PreparedSamples:
        """The prepared prompts; the text encoder is loaded only for texts not encoded before."""
        te = (_file_key(config.text_encoder), config.tokenizer, config.device, config.mixed_precision)
        cache = self.embeddings.setdefault(te, {})
        before = len(cache)
        prepared = prepare_sample_embeddings(config, prompts, cache=cache)
        if len(cache) > before:
            self.loads.append("text_encoder")
        return prepared

    def release_dit(self, device: torch.device) -> None:
        """Free the DiT (before another is loaded, or when the worker ends)."""
        if self.hooks is not None:
            self.hooks.clear()
        if self.memory is not None:
            self.memory.close()
        self.dit = self.memory = self.hooks = self.dit_key = None
        free_memory(device)

    def close(self) -> None:
        """Free everything."""
        self.release_dit(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        self.vae = self.vae_key = None
        self.embeddings.clear()
