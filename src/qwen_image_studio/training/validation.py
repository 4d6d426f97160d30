"""Validation loss: the training objective of the live LoRA on held-out data, at fixed timesteps with fixed noise.

The validation data is a dataset TOML of its own (``--validation_dataset_config``, the format of
``--dataset_config``), cached by the two caching stages like the training data. Every item (each once,
``num_repeats`` aside) is evaluated at every timestep of ``--validation_timesteps``; the noise of item i
comes from a CPU ``torch.Generator`` seeded from ``--validation_seed`` and i, drawn once per timestep in
order, so every evaluation — on any device, with any number of processes, in any run — sees the same
inputs, and two values differ only because the LoRA did. The loss is ``objective.weighted_loss``, the
function training steps with (same forward: control latents in edit mode, block swap and fp8 hooks; same
loss weighting), without gradients and in eval mode (no dropout); the model's train/eval mode and every
random state (Python's untouched; torch's CPU and CUDA ones forked) are as before, so a run with
validation trains exactly as one without. With several processes, process r evaluates the items
r, r + world, ...; the sums and counts per timestep are all-reduced and the main process reports.

The result is the mean over items and timesteps, plus the mean per timestep. Training evaluates at
``--validate_every_n_steps`` / ``--validate_every_n_epochs`` and at every LoRA save (so each file has its
value; one evaluation per step at most), logs ``loss/validation`` to TensorBoard and a ``metric`` event
with ``validation_loss``, and the checkpoint's ``artifact`` event carries it (see ``loop``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..events import EventWriter, ProgressTracker
from . import flow_matching as fm
from .data import CachedItem, collate, collect_items, load_cached
from .objective import weighted_loss

log = logging.getLogger(__name__)

SOURCE = "validation_dataset_config"  # the StudioConfig field that names the validation TOML
DEFAULT_TIMESTEPS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class ValidationResult:
    """One evaluation: the mean loss, the mean per timestep, and how many (item, timestep) losses it took."""

    step: int
    loss: float
    timesteps: tuple[float, ...]
    per_timestep: tuple[float, ...]
    count: int


def noise_seed(seed: int, index: int) -> int:
    """The seed of item `index`'s noise generator (distinct per item, the same everywhere)."""
    return seed * _SEED_STRIDE + index


def collect_validation_items(config: Any, events: EventWriter | None = None) -> list[CachedItem]:
    """The cached items of ``--validation_dataset_config`` (DatasetError naming it when none is usable)."""
    return collect_items(config, events, source=SOURCE)


