"""The command line of each stage of a job, and what must hold before it may start."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ...params.cli import to_argv
from ...params.schema import StudioConfig
from ...params.spec import SUBCOMMANDS, Stage
from ...params.validate import ConfigProblems, Problem, stage_problems

# `python -m qwen_image_studio.cli SUBCOMMAND`: the same commands as the seed's scripts, from any folder.
SUBCOMMAND_OF: dict[Stage, str] = {stage: name for name, stage in SUBCOMMANDS.items()}


class NotReady(ConfigProblems):
    """Valid values, but a stage cannot start yet: a required parameter or an input file is missing."""


def stage_command(stage: Stage, config: StudioConfig, events_file: Path) -> list[str]:
    """The full command that runs one stage with this configuration and writes events to `events_file`."""
    return [
        sys.executable,
        "-m",
        "qwen_image_studio.cli",
        SUBCOMMAND_OF[stage],
        *to_argv(config, stage),
        "--events_file",
        str(events_file),
    ]


def preflight(config: StudioConfig, stages: tuple[Stage, ...]) -> list[Problem]:
    """What stops these stages from starting: missing parameters and input files, once per field."""
    seen: dict[tuple[str, str], Problem] = {}
    for stage in stages:
        for problem in stage_problems(config, stage):
            seen.setdefault((problem.field, problem.message), problem)
    return list(seen.values())


def shown(argv: list[str]) -> str:
    """A command line as a shell would show it."""
    return shlex.join(argv)
