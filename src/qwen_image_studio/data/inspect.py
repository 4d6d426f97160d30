"""``dataset inspect``: what a dataset configuration will train on, and what is wrong with it.

:func:`inspect_dataset` returns a :class:`DatasetReport` (``model_dump_json()`` for ``--json``),
:func:`format_report` renders it for people and :func:`run_inspect` is the command itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from qwen_image_studio.data.cache_paths import CacheState, cache_state
from qwen_image_studio.data.config import load_dataset_config
from qwen_image_studio.data.items import DatasetItems, discover_items
from qwen_image_studio.errors import DatasetError

_LISTED = 10
"""Outdated cache files of one kind listed by name (with the reason) in the text report."""


class BucketReport(BaseModel):
    """One bucket: its size, how many images fall in it and what num_repeats and batch_size make of them."""

    width: int
    height: int
    control_sizes: list[tuple[int, int]] = []
    images: int
    samples: int
    batches: int


class CacheReport(BaseModel):
    """Cache files of one kind (latents or text-encoder outputs) for the usable images.

    ``reasons`` maps each ``outdated`` file to why it is outdated (another bucket, caption or control
    image, ...): what the caching stage with ``--skip_existing`` will encode again.
    """

    present: int
    missing: list[str]
    outdated: list[str]
    reasons: dict[str, str] = {}


class ControlReport(BaseModel):
    """Edit-mode control images: how many targets have them and which files do not pair up."""

    matched: int
    missing: list[str]
    unmatched: list[str]
    unreadable: list[str]
    per_image: dict[str, int]


class UnreadableReport(BaseModel):
    """An image or caption file that cannot be read, and why."""

    path: str
    reason: str


class RotatedReport(BaseModel):
    """An image turned by its EXIF orientation: trained as ``size`` (as viewers show it), while the
    reference trainer, which ignores the tag, would use ``stored_size``; ``note`` says so in one line."""

    path: str
    orientation: int
    size: tuple[int, int]
    stored_size: tuple[int, int]
    note: str


class DatasetSummary(BaseModel):
    """Everything inspect found about one ``[[datasets]]`` entry."""

    index: int
    source: str
    cache_directory: str
    control_directory: str | None
    resolution: tuple[int, int]
    enable_bucket: bool
    bucket_no_upscale: bool
    batch_size: int
    num_repeats: int
    image_count: int
    usable: int
    captions_found: int
    captions_missing: list[str]
    captions_empty: list[str]
    captions_unreadable: list[UnreadableReport] = []
    """Caption files that exist but cannot be read (not UTF-8, permissions); their images are left out."""
    buckets: list[BucketReport]
    samples_per_epoch: int
    batches_per_epoch: int
    controls: ControlReport | None
    unreadable: list[UnreadableReport]
    latent_cache: CacheReport
    text_cache: CacheReport
    stale_cache_files: list[str]
    """Cache files that match no image; never those of images that are present but unreadable."""
    kept_cache_keys: list[str] = []
    """Basenames of images present but unreadable: their cache files are kept, not stale."""
    rotated: list[RotatedReport] = []
    """Images (targets and controls) turned by their EXIF orientation; a note, not a problem."""
    problems: list[str]


class DatasetReport(BaseModel):
    """The inspection of a whole dataset configuration."""

    config_path: str
    edit: bool
    arch: str
    datasets: list[DatasetSummary]
    images: int
    usable: int
    samples_per_epoch: int
    batches_per_epoch: int
    problems: list[str]


def inspect_dataset(
    config_path: Path, edit: bool = False, decode: bool = False, control_text_encoder_size: str | None = None
) -> DatasetReport:
    """Inspect a dataset TOML: images, captions, buckets, control images and caches; DatasetError if invalid.

    ``control_text_encoder_size`` (edit mode; ``official`` or ``reference``) also reports as outdated the
    text caches encoded with the other ``--control_text_encoder_size``; None does not check it.
    """
    config = load_dataset_config(config_path)
    vl_size = control_text_encoder_size if edit else None
    summaries = [_summarise(discover_items(d, edit=edit, decode=decode), vl_size) for d in config.datasets]
    problems = [f"datasets[{s.index}]: {p}" for s in summaries for p in s.problems]
    return DatasetReport(
        config_path=str(config.path),
        edit=edit,
        arch="qie" if edit else "qi",
        datasets=summaries,
        images=sum(s.image_count for s in summaries),
        usable=sum(s.usable for s in summaries),
        samples_per_epoch=sum(s.samples_per_epoch for s in summaries),
        batches_per_epoch=sum(s.batches_per_epoch for s in summaries),
        problems=problems,
    )


def _summarise(found: DatasetItems, control_vl_size: str | None = None) -> DatasetSummary:
    """Turn one dataset's discovery and cache state into its report."""
    d = found.dataset
    buckets = _bucket_reports(found)
    entries = [replace(i.cache_entry(), control_vl_size=control_vl_size) for i in found.items]
    state = cache_state(entries, d.cache_directory, found.arch, kept_keys=found.kept_keys)
    problems = list(found.problems) + _cache_problems(state, len(found.items), found.listing_complete)
    controls = None
    if found.has_controls or found.edit:
        per_image = Counter(len(i.control_paths) for i in found.items)
        controls = ControlReport(
            matched=sum(1 for i in found.items if i.control_paths),
            missing=[str(p) for p in found.missing_controls],
            unmatched=[str(p) for p in found.unmatched_controls],
            unreadable=[f"{u.path}: {u.reason}" for u in found.unreadable_controls],
            per_image={str(k): v for k, v in sorted(per_image.items())},
        )
    return DatasetSummary(
        index=d.index,
        source=str(d.source),
        cache_directory=str(d.cache_directory),
        control_directory=str(d.control_directory) if d.control_directory else None,
        resolution=d.resolution,
        enable_bucket=d.enable_bucket,
        bucket_no_upscale=d.bucket_no_upscale,
        batch_size=d.batch_size,
        num_repeats=d.num_repeats,
        image_count=found.image_count,
        usable=len(found.items),
        captions_found=found.captions_found,
        captions_missing=[str(p) for p in found.missing_captions],
        captions_empty=[str(p) for p in found.empty_captions],
        captions_unreadable=[
            UnreadableReport(path=str(u.path), reason=u.reason) for u in found.unreadable_captions
        ],
        buckets=buckets,
        samples_per_epoch=sum(b.samples for b in buckets),
        batches_per_epoch=sum(b.batches for b in buckets),
        controls=controls,
        unreadable=[UnreadableReport(path=str(u.path), reason=u.reason) for u in found.unreadable],
        latent_cache=_cache_report(
            state, state.latents_present, state.latents_missing, state.latents_outdated
        ),
        text_cache=_cache_report(state, state.text_present, state.text_missing, state.text_outdated),
        stale_cache_files=[str(p) for p in state.stale],
        kept_cache_keys=sorted(found.kept_keys),
        rotated=[
            RotatedReport(
                path=str(r.path), orientation=r.orientation, size=r.size, stored_size=r.stored_size, note=r.note
            )
            for r in found.rotated
        ],
        problems=problems,
    )


