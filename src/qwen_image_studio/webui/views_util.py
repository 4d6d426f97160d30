"""Small helpers shared by the API views."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import abort, current_app, request
from werkzeug.exceptions import HTTPException

from ..params.validate import Message, Problem
from .i18n import render, request_language

MAX_JSON_DEPTH = 32


def json_depth(value: Any) -> int:
    """How deeply arrays and objects nest in a decoded JSON value (counted level by level, no recursion)."""
    depth, level = 0, [value]
    while True:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return depth
        depth += 1
        level = [c for v in containers for c in (v.values() if isinstance(v, dict) else v)]


def parse_json(text: str | bytes) -> Any:
    """Decoded JSON nested at most MAX_JSON_DEPTH deep (ValueError otherwise, never RecursionError)."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} deep") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} deep")
    return value


def json_body() -> dict[str, Any]:
    """The request's JSON object (400 when the body is not one, or nests too deeply)."""
    data = request.get_data(cache=True)
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and len(data) >= limit:  # a chunked body is cut at the limit, not refused
        abort(413)
    try:
        body = parse_json(data)
    except ValueError as exc:
        abort(400, description=f"the request body must be a JSON object ({exc})")
    if not isinstance(body, dict):
        abort(400, description="the request body must be a JSON object")
    return body


def params_from(body: dict[str, Any]) -> dict[str, Any]:
    """The `params` object of a request body (400 when missing or not an object)."""
    params = body.get("params")
    if not isinstance(params, dict):
        abort(400, description="'params' must be an object of parameter values")
    return params


def refuse(status: int, msg: Message) -> NoReturn:
    """`abort` with a message the answer gives in the request's language (and as `error_i18n`)."""
    try:
        abort(status, description=msg.render())
    except HTTPException as exc:
        exc.i18n = msg  # type: ignore[attr-defined]
        raise


def texts(text: str, msg: Message | None, name: str, lang: str | None = None) -> dict[str, Any]:
    """`{name: text}` for a JSON answer, in the request's language with `{name}_i18n` when structured."""
    if msg is None:
        return {name: text}
    return {name: render(msg, lang), f"{name}_i18n": msg.as_json()}


def problem_list(problems: list[Problem]) -> list[dict[str, Any]]:
    """Problems as JSON objects: field, message (in the request's language) and message_i18n."""
    lang = request_language()
    return [{"field": p.field, **texts(p.message, p.i18n, "message", lang)} for p in problems]
