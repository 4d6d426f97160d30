"""Built-in architecture configs: the full-size Qwen-Image release and the tiny demo twins.

Nothing here is downloaded. The full-size values are those of the release files (diffusers'
`QwenImageTransformer2DModel` / `AutoencoderKLQwenImage` defaults and Qwen2.5-VL-7B-Instruct's
config.json); the tiny configs keep every structural choice (block layout, latent channels, patch
sizes, vocabulary) and shrink only widths and block counts.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any, Literal

Size = Literal["full", "tiny"]

# --model_version values; only 2511 changes the DiT's architecture flags (zero_cond_t).
MODEL_VERSIONS: tuple[str, ...] = ("original", "edit", "edit-2509", "edit-2511")
ZERO_COND_T_VERSIONS: frozenset[str] = frozenset({"edit-2511"})

# Head widths are not visible in the text encoder's tensors: the full-size ones are used where they
# divide the width, the tiny ones otherwise (see `text_encoder_head_dims`).
FULL_TEXT_HEAD_DIM, TINY_TEXT_HEAD_DIM = 128, 16
FULL_VISION_HEAD_DIM, TINY_VISION_HEAD_DIM = 80, 8
FULL_MROPE_SECTION: tuple[int, int, int] = (16, 24, 24)
FULL_DIT_ROPE_AXES: tuple[int, int, int] = (16, 56, 56)

LATENTS_MEAN: list[float] = [
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
]  # fmt: skip
LATENTS_STD: list[float] = [
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916,
]  # fmt: skip

# Scheduler of the Qwen-Image pipelines (scheduler/scheduler_config.json of the release repos).
SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.34.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


def dit_rope_axes(head_dim: int) -> tuple[int, int, int]:
    """RoPE axes (frame, height, width) for a DiT head width: the release's at 128, even quarters otherwise."""
    if head_dim == 128:
        return FULL_DIT_ROPE_AXES
    frame = (head_dim // 4) // 2 * 2
    side = (head_dim - frame) // 2
    if frame < 2 or side % 2 or frame + 2 * side != head_dim:
        raise ValueError(f"no even RoPE split for a DiT head width of {head_dim}")
    return (frame, side, side)


FULL_DIT_BLOCKS = 60  # transformer blocks of the released Qwen-Image DiTs (every edit version too)
FULL_DIT_HEADS, FULL_DIT_HEAD_DIM = 24, 128  # width 3072


def dit_config(size: Size = "full", *, zero_cond_t: bool = False) -> dict[str, Any]:
    """Constructor kwargs of `QwenImageTransformer2DModel` for the full-size or tiny DiT."""
    if size == "full":
        layers, heads, head_dim, text_dim = FULL_DIT_BLOCKS, FULL_DIT_HEADS, FULL_DIT_HEAD_DIM, 3584
    else:
        layers, heads, head_dim, text_dim = 2, 2, 16, TINY_TEXT_ENCODER_SIZES["hidden_size"]
    return {
        "patch_size": 2,
        "in_channels": 64,
        "out_channels": 16,
        "num_layers": layers,
        "attention_head_dim": head_dim,
        "num_attention_heads": heads,
        "joint_attention_dim": text_dim,
        "guidance_embeds": False,
        "axes_dims_rope": list(dit_rope_axes(head_dim)),
        "zero_cond_t": zero_cond_t,
        "use_additional_t_cond": False,
        "use_layer3d_rope": False,
    }


def vae_config(size: Size = "full") -> dict[str, Any]:
    """Constructor kwargs of `AutoencoderKLQwenImage` for the full-size or tiny VAE."""
    return {
        "base_dim": 96 if size == "full" else 8,
        "z_dim": 16,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": list(LATENTS_MEAN),
        "latents_std": list(LATENTS_STD),
    }


TINY_TEXT_ENCODER_SIZES: dict[str, int] = {
    "vocab_size": 152064,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "vision_depth": 8,
    "vision_hidden_size": 16,
    "vision_intermediate_size": 32,
    "vision_num_heads": 2,
}


@cache
def _release_text_encoder_config() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("configs/qwen2_5_vl_7b_instruct.json").read_text()
    return json.loads(text)


def vision_full_attention_blocks(depth: int) -> list[int]:
    """Blocks with full (not windowed) attention: four, evenly spaced, the last one last ([7,15,23,31] at 32)."""
    return sorted({(k + 1) * depth // 4 - 1 for k in range(4)} - {-1})


def text_encoder_config(
    *,
    vocab_size: int = 152064,
    hidden_size: int = 3584,
    num_hidden_layers: int = 28,
    intermediate_size: int = 18944,
    num_attention_heads: int = 28,
    num_key_value_heads: int = 4,
    vision_depth: int = 32,
    vision_hidden_size: int = 1280,
    vision_intermediate_size: int = 3420,
    vision_num_heads: int = 16,
    vision_out_hidden_size: int | None = None,
    tie_word_embeddings: bool = False,
) -> dict[str, Any]:
    """The text encoder's config.json (release format); defaults give Qwen2.5-VL-7B-Instruct's exactly."""
    cfg = copy.deepcopy(_release_text_encoder_config())
    head_dim = hidden_size // num_attention_heads
    mrope = [s * head_dim // FULL_TEXT_HEAD_DIM for s in FULL_MROPE_SECTION]
    if sum(mrope) * 2 != head_dim:
        raise ValueError(f"no M-RoPE split for a text head width of {head_dim}")
    text = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "num_hidden_layers": num_hidden_layers,
        "max_window_layers": num_hidden_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "rope_scaling": {"mrope_section": mrope, "rope_type": "default", "type": "default"},
    }
    cfg.update(text)
    cfg["tie_word_embeddings"] = tie_word_embeddings
    cfg["text_config"].update(text)
    cfg["text_config"]["layer_types"] = ["full_attention"] * num_hidden_layers
    cfg["vision_config"].update(
        {
            "depth": vision_depth,
            "hidden_size": vision_hidden_size,
            "intermediate_size": vision_intermediate_size,
            "num_heads": vision_num_heads,
            "out_hidden_size": vision_out_hidden_size or hidden_size,
            "fullatt_block_indexes": vision_full_attention_blocks(vision_depth),
        }
    )
    return cfg


def text_encoder_config_for(size: Size = "full") -> dict[str, Any]:
    """The full-size or tiny text encoder's config.json."""
    return text_encoder_config() if size == "full" else text_encoder_config(**TINY_TEXT_ENCODER_SIZES)


def text_encoder_head_dims(hidden_size: int, vision_hidden_size: int) -> tuple[int, int]:
    """Head widths (text, vision) for given widths: the release's where they divide, the tiny ones otherwise."""
    text = FULL_TEXT_HEAD_DIM if hidden_size % FULL_TEXT_HEAD_DIM == 0 else TINY_TEXT_HEAD_DIM
    vision = FULL_VISION_HEAD_DIM if vision_hidden_size % FULL_VISION_HEAD_DIM == 0 else TINY_VISION_HEAD_DIM
    return text, vision


def qwen_vl_config(config_json: dict[str, Any]) -> Any:
    """A transformers `Qwen2_5_VLConfig` from a config.json dict."""
    from transformers import Qwen2_5_VLConfig

    cfg = copy.deepcopy(config_json)
    if "text_config" in cfg:  # the flat copies of text settings only make transformers 5 warn
        for key in ("rope_scaling", "rope_theta"):
            cfg.pop(key, None)
    return Qwen2_5_VLConfig(**cfg)


def pipeline_model_index(pipeline: Literal["t2i", "edit-plus"]) -> dict[str, Any]:
    """model_index.json of the Qwen/Qwen-Image (t2i) or Qwen/Qwen-Image-Edit-2509 (edit-plus) repos."""
    index: dict[str, Any] = {
        "_class_name": "QwenImagePipeline" if pipeline == "t2i" else "QwenImageEditPlusPipeline",
        "_diffusers_version": "0.34.0.dev0" if pipeline == "t2i" else "0.36.0.dev0",
    }
    if pipeline != "t2i":
        index["processor"] = ["transformers", "Qwen2VLProcessor"]
    index.update(
        {
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            "text_encoder": ["transformers", "Qwen2_5_VLForConditionalGeneration"],
            "tokenizer": ["transformers", "Qwen2Tokenizer"],
            "transformer": ["diffusers", "QwenImageTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKLQwenImage"],
        }
    )
    return index


def version_from_name(path: str) -> str | None:
    """The model_version a DiT's file or folder name suggests (the release names), or None if it says nothing.

    ``qwen_image_edit_2509_bf16.safetensors`` -> edit-2509, ``Qwen-Image-Edit`` -> edit,
    ``qwen_image_bf16.safetensors`` -> original; a diffusers ``transformer`` folder is named by its parent.
    """
    parts = [p for p in str(path).replace("\\", "/").split("/") if p]
    generic = ("transformer", "diffusion_pytorch_model")  # a diffusers folder's component names say nothing
    named = [p for p in parts if not p.lower().startswith(generic)]
    if not named:
        return None
    words = named[-1].lower().replace("-", "_")
    if "edit" in words:
        return "edit-2511" if "2511" in words else "edit-2509" if "2509" in words else "edit"
    if "qwen_image" in words or "qwenimage" in words:
        return "original"
    return None


def version_name_warning(path: str, model_version: str) -> str | None:
    """A warning when --dit's name suggests another --model_version than the one given (else None)."""
    suggested = version_from_name(path)
    if suggested is None or suggested == model_version:
        return None
    return (
        f"--dit {path}: the name suggests --model_version {suggested}, but --model_version is "
        f"{model_version}; a LoRA trained or images made with the wrong DiT come out wrong (ignore this "
        "if the file is only named so)"
    )
