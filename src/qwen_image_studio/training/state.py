"""Training state for ``--save_state`` / ``--resume``: everything a run needs to continue step for step.

A state folder holds ``lora.safetensors`` (float32 LoRA weights), ``optimizer.pt``, ``scheduler.pt``,
``scaler.pt`` (fp16 only), ``rng_{rank}.pt`` per process (Python, NumPy, torch CPU/CUDA and the noise
generator) and ``state.json`` (step, epoch, position in the epoch, the moving-average window). It is
written into a staging folder and moved into place whole, so a crash leaves the previous state intact.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import TMP_SUFFIX, atomic_replace_dir, usual_permissions
from ..errors import ConfigError

STATE_VERSION = 1
LORA_FILE = "lora.safetensors"


@dataclass
class Progress:
    """Where a run stands: optimizer steps done, the epoch, steps done within it, recent losses."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    loss_window: list[float] = field(default_factory=list)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The random states of this process (Python, NumPy, torch, CUDA, the noise generator)."""
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generator": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what :func:`rng_state` returned."""
    version, keys, *rest = state["python"]
    random.setstate((version, tuple(keys), *rest))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["generator"])


def staging_dir(final: Path) -> Path:
    """The folder a state is written into before it replaces `final` (same name on every process)."""
    return final.with_name(f".{final.name}.partial{TMP_SUFFIX}")


def write_rank_rng(folder: Path, rank: int, generator: torch.Generator) -> None:
    """Write this process's random states into a staging folder."""
    torch.save(rng_state(generator), folder / f"rng_{rank}.pt")


def write_main_state(
    folder: Path,
    network: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    progress: Progress,
    extra: dict[str, Any],
) -> None:
    """Write the main process's part (LoRA, optimizer, scheduler, progress) into a staging folder."""
    from safetensors.torch import save_file

    save_file(network.state_dict_for_file(torch.float32), str(folder / LORA_FILE))
    usual_permissions(folder / LORA_FILE)
    torch.save(optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(scheduler.state_dict(), folder / "scheduler.pt")
    if scaler is not None:
        torch.save(scaler.state_dict(), folder / "scaler.pt")
    info = {"version": STATE_VERSION, **asdict(progress), **extra}
    (folder / "state.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def finish(folder: Path, final: Path) -> Path:
    """Move a complete staging folder onto its final name."""
    return atomic_replace_dir(folder, final)


def read_progress(folder: str | Path) -> tuple[Progress, dict[str, Any]]:
    """The progress and saved details of a state folder (ConfigError naming --resume if it is not one)."""
    p = Path(folder).expanduser()
    info_path = p / "state.json"
    if not info_path.is_file():
        raise ConfigError(
            f"--resume: {p} is not a training state folder (no state.json); use a folder that "
            "--save_state wrote, e.g. NAME-000001-state"
        )
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"--resume: {info_path} is unreadable: {exc}") from None
    if info.get("version") != STATE_VERSION:
        raise ConfigError(
            f"--resume: {p} was written by another version (state version {info.get('version')})"
        )
    progress = Progress(info["step"], info["epoch"], info["step_in_epoch"], list(info.get("loss_window", [])))
    return progress, info


def load_state(
    folder: str | Path,
    network: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    generator: torch.Generator,
    rank: int,
) -> tuple[Progress, dict[str, Any]]:
    """Restore LoRA weights, optimizer, scheduler, scaler and this process's random states; (progress, details)."""
    from safetensors.torch import load_file

    p = Path(folder).expanduser()
    progress, info = read_progress(p)
    network.load_state_dict_from_file(load_file(str(p / LORA_FILE)), source="--resume")
    optimizer.load_state_dict(torch.load(p / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(p / "scheduler.pt", map_location="cpu", weights_only=True))
    if scaler is not None and (p / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(p / "scaler.pt", weights_only=True))
    rng_file = p / f"rng_{rank}.pt"
    if not rng_file.is_file():
        rng_file = p / "rng_0.pt"
    set_rng_state(torch.load(rng_file, weights_only=True), generator)
    return progress, info
