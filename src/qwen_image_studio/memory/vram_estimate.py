"""An estimate of the memory LoRA training of Qwen-Image needs, as pure functions (no torch, no files).

Calibrated on our trainer's measured peaks (nvidia-smi, what a card must hold) on an NVIDIA H100 80GB,
2026-11-26 (bench/RESULTS.md): 1024x1024, batch 1, 128 text tokens, LoRA rank 16 on the twelve default
linears of each block, AdamW, gradient checkpointing: bf16 46.8 GB; fp8_base + fp8_scaled (fp8
tensor-core matmuls) 27.7 GB; + blocks_to_swap 16 23.0 GB; + blocks_to_swap 45 12.6 GB. The terms, for
the full-size DiT (60 blocks, width 3072, 0.34 G weights in the linears of each block):

- DiT blocks resident on the GPU: 0.358 GB each in fp8 (fitted from the two swap rows; the weights alone
  are 0.34 GB) and 0.677 GB in bf16 (fitted from the bf16 row; the weights are 0.68 GB). The trainer
  keeps the frozen weights and the activations in bf16 (fp16 with mixed_precision fp16) whatever the
  mixed_precision, so that does not change the estimate. With --fp8_matmul upcast (GPUs without fp8
  tensor cores), --fp8_scaled's 64-weight block scales add 0.64 GB (bf16, one per 64 weights; measured
  +1.13 GiB when they were still fp32).
- A swap buffer while blocks_to_swap > 0 (1.09 GB, fitted: two blocks in flight plus allocator slack).
- Activations: linear in tokens ((W/16)*(H/16) image tokens + text tokens; control-image tokens in edit
  mode), batch size and width. With gradient checkpointing one bf16 hidden state per block is kept
  (unless --gradient_checkpointing_cpu_offload moves them to CPU memory: -1.56 GB at 1024x1024, which the
  measured bf16, fp8 and fp8 + swap 45 runs with offload confirm to 0.1 GB) plus one block's full
  activations; without checkpointing every block's (~34 bytes per token and hidden unit, Megatron's
  rule; not measured).
- LoRA weights, gradients and optimizer state: r * (in + out) parameters per targeted linear (6.6 M per
  unit of rank for the default targets), fp32; AdamW keeps two fp32 states, adamw8bit two 8-bit ones;
  `--ema_decay` adds a fp32 copy unless `--ema_on_cpu`.
- A remainder (CUDA context, the weights outside the blocks, allocator cache), whatever the fit leaves:
  2.5 GB. Of it, 0.5 GB is taken as the CUDA context every GPU process pays (a typical figure, not
  measured here); the rest grows with the model's size.

Any other DiT (a tiny demo model, a pruned one) is described by a `DitShape` read from its file's
header: block count, width, weights per block and outside the blocks, LoRA parameters per rank. Each
term above scales with it (a block's memory with its weights, activations with width and block count,
the remainder's model-dependent part with the total weights); for the full-size shape every term is the
calibrated one. Only the four measured rows are calibrated; resolution, batch, rank, optimizer, edit mode
and another architecture move the estimate by the formulas above, not by measurement.

While the sample prompts are encoded (once, before the first step, when --sample_prompts is given and
--device is a GPU), the text encoder sits on the GPU beside the DiT; `text_encoder_gb` gives its size
(the rule of `models.loading.prompt_encoder_device_bytes`, from the header's shapes), and the peak is the
larger of that moment and a training step. Training on the CPU (`estimate_ram`) keeps fp32 weights and
activations in RAM, above the 0.54 GB peak RSS of the demo-sized training step (bench/RESULTS.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..models.configs import FULL_DIT_BLOCKS, FULL_DIT_HEAD_DIM, FULL_DIT_HEADS

if TYPE_CHECKING:
    from ..params.schema import StudioConfig

GB = 1e9
BLOCKS = FULL_DIT_BLOCKS
HIDDEN = FULL_DIT_HEADS * FULL_DIT_HEAD_DIM
BLOCK_PARAMS = 339_738_624  # the linears' weights of one full-size block
OTHER_PARAMS = 40_501_248  # the 2-D weights outside the blocks (embedders, final norm and projection)
LORA_PER_BLOCK_RANK = 110_592  # r * (in + out) summed over the twelve default target linears of one block
LORA_PARAMS_PER_RANK = LORA_PER_BLOCK_RANK * BLOCKS
PATCH = 16  # pixels per image token side (VAE /8, patch 2)
TEXT_TOKENS = 256
FULL_ACT_BYTES = 34  # per token and hidden unit for one block's activations (bf16)
CKPT_BYTES = 2  # one bf16 hidden state per block kept by gradient checkpointing
SCALE_BLOCK = 64  # --fp8_scaled keeps one bf16 scale per 64 weights (kept only by upcast matmuls)
CUDA_CONTEXT_GB = 0.5  # what any CUDA process holds before its first tensor (typical; not measured here)
CPU_BASE_GB = 516 * 2**20 / GB  # peak RSS of the demo-sized training step on the CPU (bench/RESULTS.md)

# Measured peaks (nvidia-smi GiB x 1.0737 = GB), H100, 2026-11-26; see the module docstring.
MEASURED_GB = {"bf16": 46.80, "fp8": 27.67, "fp8_swap16": 23.03, "fp8_swap45": 12.64}
FP8_BLOCK_GB = (MEASURED_GB["fp8_swap16"] - MEASURED_GB["fp8_swap45"]) / (45 - 16)
_REST_GB = MEASURED_GB["fp8"] - BLOCKS * FP8_BLOCK_GB  # everything but the blocks at the reference point
SWAP_BUFFER_GB = MEASURED_GB["fp8_swap16"] - (BLOCKS - 16) * FP8_BLOCK_GB - _REST_GB
BF16_BLOCK_GB = (MEASURED_GB["bf16"] - _REST_GB) / BLOCKS

OPTIMIZER_STATE_BYTES = {"adamw": 8.0, "adamw8bit": 2.0, "lion": 4.0, "sgd": 0.0, "adafactor": 1.0}
DEFAULT_STATE_BYTES = 8.0  # an unknown optimizer: assume AdamW-like

_BLOCK_KEY = re.compile(r"^transformer_blocks\.(\d+)\.")


@dataclass(frozen=True)
class DitShape:
    """What the estimate needs to know of a DiT; the defaults are the full-size Qwen-Image DiT."""

    num_layers: int = BLOCKS
    hidden: int = HIDDEN
    block_params: int = BLOCK_PARAMS  # the linears' weights of one block (the mean over the blocks)
    other_params: int = OTHER_PARAMS  # the 2-D weights outside the blocks
    lora_params_per_rank: int = LORA_PARAMS_PER_RANK  # r * (in + out) summed over the targeted linears

    @property
    def params(self) -> int:
        """The weights of the linears (2-D weights), in all."""
        return self.num_layers * self.block_params + self.other_params

    @property
    def block_ratio(self) -> float:
        """One block's weights against a full-size block's."""
        return self.block_params / BLOCK_PARAMS

    @property
    def size_ratio(self) -> float:
        """All weights against the full-size DiT's."""
        return self.params / FULL_DIT.params

    @classmethod
    def from_linears(cls, linears: Mapping[str, Sequence[int]], targets: Iterable[str]) -> DitShape:
        """The shape of a DiT from its 2-D weights ({module path: [out, in]}, diffusers names) and the
        module paths a LoRA targets; ValueError when they do not look like a Qwen-Image DiT."""
        blocks: set[int] = set()
        in_blocks = 0
        for name, shape in linears.items():
            m = _BLOCK_KEY.match(name)
            if m:
                blocks.add(int(m.group(1)))
                in_blocks += shape[0] * shape[1]
        if not blocks or "img_in" not in linears:
            raise ValueError("not a Qwen-Image DiT (no transformer_blocks or img_in weights)")
        total = sum(shape[0] * shape[1] for shape in linears.values())
        return cls(
            num_layers=max(blocks) + 1,
            hidden=int(linears["img_in"][0]),
            block_params=in_blocks // len(blocks),
            other_params=total - in_blocks,
            lora_params_per_rank=sum(sum(linears[t]) for t in targets if t in linears),
        )


