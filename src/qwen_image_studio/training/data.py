"""Training data from the cache files: items of every dataset, bucketed batches, a seeded order per epoch.

The order of an epoch is a pure function of (seed, epoch): within each dataset and bucket (and control
sizes) the items, repeated ``num_repeats`` times, are shuffled and cut into batches of the dataset's
``batch_size``; then all batches are shuffled. Several processes take every world-th batch (the list is
first padded by cycling so that each process makes the same number of steps). A resumed run skips the
batches already consumed, so it sees exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data.cache_paths import (
    TEXT_EMBED_PREFIX,
    latent_cache_outdated_reason,
    text_cache_outdated_reason,
)
from ..data.config import load_dataset_config
from ..data.items import discover_items
from ..errors import DatasetError
from ..events import EventWriter
from ..params.spec import STAGE_SCRIPTS, Stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedItem:
    """One trainable image: its cache files and the group it is batched in."""

    key: str
    latent_path: Path
    text_path: Path
    group: tuple[Any, ...]  # (dataset index, batch key, number of controls)
    batch_size: int
    num_repeats: int


def _control_vl_size(config: Any) -> str | None:
    """The --control_text_encoder_size edit-mode text caches must have been made with (None: text-to-image)."""
    return getattr(config, "control_text_encoder_size", None) if config.is_edit else None


def _cache_command(stage: Stage, config: Any) -> str:
    version = f" --model_version {config.model_version}" if config.model_version != "original" else ""
    size = _control_vl_size(config) if stage == Stage.CACHE_TEXT else None
    if size not in (None, "official"):  # name a non-default size, or the re-cache would use the default
        version += f" --control_text_encoder_size {size}"
    held_out = getattr(config, "validation_dataset_config", None)  # the stages cache both TOMLs
    validation = f" --validation_dataset_config {held_out}" if held_out else ""
    return f"{STAGE_SCRIPTS[stage]} --dataset_config {config.dataset_config}{validation}{version}"


def collect_items(
    config: Any, events: EventWriter | None = None, source: str = "dataset_config"
) -> list[CachedItem]:
    """Every usable item of ``--dataset_config`` whose caches are present and current (else DatasetError).

    Current includes, for edit-mode text caches, having been encoded with this run's
    ``--control_text_encoder_size`` (when the file records it: see ``data.cache_paths``). `source`
    "validation_dataset_config" reads the validation TOML instead (``data.validation_config``).
    """
    toml = getattr(config, source)
    flag, held_out = f"--{source}", source != "dataset_config"
    label = "validation " if held_out else ""
    if held_out:
        from ..data.validation_config import load_validation_config

        ds_config = load_validation_config(config)
    else:
        ds_config = load_dataset_config(toml)
    vl_size = _control_vl_size(config)
    items: list[CachedItem] = []
    missing_latents: list[str] = []  # "path: why" of each missing or outdated cache file
    missing_text: list[str] = []
    for dataset in ds_config.datasets:
        found = discover_items(dataset, edit=config.is_edit)
        for problem in found.problems:
            if events is not None:
                events.warning(f"{label}{dataset.label}: {problem}")
        for item in found.items:
            entry = replace(item.cache_entry(), control_vl_size=vl_size)
            for path, why, found_list in (
                (entry.latent_path, latent_cache_outdated_reason, missing_latents),
                (entry.text_path, text_cache_outdated_reason, missing_text),
            ):
                reason = why(entry) if path.is_file() else "missing"
                if reason is not None:
                    found_list.append(f"{path}: {reason}")
            n_controls = len(item.control_buckets) if config.is_edit else 0
            group = (dataset.index, item.batch_key if config.is_edit else (item.bucket,), n_controls)
            items.append(
                CachedItem(
                    item.key,
                    item.latent_cache_path,
                    item.text_cache_path,
                    group,
                    dataset.batch_size,
                    dataset.num_repeats,
                )
            )
    if not items:
        raise DatasetError(f"{flag} {toml}: no usable images (see the warnings)")
    problems = []
    if missing_latents:
        problems.append(
            f"{len(missing_latents)} of {len(items)} {label}latent caches are missing or outdated "
            f"(e.g. {missing_latents[0]}); run {_cache_command(Stage.CACHE_LATENTS, config)} --vae ..."
        )
    if missing_text:
        problems.append(
            f"{len(missing_text)} of {len(items)} {label}text-encoder caches are missing or outdated "
            f"(e.g. {missing_text[0]}); run {_cache_command(Stage.CACHE_TEXT, config)} "
            "--text_encoder ..."
        )
    if problems:
        raise DatasetError("; ".join(problems) + " before training")
    return items


def load_cached(item: CachedItem, with_controls: bool) -> dict[str, Any]:
    """The tensors of one item: latents (16, 1, h, w), controls [(16, 1, hc, wc)], text (T, D)."""
    from safetensors import safe_open

    controls: dict[int, torch.Tensor] = {}
    latents = None
    with safe_open(str(item.latent_path), framework="pt") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
            if name.startswith("latents_control_"):
                if with_controls:
                    controls[int(name.split("_")[2])] = fh.get_tensor(name)
            elif name.startswith("latents_"):
                latents = fh.get_tensor(name)
    text = None
    with safe_open(str(item.text_path), framework="pt") as fh:
        for name in fh.keys():  # noqa: SIM118
            if name.startswith(TEXT_EMBED_PREFIX):
                text = fh.get_tensor(name)
    if latents is None or text is None:
        raise DatasetError(
            f"cache of {item.key} lacks its latents or text embedding; run the caching commands again"
        )
    return {
        "key": item.key,
        "latents": latents,
        "controls": [controls[i] for i in sorted(controls)],
        "text": text,
    }


class CachedDataset(Dataset):
    """Reads one item's cached tensors by index."""

    def __init__(self, items: list[CachedItem], with_controls: bool) -> None:
        self.items = items
        self.with_controls = with_controls

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return load_cached(self.items[index], self.with_controls)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack latents and controls; pad text embeddings to the longest and mark real tokens in ``mask``."""
    latents = torch.stack([s["latents"] for s in samples])
    n_controls = len(samples[0]["controls"])
    controls = [torch.stack([s["controls"][i] for s in samples]) for i in range(n_controls)]
    lengths = [s["text"].shape[0] for s in samples]
    width = samples[0]["text"].shape[1]
    text = samples[0]["text"].new_zeros(len(samples), max(lengths), width)
    mask = torch.zeros(len(samples), max(lengths), dtype=torch.bool)
    for i, s in enumerate(samples):
        text[i, : lengths[i]] = s["text"]
        mask[i, : lengths[i]] = True
    return {
        "keys": [s["key"] for s in samples],
        "latents": latents,
        "controls": controls,
        "text": text,
        "mask": mask,
    }


def groups_of(items: list[CachedItem]) -> list[tuple[list[int], int]]:
    """Item indices (with repeats) per batching group, with the group's batch size, in a stable order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    sizes: dict[tuple[Any, ...], int] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.group, []).extend([index] * item.num_repeats)
        sizes[item.group] = item.batch_size
    return [(groups[key], sizes[key]) for key in sorted(groups, key=repr)]


