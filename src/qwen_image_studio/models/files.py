"""Find the safetensors files behind a user's model path and read their headers, with one-line errors.

A path may be a single file, a shard (`*-00001-of-0000N.safetensors`), a shard index json, a
component folder (`transformer/`, `vae/`, `text_encoder/`) or a diffusers pipeline root.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_image_studio.errors import ModelFileError

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.safetensors$")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it looks like, read from the header only."""

    file: Path
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype code: "BF16", "F32", "F8_E4M3", ...


@dataclass
class ModelFiles:
    """The safetensors files of one model, their tensors and the folder's config.json if any."""

    path: Path  # the path the user gave
    flag: str
    files: list[Path]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    def error(self, what: str) -> ModelFileError:
        """A ModelFileError naming the flag and the user's path."""
        return ModelFileError(f"{self.flag}: {self.path}: {what}")


def _fail(flag: str, path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{flag}: {path}: {what}")


def _shard_set(file: Path, flag: str, user_path: Path) -> list[Path]:
    m = _SHARD.match(file.name)
    if not m:
        return [file]
    n = int(m.group("n"))
    files = [file.with_name(f"{m.group('stem')}-{i:05d}-of-{n:05d}.safetensors") for i in range(1, n + 1)]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise _fail(flag, user_path, f"shard set is incomplete, missing {', '.join(missing)}")
    return files


def _from_index(index: Path, flag: str, user_path: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(flag, user_path, f"unreadable shard index {index.name} ({exc})") from None
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise _fail(flag, user_path, f"shard index lists missing files: {', '.join(missing)}")
    return files


def _from_folder(folder: Path, flag: str, user_path: Path) -> list[Path]:
    indexes = sorted(folder.glob("*.safetensors.index.json"))
    if indexes:
        return _from_index(indexes[0], flag, user_path)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise _fail(flag, user_path, "folder holds no .safetensors file")
    shard_sets = {tuple(_shard_set(f, flag, user_path)) for f in files}
    if len(shard_sets) > 1:
        names = ", ".join(f.name for f in files[:4])
        raise _fail(flag, user_path, f"folder holds several models ({names}); name the file")
    return list(shard_sets.pop())


def resolve_model_files(path: str | Path, *, component: str, flag: str) -> ModelFiles:
    """The files of a model given as a file, shard, index, component folder or pipeline root."""
    user_path = Path(path).expanduser()
    if not user_path.exists():
        raise _fail(flag, user_path, "does not exist")
    config: dict[str, Any] | None = None
    if user_path.is_dir():
        folder = user_path
        if (folder / "model_index.json").is_file() or (folder / component).is_dir():
            folder = folder / component
            if not folder.is_dir():
                raise _fail(flag, user_path, f"diffusers folder has no {component}/ subfolder")
        files = _from_folder(folder, flag, user_path)
        config_file = folder / "config.json"
        if config_file.is_file():
            try:
                config = json.loads(config_file.read_text())
            except ValueError as exc:
                raise _fail(flag, user_path, f"unreadable {config_file.name} ({exc})") from None
    elif user_path.name.endswith(".index.json"):
        files = _from_index(user_path, flag, user_path)
    elif user_path.suffix == ".safetensors":
        files = _shard_set(user_path, flag, user_path)
    else:
        raise _fail(flag, user_path, "is not a .safetensors file (or a folder / shard index of them)")
    model = ModelFiles(path=user_path, flag=flag, files=files, config=config)
    model.tensors = read_tensor_infos(model)
    return model


def read_tensor_infos(model: ModelFiles) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes of all tensors in the files (headers only); corrupt files raise."""
    from safetensors import SafetensorError, safe_open

    out: dict[str, TensorInfo] = {}
    for file in model.files:
        try:
            with safe_open(str(file), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 - safe_open handles are not iterable
                    sl = f.get_slice(key)
                    out[key] = TensorInfo(file, tuple(sl.get_shape()), sl.get_dtype())
        except SafetensorError as exc:
            where = "" if file == model.path else f" ({file.name})"
            raise model.error(f"file{where} is truncated or not a valid safetensors file: {exc}") from None
        except OSError as exc:
            raise model.error(f"cannot read {file.name}: {exc}") from None
    if not out:
        raise model.error("holds no tensors")
    return out
