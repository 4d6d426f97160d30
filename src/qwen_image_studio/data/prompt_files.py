"""Sample-prompt files: one prompt per line with the reference trainer's options, parsed and checked.

Torch-free, so the web UI's pre-launch check reads a prompt file exactly as training and ``generate`` will.

- ``parse_sample_prompts(path) -> list[SamplePrompt]``: one prompt per line with the usual options
  ``--w`` width, ``--h`` height, ``--s`` steps, ``--d`` seed, ``--l`` (or ``--g``) guidance scale,
  ``--n`` negative prompt, ``--ci`` control image (repeat for several; relative paths are tried as written,
  then beside the prompt file); ``#`` lines and blank lines are skipped. Options not given stay None.
- ``resolve_prompt(prompt, defaults, model_version)``: a line's values with the configuration's defaults,
  checked against the model version (an edit version needs a control image, text-to-image takes none).
- ``generation_prompts(from_file, prompt, control_images)``: what a run renders (a file's lines, lines
  without ``--ci`` taking the command line's control images, or one prompt).

Every problem is a ``ConfigError`` whose text names ``FILE line N``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen_image_studio.errors import ConfigError

if TYPE_CHECKING:
    from qwen_image_studio.params.schema import StudioConfig

log = logging.getLogger(__name__)

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


def generation_prompts(
    from_file: str | Path | None, prompt: str | None = None, control_images: list[str] | tuple[str, ...] = ()
) -> list[SamplePrompt]:
    """The prompts a run renders: the lines of a prompt file (lines without ``--ci`` take
    `control_images`), else the one `prompt` with `control_images`."""
    controls = tuple(find_control_image(c, None, "--control_image_path") for c in control_images or ())
    if from_file:
        prompts = parse_sample_prompts(from_file)
        if controls:
            prompts = [p if p.control_images else replace(p, control_images=controls) for p in prompts]
        return prompts
    if not prompt:
        raise ConfigError("--prompt or --from_file is required")
    return [SamplePrompt(prompt, control_images=controls, where="--prompt")]
