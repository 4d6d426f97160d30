"""What to caption and where each caption goes: a folder of images (the reference's command) or every
dataset of a dataset TOML, and the atomic writes that put captions there.

- ``--image_dir`` with ``--output_format text``: ``IMAGE.txt`` beside each image (the reference's rule);
  with ``jsonl``: one ``{"image_path": ..., "caption": ...}`` line per image in ``--output_file``.
- ``--dataset_config``: where each dataset keeps its captions, ``IMAGE<caption_extension>`` beside the image
  for an ``image_directory``, the entry's ``caption`` for an ``image_jsonl_file`` (its other keys, and
  lines that are not entries, kept as they are). Edit pairs take the dataset's control images
  (``control_directory``: same name or ``name_0``, ``name_1``, ...; or the entry's ``control_path``).

An image that already has a non-empty caption keeps it unless ``overwrite``. Every write replaces the file
in one step (`atomic.atomic_write`): an interrupted run leaves each file as it was or as written. A dataset's
captions are written as the gallery writes them (`data.captions.apply_edits`: a caption changed on disk
since it was planned is kept, and with a history every previous text is recorded); each target carries its
``place`` and the ``expected`` text for that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write
from ..data.captions import CaptionPlace, caption_place, read_captions
from ..data.config import Dataset, load_dataset_config
from ..data.images import list_images
from ..data.items import caption_read_error, entry_path, match_controls, read_caption
from ..errors import ConfigError

REFERENCE_CAPTION_EXTENSION = ".txt"


@dataclass
class JsonlDoc:
    """A JSON-lines file of entries, kept in memory and written back whole: lines that are not entries
    (blank, unreadable) stay as they were, in place."""

    path: Path
    lines: list[dict[str, Any] | str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> JsonlDoc:
        """The file's lines (an absent file is empty)."""
        doc = cls(path)
        if not path.exists():
            return doc
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
        for line in text.splitlines():
            try:
                entry = json.loads(line) if line.strip() else None
            except (json.JSONDecodeError, RecursionError):
                entry = None
            ok = isinstance(entry, dict) and isinstance(entry.get("image_path"), str)
            doc.lines.append(entry if ok else line)  # type: ignore[arg-type]
        return doc

    def entries(self) -> list[tuple[int, dict[str, Any]]]:
        """(line index, entry) of every entry."""
        return [(i, line) for i, line in enumerate(self.lines) if isinstance(line, dict)]

    def save(self) -> None:
        """Write the file atomically."""
        text = "".join(
            (json.dumps(line, ensure_ascii=False) if isinstance(line, dict) else line) + "\n"
            for line in self.lines
        )
        atomic_write(self.path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@dataclass
class Target:
    """One image to caption, its control images (edit pairs), the caption it has (`existing`: '' none, None
    one that cannot be read) and where a new one goes: `caption_path` (a text file), or line `line` of
    `doc` (``line`` None: a new entry appended)."""

    image: Path
    existing: str | None
    caption_path: Path | None = None
    doc: JsonlDoc | None = None
    line: int | None = None
    entry_path: str = ""  # the image_path text of a new JSON-lines entry
    controls: tuple[Path, ...] = ()
    # --dataset_config: where the dataset keeps the caption, and the caption read there when planned
    # (None: none), so that a write refuses a caption changed on disk since (data.captions.apply_edits)
    place: CaptionPlace | None = None
    expected: str | None = None

    @property
    def has_caption(self) -> bool:
        """Whether the image has a caption already (an unreadable caption file counts)."""
        return self.existing is None or bool(self.existing)

    @property
    def destination(self) -> Path:
        """The file the caption is written to."""
        assert self.caption_path is not None or self.doc is not None
        return self.caption_path if self.caption_path is not None else self.doc.path  # type: ignore[union-attr]

    def write(self, caption: str) -> None:
        """Store the caption: a text file is replaced at once, a JSON-lines entry waits for `doc.save()`."""
        if self.caption_path is not None:
            atomic_write(self.caption_path, lambda tmp: tmp.write_text(caption, encoding="utf-8"))
            return
        assert self.doc is not None
        if self.line is None:
            self.doc.lines.append({"image_path": self.entry_path, "caption": caption})
            self.line = len(self.doc.lines) - 1
        else:
            entry = self.doc.lines[self.line]
            assert isinstance(entry, dict)
            entry["caption"] = caption


@dataclass
class Plan:
    """The images found, and the problems met on the way (one line each; nothing was stopped by them)."""

    targets: list[Target]
    problems: list[str] = field(default_factory=list)

    def todo(self, overwrite: bool) -> list[Target]:
        """The targets to caption: all with `overwrite`, else those without a caption."""
        return [t for t in self.targets if overwrite or not t.has_caption]


def _text_caption(path: Path, problems: list[str]) -> str | None:
    """The caption of a text file beside an image ('' when absent); None when it cannot be read (it is
    kept like any existing caption unless overwritten)."""
    if not path.is_file():
        return ""
    try:
        return read_caption(path)
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(caption_read_error(path, exc) + "; kept as an existing caption")
        return None


def plan_folder(image_dir: Path, output_format: str, output_file: Path | None) -> Plan:
    """The images of a folder (not its sub-folders), captioned the reference's way (see the module)."""
    if not image_dir.is_dir():
        raise ConfigError(f"--image_dir: not a folder: {image_dir}")
    images = list_images(image_dir)
    plan = Plan([])
    if output_format == "text":
        for image in images:
            path = image.with_suffix(REFERENCE_CAPTION_EXTENSION)
            plan.targets.append(Target(image, _text_caption(path, plan.problems), caption_path=path))
        return plan
    assert output_file is not None
    doc = JsonlDoc.read(output_file)
    known: dict[Path, int] = {}
    for i, entry in doc.entries():
        known.setdefault(entry_path(entry["image_path"], Path.cwd()).resolve(), i)
    for image in images:
        i = known.get(image.resolve())
        existing = None if i is None else doc.lines[i].get("caption")  # type: ignore[union-attr]
        text = existing.strip() if isinstance(existing, str) else ""
        plan.targets.append(Target(image, text, doc=doc, line=i, entry_path=str(image)))
    return plan


def plan_dataset_config(path: Path, edit_pairs: bool) -> Plan:
    """Every image of every dataset of a TOML, with its caption's place (and control images for edit pairs)."""
    config = load_dataset_config(path)
    plan = Plan([])
    seen: set[tuple[Path, int | None]] = set()
    docs: dict[Path, JsonlDoc] = {}
    for dataset in config.datasets:
        found = _dataset_targets(dataset, docs, plan.problems)
        for target in found:
            key = (target.destination, target.line)
            if key not in seen:
                seen.add(key)
                plan.targets.append(target)
    if edit_pairs:
        plan.problems += [
            f"{t.image}: no control image; not captioned" for t in plan.targets if not t.controls
        ]
        plan.targets = [t for t in plan.targets if t.controls]
    seen_text = read_captions(t.place for t in plan.targets if t.place is not None)
    for target in plan.targets:
        target.expected = seen_text.get(target.image)
    return plan


def _dataset_targets(dataset: Dataset, docs: dict[Path, JsonlDoc], problems: list[str]) -> list[Target]:
    if dataset.image_directory is not None:
        images = list_images(dataset.image_directory)
        controls: dict[Path, tuple[Path, ...]] = {}
        if dataset.control_directory is not None:
            controls, _ = match_controls(images, list_images(dataset.control_directory))
        out = []
        for image in images:
            caption_path = image.with_suffix(dataset.caption_extension)
            existing = _text_caption(caption_path, problems)
            out.append(
                Target(
                    image,
                    existing,
                    caption_path=caption_path,
                    controls=controls.get(image, ()),
                    place=caption_place(dataset, image),
                )
            )
        return out
    jsonl = dataset.image_jsonl_file
    assert jsonl is not None
    doc = docs.setdefault(jsonl, JsonlDoc.read(jsonl))
    out = []
    for i, entry in doc.entries():
        control = entry.get("control_path")
        names = [control] if isinstance(control, str) else control if isinstance(control, list) else []
        caption = entry.get("caption")
        image = entry_path(entry["image_path"], jsonl.parent)
        out.append(
            Target(
                image,
                caption.strip() if isinstance(caption, str) else "",
                doc=doc,
                line=i,
                controls=tuple(entry_path(c, jsonl.parent) for c in names if isinstance(c, str)),
                place=caption_place(dataset, image),
            )
        )
    return out
