"""How a stage ended, in terms a user can act on: done, failed (why, which field), stopped or lost.

Each reason is a message (`Outcome.i18n`, rendered in the page's language) and its English text
(`Outcome.reason`, kept in the job's record and log). A stage reports its failure in its `failed` event
as both: ``reason`` (English) and ``reason_i18n`` (the message's key and values), with ``field`` for the
parameter it concerns; the page renders the message and never reads meaning from the text. An event
without ``reason_i18n`` (from an older version) is shown as its text.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...events import read_events
from ...params.validate import Message
from ..i18n import TABLE
from .logtail import display_text
from .schema import DONE, FAILED, LOST, STOPPED

TAIL_LINES = 20
EXIT_USER_ERROR, EXIT_NOT_AVAILABLE, EXIT_OOM = 2, 3, 4


@dataclass
class Outcome:
    """The end of one stage run: `reason` in English and, when known, as a message (`i18n`)."""

    status: str
    exit_code: int | None = None
    reason: str | None = None
    field: str | None = None
    log_tail: str | None = None
    i18n: Message | None = None

    @classmethod
    def said(
        cls,
        status: str,
        exit_code: int | None,
        msg: Message,
        field: str | None = None,
        log_tail: str | None = None,
    ) -> Outcome:
        """An outcome whose reason is a message (the English text is rendered from it)."""
        return cls(status, exit_code, english(msg), field, log_tail, msg)


def english(msg: Message) -> str:
    """A message as the job's record and log keep it."""
    return msg.render(TABLE["en"])


def final_event(events_file: Path, stage: str) -> dict[str, Any] | None:
    """The last `finished` or `failed` event a stage wrote, if any."""
    finals = [
        e
        for e in read_events(events_file)[0]
        if e.get("stage") == stage and e.get("type") in ("finished", "failed")
    ]
    return finals[-1] if finals else None


def exit_code_of(event: dict[str, Any] | None) -> int | None:
    """The exit code a final event implies (None when there is no final event)."""
    if event is None:
        return None
    if event.get("type") == "finished":
        return 0
    code = event.get("exit_code")
    return int(code) if isinstance(code, int) else 1


def log_tail(log_file: Path, lines: int = TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    """The last lines of a log file as they read on screen."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except FileNotFoundError:
        return ""
    return "\n".join(display_text(raw) for raw in data.splitlines()[-lines:])


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def outcome_of(
    code: int | None, event: dict[str, Any] | None, stop_requested: bool, log_file: Path
) -> Outcome:
    """Classify a stage's end from its exit code (None: unknown), its final event and whether it was stopped."""
    if code == 0:
        return Outcome(DONE, 0)
    if stop_requested:
        return Outcome.said(STOPPED, code, Message("reason.stopped"))
    if code is None:
        return Outcome.said(LOST, None, Message("reason.lost"), log_tail=log_tail(log_file))
    failed = event if event and event.get("type") == "failed" else {}
    reason = str(failed.get("reason") or "")
    msg: Message | None
    if reason:
        msg = Message.from_json(failed.get("reason_i18n"))  # None: an older event, shown as its text
    else:
        msg = (
            Message("reason.killed", {"signal": _signal_name(code)})
            if code < 0
            else Message("reason.exited", {"code": code})
        )
        reason = english(msg)
    named = failed.get("field")
    field = named if isinstance(named, str) and code in (EXIT_USER_ERROR, EXIT_NOT_AVAILABLE) else None
    return Outcome(FAILED, code, reason, field, log_tail(log_file), msg)
