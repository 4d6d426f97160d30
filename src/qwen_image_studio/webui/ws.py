"""The live channel (WebSocket at /ws): job changes for every page, log lines and events of the watched job.

Client -> server (JSON): ``{"type": "watch", "job": ID, "log_after": N, "events_after": M, "tail": T}``
(N: the last log line the page has; M: how many events it has; T: how many log lines it keeps) and
``{"type": "unwatch"}``. Server -> client: ``jobs`` (the recent jobs, on connect), ``job`` (one job
changed), ``log`` (``lines`` as [number, text], optional ``partial`` [number, text] for the unfinished
last line, ``skipped`` [first, last] for lines left out beyond T, ``synced`` once caught up), ``events``
([number, event] pairs) and ``error``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint
from flask_sock import Sock

from .app import studio
from .jobs.hub import DEFAULT_TAIL, Hub, Subscriber
from .views_util import parse_json

log = logging.getLogger(__name__)
bp = Blueprint("ws", __name__)
sock = Sock()
SEND_WAIT_S = 0.1


MAX_JOB_ID = 2**63 - 1
MAX_MESSAGE_CHARS = 64 * 1024


def _count(message: dict[str, Any], key: str, default: int, upto: int = MAX_JOB_ID) -> int:
    """A whole number field of a message, 0 to `upto` (ValueError naming the field otherwise)."""
    value = message.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(key)
    try:
        number = int(value)
    except (ValueError, OverflowError):
        raise ValueError(key) from None
    if (isinstance(value, float) and number != value) or not 0 <= number <= upto:
        raise ValueError(key)
    return number


def _handle(hub: Hub, sub: Subscriber, raw: Any) -> None:
    """Act on one message from the page; anything malformed is answered with an error, never a close."""
    if not isinstance(raw, str) or len(raw) > MAX_MESSAGE_CHARS:
        sub.put(
            {
                "type": "error",
                "message": f"messages must be JSON text of at most {MAX_MESSAGE_CHARS} characters",
            }
        )
        return
    try:
        message = parse_json(raw)
    except ValueError:
        sub.put({"type": "error", "message": "messages must be JSON"})
        return
    if not isinstance(message, dict):
        sub.put({"type": "error", "message": "messages must be JSON objects with a 'type'"})
        return
    kind = message.get("type")
    if kind == "watch":
        try:
            if "job" not in message:
                raise ValueError("job")
            job_id = _count(message, "job", 0)
            log_after = _count(message, "log_after", 0)
            events_after = _count(message, "events_after", 0)
            tail = _count(message, "tail", DEFAULT_TAIL)
        except ValueError as exc:
            sub.put(
                {
                    "type": "error",
                    "field": str(exc),
                    "message": f"watch: '{exc}' must be a whole number from 0 to {MAX_JOB_ID}",
                }
            )
            return
        hub.watch(sub, job_id, log_after, events_after, tail)
    elif kind == "unwatch":
        hub.unwatch(sub)
    else:
        sub.put({"type": "error", "field": "type", "message": "'type' must be 'watch' or 'unwatch'"})


@sock.route("/ws", bp=bp)
def live(ws: Any) -> None:
    """Serve one page until it disconnects (Origin and token were checked before the upgrade)."""
    state = studio()
    hub = state.hub
    sub = hub.connect()
    try:
        sub.put({"type": "jobs", "jobs": [j.as_json() for j in state.jobs.recent()]})
        while ws.connected:
            for message in sub.drain(SEND_WAIT_S):
                ws.send(json.dumps(message, ensure_ascii=False))
            if sub.overflowed:  # too far behind: the page reconnects and resumes from its last line
                ws.close(1013, "too far behind; reconnect")
                return
            raw = ws.receive(timeout=0)
            while raw is not None:
                try:
                    _handle(hub, sub, raw)
                except Exception:  # a bug must not close the page's connection: say so and go on
                    log.exception("WebSocket message failed")
                    sub.put({"type": "error", "message": "the server could not handle that message"})
                raw = ws.receive(timeout=0)
    finally:
        hub.disconnect(sub)
