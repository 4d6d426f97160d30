"""The dataset gallery: every image of a dataset TOML, thumbnails, caption edits, bulk actions and undo.

Images and thumbnails are served only from the folders a dataset TOML names (and the files its JSON-lines
list names). Captions are written only inside the workspace and the folders allowed with ``--allow_dir``
(the rule jobs follow); elsewhere the gallery is read-only and says how to allow it. Every write keeps the
previous text in the workspace's caption history (``caption_history.sqlite3``) and can be undone.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from ..data.caption_bulk import BulkAction, parse_action
from ..data.caption_history import HISTORY_NAME, CaptionHistory
from ..data.captions import (
    CaptionConflict,
    CaptionEdit,
    CaptionPlace,
    CaptionWriteError,
    apply_edits,
    line_text,
    undo_batch,
)
from ..data.config import DatasetConfig, load_dataset_config
from ..data.gallery import (
    CACHED,
    OUTDATED,
    GalleryDataset,
    GalleryEntry,
    build_gallery,
    dataset_signature,
    served_file,
)
from ..data.images import ImageReadError
from ..data.thumbnails import (
    DEFAULT_SIZE,
    MEDIA_TYPE,
    SIZES,
    ensure_thumbnail,
    prune_thumbnails,
    thumbnail_path,
)
from ..errors import DatasetError
from ..params.validate import Join, Message
from .app import studio
from .paths import user_path
from .views_util import json_body, refuse, texts

bp = Blueprint("api_gallery", __name__, url_prefix="/api/gallery")

EXTENSION = "qwen_image_studio.gallery"
THUMBS_DIR = ".thumbs"
THUMBS_MAX_BYTES = 2**30  # the thumbnail cache keeps the most recently used within 1 GiB
PRUNE_EVERY = 200  # new thumbnails between two prunes
MAX_LIMIT = 500
MAX_CAPTION = 10_000
FILTERS = ("no_caption", "problem", "outdated", "uncached", "usable")
LISTINGS_KEPT = 4


@dataclass
class Listing:
    """A dataset TOML's gallery as built for one fingerprint of its files."""

    path: Path
    config: DatasetConfig
    galleries: list[GalleryDataset]
    signature: int

    def entries(self) -> list[GalleryEntry]:
        """Every image of every dataset, in order."""
        return [e for g in self.galleries for e in g.entries]

    def entry(self, image: str) -> GalleryEntry | None:
        """The entry of an image path (as the listing gives it)."""
        return next((e for e in self.entries() if str(e.image) == image), None)


class GalleryState:
    """What the gallery keeps per app: its caption history and the latest listings."""

    def __init__(self, workspace: Path, thumbs_max: int = THUMBS_MAX_BYTES) -> None:
        self.history = CaptionHistory(workspace / HISTORY_NAME)
        self.thumbs = workspace / THUMBS_DIR
        self.thumbs_max = thumbs_max
        self._lock = threading.Lock()
        self._listings: dict[tuple[Path, bool | None], Listing] = {}
        self._made = PRUNE_EVERY  # the first thumbnail made after start prunes the folder

    def thumbnail(self, image: Path, size: int) -> Path:
        """The thumbnail file of an image; every PRUNE_EVERY new ones, the least recently used beyond
        ``thumbs_max`` are removed (in the background)."""
        made = not thumbnail_path(self.thumbs, image, size).is_file()
        file = ensure_thumbnail(self.thumbs, image, size)
        with self._lock:
            self._made += made
            due = self._made >= PRUNE_EVERY
            if due:
                self._made = 0
        if due:
            threading.Thread(target=prune_thumbnails, args=(self.thumbs, self.thumbs_max), daemon=True).start()
        return file

    def listing(self, path: Path, edit: bool | None) -> Listing:
        """The gallery of a TOML, built again only when its files changed."""
        try:
            config = load_dataset_config(path)
        except DatasetError as exc:
            refuse(400, Message("gallery.dataset_invalid", {"path": path, "detail": str(exc)}))
        signature = dataset_signature(path, config)
        with self._lock:
            kept = self._listings.get((path, edit))
        if kept is not None and kept.signature == signature:
            return kept
        built = Listing(path, config, build_gallery(config, edit), signature)
        with self._lock:
            self._listings[(path, edit)] = built
            while len(self._listings) > LISTINGS_KEPT:
                self._listings.pop(next(iter(self._listings)))
        return built


