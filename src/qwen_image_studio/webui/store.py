"""The web UI's state on disk: one SQLite file in the workspace (saved configurations and settings)."""

from __future__ import annotations

import json
import sqlite3
import threading
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from ..params.validate import Message
from .jobs.schema import JOBS_MIGRATION, JOBS_REASON_I18N, JOBS_RUN_DIR

DB_NAME = "studio.sqlite3"
NAME_MAX = 100

# Each entry upgrades the database by one version (PRAGMA user_version); later areas append theirs.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE configs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        document TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    JOBS_MIGRATION,
    JOBS_REASON_I18N,
    JOBS_RUN_DIR,
)


class StoreError(Exception):
    """A store operation that cannot be done; `code` names the reason for the UI, `i18n` (when the
    message is given as a Message) words it in the page's language."""

    code = "store_error"

    def __init__(self, message: str | Message) -> None:
        self.i18n = message if isinstance(message, Message) else None
        super().__init__(message.render() if isinstance(message, Message) else message)


class BadName(StoreError):
    """A configuration name that is empty, too long or has characters that are not allowed."""

    code = "bad_name"


class NotFound(StoreError):
    """No configuration of that name."""

    code = "not_found"


class NameTaken(StoreError):
    """A configuration of that name exists already."""

    code = "exists"


@dataclass(frozen=True)
class StoredConfig:
    """One saved configuration: its name, versioned JSON document and timestamps."""

    name: str
    document: dict[str, Any]
    created_at: str
    updated_at: str

    def summary(self) -> dict[str, str]:
        """Name and timestamps, as the list shows them."""
        return {"name": self.name, "created_at": self.created_at, "updated_at": self.updated_at}


def check_name(name: Any) -> str:
    """A valid configuration name (trimmed), or BadName saying what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise BadName(Message("store.no_name"))
    name = name.strip()
    if len(name) > NAME_MAX:
        raise BadName(Message("store.name_too_long", {"max": NAME_MAX}))
    if any(c in "/\\" or unicodedata.category(c).startswith("C") for c in name):
        raise BadName(Message("store.name_chars"))
    if set(name) == {"."}:
        raise BadName(Message("store.name_dots"))
    return name


class ConfigListener(Protocol):
    """Told of each change to the saved configurations, after it is committed (e.g. the JSON files)."""

    def saved(self, stored: StoredConfig) -> None: ...

    def renamed(self, old: str, stored: StoredConfig) -> None: ...

    def deleted(self, name: str) -> None: ...


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """Saved configurations and settings in `workspace/studio.sqlite3`; one short connection per call.

    A `listener` hears of every saved, renamed and deleted configuration once the change is committed.
    """

    def __init__(self, path: Path, listener: ConfigListener | None = None) -> None:
        self.path = path
        self.listener = listener
        # one configuration write (database and mirror file) at a time: the mirror then follows the
        # database's order even when the threaded server handles two saves at once
        self._config_writes = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A short connection in autocommit mode (rows as sqlite3.Row)."""
        with self._connect() as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A connection inside one immediate transaction, rolled back on error."""
        with self._transaction() as db:
            yield db

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            yield db
        finally:
            db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def list_configs(self) -> list[StoredConfig]:
        """All saved configurations, by name."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM configs ORDER BY name COLLATE NOCASE").fetchall()
        return [_row(r) for r in rows]

    def get_config(self, name: str) -> StoredConfig:
        """One saved configuration (NotFound when absent)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM configs WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(Message("store.not_found", {"name": repr(name)}))
        return _row(row)

    def has_config(self, name: str) -> bool:
        """Whether a configuration of that name exists."""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM configs WHERE name = ?", (name,)).fetchone() is not None

    def save_config(
        self, name: str, document: dict[str, Any], overwrite: bool = False, saved_at: str | None = None
    ) -> StoredConfig:
        """Save a document under a name; an existing one is replaced only with `overwrite`.

        `saved_at` (ISO time) is when it was saved, for a configuration restored from a file; else now.
        """
        with self._config_writes:
            name = check_name(name)
            text = json.dumps(document, ensure_ascii=False, sort_keys=True)
            now = saved_at or _now()
            with self._transaction() as db:
                exists = db.execute("SELECT 1 FROM configs WHERE name = ?", (name,)).fetchone() is not None
                if exists and not overwrite:
                    raise NameTaken(Message("store.exists", {"name": repr(name)}))
                db.execute(
                    "INSERT INTO configs (name, document, created_at, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET document = excluded.document, updated_at = excluded.updated_at",
                    (name, text, now, now),
                )
            stored = self.get_config(name)
            if self.listener is not None:
                self.listener.saved(stored)
            return stored

    def rename_config(self, old: str, new: str) -> StoredConfig:
        """Give a saved configuration another name (NameTaken when the new one is in use)."""
        with self._config_writes:
            new = check_name(new)
            with self._transaction() as db:
                row = db.execute("SELECT document FROM configs WHERE name = ?", (old,)).fetchone()
                if row is None:
                    raise NotFound(Message("store.not_found", {"name": repr(old)}))
                if new != old and db.execute("SELECT 1 FROM configs WHERE name = ?", (new,)).fetchone():
                    raise NameTaken(Message("store.exists", {"name": repr(new)}))
                doc = json.loads(row["document"])
                if isinstance(doc, dict) and "name" in doc:
                    doc["name"] = new
                db.execute(
                    "UPDATE configs SET name = ?, document = ?, updated_at = ? WHERE name = ?",
                    (new, json.dumps(doc, ensure_ascii=False, sort_keys=True), _now(), old),
                )
            stored = self.get_config(new)
            if self.listener is not None:
                self.listener.renamed(old, stored)
            return stored

    def delete_config(self, name: str) -> None:
        """Delete a saved configuration (NotFound when absent)."""
        with self._config_writes:
            with self._transaction() as db:
                if db.execute("DELETE FROM configs WHERE name = ?", (name,)).rowcount == 0:
                    raise NotFound(Message("store.not_found", {"name": repr(name)}))
            if self.listener is not None:
                self.listener.deleted(name)

    def get_setting(self, key: str) -> str | None:
        """A stored setting, or None."""
        with self._connect() as db:
            row = db.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, key: str, value: str) -> None:
        """Store a setting."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO settings (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )


def _row(row: sqlite3.Row) -> StoredConfig:
    return StoredConfig(row["name"], json.loads(row["document"]), row["created_at"], row["updated_at"])
