"""The CLI reference (Markdown) generated from the schema, for the README."""

from __future__ import annotations

from .fields import fields_for
from .spec import STAGE_SCRIPTS, Stage


def cli_reference() -> str:
    """One table per command: flag, default, allowed values, description (English / 中文)."""
    lines: list[str] = []
    for stage in (Stage.CACHE_LATENTS, Stage.CACHE_TEXT, Stage.TRAIN, Stage.GENERATE, Stage.CAPTION):
        title = STAGE_SCRIPTS.get(stage, f"qwen-image-studio {stage.value}")
        lines += [f"### `{title}`", "", "| flag | default | allowed | description |", "|---|---|---|---|"]
        for spec in fields_for(stage):
            default = spec.default
            if spec.kind == "bool":
                shown = "on" if default else "off"
            elif isinstance(default, list):
                shown = " ".join(map(str, default)) or "–"
            else:
                shown = "–" if default is None else str(default)
            required = " **required**" if stage in spec.meta.required_for else ""
            allowed = spec.allowed().replace("|", "\\|") or "–"
            lines.append(
                f"| `{spec.flag}`{required} | {shown} | {allowed} | "
                f"{spec.meta.help_en} / {spec.meta.help_zh} |"
            )
        lines.append("")
    lines.append(
        "Every command also takes `--config_file TOML`, `--events_file PATH` and `--debug`; "
        "boolean flags that default to on have a `--no_...` twin; `--edit` and `--edit_plus` "
        "mean `--model_version edit` and `edit-2509`."
    )
    return "\n".join(lines) + "\n"
