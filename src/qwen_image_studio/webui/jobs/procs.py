"""Processes of a job, read from /proc: identity (pid + start time), session members, and ending them all."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


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
