"""The event protocol between stages and the UI: one JSON object per line in an events file.

Stages write human logs to stdout/stderr and machine events here; the web UI reads events for
state and never guesses it from log text. Every event has ``t`` (unix time), ``stage`` and ``type``:

- ``started``: ``argv``, ``pid``
- ``progress``: ``phase``, ``done``, ``total``, ``rate`` (per second), ``eta`` (seconds), optional ``unit``;
  optional ``sub`` (true) and ``step`` (see below)
- ``metric``: ``step`` plus named values (``loss``, ``loss_avg``, ``lr`` ...)
- ``warning``: ``message``
- ``artifact``: ``kind`` ("checkpoint", "sample", "image", "cache", "state"), ``path``; a training sample
  also has ``prompt`` (its text), ``index`` (its line among the sample prompts, from 0) and ``step``
- ``finished``: optional summary values; ``peak_gpu_memory_bytes`` and ``peak_gpu_memory_allocated_bytes``
  (PyTorch's peak reserved and allocated CUDA memory) when the stage used a GPU; also on ``failed`` after
  an out-of-memory or unexpected error
- ``failed``: ``reason`` (one line a user can act on), ``exit_code``

Progress phases. A stage's *main* phase ("cache latents", "cache texts", "train", "generate") measures
the stage: its ``done / total`` only grows. Work done inside it (training's sample images, "sample", and
checkpoint saving, "save") is a *sub-phase*: its events have ``sub: true`` and ``step``, the main phase's
count when it began (so a throttled main event cannot lag behind), and the UI shows them beside the
job's bar without moving it. ``rate`` and ``eta`` count only the units done since the tracker started
(a resumed run's earlier steps are not "done" in this run); training's ``eta`` is the steps left at the
average pace so far, which includes the sampling and saving done so far, so it foresees the later ones.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

ENV_VAR = "QIS_EVENTS_FILE"
T = TypeVar("T")


class EventWriter:
    """Appends events as JSON lines; a writer without a path only drives the terminal."""

    def __init__(self, path: str | Path | None, stage: str) -> None:
        self.stage = stage
        self.path = Path(path) if path else None
        self._fh: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @classmethod
    def from_flag(cls, flag_value: str | None, stage: str) -> EventWriter:
        """The writer for ``--events_file`` or, when absent, ``$QIS_EVENTS_FILE``."""
        return cls(flag_value or os.environ.get(ENV_VAR) or None, stage)

    def emit(self, type_: str, **data: Any) -> dict[str, Any]:
        """Write one event and return it."""
        event = {"t": round(time.time(), 3), "stage": self.stage, "type": type_, **data}
        if self._fh is not None:
            self._fh.write(json.dumps(event, ensure_ascii=False, default=str) + "\n")
        return event

    def warning(self, message: str) -> None:
        """Report a problem that does not stop the stage (also logged to stderr)."""
        print(f"warning: {message}", file=sys.stderr, flush=True)
        self.emit("warning", message=message)

    def artifact(self, kind: str, path: str | Path, **info: Any) -> None:
        """Announce a file the stage wrote (checkpoint, sample image, cache file, state), with details."""
        self.emit("artifact", kind=kind, path=str(path), **info)

    def progress(self, items: Iterable[T], total: int, phase: str, unit: str = "it") -> Iterator[T]:
        """Iterate with a progress bar on a terminal and throttled ``progress`` events."""
        tracker = ProgressTracker(self, total, phase, unit)
        for item in items:
            yield item
            tracker.advance()
        tracker.close()

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class ProgressTracker:
    """Counts work done; emits a progress event at most every `interval` seconds and at the end.

    `done`: units done before this run (a resumed training); `extra`: values every event carries (a
    sub-phase's ``sub`` and ``step``)."""

    def __init__(
        self,
        events: EventWriter,
        total: int,
        phase: str,
        unit: str = "it",
        interval: float = 0.5,
        done: int = 0,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.events, self.total, self.phase, self.unit, self.interval = events, total, phase, unit, interval
        self.done = self.first = done
        self.extra = extra or {}
        self.start = time.monotonic()
        self._last = 0.0
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=phase, unit=unit)
        events.emit(
            "progress", phase=phase, done=done, total=total, rate=0.0, eta=None, unit=unit, **self.extra
        )

    def advance(self, n: int = 1, **values: Any) -> None:
        """Record n more units done; extra values (loss, lr) ride along on the event."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if values:
                self._bar.set_postfix(
                    {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in values.items()}
                )
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._emit(now, values)

    def _emit(self, now: float, values: dict[str, Any]) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = (self.done - self.first) / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        self.events.emit(
            "progress",
            phase=self.phase,
            done=self.done,
            total=self.total,
            rate=round(rate, 4),
            eta=None if eta is None else round(eta, 1),
            unit=self.unit,
            **self.extra,
            **values,
        )

    def close(self) -> None:
        """Finish the bar."""
        if self._bar is not None:
            self._bar.close()


def read_events(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events after byte `offset` and the offset to continue from (a partial last line waits)."""
    p = Path(path)
    if not p.exists():
        return [], offset
    with open(p, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # not JSON, or not UTF-8
            continue
        if isinstance(event, dict):
            events.append(event)
    return events, offset + end
