"""Import image files (loose or in zip archives) into a new dataset folder with its dataset TOML.

The new dataset is ``DATASETS/<name>/``: the images in ``images/`` with their captions beside them
(``<image stem>.txt``), control images (for edit datasets) in ``control/``, the caches in ``cache/`` and
``dataset.toml``, written with :func:`~.config.write_dataset_config` (absolute paths: the reference trainer
resolves relative paths against its working folder, this loader against the TOML's folder; an absolute path
means the same to both).

Rules, in the order they apply:

* Names: a zip member's or an upload's folders are dropped (the dataset is flat). ``__MACOSX/`` and any
  file or folder whose name starts with ``.`` are ignored silently. A member with an absolute path, a
  ``..`` part, a drive letter, a symbolic link, encryption or a name with control characters is skipped
  and listed; nothing is ever written under a member's own path.
* An image inside a folder named ``control`` or ``controls`` (any depth, any letter case) is a control
  image; others are targets. Controls pair with targets as the trainer pairs them (same stem, or
  ``stem_0``, ``stem_1``, …); a control that pairs with no target is skipped and listed.
* Captions are ``.txt`` files named after an image (UTF-8; a byte-order mark is dropped). A caption in the
  image's own folder wins over one elsewhere; other captions (no such image, a control's, not UTF-8) are
  skipped and listed.
* Two targets (or two controls) with the same stem, letter case ignored (``a.png`` and ``x/a.jpg``), refuse
  the import and name both: the trainer pairs captions, controls and cache files by stem, so a rename would
  silently break the pairing.
* Every image is decoded with Pillow before it counts; an unreadable one is skipped and listed.
* Limits (:class:`ImportLimits`): members per zip, files in all, bytes unpacked in all (checked against
  the zip's own listing before anything is written, and again while copying). Going over one refuses the
  import. Nested zips are not unpacked (skipped and listed).
* Nothing is overwritten and nothing is left half-made: an existing ``<name>`` folder (or ``<name>.toml``
  from the dataset panel) refuses the import; the files are written into a hidden folder inside
  ``DATASETS`` that is renamed to ``<name>`` at the end, and removed on any failure.

Refusals raise :class:`ImportRefused` (a ``DatasetError``) with a message key and its values (the English
templates are :data:`IMPORT_MESSAGES`), and an HTTP-like ``status`` (400, 409 for a name taken, 413 for a
limit).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import threading
import time
import unicodedata
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from qwen_image_studio.data.config import (
    check_resolution,
    load_dataset_config,
    parse_dataset_config,
    write_dataset_config,
)
from qwen_image_studio.data.images import IMAGE_EXTENSIONS, ImageReadError, probe_image
from qwen_image_studio.data.items import match_controls
from qwen_image_studio.errors import DatasetError

TOML_NAME = "dataset.toml"
IMAGES_DIR = "images"
CONTROL_DIR = "control"
CACHE_DIR = "cache"
CAPTION_EXTENSION = ".txt"
CONTROL_FOLDERS = frozenset({"control", "controls"})
DEFAULT_RESOLUTION = (1024, 1024)
STAGING_PREFIX = ".import-"
STALE_STAGING_S = 6 * 3600  # a staging folder this old was left by a crash: removed by the next import
NAME_MAX = 64
_NAME = re.compile(r"^[^\W_][\w.-]*$")  # letters (any script), digits, '-', '_', '.'; a letter or digit first
_DRIVE = re.compile(r"^[A-Za-z]:")
CHUNK = 1024 * 1024
MAX_CAPTION_BYTES = 1024 * 1024
MIB = 2**20
GIB = 2**30

IMPORT_MESSAGES: dict[str, str] = {
    "import.bad_name": (
        "'name': use 1 to {max} letters, digits, '-', '_' or '.', starting with a letter or digit and not "
        "ending with '.' (got {value})"
    ),
    "import.exists": (
        "a dataset named {name} exists already ({path}); choose another name (nothing is overwritten)"
    ),
    "import.no_files": "'files': choose images (or a zip of images) to import",
    "import.no_images": "no image could be imported from the {count} file(s) given; nothing was written",
    "import.bad_resolution": "'resolution': {detail} (got {value})",
    "import.too_many_members": (
        "{zip} has {count} entries; at most {max} are unpacked (a zip bomb guard); nothing was written"
    ),
    "import.too_many_files": (
        "{count} files were given; at most {max} are imported at once; nothing was written"
    ),
    "import.too_large": (
        "the files would unpack to more than {max} ({zip}); nothing was written — split the import"
    ),
    "import.no_space": "{path} has {free} free; the import needs {need}; nothing was written",
    "import.duplicate": (
        "two {kind} images have the name {name} once folders are dropped: {first} and {second}; rename one "
        "(captions, control images and caches pair by name); nothing was written"
    ),
    "import.kind_target": "target",
    "import.kind_control": "control",
    "import.write_failed": "the dataset could not be written in {path}: {detail}; nothing was left behind",
    "import.invalid_result": "the written dataset TOML does not load: {detail}; nothing was left behind",
    # reasons a file was skipped
    "import.skip_unsafe": "unsafe path in the zip (absolute, '..' or a drive letter): not unpacked",
    "import.skip_link": "a symbolic link: not unpacked",
    "import.skip_encrypted": "encrypted: not unpacked",
    "import.skip_bad_name": "the file name has control characters or is too long",
    "import.skip_not_image": "not an image or a caption (images: {allowed}; captions: .txt)",
    "import.skip_nested_zip": "a zip inside a zip: not unpacked",
    "import.skip_bad_zip": "not a zip file that can be read ({detail})",
    "import.skip_unreadable": "the image cannot be read ({detail})",
    "import.skip_member_error": "cannot be unpacked ({detail})",
    "import.skip_no_image": "a caption for an image that is not imported ({stem})",
    "import.skip_caption_other": "another caption of {stem} was used ({used})",
    "import.skip_control_caption": "captions of control images are not used",
    "import.skip_caption_encoding": "the caption is not UTF-8 text",
    "import.skip_caption_large": "the caption is larger than {max}",
    "import.skip_unmatched_control": (
        "a control image that pairs with no imported image (it needs the name of one, or name_0, name_1…)"
    ),
}


def render_message(key: str, values: dict[str, Any]) -> str:
    """A message of :data:`IMPORT_MESSAGES` with its values filled in."""
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), IMPORT_MESSAGES[key])


class ImportRefused(DatasetError):
    """An import that writes nothing: ``key`` and ``values`` word it, ``status`` is 400, 409 or 413."""

    def __init__(self, key: str, values: dict[str, Any] | None = None, status: int = 400) -> None:
        self.key = key
        self.values = dict(values or {})
        self.status = status
        super().__init__(render_message(key, self.values))


@dataclass(frozen=True)
class ImportLimits:
    """What one import may hold (going over refuses it, before anything is written where possible)."""

    max_members: int = 20_000  # entries in one zip
    max_files: int = 20_000  # files in all (loose files and zip members)
    max_unpacked: int = 16 * GIB  # bytes written in all (the images, controls and captions)


@dataclass(frozen=True)
class Skipped:
    """A file that was not imported: where it came from (``zip!member`` for a zip member) and why."""

    file: str
    key: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """Why, in English."""
        return render_message(self.key, self.values)


@dataclass
class ImportResult:
    """What an import wrote."""

    name: str
    folder: Path
    toml: Path
    images: list[Path]
    controls: list[Path]
    captions: int
    skipped: list[Skipped]
    resolution: tuple[int, int]
    missing_controls: list[Path] = field(default_factory=list)  # edit datasets: targets with no control

    @property
    def edit(self) -> bool:
        """Whether the dataset names control images."""
        return bool(self.controls)


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name as the browser sent it (may hold folders) and its open binary stream."""

    filename: str
    stream: IO[bytes]


