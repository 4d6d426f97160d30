"""Sample images: prompt files, prompt encoding, and image generation with a live DiT (training and generate).

Stable API (the training loop and ``stages/generate.py`` call these):

- ``parse_sample_prompts(path) -> list[SamplePrompt]``: one prompt per line with the usual options
  ``--w`` width, ``--h`` height, ``--s`` steps, ``--d`` seed, ``--l`` (or ``--g``) guidance scale,
  ``--n`` negative prompt, ``--ci`` control image (repeat for several); ``#`` lines and blank lines are
  skipped. Options not given stay None and take the configuration's defaults when prepared.
- ``prepare_sample_embeddings(config, prompts) -> PreparedSamples``: loads the text encoder once, encodes
  every prompt (and the negative prompt where guidance is on) exactly as the text-cache stage does, frees it.
- ``sample_images(transformer, vae, prepared, out_dir, name_prefix, step_or_epoch, events, device, dtype)
  -> list[Path]``: generates with the live (LoRA-wrapped) transformer in eval mode without gradients,
  restores its train mode and the RNG state, writes ``out_dir/{name_prefix}_{step_or_epoch:06d}_{i:02d}.png``
  atomically and emits one ``artifact`` event (kind "sample") per image. ``sample_dir(output_dir)`` is the
  usual ``out_dir``. Pass the unwrapped module (not the DDP wrapper); gradient checkpointing may stay on.
  Call it on the main process only.

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

from qwen_image_studio.errors import ConfigError
from qwen_image_studio.events import EventWriter, ProgressTracker
from qwen_image_studio.training.atomic import atomic_write

if TYPE_CHECKING:
    from qwen_image_studio.params.schema import StudioConfig

log = logging.getLogger(__name__)

EMPTY_NEGATIVE = " "  # what diffusers' docs advise for "guidance without a negative prompt"
MAX_SEQUENCE_LENGTH = 1024  # the text-cache stage keeps up to 1024 tokens; the pipeline default is 512
SAMPLE_SUBDIR = "sample"
_OPTIONS = {
    "w": "width",
    "h": "height",
    "s": "steps",
    "d": "seed",
    "l": "guidance_scale",
    "g": "guidance_scale",
    "n": "negative_prompt",
    "ci": "control_images",
}


@dataclass(frozen=True)
class SamplePrompt:
    """One line of a prompt file; None where the line gives no value (the configuration's default applies)."""

    prompt: str
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    seed: int | None = None
    guidance_scale: float | None = None
    negative_prompt: str | None = None
    control_images: tuple[Path, ...] = ()
    where: str = ""  # "FILE line N" for messages


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


@dataclass(frozen=True)
class PromptDefaults:
    """Values for options a prompt line leaves out."""

    width: int = 1024
    height: int = 1024
    steps: int = 25
    seed: int = 42
    guidance_scale: float = 4.0
    negative_prompt: str | None = None

    @classmethod
    def from_config(cls, config: StudioConfig) -> PromptDefaults:
        """The generation settings of a configuration (``--image_size`` is H W)."""
        height, width = config.image_size
        return cls(
            width, height, config.infer_steps, config.seed, config.guidance_scale, config.negative_prompt
        )


# ---- prompt files ------------------------------------------------------------------------------------
def _number(kind: type, option: str, value: str, where: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        wanted = "a whole number" if kind is int else "a number"
        raise ConfigError(f"{where}: --{option} {value!r} is not {wanted}") from None


def check_prompt_values(width: int, height: int, steps: int, seed: int, guidance: float, where: str) -> None:
    """Raise ConfigError naming `where` for a size, step count, seed or guidance the pipelines cannot use."""
    for name, value in (("width", width), ("height", height)):
        if value < 16 or value % 16:
            raise ConfigError(f"{where}: {name} {value} must be a multiple of 16 (at least 16)")
    if steps < 2:
        raise ConfigError(f"{where}: {steps} inference steps; at least 2 are needed")
    if seed < 0:
        raise ConfigError(f"{where}: seed {seed} must not be negative")
    if guidance <= 0:
        raise ConfigError(f"{where}: guidance scale {guidance} must be above 0 (1 turns guidance off)")


def parse_prompt_line(line: str, where: str = "prompt", base: Path | None = None) -> SamplePrompt:
    """One prompt line with its ``--w --h --s --d --l/--g --n --ci`` options."""
    parts = (" " + line.strip()).split(" --")
    text = parts[0].strip()
    values: dict[str, Any] = {}
    controls: list[Path] = []
    for part in parts[1:]:
        option, _, value = part.strip().partition(" ")
        value = value.strip()
        if not option:
            continue
        name = _OPTIONS.get(option)
        if name is None:
            log.warning("%s: ignoring unknown option --%s", where, option)
            continue
        if not value:
            raise ConfigError(f"{where}: --{option} needs a value")
        if name == "control_images":
            controls.append(find_control_image(value, base, where))
        elif name == "negative_prompt":
            values[name] = value
        elif name == "guidance_scale":
            values[name] = _number(float, option, value, where)
        else:
            values[name] = _number(int, option, value, where)
    if not text:
        raise ConfigError(f"{where}: the line has options but no prompt")
    prompt = SamplePrompt(text, control_images=tuple(controls), where=where, **values)
    d = PromptDefaults()
    check_prompt_values(
        _pick(prompt.width, d.width),
        _pick(prompt.height, d.height),
        _pick(prompt.steps, d.steps),
        _pick(prompt.seed, d.seed),
        _pick(prompt.guidance_scale, d.guidance_scale),
        where,
    )
    return prompt


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def find_control_image(value: str, base: Path | None, where: str) -> Path:
    """A control image path as written, else relative to the prompt file's folder; it must exist."""
    raw = Path(value.strip("\"'")).expanduser()
    candidates = [raw] if raw.is_absolute() or base is None else [raw, base / raw]
    for path in candidates:
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"{where}: control image not found: {raw}")


def parse_sample_prompts(path: str | Path) -> list[SamplePrompt]:
    """The prompts of a prompt file (UTF-8, one per line; ``#`` comments and blank lines skipped)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"prompt file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prompt file {p} is unreadable: {exc}") from None
    prompts = [
        parse_prompt_line(line, f"{p} line {n}", p.parent)
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise ConfigError(f"prompt file {p} holds no prompt")
    return prompts


# ---- prompt encoding ---------------------------------------------------------------------------------
def resolve_prompt(prompt: SamplePrompt, defaults: PromptDefaults, model_version: str) -> dict[str, Any]:
    """A prompt's values with defaults filled in, checked against the model version."""
    where = prompt.where or "prompt"
    values = {
        "prompt": prompt.prompt,
        "width": _pick(prompt.width, defaults.width),
        "height": _pick(prompt.height, defaults.height),
        "steps": _pick(prompt.steps, defaults.steps),
        "seed": _pick(prompt.seed, defaults.seed),
        "guidance_scale": _pick(prompt.guidance_scale, defaults.guidance_scale),
        "negative_prompt": _pick(prompt.negative_prompt, defaults.negative_prompt),
        "control_paths": prompt.control_images,
    }
    check_prompt_values(
        values["width"], values["height"], values["steps"], values["seed"], values["guidance_scale"], where
    )
    edit = model_version != "original"
    if edit and not prompt.control_images:
        raise ConfigError(
            f"{where}: --model_version {model_version} needs a control image (--ci PATH on the "
            "line, or --control_image_path)"
        )
    if not edit and prompt.control_images:
        raise ConfigError(
            f"{where}: control images need an edit --model_version (edit, edit-2509, edit-2511)"
        )
    if model_version == "edit" and len(prompt.control_images) > 1:
        raise ConfigError(
            f"{where}: --model_version edit takes one control image; edit-2509 and edit-2511 take several"
        )
    return values


def prepare_sample_embeddings(config: StudioConfig, prompts: list[SamplePrompt]) -> PreparedSamples:
    """Load the text encoder once, encode every prompt (and negative prompt) as the text cache does, free it."""
    from qwen_image_studio.data.images import load_image
    from qwen_image_studio.stages.cache_text_encoder_outputs import encode, load_encoding_pipeline
    from qwen_image_studio.stages.common import model_dtype, resolve_device

    version = config.model_version
    defaults = PromptDefaults.from_config(config)
    resolved = [resolve_prompt(p, defaults, version) for p in prompts]
    device = resolve_device(config.device)
    dtype = model_dtype(device, config.mixed_precision)
    pipe = load_encoding_pipeline(config, device, dtype)
    out: list[PreparedPrompt] = []
    try:
        for values in resolved:
            controls = [load_image(c) for c in values["control_paths"]]
            ctrl_arg = [controls] if version != "original" else None
            embeds = encode(pipe, version, [values["prompt"]], ctrl_arg, device)[0].cpu()
            negative = None
            if values["guidance_scale"] > 1.0:
                neg_text = values["negative_prompt"] or EMPTY_NEGATIVE
                negative = encode(pipe, version, [neg_text], ctrl_arg, device)[0].cpu()
            out.append(PreparedPrompt(embeds=embeds, negative_embeds=negative, controls=controls, **values))
    finally:
        del pipe
        free_memory(device)
    return PreparedSamples(version, out)


def free_memory(device: torch.device) -> None:
    """Collect garbage and return cached accelerator memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ---- generation ---------------------------------------------------------------------------------------
def build_pipeline(transformer: torch.nn.Module, vae: torch.nn.Module, model_version: str) -> Any:
    """The diffusers Qwen-Image pipeline for `model_version` around a DiT and VAE (no text encoder)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        QwenImageEditPipeline,
        QwenImageEditPlusPipeline,
        QwenImagePipeline,
    )

    from qwen_image_studio.models.configs import SCHEDULER_CONFIG

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)
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


