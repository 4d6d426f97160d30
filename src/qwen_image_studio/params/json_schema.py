"""The JSON Schema the web form is generated from, with our UI metadata under ``x-*`` keys."""

from __future__ import annotations

from functools import cache
from typing import Any

from .fields import all_fields
from .schema import StudioConfig
from .spec import GROUPS


@cache
def form_schema() -> dict[str, Any]:
    """StudioConfig's JSON Schema plus, per property, its flag, group, order and allowed-values text."""
    schema = StudioConfig.model_json_schema()
    for order, (name, spec) in enumerate(all_fields().items()):
        prop = schema["properties"][name]
        prop["x-flag"] = spec.flag
        prop["x-order"] = order
        prop["x-kind"] = spec.kind
        allowed = spec.allowed()
        if allowed:
            prop["x-allowed"] = allowed
    schema["x-groups"] = list(GROUPS)
    return schema