# ----- names -----


def check_dataset_name(value: Any) -> str:
    """A valid dataset folder name (trimmed), or ImportRefused naming the field and what is allowed."""
    name = value.strip() if isinstance(value, str) else ""
    if not name or len(name) > NAME_MAX or not _NAME.match(name) or name.endswith("."):
        raise ImportRefused("import.bad_name", {"max": NAME_MAX, "value": repr(value)})
    return name


def parse_resolution(value: Any) -> tuple[int, int]:
    """``1024``, ``1024x768`` or ``1024,768`` (empty: 1024x1024) as (width, height), checked like the TOML."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_RESOLUTION
    text = str(value).strip().lower().replace(" ", "")
    parts = re.split(r"[x×,*]", text.strip("[]()"))
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ImportRefused(
            "import.bad_resolution",
            {"detail": "give WIDTHxHEIGHT, e.g. 1024x768, or one side", "value": value},
        )
    size = (int(parts[0]), int(parts[1]))
    problem = check_resolution(size)
    if problem:
        raise ImportRefused("import.bad_resolution", {"detail": problem, "value": value})
    return size


def _unsafe(raw: str) -> bool:
    """Whether a member name tries to leave the folder it is unpacked in (zip-slip)."""
    name = raw.replace("\\", "/")
    return name.startswith("/") or bool(_DRIVE.match(name)) or ".." in name.split("/")


def _bad_basename(name: str) -> bool:
    return (
        any(unicodedata.category(c).startswith("C") for c in name)
        or len(name.encode("utf-8", "surrogateescape")) > 200
        or name in ("", ".", "..")
    )


def _ignored(parts: tuple[str, ...]) -> bool:
    """``__MACOSX`` folders and dotfiles (``.DS_Store``, ``._name``, ``.git/``) are left out silently."""
    return any(p == "__MACOSX" or p.startswith(".") for p in parts)


def _zip_name(info: zipfile.ZipInfo) -> str:
    """A member's name; one stored as UTF-8 without the zip's UTF-8 flag (some tools) is read as UTF-8."""
    if info.flag_bits & 0x800:
        return info.filename
    try:
        return info.filename.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return info.filename


# ----- collecting the files -----


@dataclass
class _File:
    """One file to import: where it came from, its path parts (folders dropped later) and how to open it."""

    label: str
    parts: tuple[str, ...]
    size: int
    open: Any  # () -> IO[bytes]

    @property
    def name(self) -> str:
        return self.parts[-1]

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix.lower()

    @property
    def folder(self) -> tuple[str, ...]:
        return self.parts[:-1]

    @property
    def is_control(self) -> bool:
        return any(p.lower() in CONTROL_FOLDERS for p in self.folder)


def _split(name: str) -> tuple[str, ...]:
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _from_zip(
    upload_name: str, zf: zipfile.ZipFile, limits: ImportLimits, skipped: list[Skipped]
) -> list[_File]:
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise ImportRefused(
            "import.too_many_members",
            {"zip": upload_name, "count": len(infos), "max": limits.max_members},
            status=413,
        )
    out = []
    for info in infos:
        raw = _zip_name(info)
        parts = _split(raw)
        label = f"{upload_name}!{raw}"
        if _unsafe(raw):  # before the dotfile rule: '..' would pass for one
            skipped.append(Skipped(label, "import.skip_unsafe"))
            continue
        if info.is_dir() or not parts or _ignored(parts):
            continue
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            skipped.append(Skipped(label, "import.skip_link"))
        elif info.flag_bits & 0x1:
            skipped.append(Skipped(label, "import.skip_encrypted"))
        else:
            out.append(_File(label, parts, info.file_size, lambda info=info: zf.open(info)))
    return out


def _is_zip(upload: Upload) -> bool:
    return PurePosixPath(upload.filename.replace("\\", "/")).suffix.lower() == ".zip"


def _collect(
    uploads: list[Upload], limits: ImportLimits, skipped: list[Skipped], zips: list[zipfile.ZipFile]
) -> list[_File]:
    files: list[_File] = []
    for up in uploads:
        parts = _split(up.filename)
        if _unsafe(up.filename):
            parts = parts[-1:]  # a browser never sends '..'; keep the plain name of a hand-made request
        if not parts or _ignored(parts):
            continue
        if _is_zip(up):
            try:
                up.stream.seek(0)
                zf = zipfile.ZipFile(up.stream)  # noqa: SIM115 - closed by the caller
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                skipped.append(Skipped(up.filename, "import.skip_bad_zip", {"detail": exc}))
                continue
            zips.append(zf)
            files.extend(_from_zip(up.filename, zf, limits, skipped))
            continue
        try:
            size = os.fstat(up.stream.fileno()).st_size
        except (OSError, AttributeError, ValueError):
            size = 0

        def opener(stream: IO[bytes] = up.stream) -> IO[bytes]:
            stream.seek(0)
            return _Unclosed(stream)

        files.append(_File(up.filename, parts, size, opener))
    if len(files) > limits.max_files:
        raise ImportRefused(
            "import.too_many_files", {"count": len(files), "max": limits.max_files}, status=413
        )
    return files


class _Unclosed:
    """A stream whose ``close`` leaves the upload open (the caller owns it)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n)

    def __enter__(self) -> _Unclosed:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


