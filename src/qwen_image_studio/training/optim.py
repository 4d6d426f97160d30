"""Optimizers (``--optimizer_type`` / ``--optimizer_args``) and learning-rate schedules (diffusers' get_scheduler)."""

from __future__ import annotations

import ast
import importlib
import logging
import math
from typing import Any

import torch

from ..errors import ConfigError

log = logging.getLogger(__name__)

SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
ADAFACTOR_DEFAULTS = {"relative_step": False, "scale_parameter": False, "warmup_init": False}


def parse_optimizer_args(items: dict[str, str]) -> dict[str, Any]:
    """``key=value`` strings as Python values: numbers, booleans, None, tuples (``0.9,0.99``); else the string."""
    out: dict[str, Any] = {}
    for key, raw in items.items():
        text = raw.strip()
        lowered = text.lower()
        if lowered in ("true", "false"):
            out[key] = lowered == "true"
        elif lowered == "none":
            out[key] = None
        else:
            try:
                out[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[key] = text
    return out


def _class_from_path(path: str) -> type:
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--optimizer_type {path}: cannot import {module_name} ({exc})") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, torch.optim.Optimizer):
        raise ConfigError(
            f"--optimizer_type {path}: {class_name} is not a torch optimizer class in {module_name}"
        )
    return cls


def _bnb_adamw8bit() -> type:
    try:
        import bitsandbytes as bnb
    except ImportError as exc:
        raise ConfigError(
            f"--optimizer_type adamw8bit needs bitsandbytes (pip install bitsandbytes): {exc}"
        ) from None
    return bnb.optim.AdamW8bit


def _lion() -> type:
    try:
        from lion_pytorch import Lion
    except ImportError as exc:
        raise ConfigError(
            f"--optimizer_type lion needs lion-pytorch (pip install lion-pytorch): {exc}"
        ) from None
    return Lion


def optimizer_class(name: str) -> type:
    """The optimizer class for an ``--optimizer_type`` value."""
    if name == "adamw":
        return torch.optim.AdamW
    if name == "adamw8bit":
        return _bnb_adamw8bit()
    if name == "lion":
        return _lion()
    if name == "sgd":
        return torch.optim.SGD
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor
    if "." in name:
        return _class_from_path(name)
    raise ConfigError(f"--optimizer_type: unknown optimizer {name!r}")


def create_optimizer(
    name: str, param_groups: list[dict[str, Any]], lr: float, args: dict[str, str] | None = None
) -> torch.optim.Optimizer:
    """Build the optimizer over `param_groups` (each with its own lr) with ``--optimizer_args``."""
    kwargs = parse_optimizer_args(args or {})
    cls = optimizer_class(name)
    groups = [dict(g) for g in param_groups]
    if name == "adafactor":
        kwargs = {**ADAFACTOR_DEFAULTS, **kwargs}
        if kwargs.get("relative_step"):
            for g in groups:  # Adafactor then sets its own step size; --learning_rate is not used
                g.pop("lr", None)
            lr = None  # type: ignore[assignment]
            log.warning(
                "--optimizer_args relative_step=True: Adafactor sets its own learning rate; "
                "--learning_rate and --lr_scheduler are ignored"
            )
    try:
        return cls(groups, lr=lr, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--optimizer_args: {cls.__name__} rejects {kwargs}: {exc}") from None


def warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """Warm-up steps: the value itself, or below 1 a fraction of the total steps (rounded)."""
    if lr_warmup_steps <= 0:
        return 0
    if lr_warmup_steps < 1:
        return int(round(lr_warmup_steps * total_steps))
    return int(lr_warmup_steps)


def create_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup: float = 0,
    num_cycles: int = 1,
    power: float = 1.0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule stepped once per optimizer step (diffusers' get_scheduler; Adafactor's own when relative)."""
    if optimizer.defaults.get("relative_step"):  # only Adafactor has this option
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer)
    if name not in SCHEDULERS:
        raise ConfigError(f"--lr_scheduler: {name!r} is not one of {', '.join(SCHEDULERS)}")
    from diffusers.optimization import get_scheduler

    steps = warmup_steps(warmup, total_steps)
    if steps and name == "constant":
        log.warning("--lr_warmup_steps is ignored by --lr_scheduler constant; use constant_with_warmup")
    if steps >= total_steps and name not in ("constant", "constant_with_warmup"):
        raise ConfigError(f"--lr_warmup_steps ({steps}) must be below the total steps ({total_steps})")
    return get_scheduler(
        name,
        optimizer,
        num_warmup_steps=steps,
        num_training_steps=max(total_steps, 1),
        num_cycles=num_cycles,
        power=power,
    )


def current_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learning rate of each parameter group by its name (Adafactor's relative step estimated)."""
    out: dict[str, float] = {}
    for i, group in enumerate(optimizer.param_groups):
        name = group.get("name", f"group{i}")
        lr = group.get("lr")
        if lr is None and group.get("relative_step"):
            lr = _adafactor_relative_lr(optimizer, group)
        out[name] = float(lr) if lr is not None else math.nan
    return out


def _adafactor_relative_lr(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> float | None:
    from transformers.optimization import Adafactor

    param = group["params"][0]
    state = optimizer.state.get(param)
    if not state:
        return None
    return float(Adafactor._get_lr(group, state))
