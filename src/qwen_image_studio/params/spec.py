"""How a parameter is declared: stages, UI group, flag, help text and path kind, attached to a pydantic field."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo


class Stage(StrEnum):
    """A command of the pipeline; each parameter belongs to one or more."""

    CACHE_LATENTS = "cache_latents"
    CACHE_TEXT = "cache_text_encoder_outputs"
    TRAIN = "train_network"
    GENERATE = "generate"
    CAPTION = "caption_images"


CACHE = (Stage.CACHE_LATENTS, Stage.CACHE_TEXT)
ALL_STAGES = tuple(Stage)

# The seed's entry-point scripts, one per stage that has one.
# The generation worker's exit code after an idle timeout or a closed stdin (`stages/generate_worker.py`):
# a request the web UI sent in that moment was never read, so it goes to a fresh worker.
WORKER_IDLE_EXIT = 75

STAGE_SCRIPTS: dict[Stage, str] = {
    Stage.CACHE_LATENTS: "qwen_image_cache_latents.py",
    Stage.CACHE_TEXT: "qwen_image_cache_text_encoder_outputs.py",
    Stage.TRAIN: "qwen_image_train_network.py",
    Stage.GENERATE: "qwen_image_generate_image.py",
    Stage.CAPTION: "caption_images_by_qwen_vl.py",
}
# The console command's subcommands (`qwen-image-studio SUBCOMMAND`, `python -m qwen_image_studio.cli ...`).
SUBCOMMANDS: dict[str, Stage] = {
    "cache-latents": Stage.CACHE_LATENTS,
    "cache-text": Stage.CACHE_TEXT,
    "train": Stage.TRAIN,
    "generate": Stage.GENERATE,
    "caption": Stage.CAPTION,
}

# UI sections in display order (labels live in the i18n table under "group.<name>").
GROUPS = (
    "models",
    "dataset",
    "training",
    "network",
    "memory",
    "logging",
    "samples",
    "caching",
    "captioning",
    "generation",
    "advanced",
)


@dataclass(frozen=True)
class ParamMeta:
    """Everything about a parameter that pydantic does not already know."""

    group: str
    stages: tuple[Stage, ...]
    help_en: str
    help_zh: str
    flag: str = ""  # the CLI flag without dashes; the field name when empty
    required_for: tuple[Stage, ...] = ()
    # "file", "dir", "file_or_dir", "out_dir" or "out_file" (an output; may not exist yet), "" for no path
    path: str = ""
    choices: tuple[str, ...] = ()  # suggested values for free-form strings (e.g. optimizer_type)
    aliases: tuple[str, ...] = ()  # older names accepted in configuration files
    basic: bool = False  # shown first in its UI section; the others fold under "more options"
    needs: str = ""  # a switch: the switch it needs on (a rule; the form turns that one on with it)
    recommended: tuple[float, float] | None = None  # a range outside which a value works but is warned about
    cli_only: bool = False  # the web UI shows no input for it (its jobs set it, or it has no use there)
    also: tuple[str, ...] = ()  # other UI groups whose panel shows it too (e.g. the seed in the Generate tab)
    extra: dict[str, Any] = field(default_factory=dict)


def param(default: Any, meta: ParamMeta, **constraints: Any) -> Any:
    """Declare a schema field: pydantic default and constraints plus our metadata."""
    if meta.group not in GROUPS:
        raise ValueError(f"unknown UI group {meta.group!r}")
    return Field(default, description=meta.help_en, json_schema_extra=_SchemaExtra(meta), **constraints)


class _SchemaExtra:
    """Carries a field's ParamMeta and writes it into the JSON schema as ``x-*`` keys."""

    def __init__(self, meta: ParamMeta) -> None:
        self.meta = meta

    def __call__(self, schema: dict[str, Any]) -> None:
        m = self.meta
        schema.update({"x-group": m.group, "x-stages": [s.value for s in m.stages], "x-help-zh": m.help_zh})
        if m.flag:
            schema["x-flag"] = "--" + m.flag
        if m.required_for:
            schema["x-required-for"] = [s.value for s in m.required_for]
        if m.path:
            schema["x-path"] = m.path
        if m.choices:
            schema["x-choices"] = list(m.choices)
        if m.basic:
            schema["x-basic"] = True
        if m.needs:
            schema["x-needs"] = m.needs
        if m.recommended:
            schema["x-recommended"] = list(m.recommended)
        if m.cli_only:
            schema["x-cli-only"] = True
        if m.also:
            schema["x-also"] = list(m.also)
        schema.update(m.extra)


def meta_of(info: FieldInfo, name: str) -> ParamMeta:
    """The ParamMeta of a declared field, with the flag defaulted to the field name."""
    extra = info.json_schema_extra
    if not isinstance(extra, _SchemaExtra):
        raise KeyError(f"field {name!r} was not declared with param()")
    meta = extra.meta
    return meta if meta.flag else replace(meta, flag=name)