def _cache_report(
    state: CacheState, present: list[Path], missing: list[Path], outdated: list[Path]
) -> CacheReport:
    """One kind of cache file, with the reason each outdated file is outdated."""
    return CacheReport(
        present=len(present),
        missing=[str(p) for p in missing],
        outdated=[str(p) for p in outdated],
        reasons={str(p): state.outdated_reasons.get(p, "outdated") for p in outdated},
    )


def _bucket_reports(found: DatasetItems) -> list[BucketReport]:
    """Images per batch group, with the effect of num_repeats and batch_size."""
    d = found.dataset
    groups = Counter(i.batch_key for i in found.items)
    out = []
    for key in sorted(groups):
        samples = groups[key] * d.num_repeats
        out.append(
            BucketReport(
                width=key[0][0],
                height=key[0][1],
                control_sizes=list(key[1:]),
                images=groups[key],
                samples=samples,
                batches=math.ceil(samples / d.batch_size),
            )
        )
    return out


def _cache_problems(state: CacheState, usable: int, listing_complete: bool = True) -> list[str]:
    """Cache states worth acting on: partly cached, outdated or stale files."""
    out = []
    for kind, present, outdated, stage in (
        ("latent", state.latents_present, state.latents_outdated, "cache_latents"),
        ("text-encoder", state.text_present, state.text_outdated, "cache_text_encoder_outputs"),
    ):
        if 0 < len(present) < usable:
            out.append(f"{kind} cache covers {len(present)} of {usable} images; run {stage} again")
        if outdated:
            first = Path(outdated[0])
            why = state.outdated_reasons.get(first, "outdated")
            out.append(
                f"{len(outdated)} {kind} cache file(s) were made with other settings, captions, images or "
                f"control images; run {stage} again (e.g. {first.name}: {why})"
            )
    if state.stale and not listing_complete:
        out.append(
            f"{len(state.stale)} cache file(s) match no image read from the list (e.g. {state.stale[0].name}); "
            "they may belong to the entries that cannot be read, so the caching stages keep them"
        )
    elif state.stale:
        out.append(
            f"{len(state.stale)} cache file(s) belong to no current image (e.g. {state.stale[0].name}); "
            "delete them, or a musubi-style trainer will still train on them"
        )
    return out


def format_report(report: DatasetReport) -> str:
    """A plain-text rendering of a report for a terminal."""
    mode = "edit (Qwen-Image-Edit)" if report.edit else "text-to-image"
    lines = [f"Dataset config: {report.config_path}", f"Mode: {mode}; cache files end in _{report.arch}"]
    for s in report.datasets:
        lines += ["", *_format_dataset(s)]
    lines += [
        "",
        f"Total: {report.usable} of {report.images} images usable; {report.samples_per_epoch} samples and "
        f"{report.batches_per_epoch} batches (steps) per epoch",
    ]
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s):")
        lines += [f"  - {p}" for p in report.problems]
    else:
        lines.append("No problems found.")
    return "\n".join(lines)