def _save_png(image: Image.Image, path: Path, item: PreparedPrompt, model_version: str) -> Path:
    """Write a PNG atomically with the generation settings in its text chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("prompt", item.prompt)
    if item.negative_prompt:
        info.add_text("negative_prompt", item.negative_prompt)
    info.add_text(
        "parameters",
        f"{item.width}x{item.height}, steps {item.steps}, seed {item.seed}, "
        f"guidance {item.guidance_scale}, model_version {model_version}",
    )

    def write(tmp: Path) -> None:
        image.save(tmp, format="PNG", pnginfo=info)
        os.chmod(tmp, 0o666 & ~_umask())  # temporary files are 0600; give the usual permissions

    return atomic_write(path, write)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
) -> list[Path]:
    """Render every prepared prompt to its path (eval mode, no grad, RNG and train mode restored)."""
    if len(paths) != len(prepared.prompts):
        raise ValueError("one output path per prepared prompt is needed")
    was_training = transformer.training
    vae_device = next(vae.parameters()).device
    cuda = [device] if device.type == "cuda" else []
    tracker = ProgressTracker(events, total=sum(p.steps for p in prepared.prompts), phase=phase, unit="step")
    written: list[Path] = []
    try:
        transformer.eval()
        vae.to(device)
        pipe = build_pipeline(transformer, vae, prepared.model_version)
        autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16))
        with torch.random.fork_rng(devices=cuda), torch.no_grad(), autocast:
            for item, path in zip(prepared.prompts, paths, strict=True):
                image = render(pipe, item, device, dtype, on_step=tracker.advance)
                written.append(_save_png(image, path, item, prepared.model_version))
                events.artifact(artifact_kind, path)
                log.info("wrote %s", path)
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
    return generate_images(transformer, vae, prepared, paths, events, device, dtype)
