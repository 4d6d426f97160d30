"""Runs jobs one at a time: each stage as its own process group, stopped as a whole tree, re-attached after
a restart of the web UI (a process is recognised by its pid and start time)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ...params.schema import StudioConfig
from ...params.spec import Stage
from ...params.validate import ConfigProblems, Message, problems_message, validate_config
from ..demo_setup import child_env
from ..paths import resolve_in
from . import procs
from .commands import SUBCOMMAND_OF, NotReady, preflight, shown, stage_command
from .generation_worker import GenerationWorker, WorkerRun
from .hub import Hub
from .outcome import Outcome, exit_code_of, final_event, outcome_of
from .schema import (
    DONE,
    FAILED,
    FINAL,
    JOB_KINDS,
    QUEUED,
    RUNNING,
    SKIPPED,
    STATUS_ICONS,
    STOPPED,
    WARNING_ICON,
)
from .store import Job, JobStore, StageRun

log = logging.getLogger(__name__)

JOBS_DIR = "jobs"
LOCK_NAME = ".supervisor.lock"  # one UI process per workspace runs its jobs
LOG_NAME = "log.txt"
TMP_NAME = "tmp"  # a stage's TMPDIR inside its job's folder, removed when the stage ends
EVENTS_NAME = "events.jsonl"
WAIT_POLL_S = 0.25
STALL_AFTER_S = 600.0  # a running stage silent this long gets a ⏰ line in its log (None or 0: never)
DETACHED = Outcome("detached")  # the web UI is closing: the stage goes on, the next UI re-attaches to it
RUN_PREFIX = "job-"  # a web-UI job's train stage writes into OUTPUT_DIR/job-<id>/ (see run_folder)

Command = Callable[[Stage, StudioConfig, Path], list[str]]


def job_paths(workspace: Path, job_id: int) -> tuple[Path, Path]:
    """A job's log file and events file (WORKSPACE/jobs/<id>/)."""
    folder = workspace / JOBS_DIR / str(int(job_id))
    return folder / LOG_NAME, folder / EVENTS_NAME


