"""TensorBoard beside the UI: started on the logging folder, restarted if it dies, re-pointed when the
folder changes, stopped with the UI. A busy port is reported, not ignored.

Each TensorBoard started is recorded (pid, start time, command line, port, and the UI that started it) in
WORKSPACE/logs/tensorboard.json: a UI started after an earlier one was killed (kill -9 leaves TensorBoard
running, holding the port) ends the TensorBoard left behind, once it is sure it is that one, and starts its
own. TensorBoard runs with TMPDIR in the workspace, so its .tensorboard-info files are not left in /tmp.

No PR_SET_PDEATHSIG: it fires when the *thread* that started the child ends, and TensorBoard is started
from request and watcher threads, so it would die with the request that re-pointed it.

It listens on 127.0.0.1 only (http://localhost:6006 on the machine running the UI); the UI also serves it
under PROXY_PREFIX on its own port (tensorboard_proxy.py), behind the UI's token, for remote browsers."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .jobs import procs
from .jobs.outcome import log_tail

log = logging.getLogger(__name__)

DEFAULT_PORT = 6006
PROXY_PREFIX = "/tensorboard"  # where the UI's own server shows it (tensorboard_proxy.py)
WATCH_S = 1.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 120.0
BUSY_RETRY_S = 10.0
END_TIMEOUT_S = 5.0  # SIGTERM, then SIGKILL after this long

# States: off (disabled), starting, running, restarting, port_busy, failed, stopped.


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port (checked by binding it as TensorBoard's server does, so closed
    connections still in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tensorboard_command(logdir: Path, port: int) -> list[str]:
    """The TensorBoard command line (loopback only; the UI links to it and proxies it under PROXY_PREFIX).

    No --path_prefix: with one, TensorBoard answers 404 at http://localhost:PORT/ itself. Its page only
    uses addresses relative to where it is served (<meta name="tb-relative-root" content="./">), so the
    proxy takes the prefix off and TensorBoard runs the same for both ways in."""
    return [
        sys.executable,
        "-m",
        "tensorboard.main",
        "--logdir",
        str(logdir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
    ]


class Records:
    """The TensorBoards that this workspace's web UIs started, in a JSON file shared by them (locked)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _entries(self) -> Iterator[list[dict[str, Any]]]:
        """The entries, locked against other UIs; what the caller leaves in the list is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            fh.seek(0)
            try:
                data = json.loads(fh.read() or "[]")
            except ValueError:
                data = []
            entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
            before = list(entries)
            yield entries
            if entries != before:
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(entries, indent=1))
                fh.flush()

    def remember(self, pid: int, port: int, logdir: Path, command: list[str]) -> None:
        """Record a TensorBoard this UI process has just started."""
        entry = {
            "pid": pid,
            "start": procs.start_time(pid),
            "port": port,
            "logdir": str(logdir),
            "cmdline": command,
            "ui_pid": os.getpid(),
            "ui_start": procs.start_time(os.getpid()),
        }
        with self._entries() as entries:
            entries[:] = [e for e in entries if e.get("pid") != pid] + [entry]

    def forget(self, pid: int) -> None:
        """Drop the record of a TensorBoard that has ended."""
        with self._entries() as entries:
            entries[:] = [e for e in entries if e.get("pid") != pid]

    def reclaim(self, timeout: float = END_TIMEOUT_S) -> list[int]:
        """End the TensorBoards left running by web UIs that are gone; returns their pids.

        A process counts as one only with the recorded start time and a command line naming tensorboard:
        a reused pid or another program on the port is left alone. Records of living UIs are kept."""
        with self._entries() as entries:
            orphans = [e for e in entries if not _ui_alive(e)]
            entries[:] = [e for e in entries if _ui_alive(e)]
        left = [e for e in orphans if _is_tensorboard(e)]
        for entry in left:
            procs.end_tree(int(entry["pid"]), str(entry["start"]), timeout=timeout)
        return [int(e["pid"]) for e in left]


def _ui_alive(entry: dict[str, Any]) -> bool:
    pid, start = entry.get("ui_pid"), entry.get("ui_start")
    return isinstance(pid, int) and isinstance(start, str) and procs.is_running(pid, start)


def _is_tensorboard(entry: dict[str, Any]) -> bool:
    """Whether the recorded process still runs and is the TensorBoard that was recorded."""
    pid, start = entry.get("pid"), entry.get("start")
    if not isinstance(pid, int) or pid <= 1 or not isinstance(start, str) or pid == os.getpid():
        return False
    return procs.is_running(pid, start) and any("tensorboard" in arg for arg in procs.cmdline_of(pid))


class TensorBoard:
    """One TensorBoard process watched by a thread."""

    def __init__(
        self,
        log_file: Path,
        port: int = DEFAULT_PORT,
        enabled: bool = True,
        tmp_dir: Path | None = None,
        record_file: Path | None = None,
    ) -> None:
        """`tmp_dir` becomes its TMPDIR (default: beside the log); `record_file` lists the TensorBoards the
        workspace's UIs started (default: the log's name with .json)."""
        self.log_file = log_file
        self.port = port
        self.enabled = enabled
        self.tmp_dir = tmp_dir or log_file.parent / "tensorboard-tmp"
        self.records = Records(record_file or log_file.with_suffix(".json"))
        self.logdir: Path | None = None
        self.state = "off" if not enabled else "stopped"
        self.message = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._restarts: deque[float] = deque()
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_try = 0.0

    def status(self) -> dict[str, Any]:
        """What the page shows: state, port, folder and a message."""
        with self._lock:
            return {
                "enabled": self.enabled,
                "state": self.state,
                "port": self.port,
                "logdir": str(self.logdir) if self.logdir else None,
                "message": self.message,
                "pid": self._proc.pid if self._proc and self._proc.poll() is None else None,
                "proxy_path": PROXY_PREFIX + "/",
            }

    def upstream_port(self) -> int | None:
        """The port of the TensorBoard this object started while it runs; None otherwise (off, stopped,
        failed, or a busy port that another program holds: the proxy must never forward there)."""
        with self._lock:
            proc = self._proc
            if not self.enabled or proc is None or proc.poll() is not None:
                return None
            if self.state not in ("starting", "running", "restarting"):
                return None
            return self.port

    def start(self, logdir: Path) -> None:
        """Start TensorBoard on `logdir` and the thread that keeps it running (first ending one that a
        killed UI left behind, also when TensorBoard is off)."""
        if not self.enabled:
            self._reclaim()
            return
        with self._lock:
            self.logdir = logdir
            self._spawn()
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="tensorboard", daemon=True)
            self._thread.start()

    def set_logdir(self, logdir: Path) -> bool:
        """Point TensorBoard at another folder (restarting it); False when it already shows that one."""
        if not self.enabled:
            return False
        with self._lock:
            if self.logdir == logdir and self.state in ("starting", "running"):
                return False
            self.logdir = logdir
            self._kill()
            self._restarts.clear()
            self._spawn()
        return True

    def stop(self) -> None:
        """Stop TensorBoard and its watcher (with the UI)."""
        self._closing.set()
        with self._lock:
            self._kill()
            if self.enabled:
                self.state, self.message = "stopped", ""

    # ---- internals --------------------------------------------------------------------------------

    def _reclaim(self) -> None:
        ended = self.records.reclaim()
        if ended:
            log.info(
                "ended TensorBoard %s, left running by a web UI that is gone", ", ".join(map(str, ended))
            )

    def _spawn(self) -> None:
        assert self.logdir is not None
        self._reclaim()
        if not port_free(self.port):
            self.state = "port_busy"
            self.message = (
                f"port {self.port} is in use by another program; TensorBoard was not started "
                "(start the UI with --tensorboard_port N or --no-tensorboard)"
            )
            log.warning("%s", self.message)
            self._next_try = time.monotonic() + BUSY_RETRY_S
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        command = tensorboard_command(self.logdir, self.port)
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **procs.temp_env(self.tmp_dir)},
                start_new_session=True,
            )
        self.records.remember(self._proc.pid, self.port, self.logdir, command)
        self.state, self.message = "starting", ""
        log.info("TensorBoard on %s: http://127.0.0.1:%d/ (pid %d)", self.logdir, self.port, self._proc.pid)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            procs.end_tree(proc.pid, procs.start_time(proc.pid), timeout=END_TIMEOUT_S)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1.0)
            self.records.forget(proc.pid)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2) as res:
                return res.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_S):
            try:
                self._check()
            except Exception:  # noqa: BLE001 - the watcher must keep watching
                log.exception("TensorBoard watcher")

    def _check(self) -> None:
        with self._lock:
            if self._closing.is_set():
                return
            if self.state == "port_busy":
                if time.monotonic() >= self._next_try:
                    self._spawn()
                return
            proc = self._proc
            if proc is None or self.state == "failed":
                return
            code = proc.poll()
            if code is None:
                if self.state != "running" and self._answers():
                    self.state, self.message = "running", ""
                return
            self._proc = None
            self.records.forget(proc.pid)
            tail = log_tail(self.log_file, lines=5)
            if "could not bind" in tail.lower() or "already in use" in tail.lower():
                self.state = "port_busy"
                self.message = f"port {self.port} is in use: {tail.splitlines()[-1] if tail else ''}".strip()
                self._next_try = time.monotonic() + BUSY_RETRY_S
                return
            now = time.monotonic()
            while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
                self._restarts.popleft()
            if len(self._restarts) >= MAX_RESTARTS:
                self.state = "failed"
                self.message = (
                    f"TensorBoard keeps exiting (code {code}); last lines of {self.log_file}:\n{tail}"
                )
                log.error("%s", self.message)
                return
            self._restarts.append(now)
            log.warning("TensorBoard exited with code %s; restarting", code)
            self._spawn()
            if self.state == "starting":
                self.state = "restarting"
