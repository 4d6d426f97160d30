"""An estimate of the GPU memory LoRA training of Qwen-Image needs, as a pure function (no torch).

Calibrated on our trainer's measured peaks (nvidia-smi, what a card must hold) on an NVIDIA H100 80GB,
2026-11-26 (bench/RESULTS.md): 1024x1024, batch 1, 128 text tokens, LoRA rank 16, AdamW, gradient
checkpointing: bf16 46.8 GB; fp8_base + fp8_scaled (fp8 tensor-core matmuls) 27.7 GB; + blocks_to_swap 16
23.0 GB; + blocks_to_swap 45 12.6 GB. The terms:

- DiT blocks resident on the GPU: 60 blocks, 0.358 GB each in fp8 (fitted from the two swap rows; the
  weights alone are 0.34 GB) and 0.677 GB in bf16 (fitted from the bf16 row; the weights are 0.68 GB).
  The trainer keeps the frozen weights and the activations in bf16 (fp16 with mixed_precision fp16)
  whatever the mixed_precision, so that does not change the estimate. With --fp8_matmul upcast (GPUs
  without fp8 tensor cores), --fp8_scaled's 64-weight block scales add 0.64 GB (bf16, one per 64 weights;
  measured +1.13 GiB when they were still fp32).
- A swap buffer while blocks_to_swap > 0 (1.09 GB, fitted: two blocks in flight plus allocator slack).
- Activations: linear in tokens ((W/16)*(H/16) image tokens + text tokens; control-image tokens in edit
  mode) and batch size. With gradient checkpointing one bf16 hidden state per block is kept (unless
  --gradient_checkpointing_cpu_offload moves them to CPU memory: -1.56 GB at 1024x1024, which the
  measured bf16, fp8 and fp8 + swap 45 runs with offload confirm to 0.1 GB) plus one block's full
  activations; without checkpointing every block's (~34 bytes per token and hidden unit, Megatron's
  rule; not measured).
- LoRA weights, gradients and optimizer state: ~9.2 M parameters per unit of rank, fp32; AdamW keeps two
  fp32 states, adamw8bit two 8-bit ones.
- A fixed remainder (CUDA context, non-block weights, allocator cache), whatever the fit leaves: 1.8 GB.

Only the four measured rows are calibrated; resolution, batch, rank, optimizer and edit mode move the
estimate by the formulas above, not by measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9
BLOCKS = 60
HIDDEN = 3072
PATCH = 16  # pixels per image token side (VAE /8, patch 2)
TEXT_TOKENS = 256
LORA_PARAMS_PER_RANK = 153_600 * BLOCKS  # r * (in + out) summed over the targeted linears of one block
FULL_ACT_BYTES = 34  # per token and hidden unit for one block's activations (bf16)
CKPT_BYTES = 2  # one bf16 hidden state per block kept by gradient checkpointing
BLOCK_SCALES_GB = 20.4e9 / 64 * 2 / GB  # --fp8_scaled's bf16 block scales, kept only by upcast matmuls

# Measured peaks (nvidia-smi GiB x 1.0737 = GB), H100, 2026-11-26; see the module docstring.
MEASURED_GB = {"bf16": 46.80, "fp8": 27.67, "fp8_swap16": 23.03, "fp8_swap45": 12.64}
FP8_BLOCK_GB = (MEASURED_GB["fp8_swap16"] - MEASURED_GB["fp8_swap45"]) / (45 - 16)
_REST_GB = MEASURED_GB["fp8"] - BLOCKS * FP8_BLOCK_GB  # everything but the blocks at the reference point
SWAP_BUFFER_GB = MEASURED_GB["fp8_swap16"] - (BLOCKS - 16) * FP8_BLOCK_GB - _REST_GB
BF16_BLOCK_GB = (MEASURED_GB["bf16"] - _REST_GB) / BLOCKS

OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "lion": 4.0, "sgd": 0.0, "adafactor": 1.0}
DEFAULT_STATE_BYTES = 8.0  # an unknown optimizer: assume AdamW-like


@dataclass(frozen=True)
class VramOptions:
    """The options that move the estimate."""

    width: int = 1024
    height: int = 1024
    batch_size: int = 1
    network_dim: int = 8
    optimizer: str = "adamw8bit"
    gradient_checkpointing: bool = True
    fp8_base: bool = False
    fp8_scaled: bool = False
    blocks_to_swap: int = 0
    edit: bool = False
    text_tokens: int = TEXT_TOKENS
    checkpoint_offload: bool = False
    fp8_upcast: bool = False  # --fp8_matmul upcast (or a GPU without fp8 tensor cores)


@dataclass(frozen=True)
class VramEstimate:
    """The estimate in GB and its parts."""

    total_gb: float
    weights_gb: float
    swap_buffer_gb: float
    activations_gb: float
    lora_gb: float
    fixed_gb: float

    def as_json(self) -> dict[str, float]:
        """Rounded to 0.1 GB."""
        return {k: round(v, 1) for k, v in self.__dict__.items()}


def tokens(opts: VramOptions) -> int:
    """Sequence length of one sample: image tokens (twice in edit mode, for the control image) plus text."""
    image = max(1, opts.width // PATCH) * max(1, opts.height // PATCH)
    return image * (2 if opts.edit else 1) + opts.text_tokens


def activations_gb(opts: VramOptions) -> float:
    """Activation memory for the options' tokens and batch."""
    per_token_unit = tokens(opts) * HIDDEN * max(1, opts.batch_size)
    if opts.gradient_checkpointing:
        kept = 0 if opts.checkpoint_offload else BLOCKS * CKPT_BYTES
        return per_token_unit * (kept + FULL_ACT_BYTES) / GB
    return per_token_unit * BLOCKS * FULL_ACT_BYTES / GB


def lora_gb(opts: VramOptions) -> float:
    """LoRA weights, gradients and optimizer state."""
    state = OPTIMIZER_STATE_BYTES.get(opts.optimizer.lower(), DEFAULT_STATE_BYTES)
    return LORA_PARAMS_PER_RANK * opts.network_dim * (4.0 + 4.0 + state) / GB


_REFERENCE = VramOptions(network_dim=16, optimizer="adamw", text_tokens=128)  # the measured runs
FIXED_GB = _REST_GB - activations_gb(_REFERENCE) - lora_gb(_REFERENCE)


def weights_gb(opts: VramOptions) -> float:
    """DiT blocks kept on the GPU."""
    per_block = FP8_BLOCK_GB if opts.fp8_base else BF16_BLOCK_GB
    resident = BLOCKS - min(max(opts.blocks_to_swap, 0), BLOCKS - 1)
    scales = BLOCK_SCALES_GB * resident / BLOCKS if opts.fp8_base and opts.fp8_scaled and opts.fp8_upcast else 0
    return resident * per_block + scales


def estimate_vram(opts: VramOptions) -> VramEstimate:
    """The estimated peak GPU memory of a training run with these options."""
    parts = {
        "weights_gb": weights_gb(opts),
        "swap_buffer_gb": SWAP_BUFFER_GB if opts.blocks_to_swap > 0 else 0.0,
        "activations_gb": activations_gb(opts),
        "lora_gb": lora_gb(opts),
        "fixed_gb": FIXED_GB,
    }
    return VramEstimate(total_gb=sum(parts.values()), **parts)
