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

from ..demo_setup import child_env
from . import procs

log = logging.getLogger(__name__)

WORKER_LOG = Path("logs") / "generate-worker.log"
IDLE_TIMEOUT_S = 600.0  # an idle worker frees the GPU after this long


class WorkerRun:
    """One request to the worker, waited on as the supervisor waits on a stage's process."""

    persistent = True  # the process goes on after the request: the supervisor must not end its group

    def __init__(self, worker: GenerationWorker, proc: subprocess.Popen[bytes], job_id: int) -> None:
        self.worker, self.proc, self.job_id = worker, proc, job_id
        self.pid = proc.pid

    def wait(self, timeout: float | None = None) -> int:
        """The request's exit code; subprocess.TimeoutExpired while it runs. A worker that dies (Stop,
        out of memory, a crash) ends the request with the process's exit code."""
        reply = self.worker.reply(self.job_id, self.proc, timeout)
        if reply is None:
            raise subprocess.TimeoutExpired("generate worker", timeout or 0)
        return int(reply.get("exit_code", 1))


class GenerationWorker:
    """Starts the worker process when needed and passes it one request at a time."""

    def __init__(self, workspace: Path, idle_timeout: float = IDLE_TIMEOUT_S) -> None:
        self.workspace = workspace
        self.idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: dict[int, dict[str, Any]] = {}
        self.started = 0  # how many worker processes this UI started (a reused worker starts none)

    def submit(self, job_id: int, argv: list[str], log_file: Path) -> WorkerRun:
        """Send a generate request (the stage's flags) for a job; starts the worker when none runs."""
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            self._replies.pop(job_id, None)
            request = {"job": job_id, "argv": argv, "log": str(log_file)}
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
                proc.stdin.flush()
            except OSError:  # it died just now: a fresh one takes the request
                proc = self._start()
                assert proc.stdin is not None
                proc.stdin.write((json.dumps(request) + "\n").encode("utf-8"))
                proc.stdin.flush()
            return WorkerRun(self, proc, job_id)

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
            if job_id in self._replies:
                return self._replies.pop(job_id)
            if proc.poll() is not None:
                return {"job": job_id, "exit_code": proc.returncode}
            return None

    @property
    def pid(self) -> int | None:
        """The running worker's pid, None when none runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def release(self, timeout: float = 10.0) -> bool:
        """End the worker now (frees the GPU); False when none was running."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        procs.end_tree(proc.pid, procs.start_time(proc.pid), timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)  # reaped: `pid` is None from now on
        return True

    def close(self) -> None:
        """The web UI is closing: close the worker's stdin (it exits after its current request)."""
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
