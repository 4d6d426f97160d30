"""Crash-safe writes: a file or folder appears complete under its final name or not at all.

A file is written to a temporary name in the same folder, flushed and fsynced, then moved over the
final name with ``os.replace`` (atomic on POSIX and Windows) and the folder entry fsynced; a crash or
``kill -9`` before the replace leaves the previous file untouched and at most a ``.NAME.*.tmp`` file,
which :func:`remove_stale_temp_files` clears on the next run.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DiskFullError

if TYPE_CHECKING:  # torch only for the tensor writers' types: the web UI writes captions with this module
    import torch

TMP_SUFFIX = ".tmp"


def _fsync_dir(folder: Path) -> None:
    """Persist a folder's entries (a no-op where folders cannot be opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def usual_permissions(path: Path) -> None:
    """Give a file 0666 minus the umask (mkstemp and safetensors create files as 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (an OSError, or a library's error wrapping one) says the disk or quota is full."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return "no space left" in text or "disk quota exceeded" in text


def disk_full(path: Path) -> DiskFullError:
    """The error for a save that did not fit: what was kept, how much is free, what to free."""
    try:
        free = shutil.disk_usage(path.parent).free / 2**20
    except OSError:
        free = 0.0
    kept = f"the previous {path.name} is kept" if path.exists() else f"{path.name} was not written"
    return DiskFullError(
        f"the disk of {path.parent} is full ({free:.0f} MiB free) while saving {path.name}: {kept}; "
        "free space there (older checkpoints, state folders, caches) or choose another folder, then resume"
    )


def atomic_write(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)`, fsync the result, then move it onto `path` in one step; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        usual_permissions(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full(path) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save_safetensors(
    tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> Path:
    """Write a safetensors file atomically."""
    from safetensors.torch import save_file

    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=metadata))


def atomic_replace_dir(staging: Path, final: Path) -> Path:
    """Move a fully written folder onto `final`, replacing an older one (which stays intact until then)."""
    for entry in staging.iterdir():
        if entry.is_file():
            with open(entry, "rb+") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(staging)
    old = final.with_name(f".{final.name}.old{TMP_SUFFIX}")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return final


def remove_stale_temp_files(folder: Path, prefix: str) -> list[Path]:
    """Delete temporary files and folders (``.{prefix}*.tmp``) an interrupted save left in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.glob(f".{prefix}*{TMP_SUFFIX}"):
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def safetensors_data_sha256(blob: bytes) -> str:
    """sha256 of the tensor-data section of a serialized safetensors file (its header is skipped)."""
    (header_len,) = struct.unpack("<Q", blob[:8])
    return hashlib.sha256(blob[8 + header_len :]).hexdigest()


def file_data_sha256(path: Path) -> str:
    """:func:`safetensors_data_sha256` of a file on disk, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + header_len)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_data_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """The ``sshs_model_hash`` of kohya's tools: sha256 of the tensor data as safetensors lays it out."""
    from safetensors.torch import save

    return safetensors_data_sha256(save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}))