def plan_epoch(groups: list[tuple[list[int], int]], seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: shuffled within each group, cut to its batch size, then shuffled."""
    rng = random.Random(seed * 1_000_003 + epoch)
    batches: list[list[int]] = []
    for indices, size in groups:
        order = list(indices)
        rng.shuffle(order)
        batches += [order[i : i + size] for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


def shard(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """This process's batches: every world-th, the list padded by cycling to a multiple of world."""
    if world <= 1:
        return batches
    padded = list(batches)
    i = 0
    while len(padded) % world:
        padded.append(batches[i % len(batches)])
        i += 1
    return padded[rank::world]


class EpochBatchSampler(Sampler[list[int]]):
    """Yields this process's batches of the current epoch, skipping those a resumed run has done."""

    def __init__(self, groups: list[tuple[list[int], int]], seed: int, rank: int = 0, world: int = 1) -> None:
        self.groups, self.seed, self.rank, self.world = groups, seed, rank, world
        self.epoch = 0
        self.skip = 0
        self._count = len(shard(plan_epoch(groups, seed, 0), rank, world))

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Choose the epoch the next iteration yields, and how many of its first batches to skip."""
        self.epoch, self.skip = epoch, skip_batches

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[list[int]]:
        yield from shard(plan_epoch(self.groups, self.seed, self.epoch), self.rank, self.world)[self.skip :]


def make_loader(
    items: list[CachedItem], sampler: EpochBatchSampler, with_controls: bool, workers: int, persistent: bool
) -> DataLoader:
    """The DataLoader over cached items with the epoch batch sampler."""
    # Its own generator: creating an epoch's iterator then draws nothing from torch's global RNG (which
    # dropout uses), so a resumed run's random streams line up with the uninterrupted run's.
    generator = torch.Generator().manual_seed(sampler.seed)
    return DataLoader(
        CachedDataset(items, with_controls),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        generator=generator,
    )
