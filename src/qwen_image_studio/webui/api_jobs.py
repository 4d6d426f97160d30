"""Jobs over HTTP: start (validated first), list, details, stop, the full log, LoRA files and sample images."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, jsonify, request, send_file
from werkzeug.exceptions import NotFound

from ..params.spec import Stage
from ..params.validate import Message
from .api_lora import send_lora
from .app import studio
from .gpu import job_gpu_peak
from .jobs.artifacts import artifacts, captions_of, find_artifact, output_dir_of
from .jobs.commands import NotReady, job_config, preflight
from .jobs.schema import JOB_KINDS
from .paths import resolve_config
from .store import check_name
from .views_util import json_body, params_from, refuse, texts
from .write_check import write_problems

bp = Blueprint("api_jobs", __name__, url_prefix="/api/jobs")

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def _details(job_id: int) -> dict[str, object]:
    state = studio()
    job = state.jobs.get(job_id)
    _, events = state.supervisor.paths(job_id)
    root = output_dir_of(job, state.workspace)
    return {
        **job.as_json(with_params=True),
        "output_folder": str(root) if root else None,
        "files": [a.as_json() for a in artifacts(job, events, state.workspace)],
        **captions_of(events),
        **job_gpu_peak(events),
    }


@bp.post("")
def start_job() -> Response:
    """Queue a stage or the full pipeline with the form's values (400 with the fields to fix)."""
    body = json_body()
    kind = body.get("kind")
    if not isinstance(kind, str) or kind not in JOB_KINDS:
        abort(400, description=f"'kind' must be one of {', '.join(JOB_KINDS)}")
    name = body.get("config_name")
    if name is not None and not isinstance(name, str):
        abort(400, description="'config_name' must be a configuration name (text) or null")
    state = studio()
    config = job_config(kind, resolve_config(params_from(body), state.workspace), state.workspace)
    problems = preflight(config, JOB_KINDS[kind]) + write_problems(config, JOB_KINDS[kind], state.roots)
    if problems:  # each problem once, though two checks may find it
        raise NotReady(list({(p.field, p.message): p for p in problems}.values()))
    job = state.supervisor.submit(kind, config, check_name(name) if name else None)
    if Stage.TRAIN in JOB_KINDS[kind] and config.logging_dir:  # TensorBoard follows the run's logging folder
        state.point_tensorboard(Path(config.logging_dir))
    return jsonify(job=job.as_json())


@bp.get("")
def list_jobs() -> Response:
    """The recent jobs, newest first."""
    return jsonify(jobs=[j.as_json() for j in studio().jobs.recent()])


@bp.get("/<int:job_id>")
def job_details(job_id: int) -> Response:
    """One job: its stages, configuration snapshot and the files it wrote."""
    return jsonify(job=_details(job_id))


@bp.post("/<int:job_id>/stop")
def stop_job(job_id: int) -> Response:
    """Stop a queued or running job (the whole process tree of its running stage)."""
    return jsonify(job=studio().supervisor.stop(job_id).as_json())


@bp.get("/<int:job_id>/log")
def job_log(job_id: int) -> Response:
    """The job's whole log file, as a download."""
    state = studio()
    state.jobs.get(job_id)
    log_file, _ = state.supervisor.paths(job_id)
    if not log_file.is_file():
        abort(404, description="this job has no log yet")
    return send_file(
        log_file,
        mimetype="text/plain; charset=utf-8",
        as_attachment=True,
        download_name=f"job-{job_id}.log",
        max_age=0,
    )


def _artifact_file(job_id: int, name: str, kind: str) -> tuple[object, str]:
    state = studio()
    job = state.jobs.get(job_id)
    _, events = state.supervisor.paths(job_id)
    found = find_artifact(job, events, state.workspace, name, kind)
    if found is None:
        abort(404, description="no such file among this job's outputs")
    return found.path, found.path.name


@bp.get("/<int:job_id>/files/<path:name>")
def job_file(job_id: int, name: str) -> Response:
    """Download a LoRA file the job wrote (only announced files inside its output folder); with
    ``?form=comfyui`` or ``?form=diffusers`` in that key form (see ``api_lora``)."""
    path, filename = _artifact_file(job_id, name, "checkpoint")
    if "form" in request.args:
        return send_lora(path, request.args["form"])  # type: ignore[arg-type]
    return send_file(
        path, mimetype="application/octet-stream", as_attachment=True, download_name=filename, max_age=0
    )


@bp.post("/generate/release")
def release_generation() -> Response:
    """End the generation worker now (frees its GPU memory); refused while it runs a job."""
    worker = studio().supervisor.worker
    released = worker.release_if_idle() if worker is not None else False
    if released is None:
        refuse(409, Message("generate.busy"))
    msg = Message("generate.released" if released else "generate.not_loaded")
    return jsonify(**texts(str(msg), msg, "message"), released=released)


@bp.get("/<int:job_id>/samples/<path:name>")
def job_sample(job_id: int, name: str) -> Response:
    """A sample image the job wrote (only announced images inside its output folder)."""
    try:
        path, filename = _artifact_file(job_id, name, "sample")
    except NotFound:  # a generation job's images and compare grids
        try:
            path, filename = _artifact_file(job_id, name, "image")
        except NotFound:
            path, filename = _artifact_file(job_id, name, "grid")
    mimetype = IMAGE_TYPES.get("." + filename.rsplit(".", 1)[-1].lower())
    if mimetype is None:
        abort(404, description="not an image")
    return send_file(path, mimetype=mimetype, max_age=0)