def _format_dataset(s: DatasetSummary) -> list[str]:
    """The lines for one dataset."""
    w, h = s.resolution
    bucket_mode = "off" if not s.enable_bucket else "on" + (", no upscale" if s.bucket_no_upscale else "")
    lines = [
        f"datasets[{s.index}]: {s.source}",
        f"  resolution {w}x{h}, buckets {bucket_mode}, batch size {s.batch_size}, repeats {s.num_repeats}",
        f"  cache directory: {s.cache_directory}",
        f"  images: {s.image_count} found, {s.usable} usable, {len(s.unreadable)} unreadable",
    ]
    lines += [f"    unreadable: {u.path} ({u.reason})" for u in s.unreadable[:10]]
    lines.append(
        f"  captions: {s.captions_found} found, {len(s.captions_missing)} missing, "
        f"{len(s.captions_unreadable)} unreadable, {len(s.captions_empty)} empty"
    )
    lines += [f"    missing caption: {p}" for p in s.captions_missing[:10]]
    lines += [f"    unreadable caption: {u.reason}" for u in s.captions_unreadable[:10]]
    lines.append(f"  buckets ({len(s.buckets)}):")
    for b in s.buckets:
        ctrl = (
            " + control " + ", ".join(f"{cw}x{ch}" for cw, ch in b.control_sizes) if b.control_sizes else ""
        )
        lines.append(
            f"    {b.width:>4}x{b.height:<4}{ctrl}: {b.images} image(s) x {s.num_repeats} = {b.samples} sample(s), "
            f"{b.batches} batch(es)"
        )
    lines.append(f"  per epoch: {s.samples_per_epoch} samples, {s.batches_per_epoch} batches")
    if s.controls is not None:
        c = s.controls
        per = ", ".join(f"{n} control(s): {k}" for n, k in c.per_image.items()) or "none"
        lines.append(
            f"  control images: {c.matched} matched, {len(c.missing)} missing, {len(c.unmatched)} unmatched ({per})"
        )
    for name, cache in (("latent cache", s.latent_cache), ("text cache", s.text_cache)):
        lines.append(
            f"  {name}: {cache.present} present, {len(cache.missing)} missing, {len(cache.outdated)} outdated"
        )
        for path in cache.outdated[:_LISTED]:
            lines.append(f"    outdated: {Path(path).name}: {cache.reasons.get(path, 'outdated')}")
        if len(cache.outdated) > _LISTED:
            lines.append(f"    ... and {len(cache.outdated) - _LISTED} more outdated")
    kept = (
        f", {len(s.kept_cache_keys)} unreadable item(s) whose cache files are kept"
        if s.kept_cache_keys
        else ""
    )
    lines.append(f"  stale cache files: {len(s.stale_cache_files)}{kept}")
    if s.rotated:
        lines.append(f"  EXIF orientation applied to {len(s.rotated)} image(s):")
        lines += [f"    {r.path}: {r.note}" for r in s.rotated[:_LISTED]]
        if len(s.rotated) > _LISTED:
            lines.append(f"    ... and {len(s.rotated) - _LISTED} more (--json lists them all)")
    return lines


def _parser() -> argparse.ArgumentParser:
    """The arguments of ``qwen-image-studio dataset inspect``."""
    p = argparse.ArgumentParser(
        prog="qwen-image-studio dataset inspect",
        description="Check a dataset TOML: images, captions, buckets, control images and caches.",
    )
    p.add_argument("config", type=Path, help="the dataset TOML file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--edit", action="store_true", help="check for Qwen-Image-Edit (control images, _qie caches)"
    )
    p.add_argument(
        "--deep", action="store_true", help="decode every image fully (slower; finds truncated files)"
    )
    p.add_argument(
        "--control_text_encoder_size",
        choices=("official", "reference"),
        default=None,
        help="with --edit: report text caches encoded with the other size as outdated (default: not checked)",
    )
    return p


def run_inspect(argv: list[str]) -> int:
    """Run ``dataset inspect CONFIG [--json] [--edit] [--deep] [--control_text_encoder_size SIZE]``; 0 if the
    config is valid, 2 if not."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return int(exc.code or 0)
    try:
        report = inspect_dataset(
            args.config,
            edit=args.edit,
            decode=args.deep,
            control_text_encoder_size=args.control_text_encoder_size,
        )
    except DatasetError as exc:
        if args.json:
            problems = getattr(exc, "problems", [str(exc)])
            print(json.dumps({"error": str(exc), "problems": problems}, ensure_ascii=False))
        else:
            print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(report.model_dump_json(indent=2) if args.json else format_report(report))
    return 0
