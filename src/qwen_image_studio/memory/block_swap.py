"""--blocks_to_swap N: the frozen weights of the last N DiT blocks live in CPU memory and visit the GPU.

Design (facts §7; the reference trainer's idea, built anew):

- Host side, one copy. Each swapped block's frozen tensors (plain or fp8 linear weights and scales, biases,
  norm weights) are packed into one CPU buffer of exactly their size, page-locked when CUDA is in use
  (registered in place, so no power-of-two rounding of the pinned allocator). The module's tensors keep
  their identity but point at an empty placeholder on the compute device while the block is released, so a
  use without a fetch fails loudly instead of computing on the wrong data.
- Device side, no copy back. Base weights never change, so a release just drops the device copy; only
  host-to-device traffic happens. A fetch copies a block's whole buffer in one transfer into one device
  buffer, on a side CUDA stream, and records an event; the compute stream waits on that event just before
  the block runs, and the buffer is marked as used by the compute stream (``record_stream``) so that the
  allocator does not hand its memory to the next prefetch before the block's kernels are done.
- Order. A forward pre-hook on each block waits for its fetch and prefetches the next block in the
  direction of travel (i + 1 in the forward pass, i - 1 in the backward pass); a forward hook releases it.
  Under gradient checkpointing the backward pass recomputes each block's forward just before its backward,
  so the same hooks fetch the weights again, from the last block down; the tensors autograd saved during
  the recomputation keep that copy alive until the block's backward is done. Without checkpointing,
  autograd keeps every block's weights saved for the backward pass anyway (then swapping saves nothing in
  training, only in generation).
- LoRA layers of swapped blocks (trained) stay on the device; only the frozen base tensors move.

On a machine without CUDA the same bookkeeping runs with a CPU "device": a fetch clones the host buffer,
a release points the tensors back at the placeholders, and ``trace`` records the order of events.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .options import BlockPlan

log = logging.getLogger(__name__)

ALIGN = 64  # byte alignment of each tensor inside a block buffer
PAGE = 4096


@dataclass
class _Slot:
    """One frozen tensor of a swapped block: where it lives in the block buffer and its at-rest placeholder."""

    tensor: torch.Tensor  # the module's Parameter or buffer object (identity kept; only .data changes)
    shape: torch.Size
    offset: int
    nbytes: int
    placeholder: torch.Tensor


def frozen_tensors(block: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(frozen base tensors to swap, tensors that stay on the device: LoRA weights and alphas) of a block."""
    stay: dict[int, torch.Tensor] = {}
    for module in block.modules():
        if hasattr(module, "lora_down") and hasattr(
            module, "lora_up"
        ):  # a LoRA wrapper: its own tensors stay
            for sub in (module.lora_down, module.lora_up):
                stay.update({id(t): t for t in (*sub.parameters(), *sub.buffers())})
            stay.update({id(t): t for t in module._buffers.values() if t is not None})
    swap: dict[int, torch.Tensor] = {}
    for module in block.modules():
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is None or id(t) in stay or id(t) in swap:
                continue
            if isinstance(t, nn.Parameter) and t.requires_grad:
                stay[id(t)] = t
            else:
                swap[id(t)] = t
    return list(swap.values()), list(stay.values())


def _pin_in_place(buffer: torch.Tensor) -> bool:
    """Page-lock a page-aligned CPU buffer where it is (cudaHostRegister); False when CUDA refuses."""
    try:
        rc = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel(), 0)
    except (AttributeError, RuntimeError):  # pragma: no cover - depends on the CUDA build
        return False
    if isinstance(rc, tuple):  # some builds return (error,)
        rc = rc[0]
    return int(getattr(rc, "value", rc)) == 0


def _unpin(ptr: int, _keep_alive: torch.Tensor) -> None:  # pragma: no cover - CUDA only
    with contextlib.suppress(AttributeError, RuntimeError):
        torch.cuda.cudart().cudaHostUnregister(ptr)


