"""The JSON Schema the web form is generated from, with our UI metadata under ``x-*`` keys."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from functools import cache
from typing import Any

from .fields import all_fields, flag_to_field
from .schema import StudioConfig
from .spec import GROUPS, Stage
from .validate import Message, allowed_message, problems_of


@cache
def form_schema() -> dict[str, Any]:
    """StudioConfig's JSON Schema plus, per property, its flag, group, order and allowed-values text.

    ``x-allowed`` is the English text; ``x-allowed-i18n`` the same as a message ({"key", "vars"}) that
    the page renders in its language (absent where the text is only values, e.g. a list of choices).
    ``x-needs`` on a switch names the switch it needs (see `switch_needs`).
    """
    schema = StudioConfig.model_json_schema()
    needs = switch_needs()
    for order, (name, spec) in enumerate(all_fields().items()):
        prop = schema["properties"][name]
        prop["x-flag"] = spec.flag
        prop["x-order"] = order
        prop["x-kind"] = spec.kind
        if name in needs:
            prop["x-needs"] = needs[name]
        allowed = spec.allowed()
        if allowed:
            prop["x-allowed"] = allowed
            message = allowed_message(spec)
            if isinstance(message, Message):
                prop["x-allowed-i18n"] = message.as_json()
    schema["x-groups"] = list(GROUPS)
    return schema


@cache
def switch_needs() -> dict[str, str]:
    """Switches that need another switch on ({"fp8_scaled": "fp8_base"}), as the schema's rules say.

    Found by asking the schema itself rather than listed: each switch is turned on with every other one
    off, and a rule answering "--A needs --B" (B a switch) makes the pair. The form uses it to turn B on
    with A and A off with B; the server still judges the values.
    """
    fields = all_fields()
    switches = [name for name, spec in fields.items() if spec.kind == "bool"]
    by_flag = flag_to_field()
    out: dict[str, str] = {}
    for name in switches:
        values = {other: other == name for other in switches}
        for problem in problems_of(values):
            msg = problem.i18n
            if not isinstance(msg, Message) or msg.key != "rule.needs":
                continue
            flag, other = (str(msg.vars.get(k, "")).removeprefix("--") for k in ("flag", "other"))
            needed = by_flag.get(other)
            if by_flag.get(flag) == name and needed in switches:
                out[name] = needed
    return out


def for_stages(schema: dict[str, Any], stages: Iterable[Stage]) -> dict[str, Any]:
    """A copy of a form schema for a UI that launches only `stages` (``x-ui-stages``).

    A property none of whose stages (``x-stages``) is among them gets ``"x-hidden": true``: the form shows
    no input for it but keeps its value, so saved configurations, imports and exports carry it unchanged.
    """
    names = [Stage(s).value for s in stages]
    out = copy.deepcopy(schema)
    out["x-ui-stages"] = names
    for prop in out["properties"].values():
        if not set(prop.get("x-stages", ())) & set(names):
            prop["x-hidden"] = True
    return out
