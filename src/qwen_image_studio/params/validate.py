"""Validation with messages that name the flag and what is allowed.

Two levels: `validate_config` checks values and cross-field rules (always); `check_for_stage`
adds what a command needs to run (required parameters present, input paths existing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .fields import all_fields, fields_for
from .schema import StudioConfig
from .spec import Stage


@dataclass(frozen=True)
class Problem:
    """One invalid parameter: the field (or '' for a rule over several) and a one-line message."""

    field: str
    message: str


class ConfigProblems(ConfigError):
    """Validation failed; `problems` lists each one (the message is the first, or all joined)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.message for p in problems))


class _Raw(str):
    """A command-line number shown as typed (no quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _message(err: dict[str, Any]) -> Problem:
    """Turn one pydantic error into a Problem naming the flag and the allowed values."""
    loc = err.get("loc") or ()
    name = str(loc[0]) if loc else ""
    spec = all_fields().get(name)
    raw = err.get("msg", "invalid value")
    if raw.startswith("Value error, "):
        raw = raw[len("Value error, ") :]
    if spec is None:
        if err.get("type") == "extra_forbidden":
            return Problem(name, f"unknown parameter {name!r}")
        return Problem("", raw)
    value = err.get("input")
    if spec.kind in ("int", "float") and isinstance(value, str):
        value = _Raw(value)
    typ = err.get("type", "")
    allowed = spec.allowed()
    if typ in {"greater_than_equal", "less_than_equal", "greater_than", "less_than"} and allowed:
        msg = f"{spec.flag}: {_describe(value)} is out of range; allowed {allowed}"
    elif typ == "literal_error":
        msg = f"{spec.flag}: {_describe(value)} is not allowed; choose one of {allowed}"
    elif typ.startswith(("int_", "float_", "bool_")):
        wanted = {"int": "a whole number", "float": "a number", "bool": "true or false"}[typ.split("_")[0]]
        msg = f"{spec.flag}: {_describe(value)} is not {wanted}" + (f"; allowed {allowed}" if allowed else "")
    elif typ == "string_pattern_mismatch":
        msg = f"{spec.flag}: {_describe(value)} is not a valid value"
    else:
        msg = raw if raw.startswith("--") else f"{spec.flag}: {raw}"
    return Problem(name, msg)


def validate_config(data: dict[str, Any]) -> StudioConfig:
    """Build a StudioConfig from plain values, raising ConfigProblems with flag-named messages."""
    try:
        return StudioConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigProblems([_message(e) for e in exc.errors()]) from None


def problems_of(data: dict[str, Any]) -> list[Problem]:
    """All problems of a set of values (empty when valid); the web form shows them per field."""
    try:
        validate_config(data)
    except ConfigProblems as exc:
        return exc.problems
    return []


def _path_problem(flag: str, kind: str, value: str) -> str | None:
    path = Path(value).expanduser()
    if kind == "out_dir":
        parent = next((p for p in [path, *path.parents] if p.exists()), None)
        if parent is not None and not parent.is_dir():
            return f"{flag}: {value} is inside a file, not a folder"
        return None
    if not path.exists():
        return f"{flag}: not found: {path}"
    if kind == "file" and not path.is_file():
        return f"{flag}: {path} is a folder; a file is expected"
    if kind == "dir" and not path.is_dir():
        return f"{flag}: {path} is a file; a folder is expected"
    return None


def stage_problems(config: StudioConfig, stage: Stage) -> list[Problem]:
    """What stops a stage from running: missing required parameters and input paths that do not exist."""
    missing: list[Problem] = []
    bad_paths: list[Problem] = []
    for spec in fields_for(stage):
        value = getattr(config, spec.name)
        if stage in spec.meta.required_for and value in (None, ""):
            missing.append(Problem(spec.name, f"{spec.flag} is required"))
        elif spec.meta.path and value:
            msg = _path_problem(spec.flag, spec.meta.path, value)
            if msg:
                bad_paths.append(Problem(spec.name, msg))
    if not bad_paths and config.is_edit and config.dataset_config and stage != Stage.GENERATE:
        bad_paths += _edit_dataset_problems(config)
    return bad_paths + missing


def _edit_dataset_problems(config: StudioConfig) -> list[Problem]:
    """Edit model versions train on (target, control) pairs: every dataset must name its control images."""
    from ..data.config import load_dataset_config
    from ..errors import DatasetError

    try:
        datasets = load_dataset_config(config.dataset_config).datasets  # type: ignore[arg-type]
    except DatasetError as exc:
        return [Problem("dataset_config", f"--dataset_config: {exc}")]
    return [
        Problem(
            "dataset_config",
            f"--model_version {config.model_version} needs control images: "
            f"{ds.label} of {config.dataset_config} has no control_directory",
        )
        for ds in datasets
        if ds.image_directory is not None and ds.control_directory is None
    ]


def check_for_stage(config: StudioConfig, stage: Stage) -> StudioConfig:
    """Raise ConfigProblems unless the stage has everything it needs."""
    problems = stage_problems(config, stage)
    if problems:
        raise ConfigProblems(problems)
    return config
