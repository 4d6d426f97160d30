"""Small helpers shared by the API views."""

from __future__ import annotations

from typing import Any

from flask import abort, request

from ..params.validate import Problem


def json_body() -> dict[str, Any]:
    """The request's JSON object (400 when the body is not one)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="the request body must be a JSON object")
    return body


def params_from(body: dict[str, Any]) -> dict[str, Any]:
    """The `params` object of a request body (400 when missing or not an object)."""
    params = body.get("params")
    if not isinstance(params, dict):
        abort(400, description="'params' must be an object of parameter values")
    return params


def problem_list(problems: list[Problem]) -> list[dict[str, str]]:
    """Problems as JSON objects."""
    return [{"field": p.field, "message": p.message} for p in problems]
