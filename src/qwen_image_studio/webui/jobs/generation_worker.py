"""The web UI's side of the generation worker (`stages/generate_worker.py`): one process that keeps the
generation models loaded, started for the first generation job and reused by the next ones.

It runs in its own process group like a stage (so Stop ends it and frees the GPU), never in the web UI's
process; when the web UI ends, the worker's stdin closes and it exits after the request it is running.
Its own output (between requests) goes to ``WORKSPACE/logs/generate-worker.log``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from ...params.spec import WORKER_IDLE_EXIT
from ..demo_setup import child_env
from . import procs

log = logging.getLogger(__name__)

WORKER_LOG = Path("logs") / "generate-worker.log"
IDLE_TIMEOUT_S = 600.0  # an idle worker frees the GPU after this long


class WorkerRun:
    """One request to the worker, waited on as the supervisor waits on a stage's process."""

    persistent = True  # the process goes on after the request: the supervisor must not end its group

    def __init__(
        self, worker: GenerationWorker, proc: subprocess.Popen[bytes], job_id: int, request: bytes
    ) -> None:
        self.worker, self.proc, self.job_id, self.request = worker, proc, job_id, request
        self.pid = proc.pid
        self.resent = False

    def wait(self, timeout: float | None = None) -> int:
        """The request's exit code; subprocess.TimeoutExpired while it runs. A worker that dies (Stop,
        out of memory, a crash) ends the request with the process's exit code (1 for a clean exit without
        a reply); one that went idle before reading it gets the request sent once to a fresh worker."""
        reply = self.worker.reply(self.job_id, self.proc, timeout)
        if reply is None:
            raise subprocess.TimeoutExpired("generate worker", timeout or 0)
        if "exit_code" in reply and reply.get("died") and reply["exit_code"] == WORKER_IDLE_EXIT and not self.resent:
            self.resent = True
            self.proc = self.worker.resend(self.job_id, self.request)
            self.pid = self.proc.pid
            return self.wait(timeout)
        code = int(reply.get("exit_code", 1))
        return 1 if reply.get("died") and code == 0 else code


class GenerationWorker:
    """Starts the worker process when needed and passes it one request at a time."""

    def __init__(self, workspace: Path, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.workspace = workspace
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: dict[int, dict[str, Any]] = {}
        self._busy: int | None = None  # the job whose request the worker holds now
        self.started = 0  # how many worker processes this UI started (a reused worker starts none)

    def submit(self, job_id: int, argv: list[str], log_file: Path) -> WorkerRun:
        """Send a generate request (the stage's flags) for a job; starts the worker when none runs."""
        request = (json.dumps({"job": job_id, "argv": argv, "log": str(log_file)}) + "\n").encode("utf-8")
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            self._replies.pop(job_id, None)
            proc = self._send(proc, request)
            self._busy = job_id
            return WorkerRun(self, proc, job_id, request)

    def resend(self, job_id: int, request: bytes) -> subprocess.Popen[bytes]:
        """Send a request again, to a fresh worker (the one it went to exited idle without reading it)."""
        with self._lock:
            log.info("the generation worker went idle before reading job #%s's request: starting a fresh one", job_id)
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            proc = self._send(proc, request)
            self._busy = job_id
            return proc

    def _send(self, proc: subprocess.Popen[bytes], request: bytes) -> subprocess.Popen[bytes]:
        assert proc.stdin is not None
        try:
            proc.stdin.write(request)
            proc.stdin.flush()
        except OSError:  # it died just now: a fresh one takes the request
            proc = self._start()
            assert proc.stdin is not None
            proc.stdin.write(request)
            proc.stdin.flush()
        return proc

    def _start(self) -> subprocess.Popen[bytes]:
        read_fd, write_fd = os.pipe()
        logs = self.workspace / WORKER_LOG
        logs.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.workspace / ".tmp" / "generate-worker"
        tmp.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "qwen_image_studio.stages.generate_worker"]
        command += ["--reply_fd", str(write_fd), "--idle_timeout", f"{self.idle_timeout:g}"]
        with open(logs, "ab") as out:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workspace,
                env={**child_env(), "PYTHONUNBUFFERED": "1", **procs.temp_env(tmp)},
                start_new_session=True,
                pass_fds=(write_fd,),
            )
        os.close(write_fd)
        self._proc = proc
        self.started += 1
        threading.Thread(
            target=self._read, args=(proc, read_fd), name="generate-worker-replies", daemon=True
        ).start()
        log.info("generation worker started (pid %s)", proc.pid)
        return proc

    def _read(self, proc: subprocess.Popen[bytes], read_fd: int) -> None:
        with os.fdopen(read_fd, "r", encoding="utf-8") as replies:
            for line in replies:
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue
                with self._lock:
                    if isinstance(reply.get("job"), int):
                        self._replies[reply["job"]] = reply
                    self._changed.notify_all()
        proc.wait()
        with self._lock:
            self._changed.notify_all()

    def reply(
        self, job_id: int, proc: subprocess.Popen[bytes], timeout: float | None
    ) -> dict[str, Any] | None:
        """The reply to a job's request; the worker's exit code when it died first; None on timeout."""
        with self._lock:
            self._changed.wait_for(lambda: job_id in self._replies or proc.poll() is not None, timeout)
            if job_id in self._replies or proc.poll() is not None:
                if self._busy == job_id:
                    self._busy = None
                if job_id in self._replies:
                    return self._replies.pop(job_id)
                return {"job": job_id, "exit_code": proc.returncode, "died": True}
            return None

    @property
    def pid(self) -> int | None:
        """The running worker's pid, None when none runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def release_if_idle(self, timeout: float = 10.0) -> bool | None:
        """End the worker unless it holds a request ("Free GPU"): True when ended, False when none was
        running, None when busy. A request submitted meanwhile goes to a fresh worker."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return False
            if self._busy is not None:
                return None
            self._proc = None  # taken out under the lock: submit() starts a fresh one from now on
        self._end(proc, timeout)
        return True

    def release(self, timeout: float = 10.0) -> bool:
        """End the worker now, with any request it holds (Stop; another kind of job needs the GPU); False
        when none was running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        self._end(proc, timeout)
        return True

    @staticmethod
    def _end(proc: subprocess.Popen[bytes], timeout: float) -> None:
        procs.end_tree(proc.pid, procs.start_time(proc.pid), timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)  # reaped: `pid` is None from now on

    def close(self) -> None:
        """The web UI is closing: close the worker's stdin (it exits after its current request)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
