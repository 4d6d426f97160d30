"""The JSON Schema the web form is generated from, with our UI metadata under ``x-*`` keys."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from typing import Any

from .fields import _num, all_fields
from .schema import StudioConfig
from .spec import GROUPS, Stage
from .validate import Message, allowed_message


@cache
def form_schema() -> dict[str, Any]:
    """StudioConfig's JSON Schema plus, per property, its flag, group, order and allowed-values text.

    ``x-allowed`` is the English text; ``x-allowed-i18n`` the same as a message ({"key", "vars"}) that
    the page renders in its language (absent where the text is only values, e.g. a list of choices).
    ``x-needs`` on a switch names the switch it needs (its `needs=` declaration, as `switch_needs` gives).
    """
    schema = StudioConfig.model_json_schema()
    for order, (name, spec) in enumerate(all_fields().items()):
        prop = schema["properties"][name]
        prop["x-flag"] = spec.flag
        prop["x-order"] = order
        prop["x-kind"] = spec.kind
        if spec.meta.recommended:  # the range in the page's language, numbers written as the CLI writes them
            low, high = (_num(v) for v in spec.meta.recommended)
            prop["x-recommended-i18n"] = Message("allowed.range", {"low": low, "high": high}).as_json()
        allowed = spec.allowed()
        if allowed:
            prop["x-allowed"] = allowed
            message = allowed_message(spec)
            if isinstance(message, Message):
                prop["x-allowed-i18n"] = message.as_json()
    schema["x-groups"] = list(GROUPS)
    return schema


def for_stages(schema: dict[str, Any], stages: Iterable[Stage]) -> dict[str, Any]:
    """A copy of a form schema for a UI that launches only `stages` (``x-ui-stages``).

    A property none of whose stages (``x-stages``) is among them, or one declared ``cli_only``, gets
    ``"x-hidden": true``: the form shows no input for it but keeps its value, so saved configurations,
    imports and exports carry it unchanged.
    """
    names = [Stage(s).value for s in stages]
    out = copy.deepcopy(schema)
    out["x-ui-stages"] = names
    for prop in out["properties"].values():
        if prop.get("x-cli-only") or not set(prop.get("x-stages", ())) & set(names):
            prop["x-hidden"] = True
    return out
