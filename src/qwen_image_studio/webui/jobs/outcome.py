"""How a stage ended, in terms a user can act on: done, failed (why, which field), stopped or lost."""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...events import read_events
from ...params.fields import flag_to_field
from .logtail import display_text
from .schema import DONE, FAILED, LOST, STOPPED

TAIL_LINES = 20
EXIT_USER_ERROR, EXIT_NOT_AVAILABLE, EXIT_OOM = 2, 3, 4
_FLAG = re.compile(r"--([A-Za-z0-9_]+)")


@dataclass
class Outcome:
    """The end of one stage run."""

    status: str
    exit_code: int | None = None
    reason: str | None = None
    field: str | None = None
    log_tail: str | None = None


def field_of(reason: str) -> str | None:
    """The parameter a message is about, from the first flag it names (`--vae: not found: ...`)."""
    match = _FLAG.search(reason)
    return flag_to_field().get(match.group(1)) if match else None


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
        return Outcome(STOPPED, code, "stopped by the user")
    if code is None:
        return Outcome(
            LOST,
            None,
            "the process ended while the web UI was not running and left no result",
            log_tail=log_tail(log_file),
        )
    reason = event.get("reason") if event and event.get("type") == "failed" else None
    if not reason:
        reason = f"killed by {_signal_name(code)}" if code < 0 else f"exited with code {code}"
    field = field_of(reason) if code in (EXIT_USER_ERROR, EXIT_NOT_AVAILABLE) else None
    return Outcome(FAILED, code, str(reason), field, log_tail(log_file))
