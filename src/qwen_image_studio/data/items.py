"""What a dataset holds: its images, captions, control images, buckets and cache files.

Discovery never raises for content problems: unreadable images, missing captions or control images are
listed (and left out of the usable items) so that one bad file does not stop a run or an inspection.

An item that is still in the dataset but could not be read (its image, its caption or, in edit mode, a
control image: corrupt, truncated, not UTF-8, not readable for permissions) is told apart from one that
is gone: :attr:`DatasetItems.kept_keys` names it, so the stale-cache cleanup never deletes its cache
files (fixing the file and caching again with ``--skip_existing`` picks up where it left off). When a
JSON-lines list has lines that cannot be read, nothing shows which images they named, so
:attr:`DatasetItems.listing_complete` is False and no cache file of that dataset counts as stale.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from qwen_image_studio.data.buckets import STEP, Size, control_bucket, select_bucket
from qwen_image_studio.data.cache_paths import (
    CacheEntry,
    cache_arch,
    item_key,
    latent_cache_path,
    text_cache_path,
)
from qwen_image_studio.data.config import Dataset
from qwen_image_studio.data.images import (
    ImageReadError,
    is_image_file,
    list_images,
    orientation_swaps_sides,
    probe_image_orientation,
)

_NUMBERED = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)$")


@dataclass(frozen=True)
class DatasetItem:
    """One trainable image: its caption, control images, bucket and cache files."""

    key: str
    image_path: Path
    caption: str
    size: Size
    bucket: Size
    latent_cache_path: Path
    text_cache_path: Path
    caption_path: Path | None = None
    control_paths: tuple[Path, ...] = ()
    control_sizes: tuple[Size, ...] = ()
    control_buckets: tuple[Size, ...] = ()

    @property
    def batch_key(self) -> tuple[Size, ...]:
        """Items with equal keys may share a batch: the bucket, then control sizes where they vary."""
        own = tuple(b for b in self.control_buckets if b != self.bucket)
        return (self.bucket, *self.control_buckets) if own else (self.bucket,)

    @property
    def encoded_controls(self) -> tuple[Path, ...]:
        """The control images the caching stages encode with this item: in edit mode (where control
        buckets are set) all of them, in text-to-image mode none, even when a control_directory matched."""
        return self.control_paths if self.control_buckets else ()

    def cache_entry(self) -> CacheEntry:
        """The cache files this item needs and what they should contain."""
        return CacheEntry(
            key=self.key,
            latent_path=self.latent_cache_path,
            text_path=self.text_cache_path,
            bucket=self.bucket,
            control_buckets=self.control_buckets,
            caption=self.caption,
            control_paths=self.encoded_controls,
            image_path=self.image_path,
        )


@dataclass(frozen=True)
class UnreadableFile:
    """An image, control image or caption file that could not be read, and why."""

    path: Path
    reason: str


UnreadableImage = UnreadableFile
"""The former name, for images and control images."""


@dataclass(frozen=True)
class RotatedImage:
    """An image (target or control) whose EXIF orientation is applied: it is trained as ``size`` shows it,
    while the reference trainer, which ignores the tag, would use the stored pixels (``stored_size``)."""

    path: Path
    orientation: int
    size: Size

    @property
    def stored_size(self) -> Size:
        """The (width, height) of the pixels as stored, before the orientation is applied."""
        return (self.size[1], self.size[0]) if orientation_swaps_sides(self.orientation) else self.size

    @property
    def note(self) -> str:
        """One line for reports, e.g. ``rotated by EXIF orientation 6: trained as 512x768; ...``."""
        turned = "mirrored" if self.orientation in (2, 4, 5, 7) else "rotated"
        (w, h), (sw, sh) = self.size, self.stored_size
        return (
            f"{turned} by EXIF orientation {self.orientation}: trained as {w}x{h}, as viewers show it; "
            f"the reference trainer ignores EXIF and would use the stored {sw}x{sh} pixels"
        )


@dataclass
class DatasetItems:
    """The result of discovering one dataset: usable items plus everything that was left out and why."""

    dataset: Dataset
    edit: bool
    arch: str
    image_count: int = 0
    items: list[DatasetItem] = field(default_factory=list)
    missing_captions: list[Path] = field(default_factory=list)
    empty_captions: list[Path] = field(default_factory=list)
    missing_controls: list[Path] = field(default_factory=list)
    unmatched_controls: list[Path] = field(default_factory=list)
    unreadable: list[UnreadableFile] = field(default_factory=list)
    unreadable_controls: list[UnreadableFile] = field(default_factory=list)
    unreadable_captions: list[UnreadableFile] = field(default_factory=list)
    """Caption files that exist but cannot be read (not UTF-8, permissions): not "missing"."""
    unreadable_items: list[Path] = field(default_factory=list)
    """Target images left out because one of their files could not be read (one entry per item)."""
    unreadable_lines: int = 0
    """JSON-lines entries that could not be read (not UTF-8, not JSON, no image_path), or every line
    when the list itself cannot be read (counted as 1)."""
    too_small: list[Path] = field(default_factory=list)
    rotated: list[RotatedImage] = field(default_factory=list)
    """Readable images (targets and controls) with an EXIF orientation other than upright, once each."""
    captions_found: int = 0
    has_controls: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def kept_keys(self) -> frozenset[str]:
        """Cache keys of items still in the dataset but unreadable: their cache files are never stale."""
        return frozenset(item_key(p) for p in self.unreadable_items)

    @property
    def listing_complete(self) -> bool:
        """Whether every image of the dataset is known (False when JSON-lines entries could not be read)."""
        return self.unreadable_lines == 0


@dataclass
class _Candidate:
    """A target image before it is checked."""

    image_path: Path
    caption: str | None
    caption_path: Path | None
    control_paths: tuple[Path, ...] = ()
    caption_error: str | None = None
    """Why an existing caption file could not be read; the caption is then None."""
    damaged: bool = False
    """A JSON-lines entry with a malformed field (the item counts as unreadable if it is left out)."""


def discover_items(dataset: Dataset, edit: bool = False, decode: bool = False) -> DatasetItems:
    """Find the images, captions and control images of one dataset and work out buckets and cache paths."""
    return discover_with_candidates(dataset, edit, decode)[0]


def discover_with_candidates(
    dataset: Dataset, edit: bool = False, decode: bool = False
) -> tuple[DatasetItems, list[_Candidate]]:
    """:func:`discover_items` and every image it looked at (the gallery lists those it left out too)."""
    result = DatasetItems(dataset=dataset, edit=edit, arch=cache_arch(edit))
    if dataset.image_directory is not None:
        candidates = _from_directory(dataset, result)
    else:
        candidates = _from_jsonl(dataset, result)
    result.image_count = len(candidates)
    result.captions_found = sum(c.caption is not None for c in candidates)
    control_size_cache: dict[Path, Size | None] = {}
    for cand in candidates:
        item = _check_candidate(cand, dataset, result, decode, control_size_cache)
        if item is not None:
            result.items.append(item)
    _check_duplicates(result)
    _summarise_problems(result)
    return result, candidates


def read_caption(path: Path) -> str:
    """A caption file's text, stripped; UnicodeDecodeError if it is not UTF-8."""
    return path.read_text(encoding="utf-8").strip()


