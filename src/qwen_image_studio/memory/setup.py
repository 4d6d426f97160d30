"""Apply a configuration's memory and speed options to a placed DiT, in the order they depend on each other.

Order: gradient checkpointing (training only) -> attention kernel -> block swapping (after LoRA layers
exist, so that they stay on the device) -> torch.compile of each block's forward (the swap hooks stay
outside the compiled code, on the module call).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .attention import set_attention
from .block_swap import BlockSwapper
from .checkpointing import enable_checkpointing
from .options import BlockPlan, MemoryOptions

log = logging.getLogger(__name__)

RECOMPILE_LIMIT = 64  # image-size buckets x blocks share one compiled graph; leave room for a few sizes


@dataclass
class MemorySetup:
    """What was applied: the block plan, its swapper (if it swaps), the attention mode and log lines."""

    plan: BlockPlan
    attention: str
    swapper: BlockSwapper | None = None
    compiled: int = 0
    notes: list[str] = field(default_factory=list)

    def prepare(self, accelerator: Any, dit: nn.Module, optimizer: Any) -> tuple[Any, Any]:
        """`accelerator.prepare(dit, optimizer)` for a DiT placed by this plan: accelerate must not move
        swapped weights to the device, and DDP must not broadcast or reduce them (frozen, equal everywhere)."""
        if self.swapper is None:
            return accelerator.prepare(dit, optimizer)
        if accelerator.num_processes > 1:
            from torch.nn.parallel import DistributedDataParallel

            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
                dit, self.swapper.swapped_names(dit)
            )
        return accelerator.prepare(dit, optimizer, device_placement=[False, True])

    def close(self) -> None:
        """Remove the swap hooks and unpin host memory."""
        if self.swapper is not None:
            self.swapper.close()


def compile_blocks(dit: nn.Module, backend: str = "inductor", mode: str | None = None) -> int:
    """torch.compile each transformer block's forward (hooks stay eager); returns how many."""
    import torch._dynamo

    cfg = torch._dynamo.config
    cfg.capture_scalar_outputs = True  # LoRA layers read their alpha with .item(): no graph break there
    cfg.suppress_errors = True  # a backend that cannot compile (no working Triton...) runs eagerly
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), RECOMPILE_LIMIT))
    blocks = dit.transformer_blocks
    for block in blocks:
        block.forward = torch.compile(block.forward, backend=backend, mode=mode)
    return len(blocks)


def configure_dit(
    dit: nn.Module,
    plan: BlockPlan,
    options: MemoryOptions,
    device: torch.device,
    *,
    training: bool,
    compile_backend: str = "inductor",
) -> MemorySetup:
    """Checkpointing, attention kernel, block swapping (as `plan` says) and compilation as `options` ask."""
    setup = MemorySetup(plan=plan, attention=options.attention)
    if training and options.gradient_checkpointing:
        setup.notes.append(enable_checkpointing(dit, cpu_offload=options.checkpoint_offload))
    setup.notes.append(set_attention(dit, setup.attention, device))
    if plan.swaps:
        setup.swapper = BlockSwapper(dit.transformer_blocks, plan, device).attach(dit)
        setup.notes.append(setup.swapper.describe())
        if training and not options.gradient_checkpointing:
            setup.notes.append(
                "--blocks_to_swap without --gradient_checkpointing: autograd keeps every block's weights "
                "for the backward pass, so swapping saves no GPU memory in training; turn checkpointing on"
            )
    if options.compile:
        setup.compiled = compile_blocks(dit, backend=compile_backend)
        setup.notes.append(
            f"--compile: {setup.compiled} blocks compiled with torch.compile ({compile_backend})"
        )
    for note in setup.notes:
        log.info(note)
    return setup
