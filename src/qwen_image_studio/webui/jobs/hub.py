"""Live feeds of jobs: new log lines and events pushed to every connected page, in batches.

One thread polls the files of the jobs that are watched or running a few times a second. A page
watches one job at a time and says which log line and event it has; it gets exactly what it lacks,
then live updates. Job status changes go to every page.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .logtail import LogIndex

log = logging.getLogger(__name__)

POLL_S = 0.2
LINES_PER_MESSAGE = 1000
EVENTS_PER_MESSAGE = 2000
DEFAULT_TAIL = 2000
MAX_TAIL = 20000
QUEUE_LIMIT = 5000
IDLE_FEED_S = 60.0
MAX_SCANS_PER_POLL = 8
CATCH_UP_CHUNK = 16 * 1024 * 1024

Message = dict[str, Any]


class Subscriber:
    """One page's connection: an outbound queue and the job it watches."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Message] = queue.Queue(maxsize=QUEUE_LIMIT)
        self.job: int | None = None
        self.overflowed = False

    def put(self, message: Message) -> None:
        """Queue a message; a page too far behind is marked to be disconnected (it resumes on reconnect)."""
        try:
            self.queue.put_nowait(message)
        except queue.Full:
            self.overflowed = True

    def drain(self, timeout: float) -> list[Message]:
        """The queued messages (waiting up to `timeout` s for the first), merged where they can be."""
        try:
            first = self.queue.get(timeout=timeout)
        except queue.Empty:
            return []
        items = [first]
        while len(items) < 200:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return coalesce(items)


def coalesce(messages: list[Message]) -> list[Message]:
    """Merge neighbouring log (or events) messages of one job, so a flood goes out in few sends."""
    out: list[Message] = []
    for m in messages:
        prev = out[-1] if out else None
        kind = m.get("type")
        if (
            prev is not None
            and prev.get("type") == kind
            and prev.get("job") == m.get("job")
            and (
                (kind == "log" and "skipped" not in m and len(prev["lines"]) < 2 * LINES_PER_MESSAGE)
                or (kind == "events" and len(prev["events"]) < 5 * EVENTS_PER_MESSAGE)
            )
        ):
            if kind == "log":
                prev["lines"] = prev["lines"] + m["lines"]
                for key in ("partial", "synced"):
                    if key in m:
                        prev[key] = m[key]
            else:
                prev["events"] = prev["events"] + m["events"]
            continue
        out.append(dict(m))
    return out


def _parse_events(raw: list[tuple[int, bytes]]) -> list[list[Any]]:
    out = []
    for n, line in raw:
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(event, dict):
            out.append([n, event])
    return out


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [[]]


class JobFeed:
    """The log and events of one job, indexed, with the pages watching it."""

    def __init__(self, job_id: int, log_path: Path, events_path: Path) -> None:
        self.job_id = job_id
        self.log = LogIndex(log_path)
        self.events = LogIndex(events_path)
        self.subscribers: set[Subscriber] = set()
        self.partial = ""
        self.lock = threading.Lock()
        self.last_used = time.monotonic()

    def _partial_field(self) -> list[Any] | None:
        return [self.log.count + 1, self.partial] if self.partial else None

    def poll(self) -> None:
        """Read what was appended and send it to the watching pages."""
        with self.lock:
            try:
                messages = self._read_new()
            except BaseException:
                for sub in self.subscribers:  # they reconnect and resume from the file: nothing is lost
                    sub.overflowed = True
                raise
            for sub in self.subscribers:
                for m in messages:
                    sub.put(m)

    def _read_new(self) -> list[Message]:
        """Messages for what the files gained since the last poll (the caller holds the lock)."""
        messages: list[Message] = []
        for _ in range(MAX_SCANS_PER_POLL):  # bounded: a stage that writes faster is caught up next poll
            a, b = self.log.scan()
            if b == a:
                break
            for chunk in _chunks(self.log.lines(a, b), LINES_PER_MESSAGE):
                messages.append({"type": "log", "job": self.job_id, "lines": chunk})
        partial = self.log.partial()
        if partial != self.partial or (messages and partial):
            self.partial = partial
            if not messages:
                messages.append({"type": "log", "job": self.job_id, "lines": []})
            messages[-1]["partial"] = self._partial_field()
        for _ in range(MAX_SCANS_PER_POLL):
            a, b = self.events.scan()
            if b == a:
                break
            for chunk in _chunks(_parse_events(self.events.raw_lines(a, b)), EVENTS_PER_MESSAGE):
                if chunk:
                    messages.append({"type": "events", "job": self.job_id, "events": chunk})
        return messages

    def _catch_up(self) -> None:
        """Index the rest of a log that one poll could not read (the caller holds the lock).

        The lines are not sent: pages already watching are marked to resume from their last line (and
        get their own tail), so a page that connects to a huge log gets its tail, not the whole file.
        """
        a, b = self.log.scan(CATCH_UP_CHUNK)
        while b > a:
            for sub in self.subscribers:
                sub.overflowed = True
            a, b = self.log.scan(CATCH_UP_CHUNK)

    def subscribe(self, sub: Subscriber, log_after: int, events_after: int, tail: int) -> None:
        """Queue what the page lacks (at most the last `tail` log lines), then add it for live updates."""
        self.poll()
        with self.lock:
            self._catch_up()
            self.last_used = time.monotonic()
            count = self.log.count
            first = max(log_after, 0)
            if count - first > tail:
                sub.put(
                    {"type": "log", "job": self.job_id, "lines": [], "skipped": [first + 1, count - tail]}
                )
                first = count - tail
            lines = self.log.lines(first, count)
            for chunk in _chunks(lines, LINES_PER_MESSAGE):
                sub.put({"type": "log", "job": self.job_id, "lines": chunk})
            sub.put(
                {
                    "type": "log",
                    "job": self.job_id,
                    "lines": [],
                    "partial": self._partial_field(),
                    "synced": count,
                }
            )
            events = _parse_events(self.events.raw_lines(max(events_after, 0)))
            for chunk in _chunks(events, EVENTS_PER_MESSAGE):
                if chunk:
                    sub.put({"type": "events", "job": self.job_id, "events": chunk})
            self.subscribers.add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        """Stop sending to a page."""
        with self.lock:
            self.subscribers.discard(sub)
            self.last_used = time.monotonic()