# ----- sorting them out -----


@dataclass
class _Plan:
    targets: list[_File] = field(default_factory=list)
    controls: list[_File] = field(default_factory=list)
    captions: dict[str, _File] = field(default_factory=dict)  # target stem (lower case) -> caption file


def _human(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB else f"{n / MIB:.0f} MiB" if n >= MIB else f"{int(n)} bytes"


def _refuse_duplicates(files: list[_File], kind: str) -> None:
    seen: dict[str, _File] = {}
    for f in files:
        first = seen.setdefault(f.stem.lower(), f)
        if first is not f:
            raise ImportRefused(
                "import.duplicate",
                {"kind": kind, "name": f.stem, "first": first.label, "second": f.label},
            )


def _plan(files: list[_File], skipped: list[Skipped]) -> _Plan:
    plan = _Plan()
    captions: list[_File] = []
    for f in files:
        if _bad_basename(f.name):
            skipped.append(Skipped(f.label, "import.skip_bad_name"))
        elif f.suffix in IMAGE_EXTENSIONS:
            (plan.controls if f.is_control else plan.targets).append(f)
        elif f.suffix == CAPTION_EXTENSION:
            captions.append(f)
        elif f.suffix == ".zip":
            skipped.append(Skipped(f.label, "import.skip_nested_zip"))
        else:
            allowed = ", ".join(sorted(IMAGE_EXTENSIONS))
            skipped.append(Skipped(f.label, "import.skip_not_image", {"allowed": allowed}))
    _refuse_duplicates(plan.targets, "target")
    _refuse_duplicates(plan.controls, "control")
    by_stem = {t.stem.lower(): t for t in plan.targets}
    for c in captions:  # a caption in its image's own folder first, then any other
        if c.is_control:
            skipped.append(Skipped(c.label, "import.skip_control_caption"))
            continue
        target = by_stem.get(c.stem.lower())
        if target is None:
            skipped.append(Skipped(c.label, "import.skip_no_image", {"stem": c.stem}))
            continue
        kept = plan.captions.get(c.stem.lower())
        if kept is None or (c.folder == target.folder and kept.folder != target.folder):
            if kept is not None:
                skipped.append(
                    Skipped(kept.label, "import.skip_caption_other", {"stem": c.stem, "used": c.label})
                )
            plan.captions[c.stem.lower()] = c
        else:
            skipped.append(
                Skipped(c.label, "import.skip_caption_other", {"stem": c.stem, "used": kept.label})
            )
    return plan


# ----- writing -----


_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError, NotImplementedError)
"""What reading a damaged zip member (or a closed upload) raises: the file is skipped, the import goes on."""


