"""Jobs and their stages in the studio's SQLite file: what ran, with which configuration, and how it ended."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from ...params.validate import Message
from ..store import NotFound, Store
from .schema import ACTIVE, FINAL, PENDING, QUEUED, RUNNING, SKIPPED

log = logging.getLogger(__name__)


@dataclass
class StageRun:
    """One stage of a job: its command line, process and result."""

    index: int
    stage: str
    argv: list[str]
    status: str
    pid: int | None = None
    pid_start: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    field: str | None = None
    log_tail: str | None = None
    reason_i18n: dict[str, Any] | None = None  # `reason` as a message ({"key", "vars"}) when known

    def as_json(self) -> dict[str, Any]:
        """The stage as the page shows it."""
        return {
            "index": self.index,
            "stage": self.stage,
            "status": self.status,
            "argv": self.argv,
            "pid": self.pid,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": _duration(self.started_at, self.finished_at),
            "exit_code": self.exit_code,
            "reason": self.reason,
            "reason_i18n": self.reason_i18n,
            "field": self.field,
            "log_tail": self.log_tail,
        }


@dataclass
class Job:
    """A queued, running or finished job: its kind, configuration snapshot and stages."""

    id: int
    kind: str
    status: str
    config_name: str | None
    params: dict[str, Any]
    created_at: float
    started_at: float | None
    finished_at: float | None
    stop_requested: bool
    stages: list[StageRun] = field(default_factory=list)
    # the folder its train stage writes into (the --output_dir it got, `<output_dir>/job-<id>`); None for a
    # job without a train stage and for jobs from before run folders (their files lie in `params`' output_dir)
    run_dir: str | None = None

    @property
    def is_final(self) -> bool:
        """Whether the job has ended."""
        return self.status in FINAL

    def current_stage(self) -> StageRun | None:
        """The stage running now, else the first one not run yet."""
        for run in self.stages:
            if run.status == RUNNING:
                return run
        return next((run for run in self.stages if run.status == PENDING), None)

    def as_json(self, with_params: bool = False) -> dict[str, Any]:
        """The job as the page shows it (the configuration snapshot only when asked)."""
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "config_name": self.config_name,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": _duration(self.started_at, self.finished_at),
            "stop_requested": self.stop_requested,
            "run_dir": self.run_dir,
            "stages": [s.as_json() for s in self.stages],
        }
        if with_params:
            out["params"] = self.params
        return out

    def record(self) -> dict[str, Any]:
        """Every column of the job and its stages, as plain JSON (the job folder's snapshot)."""
        out = asdict(self)
        out["stages"] = [asdict(s) for s in self.stages]
        return out

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Job:
        """The job `record` wrote (KeyError, TypeError or ValueError when `data` is not one); keys it does
        not know (from a later version) are left out."""
        known = {f.name for f in fields(cls)} - {"stages"}
        stage_known = {f.name for f in fields(StageRun)}
        stages = [StageRun(**{k: v for k, v in s.items() if k in stage_known}) for s in data["stages"]]
        job = cls(**{k: v for k, v in data.items() if k in known}, stages=stages)
        if not isinstance(job.id, int) or not isinstance(job.params, dict) or not isinstance(job.kind, str):
            raise ValueError("not a job record")
        if job.run_dir is not None and not isinstance(job.run_dir, str):
            raise ValueError("not a job record (run_dir)")
        return job


def _duration(start: float | None, end: float | None) -> float | None:
    if start is None:
        return None
    return round((end if end is not None else time.time()) - start, 1)


class JobListener(Protocol):
    """Told of a job's whole record after each committed change to it (e.g. the job folder's job.json)."""

    def changed(self, job: Job) -> None: ...


class JobStore:
    """Reads and writes the jobs tables through the studio's Store (one short connection per call).

    A `listener` hears of each job after every committed change to its rows (creation, status, stages).
    """

    def __init__(self, store: Store, listener: JobListener | None = None) -> None:
        self.store = store
        self.listener = listener
        self._told = threading.Lock()  # the listener hears the states in the order they were read

    def _changed(self, job_id: int) -> None:
        """Tell the listener of a job's rows as committed now (a failing listener is only logged)."""
        if self.listener is None:
            return
        with self._told:
            try:
                job = self.get(job_id)
            except NotFound:
                return
            try:
                self.listener.changed(job)
            except Exception:  # noqa: BLE001 - a snapshot that cannot be written must not fail the job
                log.exception("cannot record the snapshot of job %s", job_id)

    def create(
        self,
        kind: str,
        config_name: str | None,
        params: dict[str, Any],
        stages: list[str],
        argv_for: Callable[[int], list[list[str]]],
        run_dir_for: Callable[[int], str | None] | None = None,
    ) -> Job:
        """A new queued job; `run_dir_for(job_id)` gives its run folder, then `argv_for(job_id)` each stage's
        command line (both written in the same commit)."""
        with self.store.transaction() as db:
            cur = db.execute(
                "INSERT INTO jobs (kind, status, config_name, params, created_at) VALUES (?, ?, ?, ?, ?)",
                (kind, QUEUED, config_name, json.dumps(params, ensure_ascii=False), time.time()),
            )
            job_id = int(cur.lastrowid or 0)
            run_dir = run_dir_for(job_id) if run_dir_for is not None else None
            if run_dir is not None:
                db.execute("UPDATE jobs SET run_dir = ? WHERE id = ?", (run_dir, job_id))
            argvs = argv_for(job_id)
            db.executemany(
                "INSERT INTO job_stages (job_id, idx, stage, argv, status) VALUES (?, ?, ?, ?, ?)",
                [
                    (job_id, i, stage, json.dumps(argv), PENDING)
                    for i, (stage, argv) in enumerate(zip(stages, argvs, strict=True))
                ],
            )
        self._changed(job_id)
        return self.get(job_id)

    def restore(self, job: Job) -> None:
        """Write a job back under its own id (rebuilding the history from the job folders)."""
        with self.store.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, status, config_name, params, created_at, started_at, "
                "finished_at, stop_requested, run_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.kind,
                    job.status,
                    job.config_name,
                    json.dumps(job.params, ensure_ascii=False),
                    job.created_at,
                    job.started_at,
                    job.finished_at,
                    int(job.stop_requested),
                    job.run_dir,
                ),
            )
            db.executemany(
                "INSERT INTO job_stages (job_id, idx, stage, argv, status, pid, pid_start, started_at, "
                "finished_at, exit_code, reason, field, log_tail, reason_i18n) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job.id,
                        s.index,
                        s.stage,
                        json.dumps(s.argv),
                        s.status,
                        s.pid,
                        s.pid_start,
                        s.started_at,
                        s.finished_at,
                        s.exit_code,
                        s.reason,
                        s.field,
                        s.log_tail,
                        None if s.reason_i18n is None else json.dumps(s.reason_i18n, ensure_ascii=False),
                    )
                    for s in job.stages
                ],
            )

    def get(self, job_id: int) -> Job:
        """One job with its stages (NotFound when absent)."""
        if not 0 < job_id < 2**63:  # beyond SQLite's integers: no such job
            raise NotFound(Message("store.no_job", {"id": job_id}))
        with self.store.connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise NotFound(Message("store.no_job", {"id": job_id}))
            stages = db.execute(
                "SELECT * FROM job_stages WHERE job_id = ? ORDER BY idx", (job_id,)
            ).fetchall()
        return _job(row, stages)

    def recent(self, limit: int = 50) -> list[Job]:
        """The most recent jobs, newest first."""
        with self.store.connect() as db:
            rows = db.execute("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
            ids = [r["id"] for r in rows]
            marks = ",".join("?" * len(ids))
            stages = (
                db.execute(
                    f"SELECT * FROM job_stages WHERE job_id IN ({marks}) ORDER BY job_id, idx", ids
                ).fetchall()
                if ids
                else []
            )
        by_job: dict[int, list[sqlite3.Row]] = {}
        for s in stages:
            by_job.setdefault(s["job_id"], []).append(s)
        return [_job(r, by_job.get(r["id"], [])) for r in rows]

    def with_status(self, *statuses: str) -> list[Job]:
        """Jobs in any of these states, oldest first."""
        marks = ",".join("?" * len(statuses))
        with self.store.connect() as db:
            ids = [
                r[0]
                for r in db.execute(
                    f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY id", statuses
                ).fetchall()
            ]
        return [self.get(i) for i in ids]

    def next_queued(self) -> Job | None:
        """The oldest queued job, if any."""
        jobs = self.with_status(QUEUED)
        return jobs[0] if jobs else None

    def active_count(self) -> int:
        """How many jobs are queued or running."""
        marks = ",".join("?" * len(ACTIVE))
        with self.store.connect() as db:
            return int(
                db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", tuple(ACTIVE)).fetchone()[
                    0
                ]
            )

    def set_job(self, job_id: int, **values: Any) -> None:
        """Update columns of a job (status, started_at, finished_at, stop_requested)."""
        if _update(self.store, "jobs", "id = ?", (job_id,), values):
            self._changed(job_id)

    def set_stage(self, job_id: int, index: int, **values: Any) -> None:
        """Update columns of one stage run."""
        if _update(self.store, "job_stages", "job_id = ? AND idx = ?", (job_id, index), values):
            self._changed(job_id)

    def skip_pending(self, job_id: int) -> None:
        """Mark the stages not reached as skipped."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE job_stages SET status = ? WHERE job_id = ? AND status = ?", (SKIPPED, job_id, PENDING)
            )
        self._changed(job_id)

    def request_stop(self, job_id: int) -> None:
        """Remember that the user asked this job to stop."""
        self.set_job(job_id, stop_requested=1)


_COLUMNS = {
    "jobs": {"status", "started_at", "finished_at", "stop_requested"},
    "job_stages": {
        "status",
        "pid",
        "pid_start",
        "started_at",
        "finished_at",
        "exit_code",
        "reason",
        "reason_i18n",
        "field",
        "log_tail",
    },
}


def _update(store: Store, table: str, where: str, key: tuple[Any, ...], values: dict[str, Any]) -> bool:
    """Set columns of the matching rows; whether any row changed."""
    unknown = set(values) - _COLUMNS[table]
    if unknown:
        raise ValueError(f"unknown columns for {table}: {sorted(unknown)}")
    if not values:
        return False
    assignments = ", ".join(f"{name} = ?" for name in values)
    with store.transaction() as db:
        cur = db.execute(f"UPDATE {table} SET {assignments} WHERE {where}", (*values.values(), *key))
        return cur.rowcount > 0


def _json_or_none(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _job(row: sqlite3.Row, stages: list[sqlite3.Row]) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        config_name=row["config_name"],
        params=json.loads(row["params"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        stop_requested=bool(row["stop_requested"]),
        run_dir=row["run_dir"],
        stages=[
            StageRun(
                index=s["idx"],
                stage=s["stage"],
                argv=json.loads(s["argv"]),
                status=s["status"],
                pid=s["pid"],
                pid_start=s["pid_start"],
                started_at=s["started_at"],
                finished_at=s["finished_at"],
                exit_code=s["exit_code"],
                reason=s["reason"],
                field=s["field"],
                log_tail=s["log_tail"],
                reason_i18n=_json_or_none(s["reason_i18n"]),
            )
            for s in stages
        ],
    )
