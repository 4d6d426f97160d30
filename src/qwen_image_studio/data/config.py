"""The dataset TOML that users of the reference trainer already write: ``[general]`` plus ``[[datasets]]``.

Every key of ``[general]`` can be overridden per dataset. Relative paths are resolved against the folder of
the TOML file. Problems are raised as :class:`DatasetConfigError` (a ``DatasetError``) whose message names
the file, the dataset (``datasets[0]`` is the first ``[[datasets]]`` table), the key and the path.
"""

from __future__ import annotations

import difflib
import json
import logging
import tomllib
from pathlib import Path
from typing import Annotated, Any

import tomli_w
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from qwen_image_studio.data.buckets import STEP
from qwen_image_studio.errors import DatasetError

log = logging.getLogger(__name__)

MIN_SIDE = 16
MAX_SIDE = 4096
DEFAULT_RESOLUTION = (960, 544)  # the reference trainer's default when a TOML sets none

# Keys the reference trainer reads for image datasets that Qwen-Image has no use for (FramePack, layered).
_IGNORED_KEYS = {"fp_latent_window_size", "fp_1f_clean_indices", "fp_1f_target_index", "fp_1f_no_post"}
_VIDEO_KEYS = {
    "video_directory",
    "video_jsonl_file",
    "target_frames",
    "frame_extraction",
    "frame_stride",
    "frame_sample",
    "max_frames",
    "source_fps",
}
# Keys accepted (type-checked, written back) that change nothing here; each warns with the reason.
NO_EFFECT_KEYS = {
    "skip_corrupted_cache": "cache files are never skipped, so every process and a resumed run see the same "
    "batches; a cache file with an unreadable header is reported before training with the command that "
    "remakes it",
}
# Older names the reference trainer still accepts.
DEPRECATED_KEYS = {
    "flux_kontext_no_resize_control": "no_resize_control",
    "qwen_image_edit_no_resize_control": "no_resize_control",
    "qwen_image_edit_control_resolution": "control_resolution",
}


class DatasetConfigError(DatasetError):
    """An invalid dataset configuration; ``problems`` lists every problem found, one line each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        more = f" (and {len(problems) - 1} more: {'; '.join(problems[1:])})" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


def _as_size(value: Any) -> Any:
    """Accept a single int (a square) or [W, H]; leave anything else for the checks to reject."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return tuple(value)
    return value


SizeField = Annotated[tuple[StrictInt, StrictInt], BeforeValidator(_as_size)]


class GeneralSettings(BaseModel):
    """The keys allowed in ``[general]``; ``None`` means not set (the default or a dataset's value applies)."""

    model_config = ConfigDict(extra="forbid")

    resolution: SizeField | None = Field(None, description="[W, H] or one int; multiples of 16")
    caption_extension: StrictStr | None = Field(None, description="caption file extension (default .txt)")
    batch_size: StrictInt | None = Field(None, ge=1, description="images per step, within one bucket")
    num_repeats: StrictInt | None = Field(None, ge=1, description="times each image is seen per epoch")
    enable_bucket: StrictBool | None = Field(None, description="train at several aspect ratios")
    bucket_no_upscale: StrictBool | None = Field(None, description="never enlarge a small image")
    cache_directory: StrictStr | None = Field(None, description="where latent and text caches are written")
    control_resolution: SizeField | None = Field(
        None, description="edit: area for control images (with no_resize_control: the maximum area)"
    )
    no_resize_control: StrictBool | None = Field(
        None, description="edit: keep control images' own size, cropped to multiples of 16"
    )
    skip_corrupted_cache: StrictBool | None = Field(
        None, description="accepted for the reference trainer; no effect here (see NO_EFFECT_KEYS)"
    )


class DatasetSettings(GeneralSettings):
    """The keys allowed in one ``[[datasets]]`` table, as written."""

    image_directory: StrictStr | None = Field(None, description="folder of images with captions beside them")
    image_jsonl_file: StrictStr | None = Field(
        None, description="JSON lines: image_path, caption, control_path"
    )
    control_directory: StrictStr | None = Field(None, description="edit: control images, same basename")


GENERAL_KEYS = tuple(GeneralSettings.model_fields)


