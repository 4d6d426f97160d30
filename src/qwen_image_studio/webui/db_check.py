"""The database check at start: a damaged `studio.sqlite3` is kept aside and rebuilt from the workspace.

The job folders hold each job's snapshot (`jobs/<id>/job.json`) and `configs/*.json` mirrors the saved
configurations, so a file that is truncated, overwritten, not SQLite at all, fails SQLite's quick check,
has tables that are not the studio's, or is empty while jobs exist is moved to
`studio.sqlite3.damaged-<time>` (never over another file) and a new database is filled from those files.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote

from ..params.validate import Message
from .config_mirror import CONFIGS_DIR, SUFFIX
from .i18n import TABLE
from .jobs.snapshot import job_folders, read_snapshots
from .jobs.store import JobStore
from .store import DB_NAME, MIGRATIONS, Store, StoreError
from .views_util import parse_json

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
SIBLINGS = ("-wal", "-journal", "-shm")  # SQLite's files beside the database, moved with it
DAMAGED = ".damaged-"
MAX_CHECK_LINES = 3


def _schema(db: sqlite3.Connection) -> dict[str, list[str]]:
    """The columns of each table (SQLite's own tables left out)."""
    names = [
        r[0]
        for r in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    ]
    return {n: [c[1] for c in db.execute(f'PRAGMA table_info("{n}")').fetchall()] for n in names}


def expected_schema(version: int) -> dict[str, list[str]]:
    """The tables and columns a database at `version` (PRAGMA user_version) has."""
    db = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS[:version]:
            db.executescript(script)
        return _schema(db)
    finally:
        db.close()


def _schema_problem(db: sqlite3.Connection) -> Message | None:
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > len(MIGRATIONS):
        return None  # written by a newer studio: not ours to judge
    actual = _schema(db)
    expected = expected_schema(version)
    for table, columns in expected.items():
        if table not in actual:
            return Message("db.no_table", {"table": table})
        if actual[table] != columns:
            return Message("db.columns", {"table": table})
    for table in set(expected_schema(len(MIGRATIONS))) - set(expected):
        if table in actual:  # the next upgrade would fail on it
            return Message("db.columns", {"table": table})
    for table in expected:
        db.execute(f'SELECT * FROM "{table}" LIMIT 1').fetchall()
    return None


def _has_history(workspace: Path) -> bool:
    """Whether the workspace has job folders or mirrored configurations a database should list."""
    return bool(job_folders(workspace)) or any((workspace / CONFIGS_DIR).glob(f"*{SUFFIX}"))


def damage_of(path: Path, workspace: Path) -> Message | None:
    """What is wrong with the database file (None when it is sound, or absent with nothing to rebuild)."""
    if not path.exists():
        return Message("db.missing") if job_folders(workspace) else None
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return Message("db.unreadable", {"detail": exc.strerror or exc})
    if size == 0:
        return Message("db.empty") if _has_history(workspace) else None
    if header != SQLITE_HEADER:
        return Message("db.not_sqlite")
    try:
        db = sqlite3.connect(path, timeout=10)
        try:
            lines = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
            if lines != ["ok"]:
                return Message("db.check_failed", {"detail": "; ".join(lines[:MAX_CHECK_LINES])})
            return _schema_problem(db)
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return Message("db.unreadable", {"detail": exc})


def _free_name(path: Path, stamp: str) -> Path:
    """`path` + `.damaged-<stamp>` (with -2, -3... when taken), free for the file and its siblings."""
    for n in range(1, 10_000):
        candidate = path.with_name(f"{path.name}{DAMAGED}{stamp}" + ("" if n == 1 else f"-{n}"))
        names = [candidate, *(candidate.with_name(candidate.name + s) for s in SIBLINGS)]
        if not any(os.path.lexists(p) for p in names):
            return candidate
    raise FileExistsError(f"no free name beside {path}")


def move_aside(path: Path, now: datetime | None = None) -> Path | None:
    """Move a database and its -wal/-journal/-shm files to a new `.damaged-<time>` name; the new name of
    the database (None when there was none)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    kept = _free_name(path, stamp)
    moved = False
    for suffix in ("", *SIBLINGS):
        source = path.with_name(path.name + suffix)
        if os.path.lexists(source):
            os.rename(source, kept.with_name(kept.name + suffix))
            moved = moved or suffix == ""
    return kept if moved else None


def restore_configs(store: Store, folder: Path) -> int:
    """Save the configurations mirrored in `folder` (names in use are kept); how many were saved."""
    count = 0
    for file in sorted(folder.glob(f"*{SUFFIX}")):
        if file.name.startswith("."):
            continue
        try:
            doc = parse_json(file.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
                raise ValueError("not a configuration document")
            name = doc.get("name") if isinstance(doc.get("name"), str) else unquote(file.stem)
            saved_at = doc.get("saved_at") if isinstance(doc.get("saved_at"), str) else None
            store.save_config(name, doc, saved_at=saved_at)
            count += 1
        except (OSError, ValueError, StoreError) as exc:
            log.warning("configuration file %s not restored: %s", file, exc)
    return count


@dataclass(frozen=True)
class Repair:
    """A database found damaged at start: where it was kept and what the new one was filled with."""

    path: Path
    problem: Message
    kept_as: Path | None
    jobs: int
    configs: int
    unrebuilt: list[Path] = field(default_factory=list)

    def notices(self) -> list[Message]:
        """The start-up notices that tell the user (in either language)."""
        values = {
            "path": self.path,
            "problem": self.problem,
            "kept": self.kept_as or "",
            "jobs": self.jobs,
            "configs": self.configs,
            "configs_dir": self.path.parent / CONFIGS_DIR,
        }
        out = [Message("notice.db_rebuilt" if self.kept_as else "notice.db_missing", values)]
        if self.unrebuilt:
            folders = ", ".join(p.name for p in self.unrebuilt)
            out.append(Message("notice.db_jobs_left", {"count": len(self.unrebuilt), "folders": folders}))
        return out

    def line(self) -> str:
        """The one line for the log (English)."""
        return " ".join(n.render(TABLE["en"]) for n in self.notices())


def repair_database(workspace: Path) -> Repair | None:
    """Check `WORKSPACE/studio.sqlite3`; when damaged, keep it aside and rebuild it from the workspace's
    job folders and configuration files (None when it is sound)."""
    path = workspace / DB_NAME
    problem = damage_of(path, workspace)
    if problem is None:
        return None
    kept = move_aside(path) if path.exists() else None
    store = Store(path)
    configs = restore_configs(store, workspace / CONFIGS_DIR)
    found = read_snapshots(workspace)
    jobs = JobStore(store)
    for job in found.jobs:
        jobs.restore(job)
    repair = Repair(path, problem, kept, len(found.jobs), configs, found.unreadable)
    log.error("%s", repair.line())
    return repair
