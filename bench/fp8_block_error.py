"""Relative error of one full-size Qwen-Image block's output with fp8 weights, against full-precision weights.

One `QwenImageTransformerBlock` at the release width (3072 = 24 heads x 128) with random weights
(PyTorch's default init, plus optionally a few outlier input channels as trained DiTs have), a short
sequence (256 image + 32 text tokens), computed in fp32 on the CPU. Weight variants: bf16 (rounded),
fp8 with one scale per output row (--fp8_base) and fp8 with one scale per 64 weights of a row
(--fp8_scaled), and fp8 tensor-core matmuls (--fp8_matmul native: per-row weight scales, inputs
quantised to fp8 per token). Errors are ||out - ref|| / ||ref|| for the block's output and for its update (output
minus input, the part the block adds to the residual stream), for the image and text streams.

Usage: python bench/fp8_block_error.py [--threads 2] [--outliers]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from qwen_image_studio.memory.placement import quantize_block  # noqa: E402
from qwen_image_studio.models.fp8_linear import SCALED_BLOCK, quantize_linears, relative_error  # noqa: E402


def build(outliers: bool) -> tuple[torch.nn.Module, tuple]:
    """A full-width block with random weights and its inputs (image, text, temb, RoPE)."""
    from diffusers.models.transformers.transformer_qwenimage import QwenEmbedRope, QwenImageTransformerBlock

    torch.manual_seed(0)
    block = QwenImageTransformerBlock(dim=3072, num_attention_heads=24, attention_head_dim=128).eval()
    if outliers:
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in block.modules():
                if isinstance(m, torch.nn.Linear):
                    cols = torch.randint(0, m.in_features, (4,), generator=g)
                    m.weight[:, cols] *= 20
    g = torch.Generator().manual_seed(2)
    img = torch.randn(1, 256, 3072, generator=g)
    txt = torch.randn(1, 32, 3072, generator=g)
    temb = torch.randn(1, 3072, generator=g)
    rope = QwenEmbedRope(theta=10000, axes_dim=[16, 56, 56], scale_rope=True)
    freqs = rope([(1, 16, 16)], max_txt_seq_len=32, device=torch.device("cpu"))
    return block, (img, txt, None, temb, freqs)


def run(block: torch.nn.Module, inputs: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """(text output, image output) of the block."""
    img, txt, mask, temb, freqs = inputs
    with torch.no_grad():
        return block(hidden_states=img, encoder_hidden_states=txt, encoder_hidden_states_mask=mask, temb=temb,
                     image_rotary_emb=freqs)  # fmt: skip


def main() -> None:
    """Print a Markdown table of relative errors per weight variant."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--outliers", action="store_true", help="scale 4 random input channels of each linear by 20"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    block, inputs = build(args.outliers)
    start = time.perf_counter()
    ref_txt, ref_img = run(block, inputs)
    variants = {}
    bf16 = copy.deepcopy(block)
    with torch.no_grad():
        for m in bf16.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.copy_(m.weight.to(torch.bfloat16).float())
    variants["bf16 weights"] = bf16
    for label, size in (("fp8, one scale per row (--fp8_base)", None),
                        (f"fp8, one scale per {SCALED_BLOCK} weights (--fp8_scaled)", SCALED_BLOCK)):  # fmt: skip
        q = copy.deepcopy(block)
        quantize_linears(q, torch.float32, block_size=size)
        variants[label] = q
    native = copy.deepcopy(block)
    quantize_block(native, torch.float32, native=True)  # row scales throughout, as placement does
    variants["fp8 tensor-core matmuls, inputs per token (--fp8_matmul native)"] = native
    img, txt = inputs[0], inputs[1]
    print(f"one block, 3072 wide, 256 image + 32 text tokens, fp32 compute; outliers: {args.outliers}\n")
    print("| weights | image output | text output | image update | text update |")
    print("|---|---|---|---|---|")
    for label, model in variants.items():
        out_txt, out_img = run(model, inputs)
        print(f"| {label} | {relative_error(ref_img, out_img):.2e} | {relative_error(ref_txt, out_txt):.2e} "
              f"| {relative_error(ref_img - img, out_img - img):.2e} | {relative_error(ref_txt - txt, out_txt - txt):.2e} |")  # fmt: skip
    print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
