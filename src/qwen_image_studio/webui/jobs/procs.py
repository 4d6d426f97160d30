"""Processes of a job, read from /proc: identity (pid + start time), session members, ending them all, what a
job's leader left behind, and the temporary folder a child is given."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TEMP_VARS = ("TMPDIR", "TMP", "TEMP")  # what tempfile (and so multiprocessing's pymp-* folders) honours


@dataclass(frozen=True)
class ProcStat:
    """The fields of /proc/<pid>/stat the supervisor needs."""

    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int
    start: str  # clock ticks after boot: with the pid, identifies one process across pid reuse

    @property
    def alive(self) -> bool:
        """Whether the process still runs (a zombie has ended)."""
        return self.state not in ("Z", "X")


def stat_of(pid: int) -> ProcStat | None:
    """A process's stat, or None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or parentheses
    rest = text[text.rfind(")") + 2 :].split()
    if len(rest) < 20:
        return None
    return ProcStat(pid, rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[19])


def start_time(pid: int) -> str | None:
    """When a process started (its identity together with the pid), or None if it is gone."""
    stat = stat_of(pid)
    return stat.start if stat else None


def is_running(pid: int, start: str | None) -> bool:
    """Whether the process `pid` that started at `start` still runs (not a reused pid, not a zombie)."""
    stat = stat_of(pid)
    return stat is not None and stat.alive and (start is None or stat.start == start)


def cmdline_of(pid: int) -> list[str]:
    """A process's command line ([] when it is gone or has none, e.g. a zombie)."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [arg.decode("utf-8", "replace") for arg in raw.split(b"\0") if arg]


def _all_stats() -> list[ProcStat]:
    out = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = stat_of(int(entry.name))
            if stat is not None:
                out.append(stat)
    return out


def tree_of(leader: int) -> list[int]:
    """Living processes of a job: its session (the leader started one) and every descendant of the leader."""
    stats = _all_stats()
    members = {s.pid for s in stats if s.alive and (s.session == leader or s.pgrp == leader)}
    children: dict[int, list[int]] = {}
    for s in stats:
        children.setdefault(s.ppid, []).append(s.pid)
    alive = {s.pid for s in stats if s.alive}
    todo = [leader, *members]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(children.get(pid, []))
    return sorted(p for p in (seen | members) if p in alive)


def _signal(pids: list[int], leader: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(leader, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def end_tree(leader: int, leader_start: str | None, timeout: float, poll: float = 0.1) -> list[int]:
    """SIGTERM to the job's whole tree, SIGKILL to what is left after `timeout` s; returns pids still alive."""
    if leader <= 1 or leader == os.getpid() or leader == os.getpgrp():
        raise ValueError(f"refusing to end process group {leader}: it is not a job's")
    if leader_start is not None and not is_running(leader, leader_start) and not tree_of(leader):
        return []
    pids = tree_of(leader)
    _signal(pids, leader, signal.SIGTERM)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pids = tree_of(leader)
        if not pids:
            return []
        time.sleep(poll)
    _signal(tree_of(leader), leader, signal.SIGKILL)
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        pids = tree_of(leader)
        if not pids:
            return []
        time.sleep(poll)
    return pids


def _ticks(start: str) -> int:
    try:
        return int(start)
    except ValueError:
        return -1


def orphans_of(leader: int, leader_start: str | None) -> list[int]:
    """Living members of the session or group `leader` started at `leader_start`, once the leader itself has
    ended (e.g. dataloader workers of a trainer that died); [] when that cannot be told for sure.

    Linux does not give a pid to a new process while it still names a group or session, so members with
    that id belong to the leader's group; a process holding the id again means the group is gone (another
    program's now), and members older than the leader never were the job's."""
    if leader <= 1 or leader_start is None or _ticks(leader_start) < 0:
        return []
    stat = stat_of(leader)
    if stat is not None and (stat.alive or stat.start != leader_start):
        return []  # the leader still runs (not an orphan), or its id was reused
    since = _ticks(leader_start)
    return sorted(
        s.pid
        for s in _all_stats()
        if s.alive and (s.session == leader or s.pgrp == leader) and _ticks(s.start) >= since
    )


def end_orphans(leader: int, leader_start: str | None, timeout: float, poll: float = 0.1) -> list[int]:
    """SIGTERM to what a dead leader left behind (`orphans_of`), SIGKILL after `timeout` s; returns the pids
    ended (each checked by its start time before every signal, so a reused pid is never hit)."""
    found = {pid: start for pid in orphans_of(leader, leader_start) if (start := start_time(pid))}
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        left = [pid for pid, start in found.items() if is_running(pid, start)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        end = time.monotonic() + wait
        while left and time.monotonic() < end:
            time.sleep(poll)
            left = [pid for pid in left if is_running(pid, found[pid])]
        if not left:
            break
    return sorted(found)


def temp_env(folder: Path) -> dict[str, str]:
    """Environment variables that put a child's temporary files into `folder`."""
    return dict.fromkeys(TEMP_VARS, str(folder))


def clear_temp(folder: Path) -> None:
    """Remove a temporary folder the UI made for a child, with all in it (links are removed, not followed)."""
    if folder.is_symlink():
        folder.unlink(missing_ok=True)
        return
    shutil.rmtree(folder, ignore_errors=True)
