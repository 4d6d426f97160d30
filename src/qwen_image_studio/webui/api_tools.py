"""Helpers beside the form: the VRAM estimate, GPU presets, and TensorBoard's status and folder."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify

from ..memory.presets import PRESETS
from .app import studio
from .gpu import gpu_status
from .paths import user_path
from .views_util import json_body, params_from
from .vram import vram_for

bp = Blueprint("api_tools", __name__, url_prefix="/api")


@bp.get("/presets")
def presets() -> Response:
    """The GPU-size presets: the memory options each turns on and its estimate at 1024x1024, batch 1."""
    return jsonify(
        presets=[
            {"gpu_gb": p.gpu_gb, "values": p.values, "estimate_gb": round(p.estimate_gb(), 1)}
            for p in PRESETS
        ]
    )


@bp.post("/vram")
def vram() -> Response:
    """The estimated GPU memory of training with the form's values, for the chosen files and this machine."""
    return jsonify(vram_for(params_from(json_body()), studio().workspace, gpu_status()))


@bp.get("/tensorboard")
def tensorboard_status() -> Response:
    """TensorBoard's state, port and folder."""
    return jsonify(studio().tensorboard.status())


@bp.post("/tensorboard")
def tensorboard_folder() -> Response:
    """Point TensorBoard at a logging folder (relative to the workspace when relative)."""
    logdir = json_body().get("logdir")
    if not isinstance(logdir, str) or not logdir.strip():
        abort(400, description="'logdir' must be a folder path")
    state = studio()
    changed = state.point_tensorboard(user_path(state.workspace, logdir.strip(), "logdir"))
    return jsonify(changed=changed, **state.tensorboard.status())
