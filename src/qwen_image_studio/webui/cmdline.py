"""Reads a pasted reference-trainer command line into a configuration."""

from __future__ import annotations

import contextlib
import difflib
import io
import re
import shlex
from pathlib import PurePath

from ..errors import ConfigError
from ..params.cli import build_parser, parse_args
from ..params.fields import fields_for
from ..params.schema import StudioConfig
from ..params.spec import STAGE_SCRIPTS, SUBCOMMANDS, Stage
from ..params.validate import ConfigProblems, Message, MessageError, Problem

MAX_TEXT = 100_000
# Line continuations of POSIX shells, cmd.exe and PowerShell.
_CONTINUATION = re.compile(r"(\\|\^|`)\r?\n")
_PYTHON = re.compile(r"^(python[0-9.]*|py)(\.exe)?$", re.IGNORECASE)
_NEGATIVE = re.compile(r"^-\d|^-\.\d")  # a negative number is a value, not a flag
# The scripts whose command lines the form reads (captioning has no form fields yet), and the
# `qwen-image-studio SUBCOMMAND ...` subcommands by stage.
_SCRIPTS = {stage: script for stage, script in STAGE_SCRIPTS.items() if stage is not Stage.CAPTION}
_SUBCOMMANDS = {name: stage for name, stage in SUBCOMMANDS.items() if stage in _SCRIPTS}


def _stage_of_script(token: str) -> Stage | None:
    """The stage whose entry point a script path or module name names, if any."""
    base = PurePath(token.replace("\\", "/")).name
    stem = base[:-3] if base.endswith(".py") else base.rsplit(".", 1)[-1]
    for stage, script in _SCRIPTS.items():
        if stem == script[:-3]:
            return stage
    return None


def split_command(text: str) -> tuple[Stage, list[str]]:
    """The stage and the flags of a command line, without `python`, `accelerate launch ...` or the script."""
    if len(text) > MAX_TEXT:
        raise MessageError(Message("cmdline.too_long", {"max": MAX_TEXT}))
    try:
        tokens = shlex.split(_CONTINUATION.sub(" ", text), comments=True)
    except ValueError as exc:
        raise MessageError(Message("cmdline.unreadable", {"detail": exc})) from None
    if not tokens:
        raise MessageError(Message("cmdline.empty"))
    for i, token in enumerate(tokens):
        stage = _stage_of_script(token)
        if stage is not None:
            return stage, tokens[i + 1 :]
        if (
            PurePath(token).name == "qwen-image-studio"
            and i + 1 < len(tokens)
            and tokens[i + 1] in _SUBCOMMANDS
        ):
            return _SUBCOMMANDS[tokens[i + 1]], tokens[i + 2 :]
    if tokens[0].startswith("-"):
        return Stage.TRAIN, tokens
    if _PYTHON.match(PurePath(tokens[0]).name) or tokens[0] == "accelerate":
        raise MessageError(Message("cmdline.no_script", {"scripts": ", ".join(_SCRIPTS.values())}))
    raise MessageError(Message("cmdline.bad_start", {"token": repr(tokens[0])}))


def _flag_of(token: str) -> str | None:
    """The flag a token names (`--foo` of `--foo=3`), or None for a value (`3`, `-0.5`, `a b`)."""
    if not token.startswith("-") or token == "-" or _NEGATIVE.match(token):
        return None
    return token.split("=", 1)[0]


def _left_over(argv: list[str], extras: list[str]) -> list[int]:
    """The positions in `argv` of the tokens argparse left over (matched in order)."""
    positions: list[int] = []
    for token in extras:
        positions.append(argv.index(token, positions[-1] + 1 if positions else 0))
    return positions


def _unknown_problems(argv: list[str], left: list[int], stage: Stage) -> list[Problem]:
    """One problem per flag the stage does not know (the values after it go with it) and per stray value."""
    script = STAGE_SCRIPTS[stage]
    known = [spec.flag for spec in fields_for(stage)]
    problems: list[Problem] = []
    taken = set(left)
    for i in left:
        flag = _flag_of(argv[i])
        if flag is None:
            if i - 1 not in taken:  # a value that no flag takes
                token, before = repr(argv[i]), _flag_of(argv[i - 1]) if i else None
                stray = (
                    Message("cmdline.stray_after", {"token": token, "flag": before})
                    if before
                    else Message("cmdline.stray", {"token": token})
                )
                problems.append(Problem.of("", stray))
            continue
        near = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        msg = (
            Message("cmdline.unknown_flag_near", {"flag": flag, "script": script, "near": near[0]})
            if near
            else Message("cmdline.unknown_flag", {"flag": flag, "script": script})
        )
        problems.append(Problem.of("", msg))
    return problems


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple[str, str], Problem] = {}
    for problem in problems:
        seen.setdefault((problem.field, problem.message), problem)
    return list(seen.values())


def config_from_command(text: str) -> tuple[Stage, StudioConfig]:
    """Parse a pasted command line with the schema's parser for its stage (train when no script is named);
    every unknown flag and every bad value is reported (ConfigProblems), each once."""
    stage, argv = split_command(text)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            _, extras = build_parser(stage).parse_known_args(argv)
            left = _left_over(argv, extras)
            problems = _unknown_problems(argv, left, stage)
            try:
                config, _ = parse_args(stage, [t for i, t in enumerate(argv) if i not in left])
            except ConfigProblems as exc:
                problems += exc.problems
            except ConfigError as exc:  # e.g. --config_file: not found
                problems.append(
                    Problem.of("", getattr(exc, "i18n", None) or Message("v.text", {"text": exc}))
                )
    except SystemExit:
        message = out.getvalue().strip().splitlines()
        if message:
            raise ConfigError(message[-1]) from None
        raise MessageError(Message("cmdline.not_accepted")) from None
    if problems:
        raise ConfigProblems(_unique(problems))
    return stage, config
