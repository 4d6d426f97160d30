"""Command lines derived from the schema: argparse parsers, `--config_file` TOML, and argv for launching."""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path
from typing import Any, NoReturn

from ..errors import ConfigError
from .fields import FieldSpec, all_fields, fields_for, flag_to_field
from .reference import add_reference_flags, check_refused_values
from .schema import StudioConfig
from .spec import STAGE_SCRIPTS, Stage
from .validate import validate_config

# Flags of the reference trainer that select the model version (kept so old command lines work).
LEGACY_VERSION_FLAGS = {"edit": "edit", "edit_plus": "edit-2509"}

DESCRIPTIONS = {
    Stage.CACHE_LATENTS: "Cache VAE latents of the dataset images (and control images in edit mode). "
    "预缓存 VAE Latents。",
    Stage.CACHE_TEXT: "Cache Qwen2.5-VL text-encoder outputs of the captions (with control images in edit "
    "mode). 预缓存文本编码器输出。",
    Stage.TRAIN: "Train a LoRA for Qwen-Image / Qwen-Image-Edit with flow matching. LoRA 网络训练。",
    Stage.GENERATE: "Generate images with the base model and LoRAs. 使用 LoRA 生成图像。",
    Stage.CAPTION: "Caption images with Qwen2.5-VL (the text encoder's file): a folder, or every image of a "
    "dataset TOML; --edit_pairs writes edit instructions. 使用 Qwen2.5-VL 为图像自动打标。",
}


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ConfigError (one line naming the problem)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _help(spec: FieldSpec) -> str:
    parts = [f"{spec.meta.help_en} / {spec.meta.help_zh}"]
    default = spec.default
    if spec.kind == "bool":
        parts.append(f"default: {'on' if default else 'off'}")
    elif default not in (None, []):
        shown = " ".join(map(str, default)) if isinstance(default, list) else default
        parts.append(f"default: {shown}")
    allowed = spec.allowed()
    if allowed:
        parts.append(f"allowed: {allowed}")
    if spec.recommended():
        parts.append(f"recommended: {spec.recommended()}")
    if spec.meta.required_for:
        parts.append("required for " + ", ".join(s.value for s in spec.meta.required_for))
    text = " (".join(parts[:1]) + (" (" + "; ".join(parts[1:]) + ")" if len(parts) > 1 else "")
    return text.replace("%", "%%")  # argparse formats help with %: a literal percent sign is %%


def _add(parser: argparse.ArgumentParser | Any, spec: FieldSpec) -> None:
    dest = spec.name
    if spec.kind == "bool":
        parser.add_argument(spec.flag, dest=dest, action="store_const", const=True, help=_help(spec))
        if spec.default:
            parser.add_argument(
                f"--no_{spec.meta.flag}",
                dest=dest,
                action="store_const",
                const=False,
                help=f"turn {spec.flag} off / 关闭 {spec.flag}",
            )
    elif spec.kind == "list":
        metavar = spec.meta.extra.get("x-metavar", "KEY=VALUE")
        parser.add_argument(spec.flag, dest=dest, nargs="*", metavar=metavar, help=_help(spec))
    else:
        metavar = "{" + ",".join(spec.choices) + "}" if spec.kind == "choice" else spec.kind.upper()
        if spec.meta.path:
            metavar = "DIR" if spec.meta.path in ("dir", "out_dir") else "PATH"
        parser.add_argument(spec.flag, dest=dest, metavar=metavar, help=_help(spec))


def build_parser(stage: Stage, prog: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of a stage's command; unset flags stay absent (defaults come from the schema)."""
    parser = _Parser(
        prog=prog or STAGE_SCRIPTS.get(stage, f"qwen-image-studio {stage.value}"),
        description=DESCRIPTIONS[stage],
        argument_default=argparse.SUPPRESS,
    )
    groups: dict[str, Any] = {}
    for spec in fields_for(stage):
        group = groups.get(spec.meta.group)
        if group is None:
            group = groups[spec.meta.group] = parser.add_argument_group(spec.meta.group)
        _add(group, spec)
    version = groups.get("models", parser)
    for flag, value in LEGACY_VERSION_FLAGS.items():
        version.add_argument(
            f"--{flag}",
            dest="model_version",
            action="store_const",
            const=value,
            help=f"same as --model_version {value} (reference-trainer flag)",
        )
    add_reference_flags(parser, stage)  # the reference's other spellings, and its flags we refuse (why)
    run = parser.add_argument_group("run")
    run.add_argument(
        "--config_file",
        metavar="TOML",
        help="read arguments from a TOML file (flag names as keys); the command line wins",
    )
    run.add_argument(
        "--events_file",
        metavar="PATH",
        help="write machine-readable progress events (JSON lines) here; also $QIS_EVENTS_FILE",
    )
    run.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return parser


def _coerce(spec: FieldSpec, value: Any, where: str) -> Any:
    """Adapt a TOML/argv value to what pydantic expects for the field."""
    if spec.kind == "list":
        if isinstance(value, str):
            return value.split()
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {spec.flag} must be a list of key=value strings")
        return [str(v) for v in value]
    if spec.kind == "choice" and not isinstance(value, str):
        return str(value)
    return value


def read_config_file(path: str | Path, stage: Stage | None = None) -> dict[str, Any]:
    """Read a `--config_file` TOML of arguments (sections are flattened); keys are flag or field names."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config_file: not found: {p}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ConfigError(f"--config_file: {p} is not valid TOML: {detail}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    names = flag_to_field()
    allowed = {f.name for f in fields_for(stage)} if stage else set(all_fields())
    out: dict[str, Any] = {}
    for key, value in flat.items():
        if key in LEGACY_VERSION_FLAGS:
            if value:
                out["model_version"] = LEGACY_VERSION_FLAGS[key]
            continue
        name = names.get(key)
        if name is None or name not in allowed:
            raise ConfigError(
                f"--config_file {p}: unknown parameter {key!r}"
                + (f" for {stage.value}" if stage and name else "")
            )
        out[name] = _coerce(all_fields()[name], value, f"--config_file {p}")
    return out


def parse_args(stage: Stage, argv: list[str] | None = None) -> tuple[StudioConfig, argparse.Namespace]:
    """Parse a stage's command line (schema defaults < --config_file < flags) and validate it."""
    parser = build_parser(stage)
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    values: dict[str, Any] = {}
    if getattr(ns, "config_file", None):
        values.update(read_config_file(ns.config_file, stage))
    specs = all_fields()
    for name, value in vars(ns).items():
        if name in specs:
            values[name] = _coerce(specs[name], value, "command line")
    check_refused_values(values, {name: spec.meta.flag for name, spec in specs.items()})
    for name in ("config_file", "events_file", "debug"):
        if not hasattr(ns, name):
            setattr(ns, name, None if name != "debug" else False)
    return validate_config(values), ns


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def to_argv(config: StudioConfig, stage: Stage) -> list[str]:
    """The flags that make a stage's command see exactly this configuration."""
    argv: list[str] = []
    for spec in fields_for(stage):
        value = getattr(config, spec.name)
        if spec.kind == "bool":
            if value:
                argv.append(spec.flag)
            elif spec.default:
                argv.append(f"--no_{spec.meta.flag}")
        elif spec.kind == "list":
            if value != spec.default:
                argv += [spec.flag, *map(_format, value)]
        elif value is not None:
            argv += [spec.flag, _format(value)]
    return argv