class _Budget:
    """Bytes left to write in this import (the limit on what it unpacks)."""

    def __init__(self, limit: int) -> None:
        self.left = limit
        self.limit = limit

    def take(self, n: int, where: str) -> None:
        self.left -= n
        if self.left < 0:
            raise ImportRefused("import.too_large", {"max": _human(self.limit), "zip": where}, status=413)


def _copy(f: _File, dest: Path, budget: _Budget) -> None:
    with f.open() as src, open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            budget.take(len(chunk), f.label)
            out.write(chunk)


def _copy_image(f: _File, dest: Path, budget: _Budget, skipped: list[Skipped]) -> bool:
    """Copy an image byte for byte and decode it; False (skipped, removed) when it cannot be read."""
    try:
        _copy(f, dest, budget)
    except _MEMBER_ERRORS as exc:
        dest.unlink(missing_ok=True)
        skipped.append(Skipped(f.label, "import.skip_member_error", {"detail": " ".join(str(exc).split())}))
        return False
    try:
        probe_image(dest, decode=True)
    except ImageReadError as exc:
        dest.unlink(missing_ok=True)
        skipped.append(Skipped(f.label, "import.skip_unreadable", {"detail": str(exc)}))
        return False
    return True


def _write_caption(f: _File, dest: Path, budget: _Budget, skipped: list[Skipped]) -> bool:
    try:
        with f.open() as src:
            data = src.read(MAX_CAPTION_BYTES + 1)
        if len(data) > MAX_CAPTION_BYTES:
            skipped.append(Skipped(f.label, "import.skip_caption_large", {"max": _human(MAX_CAPTION_BYTES)}))
            return False
        budget.take(len(data), f.label)
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        skipped.append(Skipped(f.label, "import.skip_caption_encoding"))
        return False
    except _MEMBER_ERRORS as exc:
        skipped.append(Skipped(f.label, "import.skip_member_error", {"detail": " ".join(str(exc).split())}))
        return False
    with open(dest, "x", encoding="utf-8", newline="") as out:
        out.write(text)
    return True