class HostBuffer:
    """A CPU byte buffer of (page-rounded) exactly `nbytes`, page-locked in place when `pin` is set."""

    def __init__(self, nbytes: int, pin: bool) -> None:
        size = max(PAGE, -(-nbytes // PAGE) * PAGE)
        raw = torch.empty(size + PAGE, dtype=torch.uint8)
        start = (-raw.data_ptr()) % PAGE
        self.data = raw[start : start + size]
        self.pinned = False
        self.how = "pageable"
        if pin:
            if _pin_in_place(self.data):
                self.pinned, self.how = True, "registered"
                self._finalizer = weakref.finalize(self, _unpin, self.data.data_ptr(), raw)
            else:  # the pinned allocator rounds sizes up to a power of two: use it only as a fallback
                self.data = self.data.pin_memory()
                self.pinned, self.how = True, "pinned allocation"

    def close(self) -> None:
        """Unregister the page lock (if in place) now rather than at garbage collection."""
        finalizer = getattr(self, "_finalizer", None)
        if finalizer is not None:
            finalizer()


class BlockSwapper:
    """Keeps the frozen weights of the blocks `plan` swaps on the host and streams them to `device`."""

    def __init__(
        self,
        blocks: Sequence[nn.Module],
        plan: BlockPlan,
        device: torch.device | str,
        *,
        pin: bool | None = None,
        trace: bool = False,
    ) -> None:
        n = len(blocks)
        if plan.blocks != n:
            raise ValueError(f"the plan is for {plan.blocks} blocks; these are {n}")
        if not plan.swaps:
            raise ConfigError(f"--blocks_to_swap 0: this DiT has {n} blocks; swap 1 to {n - 1} of them")
        self.blocks = list(blocks)
        self.plan = plan
        self.n, self.count, self.first = n, plan.swapped, plan.first_swapped
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if self.cuda else None
        pin = self.cuda if pin is None else pin
        self.slots: dict[int, list[_Slot]] = {}
        self.host: dict[int, HostBuffer] = {}
        self.sizes: dict[int, int] = {}
        self._pending: dict[int, tuple[torch.Tensor, torch.cuda.Event | None]] = {}
        self._ready: dict[int, torch.Tensor] = {}
        self.phase = "idle"  # "forward", "backward" (checkpoint recomputation) or "idle"
        self._recompute = False
        self._release_after_use = True
        self.trace: list[tuple[str, str, int]] | None = [] if trace else None
        self.fetches = 0
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for i in plan.swapped_indices():
            self._pack(i, pin)

    # ---- setup -----------------------------------------------------------------------------------
    def _pack(self, index: int, pin: bool) -> None:
        swap, stay = frozen_tensors(self.blocks[index])
        for t in stay:  # LoRA weights and alphas live on the compute device
            if t.device != self.device:
                t.data = t.data.to(self.device)
        slots, offset = [], 0
        for t in swap:
            nbytes = t.numel() * t.element_size()
            empty = torch.empty(0, dtype=t.dtype, device=self.device)
            slots.append(_Slot(t, t.shape, offset, nbytes, empty))
            offset += -(-nbytes // ALIGN) * ALIGN
        host = HostBuffer(offset, pin)
        for slot in slots:
            self._view(host.data, slot).copy_(slot.tensor.data)
            slot.tensor.data = slot.placeholder  # the original copy (CPU or device) is freed here
        self.slots[index], self.host[index], self.sizes[index] = slots, host, offset

    @staticmethod
    def _view(buffer: torch.Tensor, slot: _Slot) -> torch.Tensor:
        flat = buffer[slot.offset : slot.offset + slot.nbytes].view(slot.placeholder.dtype)
        return flat.view(slot.shape)

    @property
    def host_bytes(self) -> int:
        """Bytes of the host buffers (one copy of the swapped weights, rounded to pages)."""
        return sum(h.data.numel() for h in self.host.values())

    def describe(self) -> str:
        """A log line: how many blocks, how much memory, how it is pinned."""
        hows = sorted({h.how for h in self.host.values()})
        return (
            f"--blocks_to_swap {self.count}: blocks {self.first}-{self.n - 1} of {self.n} kept in CPU memory "
            f"({self.host_bytes / 2**30:.2f} GiB, {', '.join(hows)}) and fetched to {self.device} when used"
        )

    def swapped_names(self, model: nn.Module) -> list[str]:
        """Names (in `model`'s state dict) of the swapped tensors, e.g. for DDP to ignore."""
        ids = {id(s.tensor) for slots in self.slots.values() for s in slots}
        named = [
            *model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False),
        ]
        return [name for name, t in named if id(t) in ids]

    # ---- fetch and release -----------------------------------------------------------------------
    def _log(self, event: str, index: int) -> None:
        if self.trace is not None:
            self.trace.append((self.phase, event, index))

    def fetch(self, index: int) -> None:
        """Start copying block `index`'s weights to the device (no-op when on its way or there)."""
        if index in self._pending or index in self._ready:
            return
        host = self.host[index].data[: self.sizes[index]]
        if self.cuda:
            assert self.stream is not None
            with torch.cuda.stream(self.stream):
                buffer = torch.empty(host.shape, dtype=torch.uint8, device=self.device)
                buffer.copy_(host, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            self._pending[index] = (buffer, event)
        else:
            self._pending[index] = (host.clone(), None)
        self.fetches += 1
        self._log("fetch", index)

    def wait(self, index: int) -> None:
        """Make block `index` usable on the compute stream (fetching it now if no prefetch was issued)."""
        if index in self._ready:
            return
        self.fetch(index)
        buffer, event = self._pending.pop(index)
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            buffer.record_stream(stream)
        for slot in self.slots[index]:
            slot.tensor.data = self._view(buffer, slot)
        self._ready[index] = buffer
        self._log("ready", index)

    def release(self, index: int) -> None:
        """Point block `index`'s tensors back at their placeholders (the device copy is freed once unused)."""
        if self._ready.pop(index, None) is None:
            return
        for slot in self.slots[index]:
            slot.tensor.data = slot.placeholder
        self._log("release", index)

    def release_all(self) -> None:
        """Release every fetched block and drop prefetches in flight."""
        for index in sorted(self._ready):
            self.release(index)
        self._pending.clear()

    @property
    def resident(self) -> list[int]:
        """Swapped blocks whose weights are on the device now."""
        return sorted(self._ready)

    # ---- hooks -----------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> BlockSwapper:
        """Install the hooks on `model` (the DiT holding the blocks) and its blocks; returns self."""
        self.detach()
        self._handles.append(model.register_forward_pre_hook(lambda m, a: self._begin(m)))
        self._handles.append(model.register_forward_hook(lambda m, a, o: self._end()))
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(lambda m, a, i=i: self._before(i)))
            if self.plan.is_swapped(i):
                self._handles.append(block.register_forward_hook(lambda m, a, o, i=i: self._after(i)))
        return self

    def detach(self) -> None:
        """Remove the hooks (the weights stay where they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def close(self) -> None:
        """Remove the hooks, release everything and unpin the host buffers."""
        self.detach()
        self.release_all()
        for host in self.host.values():
            host.close()

    def _begin(self, model: nn.Module) -> None:
        self.release_all()  # leftovers of the last backward pass or of an interrupted one
        grad = torch.is_grad_enabled()
        recompute = grad and bool(getattr(model, "gradient_checkpointing", False))
        # Without checkpointing autograd saves some weights by reference for the backward pass: keep
        # them until the next pass (they would be resident anyway through the saved activations).
        self._release_after_use = recompute or not grad
        self._recompute = recompute
        self.phase = "forward"
        self.fetch(self.first)  # overlaps the resident blocks' compute

    def _end(self) -> None:
        self.phase = "backward" if self._recompute else "idle"
        if self._recompute:
            self.fetch(self.n - 1)  # the backward pass recomputes the last block first

    def _before(self, index: int) -> None:
        backward = self.phase == "backward"
        if backward:  # a block's recomputation starts after the backward pass of the blocks above it
            for j in [j for j in self._ready if j > index]:
                self.release(j)
        if not self.plan.is_swapped(index):
            return
        self.wait(index)
        step = -1 if backward else 1
        if self.first <= index + step < self.n:
            self.fetch(index + step)

    def _after(self, index: int) -> None:
        # In the recomputation the saved tensors may reference the weights themselves: they are
        # released by the next block's recomputation instead (see _before).
        if self.phase == "forward" and self._release_after_use:
            self.release(index)
