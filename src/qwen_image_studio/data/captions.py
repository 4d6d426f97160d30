"""Caption files as the user's data: where each caption lives, reading them, and safe, undoable writes.

A caption lives where the dataset TOML says: beside the image with the TOML's ``caption_extension``, or in
the ``caption`` field of the image's line of its ``image_jsonl_file``. Writes:

* happen only when asked (:func:`apply_edits`), each file atomically (a temporary file, then a rename);
* refuse to overwrite a caption that changed on disk since the caller read it (:class:`CaptionConflict`,
  nothing is written);
* record the previous bytes of every caption they change in a :class:`~.caption_history.CaptionHistory`
  before writing, so :func:`undo_batch` can put them back exactly (a JSON-lines file is restored line by
  line: the other lines are never touched);
* report a folder that cannot be written as :class:`CaptionWriteError` naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_image_studio.atomic import atomic_write
from qwen_image_studio.data.caption_history import CaptionHistory, StoredChange
from qwen_image_studio.data.config import Dataset
from qwen_image_studio.data.items import entry_path
from qwen_image_studio.errors import DatasetError

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CaptionPlace:
    """Where one image's caption lives: a caption file beside it, or its line of a JSON-lines list."""

    image: Path
    file: Path | None = None
    jsonl: Path | None = None

    @property
    def location(self) -> Path:
        """The file a write changes (the caption file or the JSON-lines list)."""
        location = self.file or self.jsonl
        assert location is not None
        return location

    @property
    def kind(self) -> str:
        """``file`` or ``jsonl``."""
        return "file" if self.file is not None else "jsonl"


def caption_place(dataset: Dataset, image: Path) -> CaptionPlace:
    """Where the caption of ``image`` (an image of ``dataset``) is read and written."""
    if dataset.image_directory is not None:
        return CaptionPlace(image, file=image.with_suffix(dataset.caption_extension))
    return CaptionPlace(image, jsonl=dataset.image_jsonl_file)


class CaptionConflict(DatasetError):
    """Captions that changed on disk since they were read: ``conflicts`` holds (image, expected, now)."""

    def __init__(self, conflicts: list[tuple[Path, str | None, str | None]]) -> None:
        self.conflicts = conflicts
        first = conflicts[0][0]
        more = f" and {len(conflicts) - 1} more" if len(conflicts) > 1 else ""
        super().__init__(
            f"the caption of {first}{more} changed on disk since it was read; nothing was written"
        )


class CaptionWriteError(DatasetError):
    """A caption file (or JSON-lines list) that could not be written; ``path`` and ``reason`` say why."""

    def __init__(self, path: Path, reason: str, written: int = 0) -> None:
        self.path, self.reason, self.written = path, reason, written
        super().__init__(f"cannot write {path}: {reason}")


def _text_of(raw: bytes | None) -> str | None:
    """A caption file's bytes as the caption trainers read (stripped UTF-8); None when absent or unreadable."""
    if raw is None:
        return None
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        return None


class _JsonlLines:
    """A JSON-lines list split into raw lines (BOM kept aside), with the first line naming each image."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes()
        self.bom = BOM if data.startswith(BOM) else b""
        self.lines = data[len(self.bom) :].split(b"\n")
        self.index: dict[Path, int] = {}
        for number, raw in enumerate(self.lines):
            entry = self._entry(raw)
            if entry is not None:
                self.index.setdefault(entry_path(entry["image_path"], path.parent), number)

    @staticmethod
    def _entry(raw: bytes) -> dict[str, Any] | None:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None
        return entry if isinstance(entry, dict) and isinstance(entry.get("image_path"), str) else None

    def caption(self, image: Path) -> str | None:
        """The image's caption (stripped), None when it has no line or no caption string."""
        number = self.index.get(image)
        entry = self._entry(self.lines[number]) if number is not None else None
        caption = entry.get("caption") if entry is not None else None
        return caption.strip() if isinstance(caption, str) else None

    def with_caption(self, image: Path, text: str) -> tuple[int, bytes, bytes]:
        """(line number, old raw line, new raw line) giving ``image`` the caption ``text``."""
        number = self.index[image]
        old = self.lines[number]
        entry = self._entry(old)
        assert entry is not None
        entry["caption"] = text
        new = json.dumps(entry, ensure_ascii=False).encode("utf-8") + (b"\r" if old.endswith(b"\r") else b"")
        return number, old, new

    def data(self) -> bytes:
        """The whole file as it now stands."""
        return self.bom + b"\n".join(self.lines)


