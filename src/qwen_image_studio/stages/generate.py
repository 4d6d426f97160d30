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

The root script ``qwen_image_generate_image.py`` takes every flag of the reference's script of that name:
``--output_type latent`` / ``latent_images`` write the denoised latent as
``{time}_{i:02d}_{seed}_latent.safetensors`` (key ``latent``, (1, 16, 1, H/8, W/8) in the DiT's normalised
space, the reference's metadata keys) instead of / beside the PNG; ``--latent_path FILE...`` decodes such
files with the VAE and generates nothing;
``--include_patterns`` / ``--exclude_patterns`` keep or drop LoRA modules by name (``re.search`` on the
``lora_unet_...`` name); ``--flow_shift``, ``--text_encoder_cpu``, ``--vae_enable_tiling``,
``--append_original_name``, ``--no_metadata``, ``--bell`` as there. The flags it does not offer are refused
by name with their reason (``params/reference.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from dataclasses import replace
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
from ..models.lora_hooks import LoraHooks
from ..models.lora_keys import lora_name
from ..models.writing import comfy_dit_state_dict, stream_safetensors
from ..params.schema import StudioConfig
from ..training.sampling import (
    GenerationOutput,
    PreparedSamples,
    decode_latent,
    free_memory,
    generate_images,
    prepare_sample_embeddings,
)
from .generate_grid import render_grid
from .generate_kept import KeptModels

log = logging.getLogger(__name__)

# The models a generation worker keeps between requests (`generate_worker` sets it); None in a command.
KEEP: KeptModels | None = None


def generation_prompts(config: StudioConfig) -> list[SamplePrompt]:
    """The prompts to render: the lines of --from_file, or --prompt with --control_image_path."""
    return prompt_lines(config.from_file, config.prompt, config.control_image_path)


def output_paths(save_path: Path, seeds: list[int], names: list[str] | None = None) -> list[Path]:
    """One new PNG path per image: ``{YYYYmmdd-HHMMSS}_{i:02d}_{seed}[_{name}].png`` (never an existing
    file, nor one whose latent file ``..._latent[_{name}].safetensors`` exists)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    paths = []
    for i, seed in enumerate(seeds):
        tail = f"_{names[i]}" if names and names[i] else ""
        path = save_path / f"{stamp}_{i:02d}_{seed}{tail}.png"
        n = 1
        while path.exists() or latent_path_for(path, tail).exists():
            path = save_path / f"{stamp}_{i:02d}_{seed}-{n}{tail}.png"
            n += 1
        paths.append(path)
    return paths


def latent_path_for(png: Path, tail: str = "") -> Path:
    """The latent file written beside (or instead of) a PNG: ``..._latent[_{name}].safetensors``."""
    stem = png.stem[: len(png.stem) - len(tail)] if tail else png.stem
    return png.with_name(f"{stem}_latent{tail}.safetensors")


def filter_lora(lora: LoraFile, include: list[str], exclude: list[str]) -> LoraFile:
    """--include_patterns / --exclude_patterns: keep the modules whose ``lora_unet_...`` name matches
    (``re.search``) an include pattern, then drop those matching an exclude pattern."""
    if not include and not exclude:
        return lora
    compiled = {}
    for flag, patterns in (("--include_patterns", include), ("--exclude_patterns", exclude)):
        try:
            compiled[flag] = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise ConfigError(f"{flag}: {exc.pattern!r} is not a regular expression ({exc})") from None

    def name(module: str) -> str:
        return module if lora.form == "lora_unet" else lora_name(module)

    pairs = {
        m: pair
        for m, pair in lora.pairs.items()
        if (not include or any(r.search(name(m)) for r in compiled["--include_patterns"]))
        and not any(r.search(name(m)) for r in compiled["--exclude_patterns"])
    }
    log.info("LoRA %s: %d of %d modules kept by the patterns", lora.path, len(pairs), len(lora.pairs))
    if not pairs:
        log.warning("LoRA %s: the include/exclude patterns leave no module; it changes nothing", lora.path)
    return replace(lora, pairs=pairs)


def check_num_layers(config: StudioConfig, dit: Any) -> None:
    """--num_layers, when given, must be the block count of the --dit file (read from it here)."""
    blocks = len(dit.transformer_blocks)
    if config.num_layers is not None and config.num_layers != blocks:
        raise ConfigError(
            f"--num_layers {config.num_layers}: the --dit file has {blocks} blocks "
            "(the block count is read from the file; leave the flag out)"
        )


def original_names(config: StudioConfig, prepared: PreparedSamples) -> list[str] | None:
    """--append_original_name in edit mode: the first control image's file stem per prompt."""
    if not (config.append_original_name and config.is_edit):
        return None
    return [p.control_paths[0].stem if p.control_paths else "" for p in prepared.prompts]


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
    check_num_layers(config, dit)
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


def decode_latent_files(config: StudioConfig, events: EventWriter) -> list[Path]:
    """--latent_path: decode latent files (``latent`` key; its seed and size from the header) to PNGs named
    ``{time}_{i:02d}_{seed}_{latent file stem}.png``; nothing is generated."""
    import torch
    from safetensors import SafetensorError, safe_open

    from ..atomic import atomic_write

    device = resolve_device(config.device)
    dtype = model_dtype(device, config.mixed_precision)
    latents: list[tuple[Path, Any, dict[str, str]]] = []
    for raw in config.latent_path:
        path = Path(raw).expanduser()
        if path.suffix != ".safetensors" or not path.is_file():
            raise ConfigError(f"--latent_path: {path}: give an existing .safetensors latent file")
        try:
            with safe_open(str(path), framework="pt") as fh:
                if "latent" not in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                    raise ConfigError(f"--latent_path: {path} holds no 'latent' tensor")
                latents.append((path, fh.get_tensor("latent"), dict(fh.metadata() or {})))
        except SafetensorError as exc:
            raise ConfigError(f"--latent_path: {path} is not a readable safetensors file ({exc})") from None
    vae = load_vae(config.vae, dtype=dtype, device=device)  # type: ignore[arg-type]
    if config.vae_enable_tiling:
        vae.enable_tiling()
    save_path = Path(config.save_path).expanduser()  # type: ignore[arg-type]
    save_path.mkdir(parents=True, exist_ok=True)
    seeds = [int(meta.get("seeds", 0)) for _, _, meta in latents]
    paths = output_paths(save_path, seeds, [p.stem for p, _, _ in latents])
    written = []
    for (source, latent, _), png in zip(latents, paths, strict=True):
        if latent.ndim not in (4, 5) or latent.shape[0] != 1:
            raise ConfigError(
                f"--latent_path: {source}: a latent of shape {tuple(latent.shape)}; "
                "(1, C, H, W) or (1, C, 1, H, W) is expected"
            )
        with torch.no_grad():
            image = decode_latent(vae, latent)
        atomic_write(png, lambda tmp, image=image: image.save(tmp, format="PNG"))
        events.artifact("image", png)
        log.info("decoded %s to %s", source, png)
        written.append(png)
    return written


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> list[Path]:
    """Generate one PNG (and/or latent file) per prompt; with --save_merged_model write the merged DiT, with
    --latent_path decode latent files; returns the files written."""
    try:
        return _run(config, events)
    finally:
        if config.bell:
            print("\a", end="", flush=True)


def _run(config: StudioConfig, events: EventWriter) -> list[Path]:
    if config.latent_path:
        return decode_latent_files(config, events)
    include, exclude = config.lora_include_patterns, config.lora_exclude_patterns
    # fail on a bad file before any model loads
    loras = [filter_lora(read_lora(p), include, exclude) for p in config.lora_weight]
    multipliers = multipliers_for(len(loras), config.lora_multiplier)
    mismatch = version_name_warning(str(config.dit), config.model_version)
    if mismatch:
        events.warning(mismatch)
    if config.save_merged_model:
        return [save_merged_model(config, loras, multipliers, events)]
    if config.grid_loras:
        if loras:
            raise ConfigError("--grid_loras: each column applies its own LoRA; leave --lora_weight out")
        for path in config.grid_loras:
            read_lora(path, flag="--grid_loras")  # a bad file fails before any model loads
    elif config.grid_strengths:
        raise ConfigError("--grid_strengths needs --grid_loras (the LoRA files of the columns)")
    prompts = generation_prompts(config)
    device = resolve_device(config.device)
    mode = attention_mode(config)
    if mode != "sdpa":
        check_backend(mode, device)  # before any model loads
    dtype = model_dtype(device, config.mixed_precision)
    log.info("generating %d image(s) on %s in %s", len(prompts), device, str(dtype).removeprefix("torch."))
    # --text_encoder_cpu: the prompts are encoded on the CPU (in its dtype), the rest runs on `device`
    encoding = config.model_copy(update={"device": "cpu"}) if config.text_encoder_cpu else config
    if KEEP is not None:  # a worker: the models stay loaded, LoRAs are hooked in (not merged)
        prepared = KEEP.prepared(encoding, prompts)
        dit, vae = KEEP.models(config, device, dtype, loras, multipliers)
        check_num_layers(config, dit)
        return _render(config, prepared, dit, vae, events, device, dtype, KEEP.hooks)
    prepared = prepare_sample_embeddings(encoding, prompts)

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
    check_num_layers(config, dit)
    vae = load_vae(config.vae, dtype=dtype, device=device)  # type: ignore[arg-type]
    if config.vae_enable_tiling:
        vae.enable_tiling()
    try:
        return _render(config, prepared, dit, vae, events, device, dtype)
    finally:
        memory.close()
        del dit, vae
        free_memory(device)


def _render(
    config: StudioConfig,
    prepared: PreparedSamples,
    dit: Any,
    vae: Any,
    events: EventWriter,
    device: Any,
    dtype: Any,
    hooks: LoraHooks | None = None,
) -> list[Path]:
    """Render every prepared prompt to its files with a loaded DiT and VAE (a compare grid with
    --grid_loras, its LoRAs applied through `hooks`)."""
    if config.grid_loras:
        return render_grid(config, prepared, dit, vae, events, device, dtype, hooks)
    save_path = Path(config.save_path).expanduser()  # type: ignore[arg-type]
    save_path.mkdir(parents=True, exist_ok=True)
    names = original_names(config, prepared)
    paths = output_paths(save_path, [p.seed for p in prepared.prompts], names)
    tails = [f"_{n}" if n else "" for n in names or [""] * len(paths)]
    latents = config.output_type in ("latent", "latent_images")
    output = GenerationOutput(
        images=config.output_type != "latent",
        latent_paths=[latent_path_for(p, t) for p, t in zip(paths, tails, strict=True)] if latents else None,
        metadata=not config.no_metadata,
        flow_shift=config.flow_shift,
        embedded_cfg_scale=config.embedded_cfg_scale,
        loras=tuple(  # (file, strength) recorded in the PNGs
            zip(config.lora_weight, multipliers_for(len(config.lora_weight), config.lora_multiplier), strict=True)
        ),
    )
    written = generate_images(
        dit, vae, prepared, paths, events, device, dtype, artifact_kind="image", phase="generate",
        output=output,
    )  # fmt: skip
    log.info("%d file(s) written to %s", len(written), save_path)
    events.emit("metric", step=len(written), images=len(written))
    return written
