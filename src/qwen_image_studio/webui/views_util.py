"""Small helpers shared by the API views."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import abort, request
from werkzeug.exceptions import HTTPException

from ..params.validate import Message, Problem
from .i18n import render, request_language


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