def utf8_error(exc: UnicodeDecodeError, base: int = 0) -> str:
    """Where UTF-8 decoding failed, e.g. ``byte 0xff at offset 3`` (``base`` adds to the offset)."""
    data = exc.object
    if isinstance(data, (bytes, bytearray, memoryview)) and exc.start < len(data):
        return f"byte 0x{bytes(data)[exc.start]:02x} at offset {base + exc.start}"
    return exc.reason


def caption_read_error(path: Path, exc: OSError | UnicodeDecodeError) -> str:
    """Why a caption file that exists could not be read, naming the file."""
    if isinstance(exc, UnicodeDecodeError):
        return f"caption {path} is not UTF-8 text ({utf8_error(exc)})"
    return f"caption {path} cannot be read ({exc.strerror or exc})"


def _from_directory(dataset: Dataset, result: DatasetItems) -> list[_Candidate]:
    """Images in image_directory with captions beside them and controls from control_directory."""
    assert dataset.image_directory is not None
    images = list_images(dataset.image_directory)
    controls: dict[Path, tuple[Path, ...]] = {}
    if dataset.control_directory is not None:
        result.has_controls = True
        controls, result.unmatched_controls = match_controls(images, list_images(dataset.control_directory))
    out = []
    for image in images:
        caption_path = image.with_suffix(dataset.caption_extension)
        caption, error = None, None
        if caption_path.is_file():
            try:
                caption = read_caption(caption_path)
            except (OSError, UnicodeDecodeError) as exc:
                error = caption_read_error(caption_path, exc)
        out.append(_Candidate(image, caption, caption_path, controls.get(image, ()), caption_error=error))
    return out


