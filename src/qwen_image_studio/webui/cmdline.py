"""Reads a pasted reference-trainer command line into a configuration."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import PurePath

from ..errors import ConfigError
from ..params.cli import parse_args
from ..params.schema import StudioConfig
from ..params.spec import STAGE_SCRIPTS, Stage
from ..params.validate import Message, MessageError

MAX_TEXT = 100_000
# Line continuations of POSIX shells, cmd.exe and PowerShell.
_CONTINUATION = re.compile(r"(\\|\^|`)\r?\n")
_PYTHON = re.compile(r"^(python[0-9.]*|py)(\.exe)?$", re.IGNORECASE)
# `qwen-image-studio SUBCOMMAND ...` subcommands by stage.
_SUBCOMMANDS = {"cache-latents": Stage.CACHE_LATENTS, "cache-text": Stage.CACHE_TEXT, "train": Stage.TRAIN}


def _stage_of_script(token: str) -> Stage | None:
    """The stage whose entry point a script path or module name names, if any."""
    base = PurePath(token.replace("\\", "/")).name
    stem = base[:-3] if base.endswith(".py") else base.rsplit(".", 1)[-1]
    for stage, script in STAGE_SCRIPTS.items():
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
        raise MessageError(Message("cmdline.no_script", {"scripts": ", ".join(STAGE_SCRIPTS.values())}))
    raise MessageError(Message("cmdline.bad_start", {"token": repr(tokens[0])}))


def config_from_command(text: str) -> tuple[Stage, StudioConfig]:
    """Parse a pasted command line with the schema's parser for its stage (train when no script is named)."""
    stage, argv = split_command(text)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            config, _ = parse_args(stage, argv)
    except SystemExit:
        message = out.getvalue().strip().splitlines()
        if message:
            raise ConfigError(message[-1]) from None
        raise MessageError(Message("cmdline.not_accepted")) from None
    return stage, config