class Dataset(BaseModel):
    """One dataset with ``[general]`` and defaults applied and every path absolute."""

    model_config = ConfigDict(frozen=True)

    index: int
    resolution: tuple[int, int] = DEFAULT_RESOLUTION
    caption_extension: str = ".txt"
    batch_size: int = 1
    num_repeats: int = 1
    enable_bucket: bool = False
    bucket_no_upscale: bool = False
    cache_directory: Path
    image_directory: Path | None = None
    image_jsonl_file: Path | None = None
    control_directory: Path | None = None
    control_resolution: tuple[int, int] | None = None
    no_resize_control: bool = False
    skip_corrupted_cache: bool = False  # kept so the TOML written back has it; read by nothing else

    @property
    def label(self) -> str:
        """``datasets[i]``, as messages name this dataset."""
        return f"datasets[{self.index}]"

    @property
    def source(self) -> Path:
        """The image directory or the JSON-lines file this dataset reads."""
        source = self.image_directory or self.image_jsonl_file
        assert source is not None
        return source


class DatasetConfig(BaseModel):
    """A whole dataset configuration: ``[general]`` as written and the resolved datasets."""

    path: Path | None = None
    general: GeneralSettings = GeneralSettings()
    datasets: list[Dataset]

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are resolved against (the TOML's folder)."""
        return self.path.parent if self.path is not None else Path.cwd()


def load_dataset_config(path: Path | str, check_paths: bool = True) -> DatasetConfig:
    """Read and validate a dataset TOML (or JSON) file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetConfigError([f"dataset config {path} does not exist (or is not a file)"])
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
        else:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise DatasetConfigError(
            [f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {detail}"]
        ) from None
    return parse_dataset_config(data, path=path.resolve(), check_paths=check_paths)


def parse_dataset_config(
    data: dict[str, Any], path: Path | None = None, base_dir: Path | None = None, check_paths: bool = True
) -> DatasetConfig:
    """Validate an already-parsed configuration; relative paths resolve against ``base_dir`` or the file's folder."""
    where = str(path) if path is not None else "dataset config"
    base = (base_dir or (path.parent if path is not None else Path.cwd())).expanduser().resolve()
    problems: list[str] = []
    if not isinstance(data, dict):
        raise DatasetConfigError([f"{where}: expected tables [general] and [[datasets]]"])
    for key in data:
        if key not in ("general", "datasets"):
            problems.append(f"{where}: unknown top-level key {key!r}; allowed: [general] and [[datasets]]")

    raw_general = data.get("general", {})
    if not isinstance(raw_general, dict):
        problems.append(f"{where}: [general] must be a table")
        raw_general = {}
    general = _validate_section(raw_general, GeneralSettings, f"{where}: [general]", problems)

    raw_datasets = data.get("datasets", [])
    if not isinstance(raw_datasets, list) or not all(isinstance(d, dict) for d in raw_datasets):
        problems.append(f"{where}: datasets must be [[datasets]] tables")
        raw_datasets = []
    if not raw_datasets and not problems:
        problems.append(f"{where}: no [[datasets]] table; add one with image_directory or image_jsonl_file")

    datasets: list[Dataset] = []
    for index, raw in enumerate(raw_datasets):
        label = f"{where}: datasets[{index}]"
        settings = _validate_section(raw, DatasetSettings, label, problems)
        if settings is None or general is None:
            continue
        dataset = _resolve_dataset(index, settings, general, base, label, check_paths, problems)
        if dataset is not None:
            datasets.append(dataset)

    _check_shared_cache(datasets, where, problems)
    if problems:
        raise DatasetConfigError(problems)
    return DatasetConfig(path=path, general=general or GeneralSettings(), datasets=datasets)


def _validate_section(
    raw: dict[str, Any], model: type[GeneralSettings], label: str, problems: list[str]
) -> GeneralSettings | None:
    """Check one table's keys and types; append one line per problem."""
    raw = dict(raw)
    allowed = model.model_fields
    count = len(problems)
    for old, new in DEPRECATED_KEYS.items():
        if old in raw:
            if new in raw:
                log.warning("%s: deprecated key %r ignored because %r is set", label, old, new)
            else:
                log.warning("%s: deprecated key %r read as %r", label, old, new)
                raw[new] = raw[old]
            del raw[old]
    for key in list(raw):
        if key in NO_EFFECT_KEYS:
            log.warning("%s: key %r has no effect here and is ignored: %s", label, key, NO_EFFECT_KEYS[key])
        if key in allowed:
            continue
        if key in _IGNORED_KEYS:
            log.warning("%s: key %r has no effect for Qwen-Image and is ignored", label, key)
            del raw[key]
        elif key in _VIDEO_KEYS:
            problems.append(f"{label}: {key!r} is a video-dataset key; Qwen-Image trains on images only")
        elif model is GeneralSettings and key in DatasetSettings.model_fields:
            problems.append(f"{label}: {key!r} belongs in a [[datasets]] table, not in [general]")
        else:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{label}: unknown key {key!r}{hint}; allowed: {', '.join(allowed)}")
    if len(problems) > count:
        return None
    try:
        settings = model.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"][:1])
            problems.append(f"{label}: {key} = {_show(raw.get(key))}: {_explain(key, err)}")
        return None
    for key in ("resolution", "control_resolution"):
        size = getattr(settings, key)
        if size is not None and (message := check_resolution(size)):
            problems.append(f"{label}: {key} = {_show(raw.get(key))}: {message}")
    if settings.caption_extension is not None and not settings.caption_extension.startswith("."):
        ext = settings.caption_extension
        problems.append(f"{label}: caption_extension = {ext!r} must start with a dot, e.g. '.{ext}'")
    return settings if len(problems) == count else None


def check_resolution(size: tuple[int, int]) -> str:
    """Why a [W, H] is not a valid resolution, or an empty string when it is."""
    w, h = size
    if all(MIN_SIDE <= s <= MAX_SIDE and s % STEP == 0 for s in (w, h)):
        return ""
    fix = [min(max((s + STEP // 2) // STEP * STEP, MIN_SIDE), MAX_SIDE) for s in (w, h)]
    return f"each side must be a multiple of {STEP} from {MIN_SIDE} to {MAX_SIDE} (e.g. {fix})"


def _show(value: Any) -> str:
    """A value as the TOML would show it."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


def _explain(key: str, err: Any) -> str:
    """A short message for one pydantic error."""
    if key in ("resolution", "control_resolution"):
        return f"expected [width, height] or one integer, multiples of {STEP} from {MIN_SIDE} to {MAX_SIDE}"
    kind = err["type"]
    if kind.startswith("greater_than"):
        return "must be at least 1"
    if kind.startswith("bool"):
        return "expected true or false"
    if kind.startswith("int"):
        return "expected a whole number"
    if kind.startswith("string"):
        return "expected a quoted string"
    return str(err["msg"])


def _resolve_path(value: str, base: Path) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken from ``base``."""
    p = Path(value).expanduser()
    return (p if p.is_absolute() else base / p).resolve()


def _resolve_dataset(
    index: int,
    settings: DatasetSettings,
    general: GeneralSettings,
    base: Path,
    label: str,
    check_paths: bool,
    problems: list[str],
) -> Dataset | None:
    """Apply [general] and defaults to one dataset and check its paths."""
    values: dict[str, Any] = {}
    for key in GENERAL_KEYS:
        value = getattr(settings, key)
        if value is None:
            value = getattr(general, key)
        if value is not None:
            values[key] = value
    count = len(problems)
    if settings.image_directory is None and settings.image_jsonl_file is None:
        problems.append(
            f"{label}: set image_directory (a folder of images) or image_jsonl_file (a .jsonl list)"
        )
    elif settings.image_directory is not None and settings.image_jsonl_file is not None:
        problems.append(f"{label}: set image_directory or image_jsonl_file, not both")
    checks = (("image_directory", "dir"), ("image_jsonl_file", "file"), ("control_directory", "dir"))
    for key, kind in checks:
        raw = getattr(settings, key)
        if raw is None:
            continue
        p = _resolve_path(raw, base)
        values[key] = p
        if check_paths and not (p.is_dir() if kind == "dir" else p.is_file()):
            what = "folder" if kind == "dir" else "file"
            problems.append(f"{label}: {key} {p} does not exist (or is not a {what})")
    if values.get("control_directory") is not None and values.get("control_directory") == values.get(
        "image_directory"
    ):
        problems.append(
            f"{label}: control_directory must differ from image_directory ({values['image_directory']})"
        )
    if "cache_directory" in values:
        values["cache_directory"] = _resolve_path(values["cache_directory"], base)
    elif "image_directory" in values:
        values["cache_directory"] = values["image_directory"]
    elif settings.image_jsonl_file is not None:
        problems.append(f"{label}: cache_directory is required with image_jsonl_file")
    cache = values.get("cache_directory")
    if check_paths and cache is not None and cache.exists() and not cache.is_dir():
        problems.append(f"{label}: cache_directory {cache} exists but is not a folder")
    if len(problems) > count:
        return None
    return Dataset(index=index, **values)


def _check_shared_cache(datasets: list[Dataset], where: str, problems: list[str]) -> None:
    """Two datasets writing to one cache folder would overwrite each other's files."""
    owners: dict[Path, int] = {}
    for d in datasets:
        first = owners.setdefault(d.cache_directory, d.index)
        if first != d.index:
            note = (
                " (cache_directory defaults to image_directory)"
                if d.cache_directory == d.image_directory
                else ""
            )
            problems.append(
                f"{where}: datasets[{first}] and datasets[{d.index}] share cache_directory {d.cache_directory}"
                f"{note}; give each dataset its own"
            )


def dataset_config_to_dict(config: DatasetConfig, relative_to: Path | None = None) -> dict[str, Any]:
    """The TOML tables for a configuration: [general] as written, per dataset only what differs from it.

    Paths are absolute (the reference trainer resolves relative paths against its working folder), or
    relative to ``relative_to`` where they lie inside it.
    """
    general = config.general.model_dump(exclude_none=True)
    general.pop("cache_directory", None)  # written per dataset: each needs its own
    inherited = Dataset(index=0, cache_directory=Path(), **general)
    datasets = []
    for d in config.datasets:
        table: dict[str, Any] = {}
        for key in ("image_directory", "image_jsonl_file", "control_directory"):
            if getattr(d, key) is not None:
                table[key] = _to_toml(getattr(d, key), relative_to)
        if d.cache_directory != d.image_directory:
            table["cache_directory"] = _to_toml(d.cache_directory, relative_to)
        for key in GENERAL_KEYS:
            value = getattr(d, key)
            if key != "cache_directory" and value != getattr(inherited, key):
                table[key] = _to_toml(value, relative_to)
        datasets.append(table)
    out: dict[str, Any] = {}
    if general:
        out["general"] = {k: _to_toml(v, relative_to) for k, v in general.items()}
    out["datasets"] = datasets
    return out


def _to_toml(value: Any, relative_to: Path | None) -> Any:
    """A value as TOML writes it: sizes as lists, paths as POSIX strings."""
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        if relative_to is not None and value.is_relative_to(relative_to.resolve()):
            return value.relative_to(relative_to.resolve()).as_posix() or "."
        return value.as_posix()
    return value


def write_dataset_config(config: DatasetConfig, path: Path | str, relative: bool = False) -> Path:
    """Write a configuration as a dataset TOML; ``relative`` writes paths inside its folder relative to it."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = dataset_config_to_dict(config, relative_to=path.parent if relative else None)
    parse_dataset_config(data, path=path.resolve(), check_paths=False)  # never write a file we would refuse
    path.write_text(dumps_dataset_config(data), encoding="utf-8")
    return path


def dumps_dataset_config(data: dict[str, Any]) -> str:
    """TOML text in the layout users write by hand: ``[general]``, then one ``[[datasets]]`` per dataset."""
    parts = []
    if data.get("general"):
        parts.append("[general]\n" + _dump_table(data["general"]))
    for table in data.get("datasets", []):
        parts.append("[[datasets]]\n" + _dump_table(table))
    return "\n".join(parts)


def _dump_table(table: dict[str, Any]) -> str:
    """``key = value`` lines; sizes stay on one line as ``[W, H]``."""
    lines = []
    for key, value in table.items():
        if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            lines.append(f"{key} = [{', '.join(str(v) for v in value)}]\n")
        else:
            lines.append(tomli_w.dumps({key: value}))
    return "".join(lines)
