"""Sample images: prompt encoding and image generation with a live DiT (training and generate).

Stable API (the training loop and ``stages/generate.py`` call these):

Prompt files (``--w --h --s --d --l/--g --n --ci`` per line) are read by ``data/prompt_files``
(``parse_sample_prompts``); options a line leaves out take the configuration's defaults when prepared.

- ``prepare_sample_embeddings(config, prompts) -> PreparedSamples``: loads the text encoder once, encodes
  every prompt (and the negative prompt where guidance is on) exactly as the text-cache stage does, frees it.
- ``sample_images(transformer, vae, prepared, out_dir, name_prefix, step_or_epoch, events, device, dtype)
  -> list[Path]``: generates with the live (LoRA-wrapped) transformer in eval mode without gradients,
  restores its train mode and the RNG state, writes ``out_dir/{name_prefix}_{step_or_epoch:06d}_{i:02d}.png``
  atomically and emits one ``artifact`` event (kind "sample", with its prompt, index and step) per image.
  ``sample_dir(output_dir)`` is the usual ``out_dir``. Pass the unwrapped module (not the DDP wrapper);
  gradient checkpointing may stay on. Call it on the main process only.

Also used by ``generate``: ``build_pipeline`` (a diffusers pipeline around a DiT and VAE), ``render`` (one
image) and ``generate_images`` (every prompt to a given path, with progress and artifact events).

Defaults where a line gives none: ``--image_size`` (1024 x 1024), ``--infer_steps`` (25),
``--guidance_scale`` (4.0), ``--negative_prompt`` and ``--seed`` of the configuration. Guidance above 1
is true classifier-free guidance (diffusers' ``true_cfg_scale``) with the negative prompt, " " when none.
The denoising loop, scheduler math and control-image handling are diffusers' Qwen-Image pipelines'.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from qwen_image_studio.atomic import atomic_write
from qwen_image_studio.data import png_params
from qwen_image_studio.data.prompt_files import PromptDefaults, SamplePrompt, resolve_prompt
from qwen_image_studio.events import EventWriter, ProgressTracker

if TYPE_CHECKING:
    from qwen_image_studio.params.schema import StudioConfig

log = logging.getLogger(__name__)

EMPTY_NEGATIVE = " "  # what diffusers' docs advise for "guidance without a negative prompt"
MAX_SEQUENCE_LENGTH = 1024  # the text-cache stage keeps up to 1024 tokens; the pipeline default is 512
SAMPLE_SUBDIR = "sample"


@dataclass
class PreparedPrompt:
    """A prompt with every value resolved, its encoded embeddings (on the CPU) and its control images."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    steps: int
    seed: int
    guidance_scale: float
    embeds: torch.Tensor  # (T, D)
    negative_embeds: torch.Tensor | None  # (T', D) when guidance is on
    control_paths: tuple[Path, ...] = ()
    controls: list[Image.Image] = field(default_factory=list)


@dataclass
class PreparedSamples:
    """Everything sampling needs besides the DiT and VAE."""

    model_version: str
    prompts: list[PreparedPrompt]
    models: dict[str, str | None] = field(default_factory=dict)  # dit, vae, text_encoder (for the PNGs)


