"""The app's own state for the page: version, workspace, demo status, startup notices and the live GPUs."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from .. import __version__
from .app import studio
from .gpu import gpu_status
from .i18n import TABLE, render, request_language

bp = Blueprint("api_app", __name__, url_prefix="/api")


@bp.get("/status")
def status() -> Response:
    """What the page shows in its header and notices."""
    state = studio()
    lang = request_language()
    return jsonify(
        version=__version__,
        workspace=str(state.workspace),
        allowed_dirs=[str(d) for d in state.allowed_dirs],
        demo=state.demo.status.as_json(),
        notices=[render(n, lang) for n in state.notices],
        notices_i18n=[n.as_json() for n in state.notices],
        token_required=state.token is not None,
        tensorboard=state.tensorboard.status(),
    )


@bp.get("/gpu")
def gpus() -> Response:
    """The machine's GPUs now (memory used and total, utilisation, temperature), or the "cpu_only" state."""
    return jsonify(gpu_status())


@bp.get("/i18n")
def translations() -> Response:
    """The translation table (zh-CN and en)."""
    return jsonify(TABLE)
