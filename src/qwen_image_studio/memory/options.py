"""What the memory code reads of a configuration, and the one plan of where each DiT block's weights live.

`MemoryOptions.from_config` names every field placement, swapping, checkpointing, attention and
compilation read; `BlockPlan` is asked by placement (`placement.place_dit`), the block swapper
(`block_swap.BlockSwapper`) and the training loop (through `setup.MemorySetup.prepare`). Block counts come
from the loaded model, never from a constant, so a DiT with another block count changes nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from ..params.schema import StudioConfig


@dataclass(frozen=True)
class MemoryOptions:
    """The memory and speed options of a run (from a validated configuration: see `from_config`)."""

    fp8_base: bool
    fp8_scaled: bool
    fp8_matmul: str  # auto, native or upcast
    blocks_to_swap: int
    gradient_checkpointing: bool
    checkpoint_offload: bool  # --gradient_checkpointing_cpu_offload
    compile: bool
    attention: str  # "sdpa" or a key of `attention.MODES`

    @classmethod
    def from_config(cls, config: StudioConfig) -> MemoryOptions:
        """The fields of a StudioConfig the memory code reads (ConfigError for two attention kernels)."""
        from .attention import attention_mode

        return cls(
            fp8_base=config.fp8_base,
            fp8_scaled=config.fp8_scaled,
            fp8_matmul=config.fp8_matmul,
            blocks_to_swap=config.blocks_to_swap,
            gradient_checkpointing=config.gradient_checkpointing,
            checkpoint_offload=config.gradient_checkpointing_cpu_offload,
            compile=config.compile,
            attention=attention_mode(config),
        )


@dataclass(frozen=True)
class BlockPlan:
    """Where the frozen weights of a DiT's blocks live: blocks 0 .. `first_swapped` - 1 on the compute
    device, the last `swapped` in CPU memory, fetched to the device when they run."""

    blocks: int
    swapped: int = 0

    def __post_init__(self) -> None:
        if self.swapped and not 0 < self.swapped < self.blocks:
            raise ConfigError(
                f"--blocks_to_swap {self.swapped}: this DiT has {self.blocks} blocks; "
                f"swap 1 to {self.blocks - 1} of them"
            )

    @classmethod
    def for_dit(cls, dit: nn.Module, blocks_to_swap: int) -> BlockPlan:
        """The plan for `dit` (its own block count) with `blocks_to_swap` blocks swapped."""
        return cls(len(dit.transformer_blocks), blocks_to_swap)

    @property
    def first_swapped(self) -> int:
        """Index of the first swapped block (`blocks` when none is)."""
        return self.blocks - self.swapped

    @property
    def swaps(self) -> bool:
        """Whether any block lives in CPU memory."""
        return self.swapped > 0

    def is_swapped(self, index: int) -> bool:
        """Whether block `index` lives in CPU memory."""
        return index >= self.first_swapped

    def swapped_indices(self) -> range:
        """The swapped blocks, in order."""
        return range(self.first_swapped, self.blocks)
