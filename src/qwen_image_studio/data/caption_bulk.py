"""Bulk caption actions: add a trigger word before or after, find and replace, strip a phrase.

Each action is a pure function of one caption; :func:`parse_action` checks what a request asked for and
raises ConfigError with one line naming the field and what is allowed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qwen_image_studio.errors import ConfigError

OPS = ("prepend", "append", "replace", "strip")
MAX_TEXT = 1000


@dataclass(frozen=True)
class BulkAction:
    """One bulk action: ``op`` and its text (``find``/``replace`` for replace)."""

    op: str
    text: str = ""
    find: str = ""
    replace: str = ""
    separator: str = ", "
    case_sensitive: bool = True

    @property
    def label(self) -> str:
        """A short description for the history, e.g. ``prepend 'sks'``."""
        if self.op == "replace":
            return f"replace {self.find!r} with {self.replace!r}"
        return f"{self.op} {self.text!r}"

    def apply(self, caption: str) -> str:
        """The caption after this action (unchanged when it does not apply)."""
        if self.op == "prepend":
            if caption == self.text or caption.startswith(self.text + self.separator.rstrip()):
                return caption
            return self.text if not caption else f"{self.text}{self.separator}{caption}"
        if self.op == "append":
            if caption == self.text or caption.endswith(self.separator.lstrip() + self.text):
                return caption
            return self.text if not caption else f"{caption}{self.separator}{self.text}"
        if self.op == "replace":
            return self._sub(self.find, self.replace, caption)
        return tidy(self._sub(self.text, "", caption)) if self._has(self.text, caption) else caption

    def _has(self, needle: str, caption: str) -> bool:
        return needle in caption if self.case_sensitive else needle.lower() in caption.lower()

    def _sub(self, needle: str, new: str, caption: str) -> str:
        if self.case_sensitive:
            return caption.replace(needle, new)
        return re.sub(re.escape(needle), lambda _: new, caption, flags=re.IGNORECASE)


def tidy(caption: str) -> str:
    """A caption with what removing a phrase leaves cleaned up: doubled spaces and commas, edge commas."""
    text = re.sub(r"[ \t]+", " ", caption)
    text = re.sub(r"\s+([,.;])", r"\1", text)
    text = re.sub(r"([,;])(\s*[,;])+", r"\1", text)
    return text.strip(" ,;\t\n")


def _text(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ConfigError(f"action.{name}: must be a text of at most {MAX_TEXT} characters")
    if required and not value.strip():
        raise ConfigError(f"action.{name}: must not be empty")
    return value.strip() if name in ("text", "find") else value


def parse_action(body: Any) -> BulkAction:
    """The bulk action a request describes; ConfigError naming the field when it is not valid."""
    if not isinstance(body, dict):
        raise ConfigError(f"action: must be an object with op (one of {', '.join(OPS)})")
    op = body.get("op")
    if op not in OPS:
        raise ConfigError(f"action.op: must be one of {', '.join(OPS)} (got {op!r})")
    separator = body.get("separator", ", ")
    if not isinstance(separator, str) or len(separator) > 10:
        raise ConfigError("action.separator: must be a text of at most 10 characters")
    case = body.get("case_sensitive", True)
    if not isinstance(case, bool):
        raise ConfigError("action.case_sensitive: must be true or false")
    if op == "replace":
        return BulkAction(
            op, find=_text(body, "find"), replace=_text(body, "replace", False), case_sensitive=case
        )
    return BulkAction(op, text=_text(body, "text"), separator=separator, case_sensitive=case)
