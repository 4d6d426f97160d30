"""Stage 4: generate images with the base model plus LoRAs (text-to-image and edit), as PNG files.

The flags are musubi-tuner's ``qwen_image_generate_image.py`` ones (``--prompt``, ``--from_file``,
``--negative_prompt``, ``--image_size H W``, ``--infer_steps``, ``--guidance_scale``, ``--seed``,
``--lora_weight``, ``--lora_multiplier``, ``--control_image_path``, ``--save_path``). Order of work keeps
one big model in memory at a time: check the LoRA files, encode every prompt with the text encoder and
free it, load the DiT and merge the LoRAs into its weights (then fp8 storage when asked, and the memory
options: attention kernel, --blocks_to_swap, --compile), load the VAE, and render each prompt with
diffusers' Qwen-Image pipeline. Files: ``save_path/{time}_{i:02d}_{seed}.png``.

``--save_merged_model FILE`` (musubi's flag) renders nothing: the DiT is loaded on the CPU, the LoRAs are
merged into its weights and it is written to FILE in the ComfyUI single-file layout, streamed tensor by
tensor (one copy of the model in RAM), atomically (a crash leaves no partial file).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from ..data.prompt_files import SamplePrompt
from ..data.prompt_files import generation_prompts as prompt_lines
from ..devices import model_dtype, resolve_device
from ..errors import ConfigError
from ..events import EventWriter
from ..memory.attention import attention_mode, check_backend
from ..memory.options import MemoryOptions
from ..memory.placement import load_placed_dit
from ..memory.setup import configure_dit
from ..models.configs import version_name_warning
from ..models.loading import load_dit, load_vae
from ..models.lora_apply import LoraFile, merge_loras, multipliers_for, read_lora
from ..models.writing import comfy_dit_state_dict, stream_safetensors
from ..params.schema import StudioConfig
from ..training.sampling import free_memory, generate_images, prepare_sample_embeddings

log = logging.getLogger(__name__)


def generation_prompts(config: StudioConfig) -> list[SamplePrompt]:
    """The prompts to render: the lines of --from_file, or --prompt with --control_image_path."""
    return prompt_lines(config.from_file, config.prompt, config.control_image_path)


def output_paths(save_path: Path, seeds: list[int]) -> list[Path]:
    """One new PNG path per image: ``{YYYYmmdd-HHMMSS}_{i:02d}_{seed}.png`` (never an existing file)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for i, seed in enumerate(seeds):
        path = save_path / f"{stamp}_{i:02d}_{seed}.png"
        n = 1
        while path.exists():
            path = save_path / f"{stamp}_{i:02d}_{seed}-{n}.png"
            n += 1
        paths.append(path)
    return paths


def save_merged_model(
    config: StudioConfig, loras: list[LoraFile], multipliers: list[float], events: EventWriter
) -> Path:
    """--save_merged_model: the DiT with the LoRAs merged in, written as a ComfyUI single file."""
    import torch

    from ..atomic import atomic_write

    target = Path(config.save_merged_model).expanduser()  # type: ignore[arg-type]
    if target.suffix != ".safetensors":
        raise ConfigError(f"--save_merged_model: {target}: give a file name ending in .safetensors")
    if not loras:
        raise ConfigError("--save_merged_model needs --lora_weight: there is nothing to merge")
    if target.exists() and target.resolve() == Path(config.dit).expanduser().resolve():  # type: ignore[arg-type]
        raise ConfigError(f"--save_merged_model: {target} is the --dit file itself; choose another name")
    if target.is_dir():
        raise ConfigError(f"--save_merged_model: {target} is a folder; give a file name")
    dtype = torch.float16 if config.mixed_precision == "fp16" else torch.bfloat16
    dit = load_dit(config.dit, dtype=dtype, device="cpu", model_version=config.model_version)  # type: ignore[arg-type]
    changed = merge_loras(dit, loras, multipliers)
    log.info("LoRA updates merged into %d linear layers", changed)
    state = comfy_dit_state_dict(dit.state_dict(), edit_2511_flag=config.model_version == "edit-2511")
    merged = [{"file": str(lora.path), "multiplier": m} for lora, m in zip(loras, multipliers, strict=True)]
    metadata = {"format": "pt", "qwen_image_studio.merged_loras": json.dumps(merged)}
    atomic_write(target, lambda tmp: stream_safetensors(state, tmp, metadata))
    size = target.stat().st_size / 2**30
    log.info("merged model written to %s (%.2f GiB, %s)", target, size, str(dtype).removeprefix("torch."))
    events.artifact("model", target)
    return target


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> list[Path]:
    """Generate one PNG per prompt (or, with --save_merged_model, write the merged DiT); returns the files."""
    loras = [read_lora(p) for p in config.lora_weight]  # fail on a bad file before any model loads
    multipliers = multipliers_for(len(loras), config.lora_multiplier)
    mismatch = version_name_warning(str(config.dit), config.model_version)
    if mismatch:
        events.warning(mismatch)
    if config.save_merged_model:
        return [save_merged_model(config, loras, multipliers, events)]
    prompts = generation_prompts(config)
    device = resolve_device(config.device)
    mode = attention_mode(config)
    if mode != "sdpa":
        check_backend(mode, device)  # before any model loads
    dtype = model_dtype(device, config.mixed_precision)
    log.info("generating %d image(s) on %s in %s", len(prompts), device, str(dtype).removeprefix("torch."))
    prepared = prepare_sample_embeddings(config, prompts)

    def merge(dit: Any) -> None:
        changed = merge_loras(dit, loras, multipliers)
        for lora, m in zip(loras, multipliers, strict=True):
            log.info(
                "LoRA %s (%s form, rank %s) x %g", lora.path, lora.form, "/".join(map(str, lora.ranks)), m
            )
        log.info("LoRA updates merged into %d linear layers", changed)

    options = MemoryOptions.from_config(config)
    dit, plan = load_placed_dit(
        config.dit,  # type: ignore[arg-type]
        config.model_version,
        options,
        device,
        dtype,
        before_placing=merge if loras else None,
    )
    memory = configure_dit(dit, plan, options, device, training=False)  # attention, swap, compile
    vae = load_vae(config.vae, dtype=dtype, device=device)  # type: ignore[arg-type]

    save_path = Path(config.save_path).expanduser()  # type: ignore[arg-type]
    save_path.mkdir(parents=True, exist_ok=True)
    paths = output_paths(save_path, [p.seed for p in prepared.prompts])
    try:
        written = generate_images(
            dit, vae, prepared, paths, events, device, dtype, artifact_kind="image", phase="generate"
        )
    finally:
        memory.close()
        del dit, vae
        free_memory(device)
    log.info("%d image(s) written to %s", len(written), save_path)
    events.emit("metric", step=len(written), images=len(written))
    return written
