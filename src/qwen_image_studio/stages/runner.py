"""Runs a stage's command: parse and validate, emit started/finished/failed events, map errors to exit codes."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from ..errors import UserError
from ..events import EventWriter
from ..logging_setup import setup_logging
from ..params.cli import parse_args
from ..params.schema import StudioConfig
from ..params.spec import Stage
from ..params.validate import check_for_stage

EXIT_USER_ERROR = 2
EXIT_NOT_AVAILABLE = 3
EXIT_OOM = 4
EXIT_INTERRUPTED = 130


def oom_advice(config: StudioConfig) -> str:
    """What to turn on after an out-of-memory error, given what is already on."""
    tips: list[str] = []
    if not config.fp8_base:
        tips.append("--fp8_base --fp8_scaled")
    if config.blocks_to_swap < 45:
        tips.append(f"--blocks_to_swap {min(59, max(16, config.blocks_to_swap + 16))}")
    if not config.gradient_checkpointing:
        tips.append("--gradient_checkpointing")
    if config.network_dim > 4:
        tips.append(f"a lower --network_dim (now {config.network_dim})")
    tips.append("a lower resolution in the dataset config")
    return "out of GPU memory; try " + ", ".join(tips)


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def _flag_value(argv: list[str], flag: str) -> str | None:
    """A flag's value read before parsing, so that even a parse error reaches the events file."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def main(stage: Stage, argv: list[str] | None = None) -> int:
    """Entry point of every stage command; returns the process exit code."""
    args_list = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args_list
    setup_logging(debug)
    events = EventWriter.from_flag(_flag_value(args_list, "--events_file"), stage.value)
    config: StudioConfig | None = None
    try:
        config, ns = parse_args(stage, args_list)
        check_for_stage(config, stage)
        try:
            module = importlib.import_module(f"qwen_image_studio.stages.{stage.value}")
        except ModuleNotFoundError as exc:
            if exc.name != f"qwen_image_studio.stages.{stage.value}":
                raise
            reason = f"the {stage.value} stage is not available in this version yet"
            print(f"error: {reason}", file=sys.stderr)
            events.emit("failed", reason=reason, exit_code=EXIT_NOT_AVAILABLE)
            return EXIT_NOT_AVAILABLE
        events.emit("started", argv=args_list, pid=os.getpid())
        module.run(config, ns, events)
        events.emit("finished")
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        events.emit("failed", reason=str(exc), exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        events.emit("failed", reason="interrupted", exit_code=EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence prints one actionable line
        if debug:
            traceback.print_exc()
        if config is not None and _is_oom(exc):
            reason = oom_advice(config)
            code = EXIT_OOM
        else:
            reason = f"unexpected {type(exc).__name__}: {exc}" + (
                "" if debug else " (run with --debug for details)"
            )
            code = 1
        print(f"error: {reason}", file=sys.stderr)
        events.emit("failed", reason=reason, exit_code=code)
        return code
    finally:
        events.close()
