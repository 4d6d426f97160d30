"""The JSON Schema the web form is generated from, with our UI metadata under ``x-*`` keys."""

from __future__ import annotations

from functools import cache
from typing import Any

from .fields import all_fields
from .schema import StudioConfig
from .spec import GROUPS
from .validate import Message, allowed_message


@cache
def form_schema() -> dict[str, Any]:
    """StudioConfig's JSON Schema plus, per property, its flag, group, order and allowed-values text.

    ``x-allowed`` is the English text; ``x-allowed-i18n`` the same as a message ({"key", "vars"}) that
    the page renders in its language (absent where the text is only values, e.g. a list of choices).
    """
    schema = StudioConfig.model_json_schema()
    for order, (name, spec) in enumerate(all_fields().items()):
        prop = schema["properties"][name]
        prop["x-flag"] = spec.flag
        prop["x-order"] = order
        prop["x-kind"] = spec.kind
        allowed = spec.allowed()
        if allowed:
            prop["x-allowed"] = allowed
            message = allowed_message(spec)
            if isinstance(message, Message):
                prop["x-allowed-i18n"] = message.as_json()
    schema["x-groups"] = list(GROUPS)
    return schema
