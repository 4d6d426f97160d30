"""Versioned JSON configuration files: save, load, and upgrade older versions.

Version 1 is the flat JSON the seed's web UI wrote (`dit_path`, `vae_path`, ... and `edit_mode`);
version 2 wraps the parameters with a format tag, a version, a name and a timestamp.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError
from .fields import all_fields, flag_to_field
from .schema import StudioConfig
from .validate import validate_config

FORMAT = "qwen-image-studio-config"
VERSION = 2


def _upgrade_1_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    """Seed web-UI JSON (flat, its own key names) -> version 2."""
    names = flag_to_field()
    params: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in doc.items():
        if key == "edit_mode":
            if value is True:
                params["model_version"] = "edit"
            elif isinstance(value, str):
                params["model_version"] = value
            continue
        if key in ("edit", "edit_plus"):
            if value:
                params["model_version"] = "edit" if key == "edit" else "edit-2509"
            continue
        name = names.get(key)
        if name is None:
            unknown.append(key)
            continue
        spec = all_fields()[name]
        if spec.kind == "list" and isinstance(value, str):
            value = value.split()
        if value == "" and spec.optional:
            value = None
        params[name] = value
    if unknown:
        raise ConfigError(f"unknown parameter(s) in the configuration: {', '.join(sorted(unknown))}")
    return {"format": FORMAT, "version": 2, "name": None, "params": params}


UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}


def document(config: StudioConfig, name: str | None = None) -> dict[str, Any]:
    """The current-version JSON document of a configuration."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "app_version": __version__,
        "params": config.model_dump(mode="json"),
    }


def from_document(doc: Any, source: str = "configuration") -> tuple[StudioConfig, str | None]:
    """Validate a JSON document of any known version; returns the config and its saved name."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    version = doc.get("version", 1) if doc.get("format") == FORMAT else 1
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ConfigError(f"{source}: configuration version {version!r} is not supported (1 to {VERSION})")
    while version < VERSION:
        doc = UPGRADES[version](doc)
        version = doc["version"]
    params = doc.get("params")
    if not isinstance(params, dict):
        raise ConfigError(f"{source}: 'params' must be an object")
    return validate_config(params), doc.get("name")


def save_config(config: StudioConfig, path: str | Path, name: str | None = None) -> Path:
    """Write a configuration atomically (a crash leaves the previous file intact)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(document(config, name), ensure_ascii=False, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_config(path: str | Path) -> StudioConfig:
    """Read and validate a configuration file of any known version."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {p}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} is not valid JSON: {exc}") from None
    return from_document(doc, str(p))[0]
