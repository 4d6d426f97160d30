"""The dataset panel: inspect a dataset TOML, or create one from a folder inside the workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify

from ..data.config import DatasetConfigError, parse_dataset_config, write_dataset_config
from ..data.inspect import inspect_dataset
from ..errors import DatasetError
from ..params.validate import Message, lenient_config
from .app import studio
from .i18n import render, request_language
from .paths import inside, user_path
from .store import check_name
from .views_util import json_body, refuse, texts

bp = Blueprint("api_dataset", __name__, url_prefix="/api/dataset")

DATASETS_DIR = "datasets"


def _error(code: str, message: str, problems: list[str], status: int = 400) -> Response:
    response = jsonify(error=message, code=code, problems=problems)
    response.status_code = status
    return response


def _said(code: str, msg: Message, problems: list[Message]) -> Response:
    """`_error` worded in the request's language (with the messages as `error_i18n`, `problems_i18n`)."""
    lang = request_language()
    response = jsonify(
        **texts(str(msg), msg, "error", lang),
        code=code,
        problems=[render(p, lang) for p in problems],
        problems_i18n=[p.as_json() for p in problems],
    )
    response.status_code = 400
    return response


def _taken(name: str, target: Path) -> Response:
    """409 `exists` (as for a configuration name) naming the dataset file, which is never replaced."""
    msg = Message("dataset.exists", {"path": target})
    response = jsonify(**texts(str(msg), msg, "error"), code="exists", subject="dataset", name=name)
    response.status_code = 409
    return response


def _report(path: Path, edit: bool, vl_size: str | None = None) -> dict[str, Any]:
    return inspect_dataset(path, edit=edit, control_text_encoder_size=vl_size).model_dump(mode="json")


def _vl_size(params: Any) -> str | None:
    """The form's --control_text_encoder_size, read from its values (None when the page sends none)."""
    if not isinstance(params, dict):
        return None
    return lenient_config(params).control_text_encoder_size


@bp.post("/inspect")
def inspect() -> Response:
    """What `dataset inspect` says about a TOML (relative paths from the workspace); with the form's
    values (`params`), edit text caches made at another --control_text_encoder_size are listed as outdated."""
    body = json_body()
    raw = body.get("path")
    if not isinstance(raw, str) or not raw.strip():
        refuse(400, Message("dataset.no_path"))
    path = user_path(studio().workspace, raw.strip(), "path")
    try:
        edit = bool(body.get("edit"))
        report = _report(path, edit, _vl_size(body.get("params")) if edit else None)
        return jsonify(path=str(path), report=report)
    except DatasetError as exc:
        return _error("dataset_invalid", str(exc), list(getattr(exc, "problems", [str(exc)])))


def _size(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return list(value)
    refuse(400, Message("dataset.bad_resolution"))


def _count(value: Any, name: str) -> int:
    if value in (None, ""):
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    refuse(400, Message("dataset.bad_count", {"name": name}))


@bp.post("/create")
def create() -> Response:
    """Write WORKSPACE/datasets/<name>.toml from a folder of images; an existing file is never replaced."""
    body = json_body()
    state = studio()
    name = check_name(body.get("name"))
    folder = (state.workspace / DATASETS_DIR).resolve()
    target = (folder / f"{name}.toml").resolve()
    if target.parent != folder or not inside(target, state.workspace):
        refuse(400, Message("dataset.plain_name"))
    if target.exists():
        return _taken(name, target)
    images = body.get("image_directory")
    if not isinstance(images, str) or not images.strip():
        return _said("dataset_invalid", Message("dataset.no_images"), [Message("dataset.images_required")])
    table: dict[str, Any] = {
        "image_directory": str(user_path(state.workspace, images.strip(), "image_directory")),
        "cache_directory": str(folder / f"{name}_cache"),
    }
    control = body.get("control_directory")
    if isinstance(control, str) and control.strip():
        table["control_directory"] = str(user_path(state.workspace, control.strip(), "control_directory"))
    general = {
        "resolution": _size(body.get("resolution", 1024)),
        "caption_extension": ".txt",
        "batch_size": _count(body.get("batch_size"), "batch_size"),
        "num_repeats": _count(body.get("num_repeats"), "num_repeats"),
        "enable_bucket": True,
    }
    try:
        config = parse_dataset_config({"general": general, "datasets": [table]}, path=target)
        write_dataset_config(config, target)
    except DatasetConfigError as exc:
        return _error("dataset_invalid", str(exc), exc.problems)
    return jsonify(path=str(target), report=_report(target, "control_directory" in table))
