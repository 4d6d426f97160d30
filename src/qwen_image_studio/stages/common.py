"""What the stage commands share: device and dtype choice, dataset discovery, batching, atomic cache writes."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch

from ..data.config import load_dataset_config
from ..data.images import ImageReadError
from ..data.items import DatasetItem, DatasetItems, discover_items
from ..devices import model_dtype, resolve_device
from ..events import EventWriter, ProgressTracker
from ..params.schema import StudioConfig

log = logging.getLogger(__name__)
T = TypeVar("T")

Unreadable = tuple[DatasetItem, str]
"""An item a batch encoder could not read, and why (one line naming the file)."""
BatchEncoder = Callable[[list[DatasetItem]], list[Unreadable]]
"""Encodes one batch and writes its cache files; returns the items it skipped as unreadable."""


def discover(config: StudioConfig, events: EventWriter, source: str = "dataset_config") -> list[DatasetItems]:
    """Every dataset of ``--dataset_config`` (`source` "validation_dataset_config": of the validation TOML)
    with its usable items; content problems become warnings."""
    toml = getattr(config, source)
    if source == "dataset_config":
        ds_config = load_dataset_config(toml)
    else:
        from ..data.validation_config import load_validation_config

        ds_config = load_validation_config(config)
    found = [discover_items(ds, edit=config.is_edit) for ds in ds_config.datasets]
    prefix = "" if source == "dataset_config" else "validation "
    for result in found:
        for problem in result.problems:
            events.warning(f"{prefix}{result.dataset.label}: {problem}")
    if not any(r.items for r in found):
        from ..errors import DatasetError

        raise DatasetError(f"--{source} {toml}: no usable images (see the warnings above)")
    return found


def batches(items: list[DatasetItem], size: int) -> Iterator[list[DatasetItem]]:
    """Items grouped by bucket (and control sizes), then cut into batches of at most `size`."""
    groups: dict[tuple, list[DatasetItem]] = {}
    for item in items:
        groups.setdefault((item.batch_key, len(item.encoded_controls)), []).append(item)
    for key in sorted(groups):
        group = groups[key]
        for start in range(0, len(group), size):
            yield group[start : start + size]


def save_cache_file(tensors: Mapping[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write a safetensors cache file atomically: an interrupted run never leaves a half-written file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_items(
    batch: list[DatasetItem], read: Callable[[DatasetItem], T]
) -> tuple[list[T], list[Unreadable]]:
    """``read(item)`` for each item of a batch; those whose files cannot be read are set aside with why.

    ``read`` raises ImageReadError (a decode failure) or OSError (a file it cannot open or hash).
    """
    done: list[T] = []
    skipped: list[Unreadable] = []
    for item in batch:
        try:
            done.append(read(item))
        except ImageReadError as exc:
            path = exc.path or item.image_path
            what = "image" if path == item.image_path else "control image"
            skipped.append((item, f"{what} {path} cannot be read ({exc})"))
        except OSError as exc:
            skipped.append(
                (item, f"{exc.filename or item.image_path} cannot be read ({exc.strerror or exc})")
            )
    return done, skipped


def remove_stale(
    found: DatasetItems, kind: str, keep: bool, events: EventWriter, label: str | None = None
) -> int:
    """Delete `kind` ("latent" or "text") cache files of this mode that belong to no item, unless kept.

    Files of items still in the dataset but unreadable are never deleted; nor is anything when the
    dataset's image list could not be read in full (see ``data.items``). `label`: how messages name the
    dataset (default ``datasets[i]``).
    """
    label = label or found.dataset.label
    from ..data.cache_paths import parse_latent_cache_name, stale_cache_files

    entries = [item.cache_entry() for item in found.items]
    stale = [
        p
        for p in stale_cache_files(found.dataset.cache_directory, entries, found.arch, found.kept_keys)
        if (parse_latent_cache_name(p.name) is not None) == (kind == "latent")
    ]
    if stale and not found.listing_complete:
        events.warning(
            f"{label}: not removing {len(stale)} {kind} cache file(s) that match no image: "
            f"{found.unreadable_lines} entry(ies) of {found.dataset.source} could not be read, so they may "
            "belong to those"
        )
        return 0
    if keep:
        if stale:
            events.warning(
                f"{label}: keeping {len(stale)} cache file(s) of images no longer in "
                "the dataset (--keep_cache)"
            )
        return 0
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("removed stale cache file %s", path)
    return len(stale)


_LOGGED_REASONS = 10
"""Outdated files --skip_existing names at info level (the rest at debug level)."""


def _encode_reason(kind: str, item: DatasetItem, control_vl_size: str | None = None) -> str | None:
    """Why --skip_existing must encode `item` again ("missing", or why its file is outdated); None if current.

    ``control_vl_size`` (the text stage's --control_text_encoder_size) is checked against an edit-mode
    text file's ``control_vl_size`` record; None checks nothing.
    """
    from ..data.cache_paths import latent_cache_outdated_reason, text_cache_outdated_reason

    entry = replace(item.cache_entry(), control_vl_size=control_vl_size)
    path = entry.latent_path if kind == "latent" else entry.text_path
    if not path.is_file():
        return "missing"
    outdated = latent_cache_outdated_reason if kind == "latent" else text_cache_outdated_reason
    return outdated(entry)


def _skip_current(
    kind: str, todo: list[tuple[DatasetItems, DatasetItem]], control_vl_size: str | None = None
) -> list[tuple[DatasetItems, DatasetItem]]:
    """--skip_existing: the items whose `kind` cache is missing or outdated; the first outdated ones are logged."""
    left = []
    outdated = 0
    for result, item in todo:
        reason = _encode_reason(kind, item, control_vl_size)
        if reason is None:
            continue
        left.append((result, item))
        if reason != "missing":
            outdated += 1
            level = logging.INFO if outdated <= _LOGGED_REASONS else logging.DEBUG
            path = item.latent_cache_path if kind == "latent" else item.text_cache_path
            log.log(level, "--skip_existing: encoding %s again: %s", path.name, reason)
    log.info(
        "--skip_existing: %d item(s) left to encode (%d missing, %d outdated)",
        len(left),
        len(left) - outdated,
        outdated,
    )
    return left


def run_cache_stage(
    config: StudioConfig,
    events: EventWriter,
    kind: str,
    load: Callable[[torch.device, torch.dtype], BatchEncoder],
) -> None:
    """The loop both caching stages share: discover, skip what is current, encode in batches, drop stale files.

    `kind` is "latent" or "text"; `load(device, dtype)` loads the model once and returns the batch encoder.
    With --skip_existing an item is encoded again when its file is missing or outdated (another bucket,
    caption, control image or, for edit-mode text, --control_text_encoder_size: see ``data.cache_paths``);
    the first ten outdated ones are logged with the reason (the rest at debug level).

    Items that cannot be read (a corrupt or truncated image, a caption that is not UTF-8, a file without
    read permission), found by discovery or when the encoder decodes them, are skipped with one warning
    each and their existing cache files are left as they are. As the reference trainer does, the stage
    goes on and exits 0; the summary line and the ``metric`` event (``skipped``) count them.

    With ``--validation_dataset_config`` its datasets are cached in the same run, by the same rules, after
    the training data's (messages name them ``validation datasets[i]``).
    """
    found = discover(config, events)
    held_out: list[DatasetItems] = []
    if config.validation_dataset_config:
        held_out = discover(config, events, "validation_dataset_config")
    validation_ids = {id(r) for r in held_out}
    found += held_out

    def label(result: DatasetItems) -> str:
        return ("validation " if id(result) in validation_ids else "") + result.dataset.label

    todo = [(r, item) for r in found for item in r.items]
    if config.skip_existing:
        vl_size = config.control_text_encoder_size if kind == "text" and config.is_edit else None
        todo = _skip_current(kind, todo, vl_size)
    written = 0
    skipped = sum(len(r.unreadable_items) + r.unreadable_lines for r in found)
    if todo:
        device = resolve_device(config.device)
        encode_batch = load(device, model_dtype(device))
        unit = "image" if kind == "latent" else "caption"
        tracker = ProgressTracker(events, total=len(todo), phase=f"cache {kind}s", unit=unit)
        for result in found:
            items = [i for r, i in todo if r is result]
            for batch in batches(items, config.cache_batch_size or result.dataset.batch_size):
                unreadable = encode_batch(batch)
                for _, why in unreadable:
                    events.warning(f"{label(result)}: {why}; skipped, its cache files are kept")
                written += len(batch) - len(unreadable)
                skipped += len(unreadable)
                tracker.advance(len(batch))
        tracker.close()
    removed = sum(remove_stale(r, kind, config.keep_cache, events, label(r)) for r in found)
    if skipped:
        log.warning(
            "%s caches: %d written, %d item(s) skipped as unreadable (see the warnings above; their cache "
            "files are kept), %d stale removed",
            kind,
            written,
            skipped,
            removed,
        )
    else:
        log.info("%s caches: %d written, %d stale removed", kind, written, removed)
    events.emit("metric", step=written, written=written, skipped=skipped, removed=removed)
