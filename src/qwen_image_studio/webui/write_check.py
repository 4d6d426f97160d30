"""Where a job may write, checked before its first stage starts.

The web UI writes only inside its workspace and the folders the operator allowed (``--allow_dir``). Each
folder a stage will write (LoRA files, TensorBoard logs, dataset caches, generated images) must be inside
one of them, writable (probed with a real file: root ignores permission bits) and have room for the next
files, so that a read-only or full disk is reported before training starts, not after an epoch.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import DatasetError
from ..memory.vram_estimate import LORA_PARAMS_PER_RANK
from ..models.lora_keys import select_targets
from ..params.fields import all_fields
from ..params.schema import StudioConfig
from ..params.spec import Stage
from ..params.validate import Join, Message, Problem
from .paths import inside
from .views_util import parse_json

MIB = 2**20
SMALL_FILES = 64 * MIB  # room a caching, logging or generating folder needs at least
MAX_HEADER = 100 * MIB
COMFY_PREFIX = "model.diffusion_model."


@dataclass(frozen=True)
class WriteRoots:
    """The folders the web UI may write in: its workspace and those allowed with --allow_dir."""

    workspace: Path
    allowed: tuple[Path, ...] = ()

    @property
    def roots(self) -> tuple[Path, ...]:
        """The workspace first, then the allowed folders."""
        return (self.workspace, *self.allowed)

    def permits(self, path: Path) -> bool:
        """Whether `path` (symlinks resolved) lies inside one of the roots."""
        return any(inside(path, root) for root in self.roots)


def _dit_files(dit: str | None) -> list[Path]:
    if not dit:
        return []
    path = Path(dit)
    if path.is_file():
        return [path]
    folder = path / "transformer" if (path / "transformer").is_dir() else path
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def _linear_shapes(file: Path) -> dict[str, list[int]]:
    """The 2-D weights of a safetensors file by module path, from its header (no tensor is loaded)."""
    stat = file.stat()
    return dict(_linear_shapes_of(str(file), stat.st_mtime_ns, stat.st_size))


@lru_cache(maxsize=8)
def _linear_shapes_of(file: str, mtime_ns: int, size: int) -> tuple[tuple[str, list[int]], ...]:
    """`_linear_shapes` of one version of a file (the form checks often; the header is read once)."""
    with open(file, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > MAX_HEADER:
            raise ValueError("header too large")
        header = parse_json(fh.read(length))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors header")
    return tuple(
        (name.removeprefix(COMFY_PREFIX).removesuffix(".weight"), shape)
        for name, info in header.items()
        if isinstance(info, dict)
        and name.endswith(".weight")
        and isinstance(shape := info.get("shape"), list)
        and len(shape) == 2
    )


def lora_file_bytes(config: StudioConfig) -> int:
    """About how large one LoRA file of this training is (fp32 weights: the largest save precision)."""
    linears: dict[str, list[int]] = {}
    try:
        for file in _dit_files(config.dit):
            linears.update(_linear_shapes(file))
    except (OSError, ValueError, struct.error):
        linears = {}
    extra = {}
    for item in config.network_args or []:
        key, _, value = item.partition("=")
        extra[key.strip()] = value.strip()
    targets = select_targets(
        linears, extra.get("include_patterns"), extra.get("exclude_patterns"), extra.get("targets")
    )
    per_rank = sum(sum(linears[t]) for t in targets) if targets else LORA_PARAMS_PER_RANK
    return per_rank * config.network_dim * 4


def output_folders(config: StudioConfig, stages: tuple[Stage, ...]) -> list[tuple[str, Path, int]]:
    """(field, folder, bytes needed) for each folder the stages write, in stage order."""
    out: list[tuple[str, Path, int]] = []
    caching = {Stage.CACHE_LATENTS, Stage.CACHE_TEXT} & set(stages)
    captioning = Stage.CAPTION in stages and not config.preview_count  # a preview writes nothing
    datasets: list = []
    if (caching or captioning) and config.dataset_config:
        from ..data.config import load_dataset_config

        with suppress(DatasetError, OSError, ValueError):  # the stage's own check reports a bad TOML
            datasets = load_dataset_config(config.dataset_config).datasets
    if caching:
        out += [("dataset_config", Path(ds.cache_directory), SMALL_FILES) for ds in datasets]
    if caching and config.validation_dataset_config:  # cached in the same stages, into its own folders
        from ..data.config import load_dataset_config

        held_out: list = []
        with suppress(DatasetError, OSError, ValueError):
            held_out = load_dataset_config(config.validation_dataset_config).datasets
        out += [("validation_dataset_config", Path(ds.cache_directory), SMALL_FILES) for ds in held_out]
    if captioning:  # captions beside the images, or in the dataset's JSON-lines list
        for ds in datasets:
            folder = ds.image_directory or (ds.image_jsonl_file.parent if ds.image_jsonl_file else None)
            if folder is not None:
                out.append(("dataset_config", Path(folder), SMALL_FILES))
        if config.image_dir and not config.dataset_config:
            folder = Path(config.output_file).parent if config.output_file else Path(config.image_dir)
            out.append(("output_file" if config.output_file else "image_dir", folder, SMALL_FILES))
        if config.caption_history:
            out.append(("caption_history", Path(config.caption_history).parent, SMALL_FILES))
    if Stage.TRAIN in stages:
        lora = lora_file_bytes(config)
        saves = 2 + (3 if config.save_state else 0)  # the new file beside the last one; state: LoRA + Adam
        if config.output_dir:
            out.append(("output_dir", Path(config.output_dir), lora * saves + SMALL_FILES))
        if config.logging_dir:
            out.append(("logging_dir", Path(config.logging_dir), SMALL_FILES))
    if Stage.GENERATE in stages and config.save_path:
        out.append(("save_path", Path(config.save_path), SMALL_FILES))
    if Stage.GENERATE in stages and config.save_merged_model:  # a whole DiT, written instead of images
        dit = Path(config.dit) if config.dit else None
        size = dit.stat().st_size if dit is not None and dit.is_file() else SMALL_FILES
        out.append(("save_merged_model", Path(config.save_merged_model).parent, size + SMALL_FILES))
    return out


def _nearest_existing(path: Path) -> Path | None:
    return next((p for p in [path, *path.parents] if p.exists()), None)


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / MIB:.0f} MiB"


def _folder_problem(flag: str, folder: Path, need: int, roots: WriteRoots) -> Message | None:
    if not roots.permits(folder):
        return Message(
            "w.outside",
            {
                "flag": flag,
                "path": folder,
                "roots": Join(tuple(str(r) for r in roots.roots)),
                "suggest": folder,
            },
        )
    base = _nearest_existing(folder)
    if base is None or not base.is_dir():
        return None  # "inside a file" is the stage check's problem
    try:
        fd, probe = tempfile.mkstemp(prefix=".studio-write-check-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return Message("w.not_writable", {"flag": flag, "path": base, "detail": exc.strerror or str(exc)})
    free = shutil.disk_usage(base).free
    if free < need:
        return Message("w.no_space", {"flag": flag, "path": base, "free": _size(free), "need": _size(need)})
    return None


def write_problems(config: StudioConfig, stages: tuple[Stage, ...], roots: WriteRoots) -> list[Problem]:
    """What stops the stages from writing their files: a folder outside the roots, read-only, or full."""
    fields = all_fields()
    problems: list[Problem] = []
    seen: set[tuple[str, Path]] = set()
    for name, folder, need in output_folders(config, stages):
        if (name, folder) in seen:
            continue
        seen.add((name, folder))
        msg = _folder_problem(fields[name].flag, folder, need, roots)
        if msg is not None:
            problems.append(Problem.of(name, msg))
    return problems
