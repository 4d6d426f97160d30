"""The history of caption changes: the previous bytes of every caption written, so nothing is lost.

One SQLite file (inside the web UI's workspace). A *batch* is one user action (one edited caption, one
bulk action); each of its *changes* keeps the caption file's bytes (or the JSON-lines line) before and
after. A change is recorded before its file is written and marked written after, so a crash between the
two still leaves the previous text on record. Undone batches stay in the history.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HISTORY_NAME = "caption_history.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS caption_batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset TEXT NOT NULL,
    label TEXT NOT NULL,
    at REAL NOT NULL,
    undone_at REAL
);
CREATE TABLE IF NOT EXISTS caption_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL REFERENCES caption_batches(id),
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    image TEXT NOT NULL,
    before BLOB,
    after BLOB,
    written INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS caption_changes_batch ON caption_changes(batch);
"""


@dataclass(frozen=True)
class StoredChange:
    """One recorded caption change: where, which image, the bytes before and after (None: no file)."""

    kind: str
    location: Path
    image: Path
    before: bytes | None
    after: bytes | None
    written: bool


@dataclass(frozen=True)
class Batch:
    """One recorded user action."""

    id: int
    dataset: Path
    label: str
    at: float
    undone_at: float | None
    count: int


class CaptionHistory:
    """The caption history in one SQLite file; ``lock`` serialises the writes of this process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:
                yield db
        finally:
            db.close()

    def record(
        self,
        dataset: Path,
        label: str,
        rows: Sequence[tuple[str, Path, Path, bytes | None, bytes | None]],
        batch: int | None = None,
    ) -> int:
        """Record changes (kind, location, image, before, after) not yet written, in a new batch or added
        to ``batch`` (a long action such as a captioning job, recorded as it goes); the batch's id."""
        with self._db() as db:
            if batch is None:
                cur = db.execute(
                    "INSERT INTO caption_batches (dataset, label, at) VALUES (?, ?, ?)",
                    (str(dataset), label, time.time()),
                )
                batch = int(cur.lastrowid or 0)
            db.executemany(
                "INSERT INTO caption_changes (batch, kind, location, image, before, after) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(batch, k, str(loc), str(img), b, a) for k, loc, img, b, a in rows],
            )
        return batch

    def mark_written(self, batch: int, location: Path) -> None:
        """Mark the changes of one location of a batch as written."""
        with self._db() as db:
            db.execute(
                "UPDATE caption_changes SET written = 1 WHERE batch = ? AND location = ?",
                (batch, str(location)),
            )

    def drop_unwritten(self, batch: int) -> None:
        """Forget the changes of a batch that were never written (and the batch when none was)."""
        with self._db() as db:
            db.execute("DELETE FROM caption_changes WHERE batch = ? AND written = 0", (batch,))
            db.execute(
                "DELETE FROM caption_batches WHERE id = ? AND NOT EXISTS "
                "(SELECT 1 FROM caption_changes WHERE batch = ?)",
                (batch, batch),
            )

    def mark_undone(self, batch: int) -> None:
        """Mark a batch as undone (its rows stay)."""
        with self._db() as db:
            db.execute("UPDATE caption_batches SET undone_at = ? WHERE id = ?", (time.time(), batch))

    def changes(self, batch: int, written_only: bool = False) -> list[StoredChange]:
        """The changes of a batch in the order they were recorded."""
        query = "SELECT kind, location, image, before, after, written FROM caption_changes WHERE batch = ?"
        if written_only:
            query += " AND written = 1"
        with self._db() as db:
            rows = db.execute(query + " ORDER BY id", (batch,)).fetchall()
        return [StoredChange(k, Path(loc), Path(img), b, a, bool(w)) for k, loc, img, b, a, w in rows]

    def batches(self, dataset: Path, limit: int = 50) -> list[Batch]:
        """The latest batches of one dataset TOML, newest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT b.id, b.dataset, b.label, b.at, b.undone_at, "
                "(SELECT COUNT(*) FROM caption_changes c WHERE c.batch = b.id AND c.written = 1) "
                "FROM caption_batches b WHERE b.dataset = ? ORDER BY b.id DESC LIMIT ?",
                (str(dataset), limit),
            ).fetchall()
        return [Batch(i, Path(d), label, at, undone, n) for i, d, label, at, undone, n in rows]

    def batch(self, batch: int) -> Batch | None:
        """One batch by id."""
        with self._db() as db:
            row = db.execute(
                "SELECT b.id, b.dataset, b.label, b.at, b.undone_at, "
                "(SELECT COUNT(*) FROM caption_changes c WHERE c.batch = b.id AND c.written = 1) "
                "FROM caption_batches b WHERE b.id = ?",
                (batch,),
            ).fetchone()
        return None if row is None else Batch(row[0], Path(row[1]), row[2], row[3], row[4], row[5])

    def last_open(self, dataset: Path) -> Batch | None:
        """The newest batch of a dataset TOML that is not undone and wrote something."""
        return next((b for b in self.batches(dataset, 200) if b.undone_at is None and b.count), None)
