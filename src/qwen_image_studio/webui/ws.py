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
from typing import Any

from flask import Blueprint
from flask_sock import Sock

from .app import studio
from .jobs.hub import DEFAULT_TAIL, Hub, Subscriber

bp = Blueprint("ws", __name__)
sock = Sock()
SEND_WAIT_S = 0.1


def _handle(hub: Hub, sub: Subscriber, raw: Any) -> None:
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        sub.put({"type": "error", "message": "messages must be JSON"})
        return
    if not isinstance(message, dict):
        return
    if message.get("type") == "watch":
        try:
            job_id = int(message["job"])
            log_after = int(message.get("log_after") or 0)
            events_after = int(message.get("events_after") or 0)
            tail = int(message.get("tail") or DEFAULT_TAIL)
        except (KeyError, TypeError, ValueError):
            sub.put({"type": "error", "message": "watch needs a job id and numbers"})
            return
        hub.watch(sub, job_id, log_after, events_after, tail)
    elif message.get("type") == "unwatch":
        hub.unwatch(sub)


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
                _handle(hub, sub, raw)
                raw = ws.receive(timeout=0)
    finally:
        hub.disconnect(sub)
