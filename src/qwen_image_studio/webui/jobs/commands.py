"""The command line of each stage of a job, and what must hold before it may start."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ...data.caption_history import HISTORY_NAME
from ...params.cli import to_argv
from ...params.schema import StudioConfig
from ...params.spec import SUBCOMMANDS, Stage
from ...params.validate import ConfigProblems, Problem, stage_problems
from .schema import CAPTION_PREVIEW, JOB_KINDS

# `python -m qwen_image_studio.cli SUBCOMMAND`: the same commands as the seed's scripts, from any folder.
SUBCOMMAND_OF: dict[Stage, str] = {stage: name for name, stage in SUBCOMMANDS.items()}
PREVIEW_IMAGES = 3  # how many images a caption preview job captions
GENERATED_DIR = "generated"  # where the web UI's generation jobs write without a --save_path


def job_config(kind: str, config: StudioConfig, workspace: Path) -> StudioConfig:
    """The configuration a job of this kind runs with the form's values: a captioning job records every
    caption it replaces in the workspace's caption history (the gallery's undo), a preview captions the
    first few images and writes nothing; a generation job without --save_path writes into
    WORKSPACE/generated. The form shows neither setting (both are declared cli_only). The
    caption jobs use the form's --caption_template: --prompt is the Generate tab's image prompt."""
    if Stage.GENERATE in JOB_KINDS[kind] and not config.save_path:
        return config.model_copy(update={"save_path": str(workspace / GENERATED_DIR)})
    if Stage.CAPTION not in JOB_KINDS[kind]:
        return config
    preview = PREVIEW_IMAGES if kind == CAPTION_PREVIEW else None
    update = {"caption_history": str(workspace / HISTORY_NAME), "preview_count": preview, "prompt": None}
    return config.model_copy(update=update)


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
