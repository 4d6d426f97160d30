"""Tiny random-weight Qwen-Image models written exactly as the releases are laid out.

ComfyUI single files (`comfyui/`) and diffusers folders (`diffusers/Qwen-Image`,
`diffusers/Qwen-Image-Edit-2509`) hold the same tiny weights in bf16, so every loader path can be
tested against the others; only sizes differ from the real files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from qwen_image_studio.models import configs, fp8, keymaps
from qwen_image_studio.models.writing import (
    comfy_dit_state_dict,
    comfy_text_encoder_state_dict,
    comfy_vae_state_dict,
    save_safetensors,
    save_sharded,
    write_json,
)

COMFY_FILES: dict[str, str] = {
    "dit": "qwen_image_bf16.safetensors",
    "dit_edit_2509": "qwen_image_edit_2509_bf16.safetensors",
    "dit_edit_2511": "qwen_image_edit_2511_bf16.safetensors",
    "vae": "qwen_image_vae.safetensors",
    "text_encoder": "qwen_2.5_vl_7b.safetensors",
}
DIFFUSERS_REPOS: dict[str, str] = {
    "diffusers_t2i": "Qwen-Image",
    "diffusers_edit_2509": "Qwen-Image-Edit-2509",
}
TRANSFORMER_SHARDS = (
    3  # the release has 9 (transformer) and 4 (text encoder); a few keep the tiny ones honest
)
TEXT_ENCODER_SHARDS = 2
DIFFUSERS_VERSION = "0.34.0.dev0"
# Seed offsets so that the three DiTs differ from each other, as the releases do.
_SEED_OFFSETS = {"dit": 0, "dit_edit_2509": 1, "dit_edit_2511": 2, "vae": 3, "text_encoder": 4}


@dataclass
class TinyModels:
    """The demo's modules in bf16, as the files hold them."""

    dit: Any
    dit_edit_2509: Any
    dit_edit_2511: Any
    vae: Any
    text_encoder: Any


def _seeded(seed: int, factory: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = factory()
    for param in module.parameters():  # module.to() would make diffusers warn about fp32 modules
        param.data = param.data.to(torch.bfloat16)
    return module.eval()


def build_tiny_models(seed: int = 0) -> TinyModels:
    """The tiny DiTs (t2i, edit-2509, edit-2511), VAE and text encoder with weights fixed by `seed`."""
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    te_config = configs.qwen_vl_config(configs.text_encoder_config_for("tiny"))

    def dit(zero_cond_t: bool = False) -> Callable[[], torch.nn.Module]:
        return lambda: QwenImageTransformer2DModel(**configs.dit_config("tiny", zero_cond_t=zero_cond_t))

    return TinyModels(
        dit=_seeded(seed + _SEED_OFFSETS["dit"], dit()),
        dit_edit_2509=_seeded(seed + _SEED_OFFSETS["dit_edit_2509"], dit()),
        dit_edit_2511=_seeded(seed + _SEED_OFFSETS["dit_edit_2511"], dit(zero_cond_t=True)),
        vae=_seeded(
            seed + _SEED_OFFSETS["vae"], lambda: AutoencoderKLQwenImage(**configs.vae_config("tiny"))
        ),
        text_encoder=_seeded(
            seed + _SEED_OFFSETS["text_encoder"], lambda: Qwen2_5_VLForConditionalGeneration(te_config)
        ),
    )


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.bfloat16) for k, v in module.state_dict().items()}


def _diffusers_config(class_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    return {"_class_name": class_name, "_diffusers_version": DIFFUSERS_VERSION, **kwargs}


def _write_diffusers_repo(folder: Path, models: TinyModels, dit_key: str, pipeline: str) -> None:
    dit = getattr(models, dit_key)
    write_json(folder / "model_index.json", configs.pipeline_model_index(pipeline))  # type: ignore[arg-type]
    write_json(folder / "scheduler" / "scheduler_config.json", configs.SCHEDULER_CONFIG)
    transformer_cfg = {k: v for k, v in dit.config.items() if not k.startswith("_")}
    write_json(
        folder / "transformer" / "config.json",
        _diffusers_config("QwenImageTransformer2DModel", transformer_cfg),
    )
    save_sharded(
        _state(dit), folder / "transformer", "diffusion_pytorch_model.safetensors", TRANSFORMER_SHARDS
    )
    vae_cfg = {k: v for k, v in models.vae.config.items() if not k.startswith("_")}
    write_json(folder / "vae" / "config.json", _diffusers_config("AutoencoderKLQwenImage", vae_cfg))
    save_safetensors(_state(models.vae), folder / "vae" / "diffusion_pytorch_model.safetensors")
    te_dir = folder / "text_encoder"
    write_json(te_dir / "config.json", configs.text_encoder_config_for("tiny"))
    write_json(
        te_dir / "generation_config.json",
        {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643},
    )
    te_state = comfy_text_encoder_state_dict(_state(models.text_encoder))
    save_sharded(te_state, te_dir, "model.safetensors", TEXT_ENCODER_SHARDS)


def _write_tokenizer_folders(paths: dict[str, Path]) -> None:
    """tokenizer/ in both repos and processor/ in the edit repo, from the offline-built Qwen2.5-VL tokenizer."""
    from qwen_image_studio.models.processor import build_processor, save_processor
    from qwen_image_studio.models.tokenizer import build_tokenizer, save_tokenizer

    tokenizer = build_tokenizer()
    for key in DIFFUSERS_REPOS:
        save_tokenizer(paths[key] / "tokenizer", tokenizer)
    save_processor(paths["diffusers_edit_2509"] / "processor", build_processor(tokenizer))


def create_demo_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write the tiny models under `root` in the ComfyUI and diffusers release layouts; returns their paths."""
    root = Path(root)
    models = build_tiny_models(seed)
    comfy = root / "comfyui"
    paths: dict[str, Path] = {"comfyui": comfy}
    for key, name in COMFY_FILES.items():
        paths[key] = comfy / name
    save_safetensors(comfy_dit_state_dict(_state(models.dit)), paths["dit"])
    save_safetensors(comfy_dit_state_dict(_state(models.dit_edit_2509)), paths["dit_edit_2509"])
    save_safetensors(
        comfy_dit_state_dict(_state(models.dit_edit_2511), edit_2511_flag=True), paths["dit_edit_2511"]
    )
    save_safetensors(comfy_vae_state_dict(_state(models.vae)), paths["vae"])
    save_safetensors(comfy_text_encoder_state_dict(_state(models.text_encoder)), paths["text_encoder"])
    for key, repo in DIFFUSERS_REPOS.items():
        paths[key] = root / "diffusers" / repo
    _write_diffusers_repo(paths["diffusers_t2i"], models, "dit", "t2i")
    _write_diffusers_repo(paths["diffusers_edit_2509"], models, "dit_edit_2509", "edit-plus")
    _write_tokenizer_folders(paths)
    return paths


def write_fp8_dit(src: Path, dst: Path, *, scaled: bool = False, scale_suffix: str = ".weight_scale") -> Path:
    """Copy a ComfyUI DiT file with its block weights in float8_e4m3fn (per-tensor scales when `scaled`)."""
    from safetensors.torch import load_file

    state = load_file(str(src))
    out = fp8.quantize_fp8(state, scaled=scaled, scale_suffix=scale_suffix)
    if scaled and scale_suffix == ".scale_weight":  # the older ComfyUI layout marks the file
        out[keymaps.dit_to_comfy("scaled_fp8")] = torch.empty(0, dtype=torch.float8_e4m3fn)
    return save_safetensors(out, Path(dst))
