"""Every image of a dataset TOML with what training makes of it, for the web UI's gallery.

Unlike :func:`~.items.discover_items`, which keeps only the usable items, the gallery lists every image a
dataset names (in discovery order), each with its caption, its bucket and the crop box training uses, the
state of its cache files, its problems and, for edit datasets, its control images in order. The rules are
discovery's own: the gallery runs it and joins its findings to the images.

:func:`dataset_signature` is a cheap fingerprint of everything a listing depends on (the TOML, the folders
it names and their files), so a caller can keep a listing until something changes on disk.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from qwen_image_studio.data.buckets import Size, resize_plan
from qwen_image_studio.data.cache_paths import (
    latent_cache_outdated_reason,
    text_cache_outdated_reason,
)
from qwen_image_studio.data.captions import CaptionPlace, caption_place
from qwen_image_studio.data.config import Dataset, DatasetConfig
from qwen_image_studio.data.images import is_image_file
from qwen_image_studio.data.items import (
    DatasetItem,
    DatasetItems,
    _Candidate,
    _from_directory,
    _from_jsonl,
    discover_with_candidates,
)

CACHED, MISSING, OUTDATED, NOT_USED = "cached", "missing", "outdated", "none"


@dataclass(frozen=True)
class Crop:
    """What training keeps of an image: ``box`` in the image's displayed pixels (left, top, right, bottom)
    and the same box as fractions of its width and height (for an overlay on a thumbnail)."""

    box: tuple[float, float, float, float]
    fraction: tuple[float, float, float, float]


def crop_of(size: Size, bucket: Size) -> Crop:
    """The part of an image of ``size`` that the resize-to-cover and centre crop to ``bucket`` keep."""
    scaled, (left, top, right, bottom) = resize_plan(size, bucket)
    sx, sy = scaled[0] / size[0], scaled[1] / size[1]
    box = (left / sx, top / sy, right / sx, bottom / sy)
    fraction = (left / scaled[0], top / scaled[1], right / scaled[0], bottom / scaled[1])
    return Crop(tuple(round(v, 2) for v in box), tuple(round(v, 5) for v in fraction))  # type: ignore[arg-type]


@dataclass(frozen=True)
class GalleryControl:
    """One control image of a target: its size and bucket when readable, else why not."""

    path: Path
    size: Size | None = None
    bucket: Size | None = None
    problem: str | None = None


@dataclass(frozen=True)
class GalleryEntry:
    """One image of a dataset as the gallery shows it."""

    dataset: int
    image: Path
    caption: str | None
    place: CaptionPlace
    usable: bool
    size: Size | None = None
    bucket: Size | None = None
    crop: Crop | None = None
    cache: str = NOT_USED
    cache_reasons: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    controls: tuple[GalleryControl, ...] = ()

    @property
    def name(self) -> str:
        """The image's file name."""
        return self.image.name


@dataclass
class GalleryDataset:
    """The gallery of one ``[[datasets]]`` table."""

    dataset: Dataset
    edit: bool
    entries: list[GalleryEntry] = field(default_factory=list)
    unmatched_controls: list[Path] = field(default_factory=list)
    missing_controls: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def control_counts(self) -> dict[int, int]:
        """How many targets have each number of control images (0 included), e.g. ``{1: 40, 2: 3}``."""
        return dict(sorted(Counter(len(e.controls) for e in self.entries).items()))

    @property
    def mixed_controls(self) -> bool:
        """Whether targets have different numbers of control images (edit datasets)."""
        return len([n for n in self.control_counts if n > 0]) > 1


def candidates(dataset: Dataset) -> list[_Candidate]:
    """The images a dataset names, in discovery order, with their caption and control files."""
    scratch = DatasetItems(dataset=dataset, edit=False, arch="")
    return _from_directory(dataset, scratch) if dataset.image_directory else _from_jsonl(dataset, scratch)


def is_edit(config: DatasetConfig) -> bool:
    """Whether a configuration pairs targets with control images (a control folder or JSON-lines controls)."""
    for ds in config.datasets:
        if ds.control_directory is not None:
            return True
        if ds.image_jsonl_file is not None and any(c.control_paths for c in candidates(ds)):
            return True
    return False


def _cache(item: DatasetItem) -> tuple[str, tuple[str, ...]]:
    """The cache state of a usable item and why its files are missing or outdated."""
    entry = item.cache_entry()
    reasons: list[str] = []
    state = CACHED
    for what, path, why in (
        ("latent", entry.latent_path, latent_cache_outdated_reason),
        ("text", entry.text_path, text_cache_outdated_reason),
    ):
        if not path.is_file():
            state = MISSING if state == CACHED else state
            reasons.append(f"no {what} cache file {path.name}")
        elif (reason := why(entry)) is not None:
            state = OUTDATED
            reasons.append(f"{what} cache {path.name}: {reason}")
    return state, tuple(reasons)