_lock = threading.Lock()  # one rename at a time: the "name free" check and the rename go together


def _remove_stale(datasets: Path) -> None:
    now = time.time()
    for p in datasets.glob(STAGING_PREFIX + "*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _taken(datasets: Path, name: str) -> Path | None:
    """The existing folder or file (``<name>``, ``<name>.toml``) that keeps a name from being used."""
    lower = name.lower()
    try:
        entries = list(datasets.iterdir())
    except OSError:  # no folder yet (or not a folder: writing reports it)
        return None
    for p in entries:  # letter case ignored: the folder must also be new on a case-insensitive disk
        if p.name.lower() in (lower, f"{lower}.toml"):
            return p
    return None


def _check_space(datasets: Path, need: int) -> None:
    free = shutil.disk_usage(datasets).free
    if free < need + 64 * MIB:
        raise ImportRefused(
            "import.no_space", {"path": datasets, "free": _human(free), "need": _human(need)}, status=413
        )


def import_dataset(
    datasets: Path,
    name: str,
    uploads: Iterable[Upload],
    resolution: tuple[int, int] = DEFAULT_RESOLUTION,
    limits: ImportLimits = ImportLimits(),
) -> ImportResult:
    """Import ``uploads`` into the new folder ``datasets/<name>`` and write its dataset TOML.

    Raises ImportRefused (nothing written) for a bad or taken name, no importable image, a duplicate name or
    a limit; files that cannot be imported are listed in the result's ``skipped``.
    """
    name = check_dataset_name(name)
    datasets = Path(datasets).resolve()
    uploads = list(uploads)
    if not uploads:
        raise ImportRefused("import.no_files")
    taken = _taken(datasets, name)
    if taken is not None:
        raise ImportRefused("import.exists", {"name": name, "path": taken}, status=409)
    skipped: list[Skipped] = []
    zips: list[zipfile.ZipFile] = []
    try:
        files = _collect(uploads, limits, skipped, zips)
        plan = _plan(files, skipped)
        planned = [*plan.targets, *plan.controls, *plan.captions.values()]
        total = sum(f.size for f in planned)
        if total > limits.max_unpacked:
            largest = max(planned, key=lambda f: f.size).label.split("!")[0]
            raise ImportRefused(
                "import.too_large", {"max": _human(limits.max_unpacked), "zip": largest}, status=413
            )
        try:
            datasets.mkdir(parents=True, exist_ok=True)
            _check_space(datasets, total)
        except OSError as exc:
            raise ImportRefused(
                "import.write_failed", {"path": datasets, "detail": exc.strerror or exc}
            ) from None
        _remove_stale(datasets)
        return _write(datasets, name, plan, skipped, resolution, limits, len(uploads))
    finally:
        for zf in zips:
            zf.close()


def _write(
    datasets: Path,
    name: str,
    plan: _Plan,
    skipped: list[Skipped],
    resolution: tuple[int, int],
    limits: ImportLimits,
    given: int,
) -> ImportResult:
    final = datasets / name
    staging = datasets / f"{STAGING_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
    budget = _Budget(limits.max_unpacked)
    try:
        images_dir, control_dir = staging / IMAGES_DIR, staging / CONTROL_DIR
        images_dir.mkdir(parents=True)
        images = [t for t in plan.targets if _copy_image(t, images_dir / t.name, budget, skipped)]
        if not images:
            raise ImportRefused("import.no_images", {"count": given})
        kept = {t.stem.lower() for t in images}
        captions = 0
        for stem, c in plan.captions.items():
            if stem not in kept:
                skipped.append(Skipped(c.label, "import.skip_no_image", {"stem": c.stem}))
                continue
            target = next(t for t in images if t.stem.lower() == stem)
            captions += _write_caption(c, images_dir / f"{target.stem}{CAPTION_EXTENSION}", budget, skipped)
        controls: list[_File] = []
        if plan.controls:
            control_dir.mkdir()
            controls = [c for c in plan.controls if _copy_image(c, control_dir / c.name, budget, skipped)]
        matched, unmatched = match_controls(
            [images_dir / t.name for t in images], [control_dir / c.name for c in controls]
        )
        for path in unmatched:
            source = next(c for c in controls if c.name == path.name)
            skipped.append(Skipped(source.label, "import.skip_unmatched_control"))
            path.unlink()
            controls.remove(source)
        if plan.controls and not controls:
            shutil.rmtree(control_dir)
        toml = _write_toml(staging, final, resolution, bool(controls))
        with _lock:
            taken = _taken(datasets, name)
            if taken is not None:
                raise ImportRefused("import.exists", {"name": name, "path": taken}, status=409)
            try:
                os.rename(staging, final)
            except OSError as exc:
                if final.exists():
                    raise ImportRefused("import.exists", {"name": name, "path": final}, status=409) from None
                raise ImportRefused(
                    "import.write_failed", {"path": datasets, "detail": exc.strerror or exc}
                ) from None
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ImportRefused(
            "import.write_failed", {"path": datasets, "detail": exc.strerror or exc}
        ) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    toml = final / toml.name
    try:
        load_dataset_config(toml)  # what the gallery and the stages will read
    except DatasetError as exc:
        shutil.rmtree(final, ignore_errors=True)
        raise ImportRefused("import.invalid_result", {"detail": exc}) from None
    final_images = [final / IMAGES_DIR / t.name for t in images]
    missing = [p for p in final_images if controls and (staging / IMAGES_DIR / p.name) not in matched]
    return ImportResult(
        name=name,
        folder=final,
        toml=toml,
        images=final_images,
        controls=[final / CONTROL_DIR / c.name for c in controls],
        captions=captions,
        skipped=skipped,
        resolution=resolution,
        missing_controls=missing,
    )


def _write_toml(staging: Path, final: Path, resolution: tuple[int, int], with_controls: bool) -> Path:
    """``dataset.toml`` in the staging folder, its paths naming the final folder."""
    table = {"image_directory": str(final / IMAGES_DIR), "cache_directory": str(final / CACHE_DIR)}
    if with_controls:
        table["control_directory"] = str(final / CONTROL_DIR)
    general = {
        "resolution": list(resolution),
        "caption_extension": CAPTION_EXTENSION,
        "batch_size": 1,
        "enable_bucket": True,
    }
    config = parse_dataset_config(
        {"general": general, "datasets": [table]}, path=final / TOML_NAME, check_paths=False
    )
    return write_dataset_config(config, staging / TOML_NAME)


def skipped_json(skipped: Iterable[Skipped]) -> Iterator[dict[str, Any]]:
    """The skipped files as plain objects (file, reason in English, key and values)."""
    for s in skipped:
        yield {
            "file": s.file,
            "reason": s.reason,
            "key": s.key,
            "values": {k: str(v) for k, v in s.values.items()},
        }