def read_captions(places: Iterable[CaptionPlace]) -> dict[Path, str | None]:
    """The current caption of each place by image (None: no caption, or one that cannot be read)."""
    out: dict[Path, str | None] = {}
    lists: dict[Path, _JsonlLines | None] = {}
    for place in places:
        if place.file is not None:
            out[place.image] = _text_of(_read_bytes(place.file))
            continue
        assert place.jsonl is not None
        if place.jsonl not in lists:
            try:
                lists[place.jsonl] = _JsonlLines(place.jsonl)
            except OSError:
                lists[place.jsonl] = None
        listing = lists[place.jsonl]
        out[place.image] = listing.caption(place.image) if listing is not None else None
    return out


@dataclass(frozen=True)
class CaptionEdit:
    """A caption change asked for: the text the caller read (``expected``) and the new text."""

    place: CaptionPlace
    expected: str | None
    new: str


def _write_reason(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in (13, 30, 1):  # EACCES, EROFS, EPERM
        return f"the folder is read-only ({exc.strerror})"
    return exc.strerror or str(exc)


def _caption_bytes(text: str, before: bytes | None) -> bytes:
    """The bytes of a caption file holding ``text`` (ending in a newline when the old file did)."""
    end = b"\n" if before is not None and before.endswith(b"\n") else b""
    return text.encode("utf-8") + end


@dataclass
class _Planned:
    """The writes of one location: its new bytes and the history rows (image, before, after)."""

    place: CaptionPlace
    data: bytes | None
    rows: list[tuple[Path, bytes | None, bytes | None]]


def _plan(edits: Sequence[CaptionEdit]) -> list[_Planned]:
    """Check every edit against the disk and work out each location's new contents (nothing written)."""
    conflicts: list[tuple[Path, str | None, str | None]] = []
    plans: dict[Path, _Planned] = {}
    lists: dict[Path, _JsonlLines] = {}
    for edit in edits:
        place, new = edit.place, edit.new.strip()
        if place.file is not None:
            before = _read_bytes(place.file)
            now = _text_of(before)
            if now != edit.expected:
                conflicts.append((place.image, edit.expected, now))
            elif now != new:
                after = _caption_bytes(new, before)
                plans[place.file] = _Planned(place, after, [(place.image, before, after)])
            continue
        assert place.jsonl is not None
        if place.jsonl not in lists:
            try:
                lists[place.jsonl] = _JsonlLines(place.jsonl)
            except OSError as exc:
                raise CaptionWriteError(place.jsonl, exc.strerror or str(exc)) from None
        listing = lists[place.jsonl]
        now = listing.caption(place.image)
        if place.image not in listing.index or now != edit.expected:
            conflicts.append((place.image, edit.expected, now))
        elif now != new:
            number, old, line = listing.with_caption(place.image, new)
            listing.lines[number] = line
            plan = plans.setdefault(place.jsonl, _Planned(place, None, []))
            plan.rows.append((place.image, old, line))
    if conflicts:
        raise CaptionConflict(conflicts)
    for path, listing in lists.items():
        if path in plans:
            plans[path].data = listing.data()
    return list(plans.values())


def _write(path: Path, data: bytes | None) -> None:
    """Write (or, with None, remove) one file atomically."""
    if data is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write(path, lambda tmp: tmp.write_bytes(data))


def apply_edits(
    edits: Sequence[CaptionEdit],
    history: CaptionHistory | None,
    dataset: Path,
    label: str,
    batch: int | None = None,
) -> int | None:
    """Write the edits (all or none when one conflicts), keeping every previous text in ``history``.

    The changes form a new history batch, or join ``batch``. Returns the batch, None when no caption
    changed (or there is no history). CaptionConflict when a caption differs from what the caller read;
    CaptionWriteError when a location cannot be written (the captions written before it stay written and
    undoable).
    """
    lock = history.lock if history is not None else nullcontext()
    with lock:
        plans = _plan(edits)
        if not plans:
            return None
        if history is not None:
            rows = [(p.place.kind, p.place.location, *row) for p in plans for row in p.rows]
            batch = history.record(dataset, label, rows, batch)
        done = 0
        for plan in plans:
            try:
                _write(plan.place.location, plan.data)
            except OSError as exc:
                if history is not None and batch is not None:
                    history.drop_unwritten(batch)
                raise CaptionWriteError(plan.place.location.parent, _write_reason(exc), done) from None
            if history is not None and batch is not None:
                history.mark_written(batch, plan.place.location)
            done += len(plan.rows)
        return batch


def _undo_file(change: StoredChange) -> bool | None:
    """Put a caption file back: True when restored, None when it already was, False on a conflict."""
    now = _read_bytes(change.location)
    if now == change.before:
        return None
    if now != change.after:
        return False
    _write(change.location, change.before)
    return True


def _undo_jsonl(path: Path, changes: list[StoredChange]) -> list[StoredChange]:
    """Put lines of one JSON-lines list back; returns the changes in conflict (nothing written then)."""
    listing = _JsonlLines(path)
    conflicts = []
    for change in changes:
        if change.after in listing.lines:
            listing.lines[listing.lines.index(change.after)] = change.before or b""
        elif change.before not in listing.lines:
            conflicts.append(change)
    if not conflicts:
        _write(path, listing.data())
    return conflicts


def undo_batch(history: CaptionHistory, batch: int) -> list[Path]:
    """Restore every caption a batch changed to its previous text; returns the images restored.

    CaptionConflict (nothing restored) when a caption was changed again since; CaptionWriteError when a
    location cannot be written.
    """
    with history.lock:
        changes = history.changes(batch, written_only=True)
        files = [c for c in changes if c.kind == "file"]
        conflicts = [c for c in files if _read_bytes(c.location) not in (c.before, c.after)]
        by_list: dict[Path, list[StoredChange]] = {}
        for c in changes:
            if c.kind == "jsonl":
                by_list.setdefault(c.location, []).append(c)
        for path, items in by_list.items():
            listing = _JsonlLines(path) if path.is_file() else None
            lines = set(listing.lines) if listing is not None else set()
            conflicts += [c for c in items if c.after not in lines and c.before not in lines]
        if conflicts:
            raise CaptionConflict([(c.image, line_text(c.after, c.kind), _current(c)) for c in conflicts])
        try:
            for change in files:
                _undo_file(change)
            for path, items in by_list.items():
                _undo_jsonl(path, items)
        except OSError as exc:
            raise CaptionWriteError(Path(exc.filename or "").parent, _write_reason(exc)) from None
        history.mark_undone(batch)
        return [c.image for c in changes]


def line_text(raw: bytes | None, kind: str) -> str | None:
    """The caption a stored history value holds (a caption file's bytes or a JSON-lines line)."""
    if kind == "file" or raw is None:
        return _text_of(raw)
    entry = _JsonlLines._entry(raw)
    caption = entry.get("caption") if entry is not None else None
    return caption.strip() if isinstance(caption, str) else None


def _current(change: StoredChange) -> str | None:
    """The caption a change's image has now."""
    place = CaptionPlace(change.image, **{change.kind: change.location})
    return read_captions([place])[change.image]
