"""Saved configurations (list, save, load, rename, delete, export, import) and derived command lines."""

from __future__ import annotations

import io
import shlex
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request, send_file

from ..params.cli import to_argv
from ..params.schema import StudioConfig
from ..params.spec import STAGE_SCRIPTS
from ..params.validate import Message, validate_config
from .app import studio
from .cmdline import config_from_command
from .configs import config_from_upload, default_name, export_bytes, params_of, save
from .jobs.schema import JOB_KINDS, PIPELINE
from .paths import resolve_config
from .security import upload_endpoint
from .views_util import json_body, params_from, problem_list, refuse

bp = Blueprint("api_config", __name__, url_prefix="/api")


def _flag(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() in ("1", "true", "on", "yes"))


def commands(config: StudioConfig) -> list[dict[str, Any]]:
    """The command line of each pipeline stage for a configuration."""
    out = []
    for stage in JOB_KINDS[PIPELINE]:
        argv = to_argv(config, stage)
        script = STAGE_SCRIPTS[stage]
        out.append(
            {
                "stage": stage.value,
                "script": script,
                "argv": argv,
                "command": shlex.join(["python", script, *argv]),
            }
        )
    return out


@bp.get("/configs")
def list_configs() -> Response:
    """Saved configurations: names and timestamps."""
    return jsonify(configs=[c.summary() for c in studio().store.list_configs()])


@bp.post("/configs")
def save_config() -> Response:
    """Save the form's values under a name (mirrored as `file`, WORKSPACE/configs/NAME.json); invalid values
    or a taken name change nothing."""
    body = json_body()
    config = validate_config(params_from(body))
    state = studio()
    stored = save(state.store, body.get("name"), config, overwrite=_flag(body.get("overwrite")))
    return jsonify(config=stored.summary(), file=state.config_file(stored.name))


@bp.get("/configs/<name>")
def load_config(name: str) -> Response:
    """A saved configuration's values (and its problems when it no longer validates)."""
    stored = studio().store.get_config(name)
    params, problems = params_of(stored)
    return jsonify(**stored.summary(), params=params, problems=problem_list(problems))


@bp.post("/configs/<name>/rename")
def rename_config(name: str) -> Response:
    """Rename a saved configuration."""
    state = studio()
    stored = state.store.rename_config(name, json_body().get("new_name"))
    return jsonify(config=stored.summary(), file=state.config_file(stored.name))


@bp.delete("/configs/<name>")
def delete_config(name: str) -> Response:
    """Delete a saved configuration."""
    studio().store.delete_config(name)
    return jsonify(deleted=name)


@bp.get("/configs/<name>/export")
def export_config(name: str) -> Response:
    """Download a saved configuration as a versioned JSON document."""
    return send_file(
        io.BytesIO(export_bytes(studio().store.get_config(name))),
        mimetype="application/json",
        as_attachment=True,
        download_name=f"{name}.json",
        max_age=0,
    )


@bp.post("/configs/import")
@upload_endpoint
def import_config() -> Response:
    """Save an uploaded JSON document (any version) or `--config_file` TOML; a bad file changes nothing."""
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        refuse(400, Message("config.no_file"))
    state = studio()
    config, saved_name = config_from_upload(upload.read(), upload.filename, state.scratch)
    name = (request.form.get("name") or "").strip() or saved_name or default_name(upload.filename)
    stored = save(state.store, name, config, overwrite=_flag(request.form.get("overwrite")))
    return jsonify(
        config=stored.summary(), params=config.model_dump(mode="json"), file=state.config_file(stored.name)
    )


@bp.post("/config/from-command")
def from_command() -> Response:
    """The values of a pasted reference-trainer command line (not saved)."""
    text = json_body().get("text")
    if not isinstance(text, str):
        abort(400, description="'text' must be the command line as a string")
    stage, config = config_from_command(text)
    return jsonify(stage=stage.value, params=config.model_dump(mode="json"))


@bp.get("/config/defaults")
def defaults() -> Response:
    """The schema's default values."""
    return jsonify(params=StudioConfig().model_dump(mode="json"))


@bp.get("/config/argv")
def argv_of_saved() -> Response:
    """Command lines of a saved configuration (`?name=`) or of the defaults (relative paths resolved)."""
    name = request.args.get("name")
    state = studio()
    if name:
        params, _ = params_of(state.store.get_config(name))
    else:
        params = StudioConfig().model_dump(mode="json")
    return jsonify(commands=commands(resolve_config(params, state.workspace)))


@bp.post("/config/argv")
def argv_of_values() -> Response:
    """Command lines of the form's values, relative paths taken from the workspace (400 when invalid)."""
    return jsonify(commands=commands(resolve_config(params_from(json_body()), studio().workspace)))
