"""Creates the demo workspace in a child process (the demo factory imports torch; the UI never does)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..demo.workspace import MARKER

log = logging.getLogger(__name__)

DEMO_DIR = "demo"
TIMEOUT_S = 1800
LOG_TAIL_LINES = 8


@dataclass
class DemoStatus:
    """Where the demo workspace stands: absent, creating, ready, failed or skipped."""

    state: str
    message: str = ""

    def as_json(self) -> dict[str, str]:
        """The status for the UI."""
        return {"state": self.state, "message": self.message}


def demo_dir(workspace: Path) -> Path:
    """The demo workspace's folder inside the UI workspace."""
    return workspace / DEMO_DIR


def demo_ready(workspace: Path) -> bool:
    """Whether a complete demo workspace exists."""
    return (demo_dir(workspace) / MARKER).exists()


def demo_command(target: Path) -> list[str]:
    """The child command that writes the demo workspace."""
    return [sys.executable, "-m", "qwen_image_studio.cli", "demo", "create", str(target)]


def child_env() -> dict[str, str]:
    """This environment, with this package importable and the model hubs offline."""
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


class DemoBuilder:
    """Runs `qwen-image-studio demo create` once, in the background, and reports its status."""

    def __init__(self, workspace: Path, on_ready: Callable[[], None]) -> None:
        self.workspace = workspace
        self.on_ready = on_ready
        self.status = DemoStatus("ready" if demo_ready(workspace) else "absent")
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def log_path(self) -> Path:
        """Where the child's output goes."""
        return self.workspace / "logs" / "demo-create.log"

    def start(self) -> threading.Thread | None:
        """Start creating the demo in a background thread unless it exists; returns the thread."""
        if self.status.state == "ready":
            return None
        self.status = DemoStatus("creating", str(demo_dir(self.workspace)))
        thread = threading.Thread(target=self.run, name="demo-create", daemon=True)
        thread.start()
        return thread

    def run(self) -> DemoStatus:
        """Create the demo now (blocking) and import its configurations when it succeeds."""
        target = demo_dir(self.workspace)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = demo_command(target)
        log.info("creating the demo workspace: %s", " ".join(command))
        try:
            with open(self.log_path, "wb") as out, self._lock:
                self._proc = subprocess.Popen(
                    command,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env(),
                    cwd=self.workspace,
                    start_new_session=True,
                )
            code = self._proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            code = -1
        except OSError as exc:
            self.status = DemoStatus("failed", f"the demo could not be started: {exc}")
            return self.status
        finally:
            self._proc = None
        if code == 0 and demo_ready(self.workspace):
            self.status = DemoStatus("ready", str(target))
            self.on_ready()
        else:
            detail = _tail(self.log_path)
            self.status = DemoStatus(
                "failed",
                f"creating the demo failed (exit code {code}; log: {self.log_path})\n{detail}".strip(),
            )
            log.error("%s", self.status.message)
        return self.status

    def stop(self) -> None:
        """End the child's whole process group if it is still running."""
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
