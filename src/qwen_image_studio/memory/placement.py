"""Put a loaded DiT on its device block by block, storing block linears in fp8 on the way.

With --blocks_to_swap the DiT is loaded on the CPU; each block then visits the device once (to be
quantised there, which is fast) and the swapped ones come back to the CPU, where the block swapper packs
them into its host buffers. Only one block is ever duplicated, so CPU and GPU each hold one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

from ..models.fp8_linear import SCALED_BLOCK, Fp8Linear, quantize_linears, quantize_weight, use_native_matmul
from .options import BlockPlan, MemoryOptions

MODULATION = ("img_mod", "txt_mod")  # a block's shift/scale/gate linears, fed the timestep embedding


def _quantize_on_load(name: str, tensor: torch.Tensor, block_size: int | None) -> tuple | None:
    """(fp8 weight, scales) for a block linear's weight as `load_dit` reads it; None for anything else."""
    from ..models.loading import is_block_linear_weight

    return quantize_weight(tensor, block_size) if is_block_linear_weight(name) and tensor.ndim == 2 else None


def quantize_block(
    block: nn.Module, dtype: torch.dtype, block_size: int | None = None, native: bool = False
) -> int:
    """Store a DiT block's linears in fp8; with `native` all but the modulation linears (one row per
    sample: fp8 inputs would cost accuracy and save nothing) multiply on fp8 tensor cores. Returns the count.

    With `native` every weight, the modulation linears' too, has one scale per row: --fp8_scaled's block
    scales would cost 0.42 GB on the modulation linears alone (6.8 B of the 20.4 B weights) for 2.5 % less
    weight error there (bench/fp8_block_error.py: row 4.0e-3, blocks 3.9e-3)."""
    count = quantize_linears(block, compute_dtype=dtype, block_size=block_size, native=native)
    if native:
        for name, layer in block.named_modules():
            if isinstance(layer, Fp8Linear) and name.split(".")[0] in MODULATION:
                layer.set_native(False)
    return count


def place_dit(
    dit: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    *,
    fp8: bool = False,
    scaled: bool = False,
    plan: BlockPlan | None = None,
    native: bool = False,
) -> list[str]:
    """Move `dit` to `device` (the blocks `plan` swaps end on the CPU), fp8 block linears if asked.

    `native`: the fp8 linears multiply on fp8 tensor cores (see :mod:`fp8_linear`).
    """
    blocks = dit.transformer_blocks
    plan = plan or BlockPlan.for_dit(dit, 0)
    for child in dit.children():
        if child is not blocks:
            child.to(device)
    block_size = SCALED_BLOCK if scaled else None
    for i, block in enumerate(blocks):
        swapped = plan.is_swapped(i) and device.type != "cpu"
        todo = nn.Linear | Fp8Linear if native else nn.Linear  # native re-scales the file's fp8 layers
        quantize = fp8 and any(isinstance(m, todo) for m in block.modules())
        if swapped and not quantize:
            continue  # stays on the CPU, where the block swapper packs it
        block.to(device)  # quantising on the GPU is fast; a swapped block then goes back
        if quantize:
            quantize_block(block, dtype, block_size, native)
        if swapped:
            block.to("cpu")
    notes = []
    if fp8:
        layers = [m for m in blocks.modules() if isinstance(m, Fp8Linear)]
        widths = {m.in_features // m.weight_scale.shape[1] for m in layers if m.weight_scale.shape[1] > 1}
        rows = any(m.weight_scale.shape[1] == 1 for m in layers)
        how = " and ".join(
            (["one scale per output row"] if rows else [])
            + [f"one scale per {w} weights of a row" for w in sorted(widths)]
        )
        note = f"--fp8_base: {len(layers)} block linears in float8_e4m3fn, {how}"
        note += (
            "; matmuls on fp8 tensor cores (--fp8_matmul native)"
            if native
            else "; weights upcast for each matmul (--fp8_matmul upcast)"
        )
        notes.append(note)
    return notes


def load_placed_dit(
    path: str,
    model_version: str,
    options: MemoryOptions,
    device: torch.device,
    dtype: torch.dtype,
    before_placing: Callable[[nn.Module], None] | None = None,
) -> tuple[nn.Module, BlockPlan]:
    """The frozen DiT file `path` on `device` (fp8 block linears with --fp8_base; the blocks the returned
    plan swaps on the CPU).

    `before_placing` runs on the loaded weights in the compute dtype first (generation merges LoRAs there);
    without it an fp8 file's block linears stay in fp8 straight from the file.

    Peak device memory while loading: with --fp8_base and no swapping, each block linear is quantised as
    it is read (the device holds the fp8 model plus one full-precision tensor, never the 41 GB bf16
    model); with swapping, or when LoRAs are merged first, the model loads to the CPU and each block
    visits the device once (`place_dit`).
    """
    from ..models.loading import load_dit

    swap = options.blocks_to_swap
    fp8 = options.fp8_base
    native = fp8 and use_native_matmul(options.fp8_matmul, device, dtype)
    stream = fp8 and not swap and before_placing is None
    block_size = None if native or not options.fp8_scaled else SCALED_BLOCK
    dit = load_dit(
        path,
        dtype=dtype,
        # swapped blocks must not all reach the GPU at once; neither must a bf16 model bound for fp8
        device=device if not swap and (stream or not fp8) else "cpu",
        model_version=model_version,
        keep_fp8=fp8 and before_placing is None,
        quantize=(lambda name, t: _quantize_on_load(name, t, block_size)) if stream else None,
    )
    dit.requires_grad_(False)
    plan = BlockPlan.for_dit(dit, swap)
    if before_placing is not None:
        before_placing(dit)
    for note in place_dit(dit, device, dtype, fp8=fp8, scaled=options.fp8_scaled, plan=plan, native=native):
        logging.getLogger(__name__).info(note)
    return dit, plan
