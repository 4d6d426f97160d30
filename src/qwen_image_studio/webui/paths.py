"""User paths in the web UI: relative ones are taken from the workspace folder, and containment checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..params.fields import all_fields
from ..params.rules import check_path_text
from ..params.schema import StudioConfig
from ..params.validate import validate_config


def resolve_in(workspace: Path, value: str) -> Path:
    """An absolute path: `~` expanded, a relative path taken from the workspace folder."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else workspace / path).resolve()


def user_path(workspace: Path, value: str, name: str) -> Path:
    """A path a request gave in field `name`, resolved like `resolve_in`; 400 naming the field when the
    text cannot be a path (a NUL byte, too long)."""
    from flask import abort

    try:
        check_path_text(value)
        return resolve_in(workspace, value)
    except (ValueError, OSError, RuntimeError) as exc:
        abort(400, description=f"'{name}': {exc}")


def _resolved_or_kept(workspace: Path, value: Any) -> Any:
    """`value` made absolute when it is a path the OS can resolve; anything else as it is (validation
    reports it)."""
    if not isinstance(value, str) or not value:
        return value
    try:
        return str(resolve_in(workspace, value))
    except (ValueError, OSError, RuntimeError):
        return value


def resolve_params(params: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """The values with every relative path parameter made absolute against the workspace folder."""
    out = dict(params)
    for name, spec in all_fields().items():
        value = out.get(name)
        if not spec.meta.path or not value:
            continue
        if isinstance(value, list):
            out[name] = [_resolved_or_kept(workspace, v) for v in value]
        else:
            out[name] = _resolved_or_kept(workspace, value)
    return out


def resolve_config(params: dict[str, Any], workspace: Path) -> StudioConfig:
    """Validated values (ConfigProblems when invalid) with every path, defaults included, made absolute."""
    config = validate_config(params)
    return validate_config(resolve_params(config.model_dump(mode="json"), workspace))


def inside(path: Path, root: Path) -> bool:
    """Whether `path` (symlinks resolved) lies inside `root`."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False
