"""Runs a stage's command: parse and validate, emit started/finished/failed events, map errors to exit codes."""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback

from ..errors import UserError
from ..events import EventWriter
from ..logging_setup import setup_logging
from ..params.cli import parse_args
from ..params.fields import flag_to_field
from ..params.schema import MAX_SWAP, StudioConfig
from ..params.spec import Stage
from ..params.validate import (
    ConfigProblems,
    Join,
    Message,
    MessageError,
    check_for_stage,
    recommendation_warnings,
)
from ..reasons import REASONS  # noqa: F401  (registers the English of the failure messages)

EXIT_USER_ERROR = 2
EXIT_NOT_AVAILABLE = 3
EXIT_OOM = 4
EXIT_INTERRUPTED = 130


_MOST_BLOCKS = 45  # the swap past which another step rarely helps (of the DiT's FULL_DIT_BLOCKS)


def _swap_tip(config: StudioConfig) -> list[Message | str]:
    if config.blocks_to_swap >= _MOST_BLOCKS:
        return []
    return [f"--blocks_to_swap {min(MAX_SWAP, max(16, config.blocks_to_swap + 16))}"]


def _cache_tips(config: StudioConfig) -> list[Message | str]:
    """Batch size, then the CPU: what a caching stage can still turn down."""
    tips: list[Message | str] = []
    if config.cache_batch_size is None:
        tips.append("--batch_size 1")  # the dataset's batch size is used now
    elif config.cache_batch_size > 1:
        tips.append(Message("tip.lower", {"flag": "--batch_size", "value": config.cache_batch_size}))
    if config.device != "cpu":
        tips.append(Message("tip.device_cpu"))
    return tips


def oom_tips(config: StudioConfig, stage: Stage) -> list[Message | str]:
    """What to turn on or down after an out-of-memory error in `stage`, given what is on already."""
    tips: list[Message | str] = []
    if stage is Stage.CACHE_TEXT:
        if not config.fp8_vl:
            tips.append("--fp8_vl")
        tips += _cache_tips(config)
    elif stage is Stage.CACHE_LATENTS:
        tips += _cache_tips(config)
    elif stage is Stage.CAPTION:
        if not config.fp8_vl:
            tips.append("--fp8_vl")
        if (config.cache_batch_size or 1) > 1:
            tips.append(Message("tip.lower", {"flag": "--batch_size", "value": config.cache_batch_size}))
        if config.max_size > 512:
            tips.append(Message("tip.smaller", {"flag": "--max_size", "value": config.max_size}))
    elif stage is Stage.GENERATE:
        if not config.fp8_base:
            tips.append("--fp8_base --fp8_scaled")
        tips += _swap_tip(config)
        height, width = config.image_size
        if height * width > 256 * 256:
            tips.append(Message("tip.smaller", {"flag": "--image_size", "value": f"{height} {width}"}))
    else:
        if not config.fp8_base:
            tips.append("--fp8_base --fp8_scaled")
        tips += _swap_tip(config)
        if not config.gradient_checkpointing:
            tips.append("--gradient_checkpointing")
        if config.network_dim > 4:
            tips.append(Message("tip.lower", {"flag": "--network_dim", "value": config.network_dim}))
        tips.append(Message("tip.lower_resolution"))
    return tips


def oom_advice(config: StudioConfig, stage: Stage = Stage.TRAIN) -> Message:
    """The failure reason of an out-of-memory error in `stage` (`.render()` gives the English)."""
    tips = oom_tips(config, stage)
    return Message("reason.oom", {"tips": Join(tuple(tips))}) if tips else Message("reason.oom_no_tips")


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


def gpu_peak() -> dict[str, int]:
    """The most GPU memory this process's CUDA allocator reserved and allocated (bytes), when it used CUDA."""
    torch = sys.modules.get("torch")  # a stage that never imported torch used no GPU
    if torch is None or not torch.cuda.is_initialized():
        return {}
    return {
        "peak_gpu_memory_bytes": int(torch.cuda.max_memory_reserved()),
        "peak_gpu_memory_allocated_bytes": int(torch.cuda.max_memory_allocated()),
    }


_FLAG = re.compile(r"--([A-Za-z0-9_]+)")


def user_message(exc: UserError) -> tuple[Message, str | None]:
    """A user error as the message the web UI renders in its language, and the parameter it concerns:
    validation's own problems (their key and values, the first problem's field), a worded error's
    message, else the text as it is with the field of the first flag it names (at the raise site)."""
    if isinstance(exc, ConfigProblems):
        return exc.i18n, next((p.field for p in exc.problems if p.field), None)
    if isinstance(exc, MessageError):
        return exc.i18n, None
    match = _FLAG.search(str(exc))
    return Message("v.text", {"text": str(exc)}), flag_to_field().get(match.group(1)) if match else None


def _fail(events: EventWriter, msg: Message, code: int) -> int:
    """Print a failure reason as one line and write it to the events file (as text and as the message)."""
    reason = msg.render()
    print(f"error: {reason}", file=sys.stderr)
    events.emit("failed", reason=reason, reason_i18n=msg.as_json(), exit_code=code, **gpu_peak())
    return code


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
            return _fail(events, Message("reason.not_available", {"stage": stage.value}), EXIT_NOT_AVAILABLE)
        events.emit("started", argv=args_list, pid=os.getpid())
        for warning in recommendation_warnings(config, stage):
            events.warning(warning.message)
        module.run(config, ns, events)
        events.emit("finished", **gpu_peak())
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        msg, field = user_message(exc)
        events.emit("failed", reason=str(exc), reason_i18n=msg.as_json(), field=field, exit_code=exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        msg = Message("reason.interrupted")
        print(msg.render(), file=sys.stderr)  # as before: no "error: " before it
        events.emit("failed", reason=msg.render(), reason_i18n=msg.as_json(), exit_code=EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence prints one actionable line
        if debug:
            traceback.print_exc()
        if config is not None and _is_oom(exc):
            return _fail(events, oom_advice(config, stage), EXIT_OOM)
        key = "reason.unexpected" if debug else "reason.unexpected_debug"
        return _fail(events, Message(key, {"error": type(exc).__name__, "detail": str(exc)}), 1)
    finally:
        events.close()