def prepare_sample_embeddings(
    config: StudioConfig, prompts: list[SamplePrompt], cache: dict[tuple[Any, ...], Any] | None = None
) -> PreparedSamples:
    """Load the text encoder once, encode every prompt (and negative prompt) as the text cache does, free it.

    `cache` (a generation worker's, for one text encoder): embeddings by text and control images, filled
    here; the text encoder is loaded only when some text is not in it."""
    from qwen_image_studio.data.images import load_image
    from qwen_image_studio.devices import model_dtype, resolve_device
    from qwen_image_studio.models.text_encoding import encode, load_encoding_pipeline

    version = config.model_version
    defaults = PromptDefaults.from_config(config)
    resolved = [resolve_prompt(p, defaults, version) for p in prompts]
    device = resolve_device(config.device)
    dtype = model_dtype(device, config.mixed_precision)
    size = config.control_text_encoder_size
    store = {} if cache is None else cache

    def key(text: str, controls: list[Any]) -> tuple[Any, ...]:
        stamps = tuple((str(c), os.stat(c).st_mtime_ns) for c in controls)
        return (version, size, text, stamps)

    texts = [(v["prompt"], v["control_paths"]) for v in resolved]
    texts += [
        (v["negative_prompt"] or EMPTY_NEGATIVE, v["control_paths"]) for v in resolved if v["guidance_scale"] > 1.0
    ]
    missing = [t for t in texts if key(*t) not in store]
    pipe = load_encoding_pipeline(config, device, dtype) if missing else None
    out: list[PreparedPrompt] = []
    try:
        for values in resolved:
            controls = [load_image(c) for c in values["control_paths"]]
            ctrl_arg = [controls] if version != "original" else None

            def embedded(text: str, paths: list[Any] = values["control_paths"], ctrl: Any = ctrl_arg) -> Any:
                k = key(text, paths)
                if k not in store:
                    store[k] = encode(pipe, version, [text], ctrl, device, size)[0].cpu()
                return store[k]

            embeds = embedded(values["prompt"])
            negative = None
            if values["guidance_scale"] > 1.0:
                negative = embedded(values["negative_prompt"] or EMPTY_NEGATIVE)
            out.append(PreparedPrompt(embeds=embeds, negative_embeds=negative, controls=controls, **values))
    finally:
        if pipe is not None:
            del pipe
            free_memory(device)
    if cache is not None:
        log.info(
            "prompt embeddings: %d encoded (text encoder %s), %d reused",
            len(missing),
            "loaded, then freed" if missing else "not needed",
            len(texts) - len(missing),
        )
    models = {"dit": config.dit, "vae": config.vae, "text_encoder": config.text_encoder}  # for the PNGs
    return PreparedSamples(version, out, models)


def free_memory(device: torch.device) -> None:
    """Collect garbage and return cached accelerator memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- generation ---------------------------------------------------------------------------------------
def build_pipeline(
    transformer: torch.nn.Module, vae: torch.nn.Module, model_version: str, flow_shift: float | None = None
) -> Any:
    """The diffusers Qwen-Image pipeline for `model_version` around a DiT and VAE (no text encoder); the
    schedule shifts with the image size unless `flow_shift` fixes the shift (generation's --flow_shift)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImagePipeline,
    )

    from qwen_image_studio.models.configs import SCHEDULER_CONFIG

    fixed = {} if flow_shift is None else {"use_dynamic_shifting": False, "shift": flow_shift}
    scheduler = FlowMatchEulerDiscreteScheduler.from_config({**SCHEDULER_CONFIG, **fixed})
    parts: dict[str, Any] = {
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": None,
        "tokenizer": None,
        "transformer": transformer,
    }
    if model_version == "original":
        pipe = QwenImagePipeline(**parts)
    else:
        cls = QwenImageEditPipeline if model_version == "edit" else QwenImageEditPlusPipeline
        pipe = cls(**parts, processor=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def render(
    pipe: Any,
    item: PreparedPrompt,
    device: torch.device,
    dtype: torch.dtype,
    on_step: Callable[[], None] | None = None,
    output_type: str = "pil",
) -> Any:
    """One image for a prepared prompt (the pipeline's output: a PIL image, or an array for "np")."""

    def embeds(t: torch.Tensor | None) -> dict[str, torch.Tensor] | None:
        if t is None:
            return None
        return {
            "e": t[None].to(device, dtype),
            "m": torch.ones(1, t.shape[0], dtype=torch.long, device=device),
        }

    pos, neg = embeds(item.embeds), embeds(item.negative_embeds)
    kwargs: dict[str, Any] = {
        "prompt_embeds": pos["e"],
        "prompt_embeds_mask": pos["m"],  # type: ignore[index]
        "true_cfg_scale": item.guidance_scale if neg is not None else 1.0,
        "height": item.height,
        "width": item.width,
        "num_inference_steps": item.steps,
        "generator": torch.Generator("cpu").manual_seed(item.seed),
        "output_type": output_type,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
    }
    if neg is not None:
        kwargs |= {"negative_prompt_embeds": neg["e"], "negative_prompt_embeds_mask": neg["m"]}
    if item.controls:
        kwargs["image"] = (
            item.controls[0] if type(pipe).__name__ == "QwenImageEditPipeline" else item.controls
        )
    if on_step is not None:

        def callback(_pipe: Any, _i: int, _t: Any, _kw: dict) -> dict:
            on_step()
            return {}

        kwargs["callback_on_step_end"] = callback
    return pipe(**kwargs).images[0]


def unpack_latent(pipe: Any, packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A pipeline's packed latent (N, C*4) of one image as the VAE takes it: (1, C, 1, H/8, W/8)."""
    batch = packed[None] if packed.ndim == 2 else packed
    return pipe._unpack_latents(batch, height, width, pipe.vae_scale_factor)


def decode_latent(vae: torch.nn.Module, latent: torch.Tensor) -> Image.Image:
    """A latent (1, C, 1, h, w) or (1, C, h, w) in the DiT's normalised space as a PIL image, decoded as the
    diffusers Qwen-Image pipelines decode (the VAE's latents_mean / latents_std undone first)."""
    from diffusers.image_processor import VaeImageProcessor

    cfg = vae.config
    if latent.ndim == 4:
        latent = latent[:, :, None]
    weight = next(vae.parameters())
    latent = latent.to(weight.device, weight.dtype)
    mean = torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1).to(latent.device, latent.dtype)
    std = 1.0 / torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1).to(latent.device, latent.dtype)
    image = vae.decode(latent / std + mean, return_dict=False)[0][:, :, 0]
    return VaeImageProcessor().postprocess(image, output_type="pil")[0]