def evaluate_items(
    model: torch.nn.Module,
    items: Sequence[CachedItem],
    *,
    timesteps: Sequence[float],
    seed: int,
    tcfg: fm.TimestepConfig,
    with_controls: bool,
    device: torch.device,
    dtype: torch.dtype,
    rank: int = 0,
    world: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    on_item: Callable[[], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sums and counts per timestep (float64, on the CPU) over this process's share of `items`."""
    sums = torch.zeros(len(timesteps), dtype=torch.float64)
    counts = torch.zeros(len(timesteps), dtype=torch.float64)
    was_training = model.training
    cuda = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            for index in range(rank, len(items), world):
                batch = collate([load_cached(items[index], with_controls)])
                generator = torch.Generator().manual_seed(noise_seed(seed, index))
                for j, value in enumerate(timesteps):
                    noise = torch.randn(batch["latents"].shape, generator=generator, dtype=torch.float32)
                    t = torch.full((1,), float(value), dtype=torch.float32, device=device)
                    with autocast():
                        loss = weighted_loss(model, batch, t, noise.to(device), tcfg, device, dtype)
                    sums[j] += float(loss)
                    counts[j] += 1
                if on_item is not None:
                    on_item()
    finally:
        model.train(was_training)
    return sums, counts


def summarize(step: int, timesteps: Sequence[float], sums: torch.Tensor, counts: torch.Tensor) -> ValidationResult:
    """Means from the (reduced) sums and counts."""
    per_t = tuple(float(s / c) if c else float("nan") for s, c in zip(sums, counts, strict=True))
    total = float(counts.sum())
    return ValidationResult(
        step, float(sums.sum() / total) if total else float("nan"), tuple(timesteps), per_t, int(total)
    )


class Validator:
    """Evaluates the live model at the configured points (every process calls it at the same points)."""

    def __init__(
        self,
        config: Any,
        accelerator: Any,
        model: torch.nn.Module,
        items: list[CachedItem],
        tcfg: fm.TimestepConfig,
        device: torch.device,
        dtype: torch.dtype,
        events: EventWriter,
        report: Callable[[ValidationResult, int], None] | None = None,
    ) -> None:
        self.config, self.accelerator, self.model, self.items = config, accelerator, model, items
        self.tcfg, self.device, self.dtype, self.events, self.report = tcfg, device, dtype, events, report
        self.enabled = bool(items)
        self.last: ValidationResult | None = None
        self.weights: Callable[[], Any] = contextlib.nullcontext  # e.g. the EMA's swapped_in (--ema_for_eval)

    def due(self, step: int, epoch_end: int | None = None) -> bool:
        """Whether the cadence asks for an evaluation after `step` (or after epoch `epoch_end`, from 1)."""
        cfg = self.config
        if not self.enabled or step <= 0:
            return False
        if epoch_end is not None:
            return bool(cfg.validate_every_n_epochs) and epoch_end % cfg.validate_every_n_epochs == 0
        return bool(cfg.validate_every_n_steps) and step % cfg.validate_every_n_steps == 0

    def maybe(self, step: int, epoch: int, epoch_end: int | None = None) -> None:
        """Evaluate if the cadence says so."""
        if self.due(step, epoch_end):
            self.at(step, epoch)

    def at(self, step: int, epoch: int) -> float | None:
        """The validation loss after `step` (evaluated once per step); None without validation data."""
        if not self.enabled:
            return None
        if self.last is None or self.last.step != step:
            with self.weights():
                self.last = self.evaluate(step)
            if self.report is not None:
                self.report(self.last, epoch)
        return self.last.loss

    def evaluate(self, step: int) -> ValidationResult:
        """One evaluation over every item (this process's share, then reduced across processes)."""
        acc, cfg = self.accelerator, self.config
        timesteps = tuple(cfg.validation_timesteps)
        main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
        tracker = None
        if main:
            share = len(range(rank, len(self.items), world))
            extra = {"sub": True, "step": step}
            tracker = ProgressTracker(self.events, total=share, phase="validate", unit="image", extra=extra)
        sums, counts = evaluate_items(
            self.model,
            self.items,
            timesteps=timesteps,
            seed=cfg.validation_seed,
            tcfg=self.tcfg,
            with_controls=cfg.is_edit,
            device=self.device,
            dtype=self.dtype,
            rank=rank,
            world=world,
            autocast=acc.autocast,
            on_item=tracker.advance if tracker is not None else None,
        )
        if tracker is not None:
            tracker.close()
        if world > 1:
            both = acc.reduce(torch.stack([sums, counts]).to(self.device), reduction="sum").cpu()
            sums, counts = both[0], both[1]
        result = summarize(step, timesteps, sums, counts)
        if main:
            log.info(
                "validation loss %.6f at step %d (%d images x %d timesteps)",
                result.loss,
                step,
                len(self.items),
                len(timesteps),
            )
        return result


def evaluate_checkpoint(config: Any, lora: str | Path | None, events: EventWriter | None = None) -> ValidationResult:
    """The validation loss of a LoRA file (None: the base model) with ``config``'s model, memory and network
    settings, on one process; the value training reported for the file when they are training's."""
    from ..devices import model_dtype, resolve_device
    from ..memory.options import MemoryOptions
    from ..memory.placement import load_placed_dit
    from ..memory.setup import configure_dit
    from .lora import apply_lora

    items = collect_validation_items(config, events)
    device = resolve_device(config.device)
    dtype = model_dtype(device, config.mixed_precision)
    options = MemoryOptions.from_config(config)
    dit, blocks = load_placed_dit(config.dit, config.model_version, options, device, dtype)
    if lora is not None:
        args = config.network_arg_dict()
        network = apply_lora(
            dit,
            config.network_dim,
            config.network_alpha,
            include_patterns=args.get("include_patterns"),
            exclude_patterns=args.get("exclude_patterns"),
            target_set=args.get("targets"),
        )
        network.load_weights(lora)
    memory = configure_dit(dit, blocks, options, device, training=False)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)

    def autocast() -> Any:  # what accelerate's autocast does in training for --mixed_precision
        return torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext()

    try:
        sums, counts = evaluate_items(
            dit,
            items,
            timesteps=tuple(config.validation_timesteps),
            seed=config.validation_seed,
            tcfg=fm.TimestepConfig.from_config(config),
            with_controls=config.is_edit,
            device=device,
            dtype=dtype,
            autocast=autocast,
        )
    finally:
        memory.close()
    return summarize(0, tuple(config.validation_timesteps), sums, counts)
