"""The parameter schema for the form, and server-side validation of the form's values."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, abort, jsonify

from ..params.fields import all_fields
from ..params.json_schema import for_stages, form_schema
from ..params.schema import EDIT_VERSIONS, StudioConfig
from ..params.spec import Stage
from ..params.validate import Problem, lenient_config, problems_of, recommendation_warnings, stage_problems
from .app import studio
from .jobs.commands import PREVIEW_IMAGES
from .jobs.schema import JOB_KINDS, UI_STAGES
from .paths import resolve_params
from .views_util import json_body, params_from, problem_list
from .write_check import write_problems

bp = Blueprint("api_schema", __name__, url_prefix="/api")

MODE_FIELD = "model_version"  # the parameter the form's edit-mode switch sets
# Parameters the page's panels read or set, by role (the page itself names no parameter).
ROLES = {
    "dataset": "dataset_config",
    "logdir": "logging_dir",
    "seed": "seed",  # the Generate tab's random seed and batch count
    "lora_list": "lora_weight",  # the Generate tab's "add a LoRA from a finished job"
    "lora_strengths": "lora_multiplier",
    "grid_columns": "grid_loras",  # the Generate tab's "add to the compare grid"
}


@cache
def ui_schema() -> dict[str, Any]:
    """The form schema for the stages this UI launches (parameters of no such stage are hidden), plus what
    the edit-mode switch needs (its field and which values mean edit)."""
    schema = for_stages(form_schema(), UI_STAGES)
    schema["x-edit-switch"] = {
        "field": MODE_FIELD,
        "edit-values": list(EDIT_VERSIONS),
        "off-value": StudioConfig.model_fields[MODE_FIELD].default,
    }
    schema["x-roles"] = dict(ROLES)
    schema["x-job-kinds"] = {kind: [s.value for s in stages] for kind, stages in JOB_KINDS.items()}
    schema["x-caption-preview"] = PREVIEW_IMAGES  # how many images the Dataset tab's caption preview takes
    return schema


def stages_of(value: Any) -> list[Stage]:
    """Stages named by a request (a name, a list of names, or nothing); 400 on an unknown name."""
    names = [] if value in (None, "") else [value] if isinstance(value, str) else value
    if not isinstance(names, list):
        abort(400, description="'stage' must be a stage name or a list of them")
    try:
        return [Stage(name) for name in names]
    except ValueError:
        abort(400, description=f"unknown stage in {names!r}; stages: {', '.join(s.value for s in Stage)}")


def check_stages(params: dict[str, Any], value_problems: list[Problem], stages: list[Stage]) -> list[Problem]:
    """What the stages need that the values lack, judged on the fields that are valid on their own."""
    bad = {p.field for p in value_problems}
    known = all_fields()
    values = {k: v for k, v in params.items() if k in known and k not in bad}
    config = StudioConfig.model_construct(**values)
    seen: dict[tuple[str, str], Problem] = {}
    for stage in stages:
        for problem in stage_problems(config, stage):
            seen.setdefault((problem.field, problem.message), problem)
    return list(seen.values())


@bp.get("/schema")
def schema() -> Response:
    """The JSON Schema the form is built from."""
    return jsonify(ui_schema())


@bp.post("/validate")
def validate() -> Response:
    """Problems of the form's values, with `stage` also what those stages still need, and the values
    that are accepted but lie outside their recommended range (`warnings`)."""
    body = json_body()
    params = params_from(body)
    stages = stages_of(body.get("stage"))
    problems = problems_of(params)
    state = studio()
    resolved = resolve_params(params, state.workspace)
    needs = check_stages(resolved, problems, stages) if stages else []
    if stages and not problems:
        needs += write_problems(StudioConfig.model_construct(**resolved), tuple(stages), state.roots)
    warnings = recommendation_warnings(lenient_config(params))  # accepted values, said all the same
    return jsonify(
        ok=not problems and not needs,
        problems=problem_list(problems),
        stage_problems=problem_list(needs),
        warnings=problem_list(warnings),
    )
