"""Saved configurations as the UI sees them: documents in, parameters out, imports from files and the demo."""

from __future__ import annotations

import json
import secrets
from pathlib import Path, PurePath
from typing import Any

from ..errors import ConfigError
from ..params.cli import read_config_file
from ..params.config_files import document, from_document
from ..params.schema import StudioConfig
from ..params.validate import ConfigProblems, Message, MessageError, Problem, validate_config
from .store import NameTaken, Store, StoredConfig, check_name
from .views_util import parse_json

MAX_UPLOAD = 1024 * 1024
DEMO_IMPORTED = "demo_configs_imported"


def params_of(stored: StoredConfig) -> tuple[dict[str, Any], list[Problem]]:
    """A saved configuration's parameters (upgraded to the current version) and its problems, if any."""
    try:
        config, _ = from_document(stored.document, f"configuration {stored.name!r}")
    except ConfigProblems as exc:
        raw = stored.document.get("params")
        return (raw if isinstance(raw, dict) else {}), exc.problems
    except ConfigError as exc:
        return {}, [Problem("", str(exc), getattr(exc, "i18n", None))]
    return config.model_dump(mode="json"), []


def export_document(stored: StoredConfig) -> dict[str, Any]:
    """The current-version document of a saved configuration, keeping when it was saved."""
    config, _ = from_document(stored.document, f"configuration {stored.name!r}")
    doc = document(config, stored.name)
    doc["saved_at"] = stored.updated_at
    return doc


def export_bytes(stored: StoredConfig, lenient: bool = False) -> bytes:
    """The file a saved configuration exports to (and is mirrored as): its current-version document.

    When that no longer validates: ConfigError, or with `lenient` the stored document as it is.
    """
    try:
        doc = export_document(stored)
    except ConfigError:
        if not lenient:
            raise
        doc = stored.document
    return (json.dumps(doc, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def save(store: Store, name: str, config: StudioConfig, overwrite: bool = False) -> StoredConfig:
    """Save a validated configuration under a name."""
    return store.save_config(name, document(config, check_name(name)), overwrite=overwrite)


def _text_of(data: bytes, filename: str) -> str:
    if len(data) > MAX_UPLOAD:
        raise MessageError(Message("config.too_large", {"filename": filename, "kib": MAX_UPLOAD // 1024}))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise MessageError(Message("config.not_utf8", {"filename": filename})) from None


def config_from_json(data: bytes, filename: str) -> tuple[StudioConfig, str | None]:
    """A configuration (and its saved name) from an uploaded JSON document of any known version."""
    text = _text_of(data, filename)
    try:
        doc = parse_json(text)
    except ValueError as exc:
        raise MessageError(Message("config.bad_json", {"filename": filename, "detail": exc})) from None
    return from_document(doc, filename)


def config_from_toml(data: bytes, filename: str, scratch: Path) -> StudioConfig:
    """A configuration from an uploaded `--config_file` TOML (read through a scratch file in the workspace)."""
    text = _text_of(data, filename)
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / f"upload-{secrets.token_hex(8)}.toml"
    try:
        tmp.write_text(text, encoding="utf-8")
        try:
            values = read_config_file(tmp)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(str(tmp), filename)) from None
    finally:
        tmp.unlink(missing_ok=True)
    return validate_config(values)


def config_from_upload(data: bytes, filename: str, scratch: Path) -> tuple[StudioConfig, str | None]:
    """A configuration from an uploaded file: a JSON document, or a TOML of arguments when named *.toml."""
    if filename.lower().endswith(".toml"):
        return config_from_toml(data, filename, scratch), None
    return config_from_json(data, filename)


def default_name(filename: str) -> str:
    """A configuration name from an uploaded file's name."""
    return PurePath(filename.replace("\\", "/")).stem.strip() or "imported"


def import_demo_configs(store: Store, demo_dir: Path) -> list[Message]:
    """Save the demo's configurations once (names already in use are kept); returns messages on problems."""
    files = sorted((demo_dir / "configs").glob("*.json"))
    if not files or store.get_setting(DEMO_IMPORTED):
        return []
    notes: list[Message] = []
    for path in files:
        try:
            config, name = config_from_json(path.read_bytes(), str(path))
            save(store, name or path.stem, config)
        except NameTaken:
            continue
        except ConfigError as exc:
            detail = getattr(exc, "i18n", None) or str(exc)
            notes.append(Message("notice.demo_not_imported", {"detail": detail}))
    store.set_setting(DEMO_IMPORTED, "1")
    return notes