def latent_metadata(item: PreparedPrompt, embedded_cfg_scale: float) -> dict[str, str]:
    """The header of a latent file, with the reference trainer's keys (all strings)."""
    meta = {
        "seeds": str(item.seed),
        "prompt": item.prompt,
        "height": str(item.height),
        "width": str(item.width),
        "infer_steps": str(item.steps),
        "embedded_cfg_scale": str(embedded_cfg_scale),
        "guidance_scale": str(item.guidance_scale),
    }
    if item.negative_prompt is not None:
        meta["negative_prompt"] = item.negative_prompt
    return meta


def save_latent_file(latent: torch.Tensor, path: Path, metadata: dict[str, str] | None) -> Path:
    """Write a latent as a safetensors file with the single key ``latent`` (atomically)."""
    from safetensors.torch import save_file

    tensor = latent.detach().to("cpu").contiguous()
    return atomic_write(path, lambda tmp: save_file({"latent": tensor}, str(tmp), metadata=metadata))


def png_parameters(
    item: PreparedPrompt,
    prepared: PreparedSamples,
    output: GenerationOutput,
    dtype: torch.dtype,
    device: torch.device,
    step: int | None = None,
) -> dict[str, Any]:
    """What a PNG records of how it was made (``data/png_params``: the ``qis_parameters`` keys)."""
    dit = prepared.models.get("dit")
    params: dict[str, Any] = {
        "source": "generate" if step is None else "sample",
        "prompt": item.prompt,
        "negative_prompt": item.negative_prompt,
        "width": item.width,
        "height": item.height,
        "steps": item.steps,
        "guidance_scale": float(item.guidance_scale),
        "seed": item.seed,
        "sampler": png_params.SAMPLER,
        "model_version": prepared.model_version,
        "flow_shift": output.flow_shift,
        "model": Path(dit).name if dit else None,
        "dit": dit,
        "vae": prepared.models.get("vae"),
        "text_encoder": prepared.models.get("text_encoder"),
        "loras": [{"path": f, "name": Path(f).stem, "multiplier": float(m)} for f, m in output.loras],
        "control_image_paths": [str(c) for c in item.control_paths],
        "dtype": str(dtype).removeprefix("torch."),
        "device": device.type,
    }
    if step is not None:
        params["step"] = step
    return params


