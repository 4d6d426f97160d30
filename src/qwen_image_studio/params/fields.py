"""Introspection of the schema: field metadata, allowed values, and which fields each stage uses."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import annotated_types as at
from pydantic.fields import FieldInfo

from .schema import StudioConfig
from .spec import ParamMeta, Stage, meta_of


@dataclass(frozen=True)
class FieldSpec:
    """One parameter as the derived artefacts (parser, form, argv, docs) need it."""

    name: str
    meta: ParamMeta
    info: FieldInfo
    kind: str  # "bool", "int", "float", "str", "list", "choice"
    choices: tuple[str, ...]
    optional: bool

    @property
    def flag(self) -> str:
        """The CLI flag with its dashes."""
        return "--" + self.meta.flag

    @property
    def default(self) -> Any:
        """The schema default."""
        return self.info.get_default(call_default_factory=True)

    def bounds(self) -> tuple[Any, Any, bool, bool]:
        """(low, high, low_inclusive, high_inclusive); None where unbounded."""
        low = high = None
        low_inc = high_inc = True
        for m in self.info.metadata:
            if isinstance(m, at.Ge):
                low = m.ge
            elif isinstance(m, at.Gt):
                low, low_inc = m.gt, False
            elif isinstance(m, at.Le):
                high = m.le
            elif isinstance(m, at.Lt):
                high, high_inc = m.lt, False
        return low, high, low_inc, high_inc

    def allowed(self) -> str:
        """Human text of the allowed values: a range, a list of choices, or ''."""
        if self.choices:
            text = ", ".join(self.choices)
            return text + " or a module.Class path" if self.name == "optimizer_type" else text
        low, high, low_inc, high_inc = self.bounds()
        if low is None and high is None:
            return ""
        lo = "" if low is None else f"{'' if low_inc else 'above '}{_num(low)}"
        hi = "" if high is None else f"{'' if high_inc else 'below '}{_num(high)}"
        if lo and hi:
            return f"{lo} to {hi}"
        if lo:
            return lo if not low_inc else f"at least {lo}"
        return hi if not high_inc else f"at most {hi}"

    def recommended(self) -> str:
        """Human text of the recommended range ('' when the parameter declares none)."""
        rec = self.meta.recommended
        return f"{_num(rec[0])} to {_num(rec[1])}" if rec else ""


def _num(value: float) -> str:
    """A bound as people write it: 10000000, 1.0, 1e-06."""
    return str(value) if isinstance(value, int) else f"{value:g}" if abs(value) < 1e-3 else repr(value)


def _kind(annotation: Any) -> tuple[str, tuple[str, ...], bool]:
    """Classify a field annotation: (kind, choices, optional)."""
    optional = False
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        non_none = [a for a in args if a is not type(None)]
        optional = len(non_none) < len(args)
        annotation = non_none[0]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Literal:
        return "choice", tuple(str(a) for a in args), optional
    if typing.get_origin(annotation) is list:
        return "list", (), optional
    return {bool: "bool", int: "int", float: "float"}.get(annotation, "str"), (), optional


@cache
def all_fields() -> dict[str, FieldSpec]:
    """Every parameter of the schema, in declaration order."""
    out: dict[str, FieldSpec] = {}
    for name, info in StudioConfig.model_fields.items():
        kind, choices, optional = _kind(info.annotation)
        meta = meta_of(info, name)
        out[name] = FieldSpec(name, meta, info, kind, choices or meta.choices, optional)
    return out


def fields_for(stage: Stage) -> list[FieldSpec]:
    """The parameters a stage's command accepts."""
    return [f for f in all_fields().values() if stage in f.meta.stages]


@cache
def flag_to_field() -> dict[str, str]:
    """Map every accepted flag name (without dashes) and config alias to its field name."""
    out: dict[str, str] = {}
    for f in all_fields().values():
        out[f.meta.flag] = f.name
        out[f.name] = f.name
        for alias in f.meta.aliases:
            out[alias] = f.name
    return out
