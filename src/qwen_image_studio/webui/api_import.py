"""Import images (loose files or zips) into a new dataset of the workspace: ``POST /api/datasets/import``.

The multipart upload (fields ``files``, one or more, ``name`` and optionally ``resolution``) is streamed
into temporary files inside the workspace (``.tmp/uploads``, removed when the request ends); this route
alone takes up to :data:`MAX_UPLOAD_BYTES` (the app's other requests stay at 2 MiB). The dataset is written
to ``WORKSPACE/datasets/<name>/`` by :func:`~..data.dataset_import.import_dataset`: never over an existing
one, never half-made. Every refusal is a 4xx answer worded in the request's language.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO, Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import parse_form_data

from ..data.dataset_import import (
    ImportLimits,
    ImportRefused,
    Upload,
    check_dataset_name,
    import_dataset,
    parse_resolution,
)
from ..params.validate import Message
from .app import studio
from .i18n import render, request_language
from .security import upload_endpoint
from .views_util import refuse, texts

bp = Blueprint("api_import", __name__, url_prefix="/api/datasets")

DATASETS_DIR = "datasets"  # the dataset panel writes its TOML files here too
UPLOADS_DIR = "uploads"
MAX_UPLOAD_BYTES = 4 * 2**30
MAX_UPLOAD_TEXT = "4 GiB"
LIMITS = ImportLimits()
MAX_FIELD_BYTES = 64 * 1024  # the name and the resolution


def _stream_factory(folder: Path) -> Any:
    def factory(
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed when the request ends

    return factory


def _refused(exc: ImportRefused) -> Response:
    values: dict[str, Any] = dict(exc.values)
    if "kind" in values:  # "target" / "control", worded in the message's language
        values["kind"] = Message(f"import.kind_{values['kind']}")
    msg = Message(exc.key, values)
    response = jsonify(**texts(str(msg), msg, "error"), code=exc.key.removeprefix("import."))
    response.status_code = exc.status
    return response


@bp.post("/import")
@upload_endpoint
def import_images() -> Response:
    """Import the uploaded images, captions and zips into a new dataset folder with its dataset TOML."""
    state = studio()
    uploads_dir = state.scratch / UPLOADS_DIR
    uploads_dir.mkdir(parents=True, exist_ok=True)
    try:
        _, form, files = parse_form_data(
            request.environ,
            stream_factory=_stream_factory(uploads_dir),
            max_form_memory_size=MAX_FIELD_BYTES,
            max_content_length=MAX_UPLOAD_BYTES,
            max_form_parts=LIMITS.max_files + 16,
        )
    except RequestEntityTooLarge:
        refuse(413, Message("import.upload_too_large", {"max": MAX_UPLOAD_TEXT}))
    given = [f for f in files.getlist("files") if f.filename]
    try:
        try:
            name = check_dataset_name(form.get("name"))
            resolution = parse_resolution(form.get("resolution"))
            uploads = [Upload(f.filename or "", f.stream) for f in given]
            result = import_dataset(state.workspace / DATASETS_DIR, name, uploads, resolution, LIMITS)
        except ImportRefused as exc:
            return _refused(exc)
    finally:
        for f in files.values():
            f.close()
    lang = request_language()
    summary = Message(
        "import.done_edit" if result.controls else "import.done",
        {
            "count": len(result.images),
            "folder": result.folder,
            "toml": result.toml,
            "controls": len(result.controls),
        },
    )
    skipped = []
    for s in result.skipped:
        reason = Message(s.key, s.values)
        skipped.append({"file": s.file, **texts(render(reason, lang), reason, "reason", lang)})
    return jsonify(
        **texts(render(summary, lang), summary, "message", lang),
        name=result.name,
        folder=str(result.folder),
        toml=str(result.toml),
        images=len(result.images),
        controls=len(result.controls),
        captions=result.captions,
        edit=result.edit,
        resolution=list(result.resolution),
        skipped=skipped,
        missing_controls=[p.name for p in result.missing_controls],
    )