FULL_DIT = DitShape()


@dataclass(frozen=True)
class VramOptions:
    """What moves the estimate: the run's options (`from_config` reads them from a validated configuration),
    the largest bucket and batch of its dataset, and the DiT."""

    width: int
    height: int
    batch_size: int
    network_dim: int
    optimizer: str
    gradient_checkpointing: bool
    fp8_base: bool
    fp8_scaled: bool
    blocks_to_swap: int
    edit: bool
    checkpoint_offload: bool  # --gradient_checkpointing_cpu_offload
    fp8_upcast: bool  # --fp8_matmul upcast (or a GPU without fp8 tensor cores)
    text_tokens: int = TEXT_TOKENS
    dit: DitShape = field(default_factory=DitShape)
    text_encoder_gb: float = 0.0  # on the GPU beside the DiT while sample prompts are encoded (0: none)
    ema_on_device: bool = False  # --ema_decay without --ema_on_cpu: a float32 copy of the LoRA weights

    @classmethod
    def from_config(
        cls,
        config: StudioConfig,
        *,
        width: int = 1024,
        height: int = 1024,
        batch_size: int = 1,
        text_tokens: int = TEXT_TOKENS,
        dit: DitShape | None = None,
        text_encoder_gb: float = 0.0,
    ) -> VramOptions:
        """The options of `config` for a dataset of `width` x `height`, `batch_size` (1024x1024, 1 without
        one) and the DiT `dit` (the full-size one by default)."""
        return cls(
            width=width,
            height=height,
            batch_size=batch_size,
            network_dim=config.network_dim,
            optimizer=config.optimizer_type,
            gradient_checkpointing=config.gradient_checkpointing,
            fp8_base=config.fp8_base,
            fp8_scaled=config.fp8_scaled,
            blocks_to_swap=config.blocks_to_swap,
            edit=config.is_edit,
            checkpoint_offload=config.gradient_checkpointing_cpu_offload,
            fp8_upcast=config.fp8_matmul == "upcast",
            ema_on_device=config.ema_decay is not None and not config.ema_on_cpu,
            text_tokens=text_tokens,
            dit=dit or FULL_DIT,
            text_encoder_gb=text_encoder_gb,
        )