def _save_png(image: Image.Image, path: Path, params: dict[str, Any] | None) -> Path:
    """Write a PNG atomically with the generation settings in its text chunks (none when `params` is None):
    ``parameters`` and ``qis_parameters`` (``data/png_params``), and ``prompt`` / ``negative_prompt``."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if params is not None:
        info.add_text("prompt", params["prompt"])
        if params.get("negative_prompt"):
            info.add_text("negative_prompt", params["negative_prompt"])
        png_params.add_to(info, params)

    def write(tmp: Path) -> None:
        image.save(tmp, format="PNG", pnginfo=info)
        os.chmod(tmp, 0o666 & ~_umask())  # temporary files are 0600; give the usual permissions

    return atomic_write(path, write)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class GenerationOutput:
    """What generation writes per prompt besides the defaults of training samples (a PNG with metadata)."""

    images: bool = True
    latent_paths: list[Path] | None = None  # one .safetensors file per prompt: the denoised latent
    metadata: bool = True
    flow_shift: float | None = None
    embedded_cfg_scale: float = 2.5  # recorded in latent files, as the reference does
    loras: tuple[tuple[str, float], ...] = ()  # (file, multiplier) merged into the DiT: for the PNGs


def generate_images(
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    prepared: PreparedSamples,
    paths: list[Path],
    events: EventWriter,
    device: torch.device,
    dtype: torch.dtype,
    artifact_kind: str = "sample",
    phase: str = "sample",
    step: int | None = None,
    output: GenerationOutput | None = None,
) -> list[Path]:
    """Render every prepared prompt to its path (eval mode, no grad, RNG and train mode restored).

    `step`: the training step the images show; their progress is then a sub-phase of training and each
    artifact event carries the step, the prompt and its index (see ``events``). `output` (generation):
    latent files beside or instead of the PNGs, the schedule's fixed shift, no metadata."""
    out = output or GenerationOutput()
    if len(paths) != len(prepared.prompts):
        raise ValueError("one output path per prepared prompt is needed")
    was_training = transformer.training
    vae_device = next(vae.parameters()).device
    cuda = [device] if device.type == "cuda" else []
    within = {} if step is None else {"sub": True, "step": step}
    total = sum(p.steps for p in prepared.prompts)
    tracker = ProgressTracker(events, total=total, phase=phase, unit="step", extra=within)
    written: list[Path] = []
    try:
        transformer.eval()
        vae.to(device)
        pipe = build_pipeline(transformer, vae, prepared.model_version, out.flow_shift)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16))
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), autocast:
            for index, (item, path) in enumerate(zip(prepared.prompts, paths, strict=True)):
                info = {} if step is None else {"prompt": item.prompt, "index": index, "step": step}
                files = []
                if out.latent_paths is None:
                    image = render(pipe, item, device, dtype, on_step=tracker.advance)
                else:
                    packed = render(pipe, item, device, dtype, on_step=tracker.advance, output_type="latent")
                    latent = unpack_latent(pipe, packed, item.height, item.width)
                    meta = latent_metadata(item, out.embedded_cfg_scale) if out.metadata else None
                    files.append((save_latent_file(latent, out.latent_paths[index], meta), "latent"))
                    image = decode_latent(vae, latent) if out.images else None
                if image is not None:
                    params = png_parameters(item, prepared, out, dtype, device, step) if out.metadata else None
                    png = _save_png(image, path, params)
                    files.append((png, artifact_kind))
                for file, kind in files:
                    written.append(file)
                    events.artifact(kind, file, **info)
                    log.info("wrote %s", file)
    finally:
        tracker.close()
        transformer.train(was_training)
        vae.to(vae_device)
        if vae_device != device:
            free_memory(device)
    return written


def sample_dir(output_dir: str | Path) -> Path:
    """Where training samples go: ``output_dir/sample``."""
    return Path(output_dir) / SAMPLE_SUBDIR


def sample_images(
    transformer: torch.nn.Module,
    vae: torch.nn.Module,
    prepared: PreparedSamples,
    out_dir: str | Path,
    name_prefix: str,
    step_or_epoch: int,
    events: EventWriter,
    device: torch.device,
    dtype: torch.dtype,
) -> list[Path]:
    """Sample images with the live transformer to ``out_dir/{name_prefix}_{step_or_epoch:06d}_{i:02d}.png``."""
    folder = Path(out_dir)
    paths = [folder / f"{name_prefix}_{step_or_epoch:06d}_{i:02d}.png" for i in range(len(prepared.prompts))]
    return generate_images(transformer, vae, prepared, paths, events, device, dtype, step=step_or_epoch)
