"""LoRA details over HTTP: a file's facts (``GET /api/lora/info``) and downloads in both key forms.

Which files are read: a LoRA a job announced (``?job=ID&name=NAME``, only inside that job's output folder,
as ``/api/jobs/<id>/files/<name>`` serves it), or ``?path=`` — a ``.safetensors`` file inside the workspace
or a folder allowed with ``--allow_dir`` (a relative path is taken from the workspace); nothing else.

Downloads: ``form=comfyui`` (the ``lora_unet_`` file that ComfyUI, kohya tools and diffusers read) and
``form=diffusers`` (PEFT keys, alpha folded in). A file already in the asked form is sent as it is; the
other form is converted by ``qwen-image-studio lora convert`` in a child process (the web UI imports no
torch) and kept in ``WORKSPACE/.tmp/lora-forms/`` (the most recent few), keyed by the source file's path,
size and modification time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from flask import Blueprint, Response, jsonify, request, send_file

from ..errors import ModelFileError
from ..models.lora_info import DOWNLOAD_FORMS, lora_info
from ..params.validate import Message
from .app import studio
from .demo_setup import child_env
from .jobs.artifacts import find_artifact
from .paths import user_path
from .views_util import refuse

bp = Blueprint("api_lora", __name__, url_prefix="/api/lora")

FORMS_DIR = "lora-forms"
FORMS_KEPT = 8
CONVERT_TIMEOUT_S = 600
_LOCK = threading.Lock()


def _checked_form(raw: str | None) -> str:
    if raw not in DOWNLOAD_FORMS:
        refuse(400, Message("lora.bad_form", {"value": raw}))
    return raw  # type: ignore[return-value]


def job_lora(job_id: int, name: str) -> Path:
    """A LoRA file the job announced inside its output folder (404 otherwise)."""
    state = studio()
    job = state.jobs.get(job_id)
    _, events = state.supervisor.paths(job_id)
    found = find_artifact(job, events, state.workspace, name, "checkpoint")
    if found is None:
        refuse(404, Message("lora.no_job_file", {"name": name, "job": job_id}))
    return found.path


def path_lora(raw: str | None) -> Path:
    """A `?path=` LoRA file: a .safetensors file inside the workspace or an allowed folder."""
    state = studio()
    if not raw:
        refuse(400, Message("lora.no_path"))
    path = user_path(state.workspace, raw, "path")
    if path.suffix.lower() != ".safetensors":
        refuse(400, Message("lora.not_safetensors", {"path": path}))
    if not state.roots.permits(path):
        roots = ", ".join(str(r) for r in state.roots.roots)
        refuse(403, Message("lora.not_allowed", {"path": path, "roots": roots}))
    if not path.is_file():
        refuse(404, Message("lora.missing", {"path": path}))
    return path


def _requested() -> tuple[Path, dict[str, str]]:
    """The file a request names and the download URL of each form."""
    args = request.args
    if "job" in args:
        try:
            job_id = int(args["job"])
        except ValueError:
            refuse(400, Message("lora.bad_job", {"value": args["job"]}))
        name = args.get("name", "")
        path = job_lora(job_id, name)
        base = f"/api/jobs/{job_id}/files/{quote(name)}?form="
        return path, {form: base + form for form in DOWNLOAD_FORMS}
    path = path_lora(args.get("path"))
    return path, {form: "/api/lora/file?" + urlencode({"path": str(path), "form": form}) for form in DOWNLOAD_FORMS}


@bp.get("/info")
def info() -> Response:
    """A LoRA file's form, modules, ranks, alphas, dtype, size, targets and training settings."""
    path, downloads = _requested()
    try:
        facts = lora_info(path)
    except ModelFileError as exc:
        refuse(400, Message("lora.bad_file", {"detail": str(exc)}))
    return jsonify(info=facts.as_json(), downloads=downloads)


@bp.get("/file")
def file() -> Response:
    """A `?path=` LoRA file in the `form` asked for (comfyui or diffusers)."""
    return send_lora(path_lora(request.args.get("path")), request.args.get("form"))


def send_lora(source: Path, raw_form: str | None) -> Response:
    """The LoRA file `source` as a download in `form`: itself when it is in that form, else converted."""
    form = _checked_form(raw_form)
    try:
        current = lora_info(source).form
    except ModelFileError as exc:
        refuse(400, Message("lora.bad_file", {"detail": str(exc)}))
    if current in DOWNLOAD_FORMS[form]:
        path, name = source, source.name
    else:
        path, name = converted(source, form), f"{source.stem}_{form}.safetensors"
    return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=name, max_age=0)


def converted(source: Path, form: str) -> Path:
    """The `form` version of `source` in the workspace's cache (written by a child process when missing)."""
    folder = studio().scratch / FORMS_DIR
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{form}".encode()).hexdigest()
    target = folder / f"{key[:20]}_{form}.safetensors"
    with _LOCK:  # one conversion at a time; a second request for the same file waits and reuses it
        if target.is_file():
            os.utime(target)
            return target
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "qwen_image_studio.cli", "lora", "convert", str(source), str(target),
                   "--to", form]  # fmt: skip
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S, env=child_env(),
                start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            detail = f"the conversion took longer than {CONVERT_TIMEOUT_S} s"
            refuse(500, Message("lora.convert_failed", {"form": form, "path": source, "detail": detail}))
        if done.returncode != 0 or not target.is_file():
            lines = [line for line in (done.stderr or "").splitlines() if line.strip()]
            detail = lines[-1].removeprefix("error: ") if lines else f"exit code {done.returncode}"
            refuse(500, Message("lora.convert_failed", {"form": form, "path": source, "detail": detail}))
        _prune(folder)
    return target


def _prune(folder: Path) -> None:
    """Keep the FORMS_KEPT most recently used converted files."""
    files = sorted(folder.glob("*.safetensors"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[FORMS_KEPT:]:
        old.unlink(missing_ok=True)