def run_folder(output_dir: Path, job_id: int) -> Path:
    """The run folder of a job: `output_dir/job-<id>`, or `job-<id>-2`, `-3`, ... when that one exists and is
    not an empty folder (a re-created database may reuse an id): a job never writes into another's files."""
    base = f"{RUN_PREFIX}{int(job_id)}"
    for n in range(1, 10_000):
        candidate = output_dir / (base if n == 1 else f"{base}-{n}")
        if not os.path.lexists(candidate):
            return candidate
        try:
            if candidate.is_dir() and not candidate.is_symlink() and not any(candidate.iterdir()):
                return candidate
        except OSError:
            pass
    raise FileExistsError(f"no free run folder for job {job_id} in {output_dir}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _duration(seconds: float) -> str:
    """A silence as people say it: 1.2 s, 45 s, 10 min, 12 min 30 s, 1 h 5 min."""
    total = int(seconds)
    if total < 10:
        return f"{seconds:.1f} s"
    if total < 60:
        return f"{total} s"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


class StallWatch:
    """Whether a running stage has gone quiet: no byte of output in its log and no event for `after` s.

    `check` answers the length of the silence once per silence (then None until the stage writes again);
    `ours` is called after the supervisor appends its own line, which is not the stage speaking.
    """

    def __init__(self, log_file: Path, events_file: Path, after: float, clock: Callable[[], float]) -> None:
        self.files = (log_file, events_file)
        self.after = after
        self.clock = clock
        self.sizes = self._sizes()
        self.since = clock()
        self.warned = False

    def _sizes(self) -> tuple[int, ...]:
        return tuple(_size(f) for f in self.files)

    def check(self) -> float | None:
        """The silence so far when a warning is due now, else None."""
        now = self.clock()
        sizes = self._sizes()
        if sizes != self.sizes:
            self.sizes, self.since, self.warned = sizes, now, False
            return None
        if self.warned or now - self.since < self.after:
            return None
        self.warned = True
        return now - self.since

    def ours(self) -> None:
        """The supervisor wrote to the log: not a sign of life of the stage."""
        self.sizes = self._sizes()


@dataclass
class _Current:
    """The stage process running now."""

    job_id: int
    pid: int
    start: str | None
    in_worker: bool = False  # a request to the generation worker (which goes on after it)


class Supervisor:
    """The job queue: one job runs at a time, the others wait in order; state lives in SQLite."""

    def __init__(
        self,
        workspace: Path,
        jobs: JobStore,
        hub: Hub,
        stop_timeout: float = 10.0,
        command: Command = stage_command,
        stall_after: float | None = STALL_AFTER_S,
        worker: GenerationWorker | None = None,
    ) -> None:
        self.workspace = workspace
        self.worker = worker  # runs the generate stage with the models kept loaded (None: a process per job)
        self.jobs = jobs
        self.hub = hub
        self.stop_timeout = stop_timeout
        self.command = command
        self.stall_after = stall_after if stall_after and stall_after > 0 else None
        self._lock = threading.RLock()
        self._current: _Current | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- files ------------------------------------------------------------------------------------

    def job_dir(self, job_id: int) -> Path:
        """The folder of a job's log and events."""
        return self.workspace / JOBS_DIR / str(int(job_id))

    def tmp_dir(self, job_id: int) -> Path:
        """The temporary folder of a job's running stage (its TMPDIR, so nothing is left in /tmp)."""
        return self.job_dir(job_id) / TMP_NAME

    def paths(self, job_id: int) -> tuple[Path, Path]:
        """A job's log file and events file."""
        return job_paths(self.workspace, job_id)

    # ---- the API's side ---------------------------------------------------------------------------

    def submit(self, kind: str, config: StudioConfig, config_name: str | None) -> Job:
        """Queue a job of `kind` (a stage or the pipeline) with a validated, path-resolved configuration;
        the train stage gets the job's own run folder as --output_dir (`run_folder`), params keep `config`."""
        stages = JOB_KINDS[kind]
        problems = preflight(config, stages)
        if problems:
            raise NotReady(problems)
        params = config.model_dump(mode="json")  # what the user chose; the train stage gets the run folder
        output_dir = resolve_in(self.workspace, config.output_dir) if config.output_dir else None
        runs: dict[int, Path] = {}

        def run_dir_for(job_id: int) -> str | None:
            if Stage.TRAIN not in stages or output_dir is None:
                return None
            runs[job_id] = run_folder(output_dir, job_id)
            return str(runs[job_id])

        def argv_for(job_id: int) -> list[list[str]]:
            _, events = self.paths(job_id)
            run = runs.get(job_id)
            return [
                self.command(
                    stage,
                    config.model_copy(update={"output_dir": str(run)})
                    if stage == Stage.TRAIN and run is not None
                    else config,
                    events,
                )
                for stage in stages
            ]

        job = self.jobs.create(kind, config_name, params, [s.value for s in stages], argv_for, run_dir_for)
        self.job_dir(job.id).mkdir(parents=True, exist_ok=True)
        self.hub.announce(job.as_json())
        self._wake.set()
        return job

    def stop(self, job_id: int) -> Job:
        """Stop a job: a queued one never starts; a running one gets SIGTERM, then SIGKILL after the timeout."""
        with self._lock:
            job = self.jobs.get(job_id)
            if job.is_final:
                return job
            self.jobs.request_stop(job_id)
            current = self._current if self._current and self._current.job_id == job_id else None
            if job.status == QUEUED:
                self.jobs.skip_pending(job_id)
                self.jobs.set_job(job_id, status=STOPPED, finished_at=time.time())
        if current is not None:
            threading.Thread(
                target=self._end, args=(current,), name=f"stop-job-{job_id}", daemon=True
            ).start()
        job = self.jobs.get(job_id)
        self.hub.announce(job.as_json())
        self._wake.set()
        return job

    def _end(self, current: _Current) -> None:
        if current.in_worker and self.worker is not None:
            with self._lock:  # the request may have finished meanwhile: the worker then serves another job
                still = self._current is not None and self._current.job_id == current.job_id
            if still:
                self.worker.release(self.stop_timeout)  # whichever worker process holds the request now
            return
        left = procs.end_tree(current.pid, current.start, self.stop_timeout)
        if left:
            log.error("job %s: processes %s survived SIGKILL", current.job_id, left)

    # ---- the worker thread ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread (it first re-attaches to jobs that were running)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="jobs-supervisor", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop taking new jobs; running stages go on (a restarted UI re-attaches to them)."""
        self._closing.set()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running (for tests and shutdown); True when idle."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.jobs.active_count() == 0:
                return True
            time.sleep(0.05)
        return False

    def _next(self) -> Job | None:
        running = self.jobs.with_status(RUNNING)
        return running[0] if running else self.jobs.next_queued()

    def _take_workspace(self) -> int | None:
        """Hold the workspace's job lock (another UI on this workspace runs its jobs until it stops)."""
        folder = self.workspace / JOBS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        warned = False
        while not self._closing.is_set():
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if not warned:
                    log.warning(
                        "another web UI runs the jobs of %s; this one waits until it stops", self.workspace
                    )
                    warned = True
                self._closing.wait(1.0)
        os.close(fd)
        return None

    def _loop(self) -> None:
        fd = self._take_workspace()
        if fd is None:
            return
        try:
            self._serve()
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)  # releases the lock

    def _serve(self) -> None:
        unreadable = False
        while not self._closing.is_set():
            try:
                job = self._next()
            except sqlite3.DatabaseError as exc:  # damaged while running: the queue waits for a restart
                if not unreadable:
                    log.error(
                        "cannot read the jobs from %s (%s): restart the web UI to repair it",
                        self.jobs.store.path,
                        exc,
                    )
                unreadable = True
                self._closing.wait(5.0)
                continue
            unreadable = False
            if job is None:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the queue
                log.exception("job %s failed in the supervisor", job.id)
                self._finish(job.id, FAILED)
                self.hub.announce({**self.jobs.get(job.id).as_json(), "error": str(exc)})

    def _run(self, job: Job) -> None:
        with self._lock:  # stop() reads and writes under the same lock: a stopped job is never revived
            job = self.jobs.get(job.id)
            if job.is_final or job.stop_requested:  # stopped while it was being picked
                if not job.is_final:
                    self._finish(job.id, STOPPED)
                return
            if job.status == QUEUED:
                self.jobs.set_job(job.id, status=RUNNING, started_at=time.time())
        self.hub.set_active(job.id, True)
        self.hub.feed(job.id)
        try:
            for run in job.stages:
                if run.status in FINAL or run.status == SKIPPED:
                    continue
                result = self._reattach(job, run) if run.status == RUNNING else self._launch(job.id, run)
                if result is not DETACHED:  # the stage has ended (or never started): its temporary files go
                    procs.clear_temp(self.tmp_dir(job.id))
                if result is None:  # stopped before it started
                    self._finish(job.id, STOPPED)
                    return
                if result is DETACHED:
                    return
                self._record(job.id, run, result)
                if result.status != DONE:
                    self._finish(job.id, result.status)
                    return
            self._finish(job.id, DONE)
        finally:
            self.hub.set_active(job.id, False)

    def _launch(self, job_id: int, run: StageRun) -> Outcome | None:
        """Start one stage and wait for it; None when the job was stopped before the stage started."""
        job = self.jobs.get(job_id)
        log_file, events_file = self.paths(job_id)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            config = validate_config(job.params)
            problems = preflight(config, (Stage(run.stage),))
        except ConfigProblems as exc:
            problems = exc.problems
        if problems:
            self._note(log_file, *(f"cannot start {run.stage}: {p.message}" for p in problems))
            return Outcome.said(FAILED, None, problems_message(problems), problems[0].field or None)
        self._note(log_file, f"$ {shown(run.argv)}")
        if self.worker is not None and self._worker_flags(run) is None and self.worker.release():
            self._note(log_file, "the generation worker was ended to free its memory for this stage")
        with self._lock:
            if self.jobs.get(job_id).stop_requested:
                return None
            tmp = self.tmp_dir(job_id)
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                proc: subprocess.Popen[bytes] | WorkerRun
                flags = self._worker_flags(run)
                if flags is not None and self.worker is not None:
                    proc = self.worker.submit(job_id, flags, log_file)
                else:
                    with open(log_file, "ab") as out:
                        proc = subprocess.Popen(
                            run.argv,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL,
                            cwd=self.workspace,
                            env={**child_env(), "PYTHONUNBUFFERED": "1", **procs.temp_env(tmp)},
                            start_new_session=True,
                        )
            except OSError as exc:
                result = Outcome.said(FAILED, None, Message("reason.not_started", {"detail": exc}))
                self._note(log_file, result.reason or "")
                return result
            start = procs.start_time(proc.pid)
            self._current = _Current(job_id, proc.pid, start, isinstance(proc, WorkerRun))
            self.jobs.set_stage(
                job_id, run.index, status=RUNNING, pid=proc.pid, pid_start=start, started_at=time.time()
            )
        self.hub.announce(self.jobs.get(job_id).as_json())
        code = self._wait(proc, self._watch(job_id, run.stage))
        if code is None:
            return DETACHED
        if isinstance(proc, WorkerRun):  # the worker goes on with the models loaded
            with self._lock:
                self._current = None
        else:
            self._after_exit(proc.pid)
        event = final_event(events_file, run.stage)
        return outcome_of(code, event, self.jobs.get(job_id).stop_requested, log_file)

    def _reattach(self, job: Job, run: StageRun) -> Outcome:
        """Follow a stage that was started by an earlier run of the web UI."""
        log_file, events_file = self.paths(job.id)
        if run.pid is not None and procs.is_running(run.pid, run.pid_start):
            log.info("job %s: re-attached to %s (pid %s)", job.id, run.stage, run.pid)
            with self._lock:
                self._current = _Current(job.id, run.pid, run.pid_start)
            watch = self._watch(job.id, run.stage)
            while procs.is_running(run.pid, run.pid_start):
                if self._closing.wait(WAIT_POLL_S):
                    return DETACHED
                watch()
            self._after_exit(run.pid)
        else:
            self._end_orphans(job.id, run)
        event = final_event(events_file, run.stage)
        return outcome_of(exit_code_of(event), event, self.jobs.get(job.id).stop_requested, log_file)

    def _worker_flags(self, run: StageRun) -> list[str] | None:
        """The generate flags of a stage the generation worker takes (None: it runs as its own process)."""
        name = SUBCOMMAND_OF[Stage.GENERATE]
        if self.worker is None or run.stage != Stage.GENERATE.value or name not in run.argv:
            return None
        return run.argv[run.argv.index(name) + 1 :]

    def _wait(self, proc: subprocess.Popen[bytes] | WorkerRun, watch: Callable[[], None]) -> int | None:
        """The exit code of a stage, or None when the web UI closes first; `watch` runs between polls."""
        while True:
            try:
                return proc.wait(timeout=WAIT_POLL_S)
            except subprocess.TimeoutExpired:
                if self._closing.is_set():
                    return None
                watch()

    def _watch(self, job_id: int, stage: str) -> Callable[[], None]:
        """What to do between polls of a running stage: warn once per silence of `stall_after` s in its
        log (a ⏰ line, which the live log shows too); the stage itself is left alone."""
        if self.stall_after is None:
            return lambda: None
        log_file, events_file = self.paths(job_id)
        watch = StallWatch(log_file, events_file, self.stall_after, time.monotonic)

        def check() -> None:
            silent = watch.check()
            if silent is None:
                return
            self._note(
                log_file,
                f"{WARNING_ICON} [{stage}: no output and no progress for {_duration(silent)}; "
                "it is still running and was not stopped]",
                own_line=True,
            )
            watch.ours()
            self.hub.flush(job_id)

        return check

    def _end_orphans(self, job_id: int, run: StageRun) -> None:
        """A stage that ended while the UI was down may have left processes in its group (dataloader
        workers): end them, recognised by the group id and the leader's start time."""
        if run.pid is None:
            return
        ended = procs.end_orphans(run.pid, run.pid_start, self.stop_timeout)
        if ended:
            log.warning("job %s: ended %s, left by %s (pid %s)", job_id, ended, run.stage, run.pid)
            log_file, _ = self.paths(job_id)
            self._note(
                log_file,
                f"{WARNING_ICON} [{run.stage} ended while the web UI was not running; "
                f"ended the processes it left: {', '.join(map(str, ended))}]",
                own_line=True,
            )

    def _after_exit(self, pid: int) -> None:
        """End whatever the stage left behind in its process group, then forget it."""
        if procs.tree_of(pid):
            procs.end_tree(pid, None, self.stop_timeout)
        with self._lock:
            self._current = None

    def _record(self, job_id: int, run: StageRun, result: Outcome) -> None:
        log_file, _ = self.paths(job_id)
        started = self.jobs.get(job_id).stages[run.index].started_at
        now = time.time()
        took = f", {now - started:.1f} s" if started else ""
        code = "" if result.exit_code is None else f"exit code {result.exit_code}, "
        icon = STATUS_ICONS.get(result.status, WARNING_ICON)
        self._note(log_file, f"{icon} [{run.stage}: {code}{result.status}{took}]", own_line=True)
        self.jobs.set_stage(
            job_id,
            run.index,
            status=result.status,
            finished_at=now,
            exit_code=result.exit_code,
            reason=result.reason,
            reason_i18n=json.dumps(result.i18n.as_json(), ensure_ascii=False) if result.i18n else None,
            field=result.field,
            log_tail=result.log_tail,
        )
        self.hub.announce(self.jobs.get(job_id).as_json())

    def _finish(self, job_id: int, status: str) -> None:
        """Record a job's end; one whose stop was requested ends stopped, never done."""
        with self._lock:
            if status == DONE and self.jobs.get(job_id).stop_requested:
                status = STOPPED
            self.jobs.skip_pending(job_id)
            self.jobs.set_job(job_id, status=status, finished_at=time.time())
        self.hub.announce(self.jobs.get(job_id).as_json())

    @staticmethod
    def _note(log_file: Path, *lines: str, own_line: bool = False) -> None:
        """Append the supervisor's own lines to a job's log (appends are atomic, so a stage may be writing
        too); with `own_line`, an unfinished last line of the stage (a progress bar) is ended first."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a+b") as fh:
            if own_line and fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
            fh.write("".join(line + "\n" for line in lines).encode("utf-8"))