class _Findings:
    """Discovery's lists turned into lookups by file."""

    def __init__(self, found: DatasetItems) -> None:
        self.found = found
        self.items = {i.image_path: i for i in found.items}
        self.bad_images = {u.path: u.reason for u in found.unreadable}
        self.bad_captions = {u.path: u.reason for u in found.unreadable_captions}
        self.bad_controls = {u.path: u.reason for u in found.unreadable_controls}
        self.rotated = {r.path: r.note for r in found.rotated}
        self.missing_captions = set(found.missing_captions)
        self.empty_captions = set(found.empty_captions)
        self.missing_controls = set(found.missing_controls)
        self.too_small = set(found.too_small)

    def problems(self, cand: _Candidate) -> list[str]:
        """Why an image is left out of training, or what is odd about it (one line each)."""
        image, out = cand.image_path, []
        if image in self.bad_images:
            out.append(f"image cannot be read ({self.bad_images[image]})")
        if cand.caption_path is not None and cand.caption_path in self.bad_captions:
            out.append(self.bad_captions[cand.caption_path])
        if image in self.missing_captions:
            out.append("no caption (left out of training)")
        if image in self.empty_captions:
            out.append("the caption is empty")
        if image in self.missing_controls:
            out.append("no control image (left out of training)")
        out += [
            f"control image {c.name} cannot be read ({self.bad_controls[c]})"
            for c in cand.control_paths
            if c in self.bad_controls
        ]
        if image in self.too_small:
            out.append("smaller than 16 px on a side in its bucket (left out)")
        if not out and image not in self.items:
            out += [p for p in self.found.problems if str(image) in p] or ["left out of training"]
        return out


def _controls(cand: _Candidate, item: DatasetItem | None, findings: _Findings) -> tuple[GalleryControl, ...]:
    if item is not None and item.control_buckets:
        return tuple(
            GalleryControl(p, s, b)
            for p, s, b in zip(item.control_paths, item.control_sizes, item.control_buckets, strict=True)
        )
    return tuple(GalleryControl(c, problem=findings.bad_controls.get(c)) for c in cand.control_paths)


def _entry(ds: Dataset, cand: _Candidate, findings: _Findings) -> GalleryEntry:
    item = findings.items.get(cand.image_path)
    place = caption_place(ds, cand.image_path)
    common = {
        "dataset": ds.index,
        "image": cand.image_path,
        "caption": cand.caption,
        "place": place,
        "problems": tuple(findings.problems(cand)),
        "notes": tuple(n for p in (cand.image_path, *cand.control_paths) if (n := findings.rotated.get(p))),
        "controls": _controls(cand, item, findings),
    }
    if item is None:
        return GalleryEntry(usable=False, **common)  # type: ignore[arg-type]
    cache, reasons = _cache(item)
    return GalleryEntry(
        usable=True,
        size=item.size,
        bucket=item.bucket,
        crop=crop_of(item.size, item.bucket),
        cache=cache,
        cache_reasons=reasons,
        **common,  # type: ignore[arg-type]
    )


def build_dataset_gallery(ds: Dataset, edit: bool) -> GalleryDataset:
    """The gallery of one dataset: every image it names, joined to what discovery found."""
    found, cands = discover_with_candidates(ds, edit)
    findings = _Findings(found)
    gallery = GalleryDataset(ds, edit, problems=list(found.problems))
    gallery.entries = [_entry(ds, c, findings) for c in cands]
    gallery.unmatched_controls = list(found.unmatched_controls)
    gallery.missing_controls = list(found.missing_controls) if edit else []
    return gallery


def build_gallery(config: DatasetConfig, edit: bool | None = None) -> list[GalleryDataset]:
    """The gallery of every dataset of a configuration (edit mode guessed from its controls when None)."""
    mode = is_edit(config) if edit is None else edit
    return [build_dataset_gallery(ds, mode) for ds in config.datasets]


def _folder_state(folder: Path | None) -> tuple[object, ...]:
    if folder is None:
        return ()
    try:
        with os.scandir(folder) as it:
            return tuple(sorted((e.name, *_stat(e)) for e in it))
    except OSError:
        return ("unreadable",)


def _stat(entry: os.DirEntry[str]) -> tuple[int, int]:
    try:
        st = entry.stat()
    except OSError:
        return (-1, -1)
    return (st.st_mtime_ns, st.st_size)


def _file_state(path: Path | None) -> tuple[int, int] | None:
    try:
        st = path.stat() if path is not None else None
    except OSError:
        return None
    return None if st is None else (st.st_mtime_ns, st.st_size)


def dataset_signature(config_path: Path, config: DatasetConfig) -> int:
    """A fingerprint that changes when the TOML, its folders or any file in them changes (name, mtime,
    size); JSON-lines images elsewhere count by the list file only."""
    parts: list[object] = [_file_state(config_path)]
    for ds in config.datasets:
        parts += [
            _folder_state(ds.image_directory),
            _folder_state(ds.control_directory),
            _folder_state(ds.cache_directory),
            _file_state(ds.image_jsonl_file),
        ]
    return hash(tuple(parts))


def served_file(config: DatasetConfig, galleries: list[GalleryDataset], raw: str) -> Path | None:
    """The image file ``raw`` names when the configuration names it (an image directly in a target or
    control folder, or a file its JSON-lines list names), else None. ``..`` is resolved by text first, so
    it cannot climb out of a folder."""
    if not raw or "\x00" in raw or not os.path.isabs(raw):
        return None
    path = Path(os.path.normpath(raw))
    if not is_image_file(path):
        return None
    folders = {
        f for ds in config.datasets for f in (ds.image_directory, ds.control_directory) if f is not None
    }
    listed = {
        p
        for g in galleries
        if g.dataset.image_jsonl_file is not None
        for e in g.entries
        for p in (e.image, *(c.path for c in e.controls))
    }
    if path.parent in folders or path in listed:
        return path if path.is_file() else None
    return None
