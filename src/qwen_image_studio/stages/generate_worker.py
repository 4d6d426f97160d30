"""The generation worker: a process that keeps the generation models loaded between requests.

The web UI starts it (its own process group; `webui/jobs/generation_worker.py`) and hands it the
generate stage of each generation job instead of starting a new process. Requests arrive one JSON line
at a time on stdin: ``{"job": ID, "argv": [generate flags..., "--events_file", FILE], "log": FILE}``.
While one runs, the process's stdout and stderr point to the job's log file, so a request writes its log
and events exactly as a ``generate`` process does (`stages.runner.main`); the reply
``{"job": ID, "exit_code": N, "loaded": [...]}`` (what it had to load: "dit", "vae", "text_encoder")
goes to the file descriptor ``--reply_fd``. After ``--idle_timeout`` seconds without a request, or when
stdin closes (the web UI ended), it frees the models and exits; stopping a job ends the whole worker,
which frees the GPU at once. An idle or closed worker exits with code 75 (`params.spec.WORKER_IDLE_EXIT`), so the web UI
knows that a request it sent in that moment was never read and hands it to a fresh worker.

    python -m qwen_image_studio.stages.generate_worker --reply_fd 3 [--idle_timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import sys
from collections.abc import Iterator
from typing import IO, Any

from ..logging_setup import setup_logging
from ..params.spec import WORKER_IDLE_EXIT, Stage
from . import generate
from .generate_kept import KeptModels

log = logging.getLogger(__name__)

DEFAULT_IDLE_TIMEOUT_S = 600.0


@contextlib.contextmanager
def output_to(path: str) -> Iterator[None]:
    """Point fd 1 and 2 (and so print, logging and progress bars) at a log file while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def handle(request: dict[str, Any], kept: KeptModels) -> dict[str, Any]:
    """Run one generate request as `stages.runner.main` runs the command; its reply."""
    from .runner import main

    job, argv, log_file = request.get("job"), request.get("argv"), request.get("log")
    if (
        not isinstance(argv, list)
        or not all(isinstance(a, str) for a in argv)
        or not isinstance(log_file, str)
    ):
        return {"job": job, "exit_code": 2, "error": "a request needs 'argv' (a list of flags) and 'log'"}
    kept.loads = []
    with output_to(log_file):
        code = main(Stage.GENERATE, argv)
    return {"job": job, "exit_code": code, "loaded": list(kept.loads)}


def serve(requests: IO[str], replies: IO[str], idle_timeout: float) -> None:
    """Answer requests until stdin closes or none comes for `idle_timeout` seconds."""
    kept = KeptModels()
    generate.KEEP = kept
    try:
        while True:
            ready, _, _ = select.select([requests], [], [], idle_timeout)
            if not ready:
                log.info("no request for %g s: freeing the models and exiting", idle_timeout)
                return
            line = requests.readline()
            if not line:
                log.info("the web UI closed the request channel: exiting")
                return
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                request = None
            reply = (
                handle(request, kept)
                if isinstance(request, dict)
                else {"exit_code": 2, "error": "bad request"}
            )
            replies.write(json.dumps(reply) + "\n")
            replies.flush()
    finally:
        generate.KEEP = None
        kept.close()


def main(argv: list[str] | None = None) -> int:
    """The worker's command line."""
    parser = argparse.ArgumentParser(prog="generate_worker", description=__doc__.split("\n")[0])
    parser.add_argument("--reply_fd", type=int, required=True, help="file descriptor the replies go to")
    parser.add_argument("--idle_timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    args = parser.parse_args(argv)
    setup_logging()
    with os.fdopen(args.reply_fd, "w", encoding="utf-8") as replies:
        serve(sys.stdin, replies, args.idle_timeout)
    return WORKER_IDLE_EXIT


if __name__ == "__main__":
    sys.exit(main())
