"""Each job's record as a file in its folder: `WORKSPACE/jobs/<id>/job.json` follows every change to the job.

SQLite stays the record the UI works from; the snapshot (kind, configuration, stages, statuses, exit codes,
timestamps) lets a damaged database be rebuilt from the job folders. A file is replaced in one step, so
a crash leaves the previous snapshot whole.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..config_mirror import write_atomic
from .store import Job
from .supervisor import JOBS_DIR

log = logging.getLogger(__name__)

SNAPSHOT_NAME = "job.json"
FORMAT = "qwen-image-studio-job"
VERSION = 1


def job_folders(workspace: Path) -> list[Path]:
    """The job folders of a workspace (WORKSPACE/jobs/<id>/), by id."""
    root = workspace / JOBS_DIR
    if not root.is_dir():
        return []
    folders = [p for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(folders, key=lambda p: int(p.name))


def snapshot_path(workspace: Path, job_id: int) -> Path:
    """Where a job's snapshot is kept."""
    return workspace / JOBS_DIR / str(int(job_id)) / SNAPSHOT_NAME


class JobSnapshots:
    """Writes `job.json` into a job's folder whenever the job store commits a change to the job."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace

    def changed(self, job: Job) -> None:
        """A job's rows changed: replace its snapshot."""
        doc = {"format": FORMAT, "version": VERSION, "job": job.record()}
        text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
        write_atomic(snapshot_path(self.workspace, job.id), text.encode("utf-8"))


def read_snapshot(path: Path) -> Job:
    """The job a snapshot file holds (ValueError when it is not one, OSError when unreadable)."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("job"), dict):
        raise ValueError(f"{path}: not a job snapshot")
    try:
        job = Job.from_record(doc["job"])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a job snapshot ({exc})") from None
    if str(job.id) != path.parent.name:
        raise ValueError(f"{path}: holds job {job.id}, not {path.parent.name}")
    return job


@dataclass
class Snapshots:
    """The jobs found in a workspace's job folders, and the folders without a readable snapshot."""

    jobs: list[Job] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)


def read_snapshots(workspace: Path) -> Snapshots:
    """Every job snapshot of a workspace, by id."""
    found = Snapshots()
    for folder in job_folders(workspace):
        try:
            found.jobs.append(read_snapshot(folder / SNAPSHOT_NAME))
        except (OSError, ValueError) as exc:
            log.warning("job folder %s: no usable %s (%s)", folder, SNAPSHOT_NAME, exc)
            found.unreadable.append(folder)
    return found