@dataclass(frozen=True)
class VramEstimate:
    """The estimate in GB and its parts: total = weights + swap + LoRA + fixed + max(activations, text encoder)."""

    total_gb: float
    weights_gb: float
    swap_buffer_gb: float
    activations_gb: float
    lora_gb: float
    fixed_gb: float
    text_encoder_gb: float = 0.0

    def as_json(self) -> dict[str, float]:
        """Rounded to 0.1 GB (0.01 GB below 1 GB, so that a tiny model's parts do not all read 0.0)."""
        return {k: round(v, 2 if abs(v) < 1 else 1) for k, v in self.__dict__.items()}


def tokens(opts: VramOptions) -> int:
    """Sequence length of one sample: image tokens (twice in edit mode, for the control image) plus text."""
    image = max(1, opts.width // PATCH) * max(1, opts.height // PATCH)
    return image * (2 if opts.edit else 1) + opts.text_tokens


def activations_gb(opts: VramOptions) -> float:
    """Activation memory for the options' tokens, batch and DiT."""
    blocks = opts.dit.num_layers
    per_token_unit = tokens(opts) * opts.dit.hidden * max(1, opts.batch_size)
    if opts.gradient_checkpointing:
        kept = 0 if opts.checkpoint_offload else blocks * CKPT_BYTES
        return per_token_unit * (kept + FULL_ACT_BYTES) / GB
    return per_token_unit * blocks * FULL_ACT_BYTES / GB


def lora_gb(opts: VramOptions) -> float:
    """LoRA weights, gradients and optimizer state."""
    state = OPTIMIZER_STATE_BYTES.get(opts.optimizer.lower(), DEFAULT_STATE_BYTES)
    ema = 4.0 if opts.ema_on_device else 0.0  # the EMA's float32 copy
    return opts.dit.lora_params_per_rank * opts.network_dim * (4.0 + 4.0 + state + ema) / GB


_REFERENCE = VramOptions(  # the measured runs (bench/gpu_bench.py), bf16
    width=1024, height=1024, batch_size=1, network_dim=16, optimizer="adamw", gradient_checkpointing=True,
    fp8_base=False, fp8_scaled=False, blocks_to_swap=0, edit=False, checkpoint_offload=False,
    fp8_upcast=False, text_tokens=128,
)  # fmt: skip
FIXED_GB = _REST_GB - activations_gb(_REFERENCE) - lora_gb(_REFERENCE)


def resident_blocks(opts: VramOptions) -> int:
    """DiT blocks kept on the GPU (at least one stays)."""
    blocks = opts.dit.num_layers
    return blocks - min(max(opts.blocks_to_swap, 0), blocks - 1)


def weights_gb(opts: VramOptions) -> float:
    """DiT blocks kept on the GPU."""
    per_block = (FP8_BLOCK_GB if opts.fp8_base else BF16_BLOCK_GB) * opts.dit.block_ratio
    resident = resident_blocks(opts)
    scaled_upcast = opts.fp8_base and opts.fp8_scaled and opts.fp8_upcast
    scales = resident * opts.dit.block_params / SCALE_BLOCK * 2 / GB if scaled_upcast else 0.0
    return resident * per_block + scales


def fixed_gb(dit: DitShape) -> float:
    """The remainder: the CUDA context plus a part that grows with the model (the fit's, at full size)."""
    return CUDA_CONTEXT_GB + (FIXED_GB - CUDA_CONTEXT_GB) * dit.size_ratio


def estimate_vram(opts: VramOptions) -> VramEstimate:
    """The estimated peak GPU memory of a training run with these options."""
    parts = {
        "weights_gb": weights_gb(opts),
        "swap_buffer_gb": SWAP_BUFFER_GB * opts.dit.block_ratio if opts.blocks_to_swap > 0 else 0.0,
        "activations_gb": activations_gb(opts),
        "lora_gb": lora_gb(opts),
        "fixed_gb": fixed_gb(opts.dit),
        "text_encoder_gb": max(0.0, opts.text_encoder_gb),
    }
    steady = parts["weights_gb"] + parts["swap_buffer_gb"] + parts["lora_gb"] + parts["fixed_gb"]
    total = steady + max(parts["activations_gb"], parts["text_encoder_gb"])
    return VramEstimate(total_gb=total, **parts)


def estimate_ram(opts: VramOptions) -> float:
    """GB of RAM a training run on the CPU needs: fp32 weights (fp8 block weights with fp8_base) and
    activations, LoRA and optimizer, the text encoder while sample prompts are encoded (`text_encoder_gb`
    as counted for the CPU, fp32), above the process's own."""
    dit = opts.dit
    block_bytes = 1 if opts.fp8_base else 4
    weights = (dit.num_layers * dit.block_params * block_bytes + dit.other_params * 4) / GB
    activations = activations_gb(opts) * 2  # fp32 instead of bf16
    return CPU_BASE_GB + weights + lora_gb(opts) + max(activations, max(0.0, opts.text_encoder_gb))


# ---- the text encoder ------------------------------------------------------------------------------
# The release's Qwen2.5-VL-7B on the GPU for prompt encoding, GB by (--fp8_vl, vision tower): the peaks of
# `models.loading.load_prompt_encoder`'s table (weights, plus one linear being quantised with fp8), which
# `text_encoder_gb` gives for the release's shapes; used when the chosen file cannot be read.
FULL_TEXT_ENCODER_GB = {(True, False): 7.86, (True, True): 9.21, (False, False): 14.14, (False, True): 15.49}
_TE_LAYER = re.compile(r"^model\.(language_model\.)?layers\.\d+\.")
_TE_VISION = re.compile(r"^(model\.)?visual\.")
QUANTIZE_SLICES = 8  # as `models.loading`: a weight is quantised in this many slices of rows


def text_encoder_gb(
    linears: Mapping[str, Sequence[int]], *, fp8: bool, vision: bool, bytes_per_value: int = 2
) -> float:
    """GB the Qwen2.5-VL text encoder takes on its device for prompt encoding, from its 2-D weights.

    The rule of `models.loading.prompt_encoder_device_bytes` (which needs torch): no lm_head, no vision
    tower without `vision` (text-to-image), each decoder-layer linear in fp8 plus a float32 scale per row
    with `fp8` (--fp8_vl), everything else in `bytes_per_value`; plus, with fp8, the largest linear in
    `bytes_per_value` and the float32 row slices quantising it while it loads.
    """
    resident = extra = 0
    for name, shape in linears.items():
        if len(shape) != 2 or name.startswith("lm_head") or (not vision and _TE_VISION.match(name)):
            continue
        out_features, in_features = shape
        if fp8 and _TE_LAYER.match(name):
            resident += out_features * in_features + out_features * 4
            rows = -(-out_features // QUANTIZE_SLICES)
            extra = max(extra, out_features * in_features * bytes_per_value + 3 * rows * in_features * 4)
        else:
            resident += out_features * in_features * bytes_per_value
    return (resident + extra) / GB
