"""Saved configurations as JSON files: `WORKSPACE/configs/<name>.json` follows every save, rename and delete.

The SQLite store stays the record the UI works from; the folder mirrors it, each file holding the same
document as the configuration's export (so it can be copied, versioned or imported elsewhere). Edits made
to the files are not read back. A file is replaced in one step (a crash leaves the previous one whole).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError
from .configs import export_bytes
from .store import StoredConfig

log = logging.getLogger(__name__)

CONFIGS_DIR = "configs"
SUFFIX = ".json"
MAX_STEM_BYTES = 200  # with ".json" and the temporary file's decorations, within 255 bytes
_SAFE = frozenset(" -_.()[]+,=@")
_HASH_MARK = "~"  # only in a shortened name (a "~" of the name itself is escaped)


def _escaped(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8"))


def file_stem(name: str) -> str:
    """A configuration name as a file name without suffix: safe on common file systems, and distinct names
    give distinct files.

    Letters, digits (any script) and `` -_.()[]+,=@`` stay as they are; anything else, a leading ``.`` or
    ``-``, a leading space and a trailing space or ``.`` are written ``%XX`` (the UTF-8 bytes). A stem
    longer than 200 bytes is cut and ends in ``~`` and 16 hex digits of the name's SHA-256.
    """
    last = len(name) - 1
    parts = []
    for i, char in enumerate(name):
        keep = char.isalnum() or char in _SAFE
        if (i == 0 and char in ".- ") or (i == last and char in ". "):
            keep = False
        parts.append(char if keep else _escaped(char))
    stem = "".join(parts)
    if len(stem.encode("utf-8")) <= MAX_STEM_BYTES:
        return stem
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    room = MAX_STEM_BYTES - len(_HASH_MARK) - len(digest)
    kept, size = [], 0
    for part in parts:  # cut between characters, never inside one or inside a %XX
        size += len(part.encode("utf-8"))
        if size > room:
            break
        kept.append(part)
    return "".join(kept) + _HASH_MARK + digest


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file under a temporary name in its folder, fsync it, then move it onto `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class ConfigMirror:
    """Keeps `folder` (WORKSPACE/configs) equal to the saved configurations; the store calls it after each
    change. A file that cannot be written is logged and does not undo the change in the store."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, name: str) -> Path:
        """The file of a configuration."""
        return self.folder / (file_stem(name) + SUFFIX)

    def saved(self, stored: StoredConfig) -> None:
        """A configuration was saved (new or replaced): write its file."""
        try:
            write_atomic(self.path_for(stored.name), export_bytes(stored, lenient=True))
        except (OSError, ConfigError) as exc:
            log.warning("cannot write %s: %s", self.path_for(stored.name), exc)

    def renamed(self, old: str, stored: StoredConfig) -> None:
        """A configuration was renamed: its file moves to the new name (with the new name inside)."""
        self.saved(stored)
        old_path, new_path = self.path_for(old), self.path_for(stored.name)
        same = old_path == new_path or (
            old_path.exists() and new_path.exists() and os.path.samefile(old_path, new_path)
        )  # a case-insensitive file system: "Foo" -> "foo" is the same file, now rewritten
        if not same:
            self.deleted(old)

    def deleted(self, name: str) -> None:
        """A configuration was deleted: remove its file."""
        try:
            self.path_for(name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", self.path_for(name), exc)

    def fill_in(self, configs: Iterable[StoredConfig]) -> None:
        """Write the files that are missing (configurations saved before the folder was kept)."""
        for stored in configs:
            if not self.path_for(stored.name).exists():
                self.saved(stored)
