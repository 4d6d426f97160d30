"""Memory options on the demo models (CPU): swap, checkpoint offload and compile give the plain path's results.

Block swapping and activation offload move data, never change arithmetic: losses, LoRA files, training
samples and generated images must be bit-identical to the plain path's. fp8 files load into fp8 layers as
they are stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import train_support as ts
from PIL import Image

from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage
from qwen_image_studio.training.lora import read_lora_file


@pytest.fixture(autouse=True)
def _drop_log_handlers() -> object:
    """In-process runs point the root log handler at this test's captured stderr; do not leave it behind."""
    yield
    logging.getLogger().handlers.clear()


def _run(demo: Path, toml: Path, out: Path, **flags: object) -> tuple[list[float], dict[str, torch.Tensor]]:
    assert ts.train(ts.train_argv(demo, toml, out, **flags)) == 0, ts.failure(out / "events.jsonl")
    tensors, _ = read_lora_file(out / "lora.safetensors")
    return ts.losses(out / "events.jsonl"), tensors


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _samples(out: Path) -> list[Path]:
    return sorted((out / "sample").glob("*.png"))


CHECKPOINTED = {"gradient_checkpointing": True, "no_gradient_checkpointing": None}
SAMPLES = {"sample_at_first": True, "sample_every_n_steps": 2}


@pytest.mark.parametrize(
    "flags",
    [
        pytest.param({}, id="plain"),
        pytest.param(CHECKPOINTED, id="checkpointing+samples"),
        pytest.param({**CHECKPOINTED, "fp8_base": True, "fp8_scaled": True}, id="fp8_scaled+checkpointing"),
    ],
)
def test_block_swap_trains_exactly_like_the_plain_path(
    demo: Path, t2i: Path, tmp_path: Path, flags: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    if flags.get("gradient_checkpointing") and not flags.get("fp8_base"):
        flags = {**flags, **SAMPLES, "sample_prompts": demo / "sample_prompts_t2i.txt"}
    plain = _run(demo, t2i, tmp_path / "plain", **flags)
    capsys.readouterr()
    swapped = _run(demo, t2i, tmp_path / "swap", blocks_to_swap=1, **flags)
    assert "--blocks_to_swap 1: blocks 1-1 of 2 kept in CPU memory" in capsys.readouterr().err
    assert len(plain[0]) == 3 and swapped[0] == plain[0]
    assert swapped[1].keys() == plain[1].keys()
    assert all(torch.equal(swapped[1][k], plain[1][k]) for k in plain[1])
    if "sample_prompts" in flags:  # samples drawn with the live, swapped model match the plain ones
        a, b = _samples(tmp_path / "plain"), _samples(tmp_path / "swap")
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 4
        assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, b, strict=True))


def test_checkpoint_cpu_offload_trains_exactly_like_checkpointing(
    demo: Path, t2i: Path, tmp_path: Path
) -> None:
    plain = _run(demo, t2i, tmp_path / "plain", **CHECKPOINTED)
    offload = _run(demo, t2i, tmp_path / "offload", gradient_checkpointing_cpu_offload=True, **CHECKPOINTED)
    both = _run(
        demo,
        t2i,
        tmp_path / "both",
        gradient_checkpointing_cpu_offload=True,
        blocks_to_swap=1,
        **CHECKPOINTED,
    )
    for run in (offload, both):
        assert run[0] == plain[0]
        assert all(torch.equal(run[1][k], plain[1][k]) for k in plain[1])


def test_compile_flag_compiles_each_block_and_keeps_the_loss(
    demo: Path, t2i: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--compile reaches torch.compile for every block (aot_eager here: inductor's C++ build takes minutes)."""
    from qwen_image_studio.memory import setup

    calls: list[int] = []
    original = setup.compile_blocks

    def compile_blocks(dit: torch.nn.Module, backend: str = "inductor", mode: str | None = None) -> int:
        calls.append(len(dit.transformer_blocks))
        return original(dit, backend="aot_eager")

    monkeypatch.setattr(setup, "compile_blocks", compile_blocks)
    plain = _run(demo, t2i, tmp_path / "plain", **CHECKPOINTED)
    compiled = _run(demo, t2i, tmp_path / "compiled", compile=True, blocks_to_swap=1, **CHECKPOINTED)
    assert calls == [2]
    assert np.allclose(compiled[0], plain[0], rtol=1e-5, atol=1e-7)
    # fp8 tensor-core matmuls (a custom autograd function) compile too and keep their loss
    native = {**CHECKPOINTED, "fp8_base": True, "fp8_matmul": "native"}
    eager = _run(demo, t2i, tmp_path / "native", **native)
    fast = _run(demo, t2i, tmp_path / "native_compiled", compile=True, **native)
    assert calls == [2, 2]
    assert np.allclose(fast[0], eager[0], rtol=1e-5, atol=1e-7)


def test_swap_beyond_the_block_count_is_a_clear_error(demo: Path, t2i: Path, tmp_path: Path) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, blocks_to_swap=4)) == 2
    assert "--blocks_to_swap 4: this DiT has 2 blocks; swap 1 to 1 of them" in ts.failure(
        tmp_path / "events.jsonl"
    )


def test_missing_attention_kernel_is_a_clear_error(demo: Path, t2i: Path, tmp_path: Path) -> None:
    assert ts.train(ts.train_argv(demo, t2i, tmp_path, xformers=True)) == 2
    reason = ts.failure(tmp_path / "events.jsonl")
    assert "--xformers needs xformers" in reason and "SDPA" in reason