class Hub:
    """Feeds of the jobs being watched or run, and every connected page."""

    def __init__(self, paths_of: Callable[[int], tuple[Path, Path]], poll_s: float = POLL_S) -> None:
        self.paths_of = paths_of
        self.poll_s = poll_s
        self.feeds: dict[int, JobFeed] = {}
        self.active: set[int] = set()
        self.pages: set[Subscriber] = set()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the polling thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jobs-hub", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the polling thread."""
        self._stop.set()

    def feed(self, job_id: int) -> JobFeed:
        """The feed of a job (created on first use)."""
        with self.lock:
            feed = self.feeds.get(job_id)
            if feed is None:
                log_path, events_path = self.paths_of(job_id)
                feed = self.feeds[job_id] = JobFeed(job_id, log_path, events_path)
            return feed

    def connect(self) -> Subscriber:
        """A new page connection."""
        sub = Subscriber()
        with self.lock:
            self.pages.add(sub)
        return sub

    def disconnect(self, sub: Subscriber) -> None:
        """A page went away."""
        self.unwatch(sub)
        with self.lock:
            self.pages.discard(sub)

    def watch(
        self,
        sub: Subscriber,
        job_id: int,
        log_after: int = 0,
        events_after: int = 0,
        tail: int = DEFAULT_TAIL,
    ) -> None:
        """Make a page watch one job, sending what it lacks first."""
        self.unwatch(sub)
        sub.job = job_id
        self.feed(job_id).subscribe(sub, log_after, events_after, max(1, min(tail, MAX_TAIL)))

    def unwatch(self, sub: Subscriber) -> None:
        """Stop a page watching its job."""
        if sub.job is not None:
            with self.lock:
                feed = self.feeds.get(sub.job)
            if feed is not None:
                feed.unsubscribe(sub)
            sub.job = None

    def set_active(self, job_id: int, active: bool) -> None:
        """Keep polling a running job even when no page watches it."""
        with self.lock:
            (self.active.add if active else self.active.discard)(job_id)

    def flush(self, job_id: int) -> None:
        """Send what a job's files have now (before announcing that its state changed)."""
        with self.lock:
            feed = self.feeds.get(job_id)
        if feed is not None:
            feed.poll()

    def announce(self, job: dict[str, Any]) -> None:
        """Tell every page that a job changed."""
        self.flush(int(job["id"]))
        with self.lock:
            pages = list(self.pages)
        for sub in pages:
            sub.put({"type": "job", "job": job})

    def poll_once(self) -> None:
        """Poll every feed that is watched or running; forget idle ones."""
        now = time.monotonic()
        with self.lock:
            feeds = list(self.feeds.values())
        for feed in feeds:
            busy = bool(feed.subscribers) or feed.job_id in self.active
            if busy:
                try:
                    feed.poll()
                except OSError as exc:  # a file that cannot be read is reported once per poll, not fatal
                    log.warning("job %s: cannot read its files: %s", feed.job_id, exc)
                feed.last_used = now
            elif now - feed.last_used > IDLE_FEED_S:
                with self.lock:
                    self.feeds.pop(feed.job_id, None)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the feed thread must survive anything one job does
                log.exception("job feed poll failed")
