"""Block swapping, checkpoint offload and attention kernels on a tiny random DiT (CPU, fp32).

The swapper's "device" is the CPU here: a fetch clones the host buffer and a release points the weights at
empty placeholders, so any use of a block's weights without a fetch fails; the trace shows the order.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import nn

from qwen_image_studio.errors import ConfigError
from qwen_image_studio.memory.block_swap import ALIGN, PAGE, BlockSwapper, HostBuffer, frozen_tensors
from qwen_image_studio.memory.checkpointing import (
    enable_checkpointing,
    offloaded_checkpoint,
    plain_checkpoint,
)
from qwen_image_studio.memory.options import BlockPlan
from qwen_image_studio.memory.placement import place_dit
from qwen_image_studio.models.fp8_linear import Fp8Linear
from qwen_image_studio.training.lora import apply_lora

LAYERS = 4
SWAP = 3  # blocks 1, 2, 3 swapped


def _dit(fp8: bool = False, lora: bool = True) -> tuple[nn.Module, list[nn.Parameter]]:
    from diffusers import QwenImageTransformer2DModel

    from qwen_image_studio.models.configs import dit_config

    torch.manual_seed(0)
    cfg = {**dit_config("tiny"), "num_layers": LAYERS}
    dit = QwenImageTransformer2DModel(**cfg).requires_grad_(False)
    place_dit(dit, torch.device("cpu"), torch.float32, fp8=fp8, scaled=fp8)
    if not lora:
        return dit, []
    network = apply_lora(dit, 4, 4)
    for layer in network.modules():
        nn.init.normal_(layer.lora_up.weight, std=0.1)
    return dit, network.parameters()


def _inputs(dit: nn.Module) -> dict:
    g = torch.Generator().manual_seed(1)
    text_dim = dit.config.joint_attention_dim
    return {
        "hidden_states": torch.randn(1, 16, 64, generator=g),
        "encoder_hidden_states": torch.randn(1, 8, text_dim, generator=g),
        "timestep": torch.tensor([0.5]),
        "img_shapes": [[(1, 4, 4)]],
        "return_dict": False,
    }


def _step(dit: nn.Module, params: list[nn.Parameter]) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    loss = (dit(**_inputs(dit))[0] ** 2).mean()
    loss.backward()
    return loss.detach(), [None if p.grad is None else p.grad.clone() for p in params]


def _same(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a, b, strict=True)
    )


def _events(swapper: BlockSwapper) -> list[str]:
    assert swapper.trace is not None
    return [f"{phase[0]}:{event}{index}" for phase, event, index in swapper.trace]


FORWARD = ["f:fetch1", "f:ready1", "f:fetch2", "f:release1", "f:ready2", "f:fetch3", "f:release2", "f:ready3",
           "f:release3"]  # fmt: skip
BACKWARD = ["b:fetch3", "b:ready3", "b:fetch2", "b:release3", "b:ready2", "b:fetch1", "b:release2", "b:ready1",
            "b:release1"]  # fmt: skip


def test_swapped_blocks_keep_one_host_copy_and_placeholders_on_the_device() -> None:
    dit, params = _dit()
    sizes = {i: sum(-(-t.numel() * t.element_size() // ALIGN) * ALIGN for t in frozen_tensors(b)[0])
             for i, b in enumerate(dit.transformer_blocks)}  # fmt: skip
    swapper = BlockSwapper(dit.transformer_blocks, BlockPlan(LAYERS, SWAP), "cpu")
    assert swapper.first == 1 and sorted(swapper.host) == [1, 2, 3]
    for i in (1, 2, 3):
        buffer = swapper.host[i].data
        assert buffer.data_ptr() % PAGE == 0 and buffer.numel() == -(-sizes[i] // PAGE) * PAGE
        swap, stay = frozen_tensors(dit.transformer_blocks[i])
        assert all(t.numel() == 0 for t in swap)  # released: empty placeholders
        assert stay and all(t.numel() > 0 for t in stay)  # LoRA weights and alphas stay
    assert all(p.numel() > 0 for p in params)
    assert dit.transformer_blocks[0].attn.to_q.base.weight.numel() > 0  # resident block untouched
    with pytest.raises(RuntimeError):  # a swapped layer used without a fetch fails loudly
        dit.transformer_blocks[2].attn.to_q(torch.randn(1, dit.inner_dim))
    names = swapper.swapped_names(dit)
    assert "transformer_blocks.1.attn.to_q.base.weight" in names
    assert not any(
        ".lora_" in n or n.endswith(".alpha") or n.startswith("transformer_blocks.0.") for n in names
    )


def test_host_buffer_is_exactly_page_rounded() -> None:
    buffer = HostBuffer(10_000, pin=False)
    assert buffer.data.numel() == 12_288 and buffer.data.data_ptr() % PAGE == 0 and not buffer.pinned


def test_swap_count_must_leave_a_resident_block() -> None:
    dit, _ = _dit(lora=False)
    with pytest.raises(ConfigError, match=f"--blocks_to_swap 0: this DiT has {LAYERS} blocks"):
        BlockSwapper(dit.transformer_blocks, BlockPlan(LAYERS, 0), "cpu")
    with pytest.raises(ConfigError, match=f"--blocks_to_swap {LAYERS}: this DiT has {LAYERS} blocks"):
        BlockPlan.for_dit(dit, LAYERS)


def test_inference_streams_blocks_in_order_and_equals_the_plain_model() -> None:
    plain, _ = _dit(lora=False)
    with torch.no_grad():
        want = plain(**_inputs(plain))[0]
    dit, _ = _dit(lora=False)
    swapper = BlockSwapper(dit.transformer_blocks, BlockPlan(LAYERS, SWAP), "cpu", trace=True).attach(dit)
    with torch.no_grad():
        got = dit(**_inputs(dit))[0]
        again = dit(**_inputs(dit))[0]
    assert torch.equal(got, want) and torch.equal(again, want)
    assert _events(swapper) == FORWARD + FORWARD and swapper.resident == [] and swapper.fetches == 6


@pytest.mark.parametrize("fp8", [False, True], ids=["bf16-like", "fp8_scaled"])
@pytest.mark.parametrize("mode", ["none", "checkpointing", "checkpointing+offload"])
def test_training_step_equals_the_plain_path(fp8: bool, mode: str) -> None:
    results = []
    for swap in (False, True):
        dit, params = _dit(fp8=fp8)
        if mode != "none":
            enable_checkpointing(dit, cpu_offload=mode.endswith("offload"))
        dit.train()
        swapper = BlockSwapper(dit.transformer_blocks, BlockPlan(LAYERS, SWAP), "cpu", trace=True).attach(dit) if swap else None
        results.append((*_step(dit, params), swapper))
    (loss, grads, _), (swap_loss, swap_grads, swapper) = results
    assert torch.equal(loss, swap_loss) and _same(grads, swap_grads)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if fp8:
        assert isinstance(dit.transformer_blocks[3].attn.to_q.base, Fp8Linear)
    events = _events(swapper)
    if mode == "none":  # autograd saved the weights: they stay until the next pass, no refetch
        assert events == ["f:fetch1", "f:ready1", "f:fetch2", "f:ready2", "f:fetch3", "f:ready3"]
        assert swapper.resident == [1, 2, 3]
    else:  # forward 1..3, then the recomputation fetches 3..1 again, one ahead
        assert events == FORWARD + BACKWARD and swapper.resident == []


def test_gradient_accumulation_and_sampling_between_steps_keep_the_order() -> None:
    dit, params = _dit()
    enable_checkpointing(dit)
    dit.train()
    swapper = BlockSwapper(dit.transformer_blocks, BlockPlan(LAYERS, SWAP), "cpu", trace=True).attach(dit)
    _step(dit, params)
    with torch.no_grad():
        dit(**_inputs(dit))
    _step(dit, params)
    assert _events(swapper) == FORWARD + BACKWARD + FORWARD + FORWARD + BACKWARD
    swapper.close()
    assert swapper.resident == [] and not dit._forward_pre_hooks


# ---- checkpoint offload --------------------------------------------------------------------------------
class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(8, 8).requires_grad_(False)
        self.lora = nn.Linear(8, 8, bias=False)

    def forward(self, x: torch.Tensor, scale: torch.Tensor, extra: tuple) -> torch.Tensor:
        return torch.tanh(self.frozen(x) + self.lora(x)) * scale + extra[0]


@pytest.mark.parametrize("input_grad", [True, False])
def test_offloaded_checkpoint_matches_plain_and_drops_the_device_inputs(input_grad: bool) -> None:
    grads = []
    for fn in (plain_checkpoint, offloaded_checkpoint):
        torch.manual_seed(0)
        block = _Block()
        x = torch.randn(4, 8, requires_grad=input_grad)
        h = x * 2  # a non-leaf input, like the previous block's output
        out = fn(block, h, torch.tensor(0.5), (torch.ones(8),))
        alive = weakref.ref(h)
        del h
        gc.collect()
        # plain checkpointing keeps the input itself; the offloaded one only its host copy
        assert (alive() is None) == (fn is offloaded_checkpoint)
        out.sum().backward()
        grads.append((block.lora.weight.grad.clone(), None if x.grad is None else x.grad.clone()))
    assert torch.equal(grads[0][0], grads[1][0])
    assert (grads[0][1] is None) == (not input_grad)
    if input_grad:
        assert torch.equal(grads[0][1], grads[1][1])


# ---- attention kernels -----------------------------------------------------------------------------------
def test_missing_kernels_name_the_package_and_the_fallback() -> None:
    from qwen_image_studio.memory.attention import attention_mode, check_backend
    from qwen_image_studio.params.schema import StudioConfig

    assert attention_mode(StudioConfig()) == "sdpa"
    assert attention_mode(StudioConfig(xformers=True)) == "xformers"
    for mode, package in (("flash_attn", "flash-attn 2"), ("xformers", "xformers")):
        with pytest.raises(ConfigError, match=f"--{mode} needs {package}.*SDPA"):
            check_backend(mode, torch.device("cpu"))


def test_fast_kernel_processor_falls_back_to_sdpa_for_padded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.transformers import transformer_qwenimage as tq

    from qwen_image_studio.memory import attention

    monkeypatch.setattr(attention, "check_backend", lambda mode, device: "_native_math")
    seen: list[str] = []
    dispatch = tq.dispatch_attention_fn

    def spy(*args: object, backend: object = None, **kwargs: object) -> torch.Tensor:
        seen.append(getattr(backend, "value", str(backend)))
        return dispatch(*args, backend=backend, **kwargs)

    monkeypatch.setattr(tq, "dispatch_attention_fn", spy)
    dit, _ = _dit(lora=False)
    with torch.no_grad():
        want = dit(**_inputs(dit))[0]
        assert "in 4 blocks" in attention.set_attention(dit, "flash_attn", torch.device("cpu"))
        seen.clear()
        got = dit(**_inputs(dit))[0]
        mask = torch.ones(1, 8, dtype=torch.long)
        mask[0, -2:] = 0
        dit(**_inputs(dit), encoder_hidden_states_mask=mask)
    assert torch.allclose(got, want, atol=1e-5)
    assert seen == ["_native_math"] * LAYERS + ["native"] * LAYERS