def match_controls(
    images: list[Path], controls: list[Path]
) -> tuple[dict[Path, tuple[Path, ...]], list[Path]]:
    """Control images per target image and the control files that match none.

    A control matches an image with the same basename (any image extension) or ``basename_N`` for several;
    the plain name comes first, then by N. A file that exactly names another image is that image's only.
    """
    by_stem: dict[str, list[Path]] = {}
    for c in controls:
        by_stem.setdefault(c.stem, []).append(c)
    image_stems = {i.stem for i in images}
    numbered: dict[str, list[tuple[int, Path]]] = {}
    for c in controls:
        m = _NUMBERED.match(c.stem)
        if m and c.stem not in image_stems:
            numbered.setdefault(m["stem"], []).append((int(m["n"]), c))
    matched: dict[Path, tuple[Path, ...]] = {}
    used: set[Path] = set()
    for image in images:
        found = sorted(by_stem.get(image.stem, []))
        found += [c for _, c in sorted(numbered.get(image.stem, []))]
        if found:
            matched[image] = tuple(found)
            used.update(found)
    return matched, [c for c in controls if c not in used]


def _from_jsonl(dataset: Dataset, result: DatasetItems) -> list[_Candidate]:
    """Entries of image_jsonl_file; relative paths in it are taken from the file's folder."""
    path = dataset.image_jsonl_file
    assert path is not None
    base = path.parent
    out: list[_Candidate] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        result.unreadable_lines = 1
        result.problems.append(f"{path} cannot be read ({exc.strerror or exc}); no cache file is removed")
        return out
    for number, line, error in _jsonl_lines(data):
        if error is None and not line.strip():
            continue
        entry = None
        if error is None:
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                error = f"not valid JSON ({getattr(exc, 'msg', 'nested too deeply')})"
        if error is None and (not isinstance(entry, dict) or not isinstance(entry.get("image_path"), str)):
            error = 'needs "image_path" (a string)'
        if error is not None or not isinstance(entry, dict):
            result.unreadable_lines += 1
            result.problems.append(f"{path} line {number}: {error}; line skipped")
            continue
        controls = _jsonl_controls(entry)
        damaged = controls is None
        if controls is None:
            result.problems.append(
                f'{path} line {number}: "control_path" must be a string or a list of strings'
            )
            controls = []
        if controls:
            result.has_controls = True
        caption = entry.get("caption")
        out.append(
            _Candidate(
                image_path=entry_path(entry["image_path"], base),
                caption=caption.strip() if isinstance(caption, str) else None,
                caption_path=None,
                control_paths=tuple(entry_path(c, base) for c in controls),
                damaged=damaged,
            )
        )
    return out