# ---- generation ----------------------------------------------------------------------------------------
def _generate(demo: Path, out: Path, *extra: str) -> np.ndarray:
    comfy = demo / "models" / "comfyui"
    argv = ["--dit", str(comfy / "qwen_image_bf16.safetensors"), "--vae", str(comfy / "qwen_image_vae.safetensors"),
            "--text_encoder", str(comfy / "qwen_2.5_vl_7b.safetensors"), "--mixed_precision", "no",
            "--device", "cpu", "--prompt", "a red square", "--image_size", "32", "32", "--infer_steps", "3",
            "--guidance_scale", "2", "--save_path", str(out), *extra]  # fmt: skip
    assert run_stage(Stage.GENERATE, argv) == 0
    (png,) = out.glob("*.png")
    return _pixels(png)


def test_generate_with_swap_equals_without(demo: Path, tmp_path: Path) -> None:
    plain = _generate(demo, tmp_path / "plain")
    assert np.array_equal(_generate(demo, tmp_path / "swap", "--blocks_to_swap", "1"), plain)
    fp8 = _generate(demo, tmp_path / "fp8", "--fp8_base", "--fp8_scaled")
    assert np.array_equal(
        _generate(demo, tmp_path / "fp8swap", "--fp8_base", "--fp8_scaled", "--blocks_to_swap", "1"), fp8
    )
    native = ("--fp8_base", "--fp8_scaled", "--fp8_matmul", "native")
    fast = _generate(demo, tmp_path / "native", *native)
    assert np.array_equal(_generate(demo, tmp_path / "nativeswap", *native, "--blocks_to_swap", "1"), fast)
    diff = np.abs(fast.astype(np.float64) - fp8.astype(np.float64))
    assert 0 < diff.mean() < 2.0  # fp8 inputs change the image a little: under 2 of 255 on average


# ---- fp8 files -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("scaled", [False, True], ids=["plain-fp8", "scaled-fp8"])
def test_fp8_file_loads_into_fp8_layers_as_stored(
    demo: Path, t2i: Path, tmp_path: Path, scaled: bool
) -> None:
    from safetensors.torch import load_file

    from qwen_image_studio.demo.models import write_fp8_dit
    from qwen_image_studio.models import keymaps
    from qwen_image_studio.models.fp8_linear import Fp8Linear
    from qwen_image_studio.models.loading import load_dit

    path = write_fp8_dit(ts.models(demo)["dit"], tmp_path / "qwen_image_fp8.safetensors", scaled=scaled)
    kept = load_dit(path, dtype=torch.float32, keep_fp8=True)
    plain = load_dit(path, dtype=torch.float32)
    layer = kept.transformer_blocks[0].attn.to_q
    assert isinstance(layer, Fp8Linear) and isinstance(plain.transformer_blocks[0].attn.to_q, torch.nn.Linear)
    stored = load_file(str(path))
    key = keymaps.dit_to_comfy("transformer_blocks.0.attn.to_q.weight")
    assert torch.equal(layer.weight_fp8.view(torch.uint8), stored[key].view(torch.uint8))  # no round trip
    assert torch.equal(layer.weight, plain.transformer_blocks[0].attn.to_q.weight)
    n_fp8 = sum(isinstance(m, Fp8Linear) for m in kept.modules())
    assert n_fp8 == sum(1 for k, v in stored.items() if v.dtype == torch.float8_e4m3fn and v.ndim == 2)
    if not scaled:
        return
    # it trains with LoRA on the fp8 layers, swapped too
    out = tmp_path / "train"
    argv = ts.train_argv(demo, t2i, out, fp8_base=True, blocks_to_swap=1, **CHECKPOINTED)
    argv[argv.index("--dit") + 1] = str(path)
    assert ts.train(argv) == 0, ts.failure(out / "events.jsonl")
    losses = ts.losses(out / "events.jsonl")
    assert len(losses) == 3 and all(np.isfinite(losses))


def test_fp8_without_swap_stores_each_block_linear_in_fp8_as_it_is_read(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fp8_base without swapping: the device never holds the full-precision DiT (41 GB at full size);
    every block linear is quantised right after it is read, one tensor at a time."""
    from qwen_image_studio.memory import placement
    from qwen_image_studio.memory.options import MemoryOptions
    from qwen_image_studio.models.fp8_linear import Fp8Linear
    from qwen_image_studio.params.schema import StudioConfig

    read: list[str] = []
    real = placement._quantize_on_load

    def spy(name: str, tensor: torch.Tensor, block_size: int | None) -> tuple | None:
        out = real(name, tensor, block_size)
        if out is not None:
            read.append(name.removesuffix(".weight"))
            width = tensor.shape[1]
            assert out[0].dtype == torch.float8_e4m3fn
            assert out[1].shape[1] == (width // 64 if width % 64 == 0 else 1)  # --fp8_scaled: 64-weight blocks
        return out

    monkeypatch.setattr(placement, "_quantize_on_load", spy)
    config = StudioConfig(fp8_base=True, fp8_scaled=True, fp8_matmul="upcast")
    options = MemoryOptions.from_config(config)
    dit, plan = placement.load_placed_dit(
        ts.models(demo)["dit"], "original", options, torch.device("cpu"), torch.float32
    )
    assert not plan.swaps and plan.blocks == len(dit.transformer_blocks)
    fp8_layers = [n for n, m in dit.named_modules() if isinstance(m, Fp8Linear)]
    assert fp8_layers and sorted(read) == sorted(fp8_layers)
    assert not any(isinstance(m, torch.nn.Linear) for m in dit.transformer_blocks.modules())