def gallery_state() -> GalleryState:
    """The gallery state of the current app (made on first use)."""
    extensions = current_app.extensions
    if EXTENSION not in extensions:
        extensions[EXTENSION] = GalleryState(studio().workspace)
    return extensions[EXTENSION]


# ----- request values -----


def _toml(raw: Any) -> Path:
    if not isinstance(raw, str) or not raw.strip():
        refuse(400, Message("gallery.no_path"))
    return user_path(studio().workspace, raw.strip(), "path")


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        refuse(400, Message("gallery.bad_int", {"name": name, "low": low, "high": high, "value": raw}))
    return value


def _edit(raw: Any) -> bool | None:
    if raw in (None, "", "auto"):
        return None
    if raw in (True, "1", "true", "yes"):
        return True
    if raw in (False, "0", "false", "no"):
        return False
    refuse(400, Message("gallery.bad_choice", {"name": "edit", "choices": "1, 0, auto", "value": raw}))


def _text(value: Any, name: str, limit: int = MAX_CAPTION, allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or len(value) > limit:
        refuse(400, Message("gallery.bad_text", {"name": name, "limit": limit}))
    return value


@dataclass(frozen=True)
class Filters:
    """Which images a request asks for."""

    kinds: tuple[str, ...] = ()
    bucket: tuple[int, int] | None = None
    query: str = ""

    def keep(self, e: GalleryEntry) -> bool:
        """Whether an entry passes every filter."""
        checks = {
            "no_caption": not e.caption,
            "problem": bool(e.problems),
            "outdated": e.cache == OUTDATED,
            "uncached": e.usable and e.cache != CACHED,
            "usable": e.usable,
        }
        if not all(checks[k] for k in self.kinds):
            return False
        if self.bucket is not None and e.bucket != self.bucket:
            return False
        q = self.query.lower()
        return not q or q in e.name.lower() or q in (e.caption or "").lower()


def _filters(source: Any) -> Filters:
    """The filters of a query string or a JSON body (``filter``: names, comma-separated; ``bucket``; ``q``)."""
    raw = source.get("filter") or ""
    names = raw if isinstance(raw, list) else str(raw).split(",")
    kinds = tuple(n.strip() for n in names if str(n).strip())
    for kind in kinds:
        if kind not in FILTERS:
            refuse(
                400,
                Message("gallery.bad_choice", {"name": "filter", "choices": Join(FILTERS), "value": kind}),
            )
    bucket = None
    if source.get("bucket"):
        text = str(source.get("bucket"))
        w, _, h = text.lower().partition("x")
        if not (w.isdigit() and h.isdigit()):
            refuse(400, Message("gallery.bad_bucket", {"value": text}))
        bucket = (int(w), int(h))
    return Filters(kinds, bucket, _text(source.get("q") or "", "q", 200) or "")


# ----- answers -----


def _url(kind: str, listing: Listing, image: Path) -> str:
    try:
        version = image.stat().st_mtime_ns
    except OSError:
        version = 0
    return f"/api/gallery/{kind}?" + urlencode({"path": str(listing.path), "image": str(image), "v": version})


def _entry_json(listing: Listing, e: GalleryEntry) -> dict[str, Any]:
    return {
        "dataset": e.dataset,
        "image": str(e.image),
        "name": e.name,
        "caption": e.caption,
        "usable": e.usable,
        "size": e.size,
        "bucket": e.bucket,
        "crop": None if e.crop is None else {"box": e.crop.box, "fraction": e.crop.fraction},
        "cache": e.cache,
        "cache_reasons": list(e.cache_reasons),
        "problems": list(e.problems),
        "notes": list(e.notes),
        "thumb": _url("thumb", listing, e.image),
        "url": _url("image", listing, e.image),
        "controls": [
            {
                "index": i,
                "image": str(c.path),
                "name": c.path.name,
                "size": c.size,
                "bucket": c.bucket,
                "problem": c.problem,
                "thumb": _url("thumb", listing, c.path),
                "url": _url("image", listing, c.path),
            }
            for i, c in enumerate(e.controls)
        ],
    }


def _caption_folder(g: GalleryDataset) -> Path:
    """Where a dataset's captions are written: its image folder, or its JSON-lines list."""
    ds = g.dataset
    return ds.image_directory if ds.image_directory is not None else ds.image_jsonl_file  # type: ignore[return-value]


def _read_only_message(label: str, where: Path) -> Message:
    roots = studio().roots.roots
    suggest = where if where.is_dir() else where.parent
    vars = {"dataset": label, "where": where, "roots": Join(tuple(map(str, roots))), "suggest": suggest}
    return Message("gallery.read_only", vars)


def read_only(g: GalleryDataset) -> Message | None:
    """Why a dataset's captions cannot be written from here (outside the workspace and allowed folders)."""
    where = _caption_folder(g)
    return None if studio().roots.permits(where) else _read_only_message(g.dataset.label, where)


def _dataset_json(g: GalleryDataset) -> dict[str, Any]:
    ds, locked = g.dataset, read_only(g)
    return {
        "index": ds.index,
        "label": ds.label,
        "source": str(ds.source),
        "kind": "directory" if ds.image_directory is not None else "jsonl",
        "caption_extension": ds.caption_extension if ds.image_directory is not None else None,
        "control_directory": str(ds.control_directory) if ds.control_directory else None,
        "images": len(g.entries),
        "usable": sum(e.usable for e in g.entries),
        "writable": locked is None,
        **(texts(str(locked), locked, "read_only") if locked else {"read_only": None}),
        "edit": {
            "unmatched_controls": [str(p) for p in g.unmatched_controls],
            "missing_controls": [str(p) for p in g.missing_controls],
            "control_counts": {str(k): v for k, v in g.control_counts.items()},
            "mixed": g.mixed_controls,
        },
        "problems": g.problems,
    }


def _buckets(entries: list[GalleryEntry]) -> list[dict[str, int]]:
    counts: dict[tuple[int, int], int] = {}
    for e in entries:
        if e.bucket is not None:
            counts[e.bucket] = counts.get(e.bucket, 0) + 1
    return [{"width": w, "height": h, "count": n} for (w, h), n in sorted(counts.items())]


@bp.get("/items")
def items() -> Response:
    """One page of a dataset TOML's images (offset, limit) after the filters, with the datasets' summary."""
    path = _toml(request.args.get("path"))
    edit = _edit(request.args.get("edit"))
    offset = _int("offset", 0, 0, 10**9)
    limit = _int("limit", 100, 1, MAX_LIMIT)
    filters = _filters(request.args)
    listing = gallery_state().listing(path, edit)
    entries = listing.entries()
    matched = [e for e in entries if filters.keep(e)]
    return jsonify(
        path=str(path),
        edit=listing.galleries[0].edit if listing.galleries else False,
        total=len(entries),
        matched=len(matched),
        offset=offset,
        limit=limit,
        datasets=[_dataset_json(g) for g in listing.galleries],
        buckets=_buckets(entries),
        items=[_entry_json(listing, e) for e in matched[offset : offset + limit]],
    )


def _served(path: Path, raw: Any) -> Path:
    """The image file a request names, when the TOML names it (404 otherwise)."""
    text = raw if isinstance(raw, str) else ""
    try:
        config = load_dataset_config(path)
    except DatasetError as exc:
        refuse(400, Message("gallery.dataset_invalid", {"path": path, "detail": str(exc)}))
    image = served_file(config, [], text)  # an image of a named folder: no listing needed
    if image is None and any(ds.image_jsonl_file is not None for ds in config.datasets):
        listing = gallery_state().listing(path, None)
        image = served_file(listing.config, listing.galleries, text)
    if image is None:
        refuse(404, Message("gallery.not_served", {"image": raw, "path": path}))
    return image


def _cached_file(response: Response) -> Response:
    """Let the browser keep a file whose URL names its version (``v``)."""
    if request.args.get("v"):
        response.headers["Cache-Control"] = "private, max-age=31536000, immutable"
    else:
        response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/thumb")
def thumb() -> Response:
    """A thumbnail (WebP, EXIF orientation applied) of an image the TOML names; made on first request."""
    path = _toml(request.args.get("path"))
    image = _served(path, request.args.get("image"))
    size = _int("size", DEFAULT_SIZE, min(SIZES), max(SIZES))
    size = min(SIZES, key=lambda s: abs(s - size))
    try:
        file = gallery_state().thumbnail(image, size)
    except ImageReadError as exc:
        refuse(422, Message("gallery.unreadable", {"image": image, "reason": str(exc)}))
    return _cached_file(send_file(file, mimetype=MEDIA_TYPE, conditional=True))


@bp.get("/image")
def image() -> Response:
    """The image file itself (target or control) when the TOML names it."""
    path = _toml(request.args.get("path"))
    return _cached_file(send_file(_served(path, request.args.get("image")), conditional=True))


# ----- writes -----


def _writable(listing: Listing, places: list[CaptionPlace]) -> None:
    """403 with how to allow it when a caption would be written outside the allowed folders."""
    roots = studio().roots
    for place in places:
        if roots.permits(place.location):
            continue
        owner = next(
            (g for g in listing.galleries if place.location in (_caption_folder(g), place.file)), None
        )
        label = owner.dataset.label if owner is not None else str(listing.path)
        refuse(403, _read_only_message(label, place.location.parent if place.file else place.location))


def _conflict(exc: CaptionConflict) -> Response:
    image, _, now = exc.conflicts[0]
    if len(exc.conflicts) == 1:
        shown = now if now is not None else Message("gallery.no_caption")
        msg = Message("gallery.changed", {"image": image, "now": shown})
    else:
        names = Join(tuple(p.name for p, _, _ in exc.conflicts[:5]))
        msg = Message("gallery.changed_many", {"count": len(exc.conflicts), "images": names})
    changed = [{"image": str(p), "expected": e, "now": n} for p, e, n in exc.conflicts]
    response = jsonify(**texts(str(msg), msg, "error"), code="caption_changed", conflicts=changed)
    response.status_code = 409
    return response


def _write_error(exc: CaptionWriteError) -> Response:
    vars = {"path": exc.path, "detail": exc.reason, "written": exc.written}
    msg = Message("gallery.not_writable_some" if exc.written else "gallery.not_writable", vars)
    response = jsonify(**texts(str(msg), msg, "error"), code="not_writable", written=exc.written)
    response.status_code = 403
    return response


def _apply(listing: Listing, edits: list[CaptionEdit], label: str) -> int | None | Response:
    _writable(listing, [e.place for e in edits])
    try:
        return apply_edits(edits, gallery_state().history, listing.path, label)
    except CaptionConflict as exc:
        return _conflict(exc)
    except CaptionWriteError as exc:
        return _write_error(exc)


def _entry_of(listing: Listing, raw: Any) -> GalleryEntry:
    entry = listing.entry(raw) if isinstance(raw, str) else None
    if entry is None:
        refuse(404, Message("gallery.no_image", {"image": raw, "path": listing.path}))
    return entry


@bp.put("/caption")
def put_caption() -> Response:
    """Write one caption; `expected` is the text the page loaded (null: none), checked against the disk."""
    body = json_body()
    listing = gallery_state().listing(_toml(body.get("path")), None)
    entry = _entry_of(listing, body.get("image"))
    expected = _text(body.get("expected"), "expected", allow_none=True)
    caption = _text(body.get("caption"), "caption") or ""
    edit = CaptionEdit(entry.place, expected.strip() if expected is not None else None, caption)
    result = _apply(listing, [edit], f"edit {entry.name}")
    if isinstance(result, Response):
        return result
    return jsonify(changed=result is not None, batch=result, image=str(entry.image), caption=caption.strip())


def _selected(listing: Listing, body: dict[str, Any]) -> list[GalleryEntry]:
    images = body.get("images")
    if images is None:
        filters = _filters(body)
        return [e for e in listing.entries() if filters.keep(e)]
    if not isinstance(images, list):
        refuse(400, Message("gallery.bad_list", {"name": "images"}))
    return [_entry_of(listing, raw) for raw in images]


def _bulk_start(body: dict[str, Any]) -> tuple[Listing, BulkAction]:
    listing = gallery_state().listing(_toml(body.get("path")), None)
    return listing, parse_action(body.get("action"))


@bp.post("/bulk/preview")
def bulk_preview() -> Response:
    """What a bulk action would make of each caption (images without a caption are skipped); writes nothing."""
    body = json_body()
    listing, action = _bulk_start(body)
    chosen = _selected(listing, body)
    changes, unchanged, skipped = [], 0, []
    for e in chosen:
        if e.caption is None:
            skipped.append(str(e.image))
            continue
        after = action.apply(e.caption)
        if after == e.caption:
            unchanged += 1
        else:
            changes.append({"image": str(e.image), "name": e.name, "before": e.caption, "after": after})
    locked = [m for g in listing.galleries if (m := read_only(g)) is not None]
    return jsonify(
        action=action.label, changes=changes, unchanged=unchanged, skipped=skipped, writable=not locked
    )


def _expected(body: dict[str, Any]) -> list[tuple[str, str]]:
    raw = body.get("expected")
    if not isinstance(raw, list) or not all(
        isinstance(x, dict) and isinstance(x.get("image"), str) and isinstance(x.get("before"), str)
        for x in raw
    ):
        refuse(400, Message("gallery.bad_list", {"name": "expected"}))
    return [(x["image"], x["before"]) for x in raw]


@bp.post("/bulk/apply")
def bulk_apply() -> Response:
    """Apply a bulk action to the captions the preview showed (`expected`: image and before of each)."""
    body = json_body()
    listing, action = _bulk_start(body)
    edits = [
        CaptionEdit(_entry_of(listing, image).place, before.strip(), action.apply(before.strip()))
        for image, before in _expected(body)
    ]
    result = _apply(listing, edits, action.label)
    if isinstance(result, Response):
        return result
    return jsonify(batch=result, changed=len(edits) if result is not None else 0, action=action.label)


def _batch_json(b: Any, with_changes: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"batch": b.id, "label": b.label, "at": b.at, "undone": b.undone_at is not None}
    out["count"] = b.count
    if with_changes:
        out["changes"] = [
            {
                "image": str(c.image),
                "before": line_text(c.before, c.kind),
                "after": line_text(c.after, c.kind),
            }
            for c in gallery_state().history.changes(b.id, written_only=True)
        ]
    return out


@bp.get("/history")
def history() -> Response:
    """The caption changes made to a dataset TOML, newest first, with every previous and new text."""
    path = _toml(request.args.get("path"))
    limit = _int("limit", 50, 1, 500)
    batches = gallery_state().history.batches(path, limit)
    return jsonify(path=str(path), batches=[_batch_json(b, True) for b in batches])


@bp.post("/undo")
def undo() -> Response:
    """Put back the captions of one change (`batch`, default: the latest not undone) of a dataset TOML."""
    body = json_body()
    path = _toml(body.get("path"))
    state = gallery_state()
    raw = body.get("batch")
    if raw is None:
        batch = state.history.last_open(path)
        if batch is None:
            refuse(409, Message("gallery.nothing_to_undo", {"path": path}))
    else:
        batch = state.history.batch(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None
        if batch is None or batch.dataset != path:
            refuse(404, Message("gallery.no_batch", {"batch": raw, "path": path}))
        if batch.undone_at is not None:
            refuse(409, Message("gallery.undone_already", {"batch": raw}))
    listing = state.listing(path, None)
    places = [CaptionPlace(c.image, **{c.kind: c.location}) for c in state.history.changes(batch.id)]
    _writable(listing, places)
    try:
        restored = undo_batch(state.history, batch.id)
    except CaptionConflict as exc:
        image, _, _ = exc.conflicts[0]
        msg = Message(
            "gallery.undo_changed", {"batch": batch.id, "image": image, "count": len(exc.conflicts)}
        )
        response = jsonify(**texts(str(msg), msg, "error"), code="caption_changed")
        response.status_code = 409
        return response
    except CaptionWriteError as exc:
        return _write_error(exc)
    return jsonify(batch=batch.id, label=batch.label, restored=[str(p) for p in restored])