def _jsonl_lines(data: bytes) -> list[tuple[int, str, str | None]]:
    """(line number, text, why it cannot be decoded or None) per line of a JSON-lines file.

    Lines are decoded one by one, so that one line that is not UTF-8 loses only that line; a UTF-8 byte
    order mark at the start is dropped.
    """
    out = []
    offset = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    for number, raw in enumerate(data[offset:].split(b"\n"), start=1):
        try:
            out.append((number, raw.decode("utf-8"), None))
        except UnicodeDecodeError as exc:
            out.append((number, "", f"not UTF-8 text ({utf8_error(exc, offset)})"))
        offset += len(raw) + 1
    return out


def _jsonl_controls(entry: dict) -> list[str] | None:
    """``control_path`` (a string or a list) and ``control_path_N`` keys in order; None if malformed."""
    value = entry.get("control_path")
    if value is None:
        found = []
    elif isinstance(value, str):
        found = [value]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        found = list(value)
    else:
        return None
    numbered = sorted(
        (int(k.rsplit("_", 1)[1]), v) for k, v in entry.items() if re.fullmatch(r"control_path_\d+", k)
    )
    if not all(isinstance(v, str) for _, v in numbered):
        return None
    return found + [v for _, v in numbered]


def entry_path(value: str, base: Path) -> Path:
    """A path from a JSON-lines entry (relative to the list's folder ``base``), made absolute."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _probe(path: Path, decode: bool, bad: list[UnreadableFile], rotated: list[RotatedImage]) -> Size | None:
    """An image's displayed size (listing it in ``rotated`` if EXIF turns it), or None after listing it
    in ``bad``."""
    if not path.is_file():
        bad.append(UnreadableFile(path, "file not found"))
        return None
    if not is_image_file(path):
        bad.append(UnreadableFile(path, f"unsupported extension {path.suffix!r}"))
        return None
    try:
        size, orientation = probe_image_orientation(path, decode=decode)
    except ImageReadError as exc:
        bad.append(UnreadableFile(path, str(exc)))
        return None
    if orientation != 1:
        rotated.append(RotatedImage(path, orientation, size))
    return size


def _check_candidate(
    cand: _Candidate,
    dataset: Dataset,
    result: DatasetItems,
    decode: bool,
    control_sizes: dict[Path, Size | None],
) -> DatasetItem | None:
    """Turn a candidate into an item, or record every reason it is left out."""
    size = _probe(cand.image_path, decode, result.unreadable, result.rotated)
    usable = size is not None
    unreadable = size is None and cand.image_path.is_file()
    if cand.caption_error is not None:
        assert cand.caption_path is not None
        result.unreadable_captions.append(UnreadableFile(cand.caption_path, cand.caption_error))
        usable, unreadable = False, True
    elif cand.caption is None:
        result.missing_captions.append(cand.image_path)
        usable = False
    elif not cand.caption:
        result.empty_captions.append(cand.image_path)
    if result.edit and not cand.control_paths:
        result.missing_controls.append(cand.image_path)
        usable = False
    sizes = []
    for c in cand.control_paths:
        if c not in control_sizes:
            control_sizes[c] = _probe(c, decode, result.unreadable_controls, result.rotated)
        sizes.append(control_sizes[c])
    if result.edit and any(s is None for s in sizes):
        usable = False
        pairs = zip(cand.control_paths, sizes, strict=True)
        unreadable = unreadable or any(s is None and c.is_file() for c, s in pairs)
    if not usable or size is None:
        if unreadable or cand.damaged:
            result.unreadable_items.append(cand.image_path)
        return None
    bucket = select_bucket(size, dataset.resolution, dataset.enable_bucket, dataset.bucket_no_upscale)
    buckets: tuple[Size, ...] = ()
    if result.edit:
        res, keep = dataset.control_resolution, dataset.no_resize_control
        buckets = tuple(control_bucket(s, bucket, res, keep) for s in sizes if s is not None)
    if min(bucket) < STEP or any(min(b) < STEP for b in buckets):
        result.too_small.append(cand.image_path)
        return None
    key = item_key(cand.image_path)
    return DatasetItem(
        key=key,
        image_path=cand.image_path,
        caption=cand.caption or "",
        size=size,
        bucket=bucket,
        latent_cache_path=latent_cache_path(dataset.cache_directory, key, size, result.arch),
        text_cache_path=text_cache_path(dataset.cache_directory, key, result.arch),
        caption_path=cand.caption_path,
        control_paths=cand.control_paths,
        control_sizes=tuple(s for s in sizes if s is not None),
        control_buckets=buckets,
    )


def _check_duplicates(result: DatasetItems) -> None:
    """Two images with one basename would write the same cache files: keep the first, report the rest."""
    counts = Counter(i.key for i in result.items)
    seen: set[str] = set()
    kept = []
    for item in result.items:
        if counts[item.key] > 1:
            if item.key in seen:
                result.problems.append(
                    f"{item.image_path} has the same basename {item.key!r} as another image and would share its "
                    "cache files; rename one (left out)"
                )
                continue
            seen.add(item.key)
        kept.append(item)
    result.items = kept


def _names(paths: list[Path], limit: int = 5) -> str:
    """A short list of file names for a message."""
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


_LISTED_FILES = 20
"""Unreadable files of one kind named one per line (the rest are counted in one more line)."""


def _each(
    r: DatasetItems, files: list[UnreadableFile], what: str, line: Callable[[UnreadableFile], str]
) -> None:
    """One problem per file (the first few), then one line counting the rest."""
    r.problems += [line(u) for u in files[:_LISTED_FILES]]
    if len(files) > _LISTED_FILES:
        r.problems.append(f"{len(files) - _LISTED_FILES} more {what} (dataset inspect --json lists them all)")


def _kept(kept: bool) -> str:
    return "; its cache files are kept" if kept else ""


def _summarise_problems(r: DatasetItems) -> None:
    """One line per kind of problem, naming the files involved."""
    d = r.dataset
    if r.image_count == 0:
        r.problems.append(f"no images found in {d.source} (extensions: png, jpg, jpeg, webp, bmp)")
    if r.missing_captions:
        where = f"caption files ({d.caption_extension}) beside them" if d.image_directory else '"caption"'
        r.problems.append(
            f"{len(r.missing_captions)} image(s) lack {where}: {_names(r.missing_captions)} (left out)"
        )
    if r.empty_captions:
        r.problems.append(f"{len(r.empty_captions)} caption(s) are empty: {_names(r.empty_captions)}")
    kept = set(r.unreadable_items)
    _each(
        r,
        r.unreadable,
        "image(s) cannot be read",
        lambda u: f"image {u.path} cannot be read ({u.reason}); left out{_kept(u.path in kept)}",
    )
    _each(
        r,
        r.unreadable_captions,
        "caption(s) cannot be read",
        lambda u: f"{u.reason}; its image is left out{_kept(True)}",
    )
    left = f"; its target is left out{_kept(True)}" if r.edit else ""
    _each(
        r,
        r.unreadable_controls,
        "control image(s) cannot be read",
        lambda u: f"control image {u.path} cannot be read ({u.reason}){left}",
    )
    if r.too_small:
        r.problems.append(
            f"{len(r.too_small)} image(s) are smaller than {STEP} px on a side: {_names(r.too_small)}"
        )
    if r.edit and not r.has_controls:
        fix = "set control_directory" if d.image_directory else 'give each line a "control_path"'
        r.problems.append(f"edit mode needs control images: {fix} in {d.label}")
    elif r.edit and r.missing_controls:
        r.problems.append(
            f"{len(r.missing_controls)} image(s) have no control image: {_names(r.missing_controls)} (left out)"
        )
    if r.unmatched_controls:
        r.problems.append(
            f"{len(r.unmatched_controls)} control image(s) match no target image: {_names(r.unmatched_controls)}"
        )
