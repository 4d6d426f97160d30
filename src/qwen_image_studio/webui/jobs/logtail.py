"""A job's log file as numbered lines: line N is the N-th newline-terminated line of the file.

Line numbers are stable (the file only grows), so a client that has lines up to N asks for the lines
after N and gets exactly the missing ones. A carriage return inside a line (a progress bar redrawing
itself) keeps only the text after the last one; the unfinished last line is shown as it is now.
"""

from __future__ import annotations

import re
import threading
from array import array
from pathlib import Path

MAX_LINE_CHARS = 8000
MAX_PARTIAL_BYTES = 64 * 1024
READ_CHUNK = 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def display_text(raw: bytes) -> str:
    """How one line reads on screen: decoded, without ANSI codes, the last carriage-return update."""
    text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
    if "\r" in text:
        parts = [p for p in text.split("\r") if p]
        text = parts[-1] if parts else ""
    text = _ANSI.sub("", text)
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + f" … ({len(text) - MAX_LINE_CHARS} more characters in the log file)"
    return text


class LogIndex:
    """Where each complete line of a growing log file starts; reads lines by number."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.starts = array("q", [0])  # starts[k] is where line k+1 begins; the last entry is the partial's
        self.lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many complete lines the file has (as far as scanned)."""
        return len(self.starts) - 1

    @property
    def end(self) -> int:
        """The byte offset after the last complete line."""
        return self.starts[-1]

    def scan(self, max_bytes: int = READ_CHUNK) -> tuple[int, int]:
        """Index newly written complete lines (at most `max_bytes` read); returns the new line range (a, b]."""
        before = self.count
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.end)
                data = fh.read(max_bytes)
        except FileNotFoundError:
            return before, before
        base = self.end
        pos = data.find(b"\n")
        while pos != -1:
            self.starts.append(base + pos + 1)
            pos = data.find(b"\n", pos + 1)
        if len(data) == max_bytes and self.count == before and max_bytes >= MAX_PARTIAL_BYTES:
            # one enormous line without a newline: cut it so that the tail keeps moving
            self.starts.append(base + len(data))
        return before, self.count

    def raw_lines(self, after: int, upto: int | None = None) -> list[tuple[int, bytes]]:
        """The bytes of lines after number `after` up to `upto` (default: all indexed)."""
        upto = self.count if upto is None else min(upto, self.count)
        first = max(after, 0) + 1
        if first > upto:
            return []
        base = self.starts[first - 1]
        with open(self.path, "rb") as fh:
            fh.seek(base)
            data = fh.read(self.starts[upto] - base)
        return [(n, data[self.starts[n - 1] - base : self.starts[n] - base]) for n in range(first, upto + 1)]

    def lines(self, after: int, upto: int | None = None) -> list[tuple[int, str]]:
        """Lines after number `after` up to `upto` (default: all indexed), as they read on screen."""
        return [(n, display_text(raw)) for n, raw in self.raw_lines(after, upto)]

    def partial(self) -> str:
        """The unfinished last line as it reads now ('' when there is none)."""
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.end)
                data = fh.read(MAX_PARTIAL_BYTES)
        except FileNotFoundError:
            return ""
        return display_text(data) if data else ""
