"""Stage 1: encode dataset images (and edit-mode control images) to normalised VAE latents, one file per image."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..data.cache_paths import (
    control_fingerprint,
    control_tensor_key,
    file_sha256,
    latent_cache_metadata,
    latent_tensor_key,
)
from ..data.images import read_image_for_bucket
from ..data.items import DatasetItem
from ..events import EventWriter
from ..models.loading import load_vae
from ..params.schema import StudioConfig
from .common import BatchEncoder, Unreadable, read_items, run_cache_stage, save_cache_file

log = logging.getLogger(__name__)


def pixels(images: list[Image.Image]) -> torch.Tensor:
    """RGB images of one size as a (B, 3, 1, H, W) tensor in [-1, 1], as diffusers' VaeImageProcessor does."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).unsqueeze(2) * 2.0 - 1.0


@torch.no_grad()
def encode_latents(vae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Posterior mode of the VAE, normalised per channel: (z - mean_c) / std_c; (B, 16, 1, h, w)."""
    z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mode()
    mean = torch.tensor(vae.config.latents_mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1, 1)
    return (z - mean) / std


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None:
    """Cache the latents of every usable item of every dataset."""

    def load(device: torch.device, dtype: torch.dtype) -> BatchEncoder:
        vae = load_vae(config.vae, dtype=dtype, device=device)  # type: ignore[arg-type]
        return lambda batch: _encode_batch(vae, batch)

    run_cache_stage(config, events, "latent", load)


def _encode_batch(vae: torch.nn.Module, batch: list[DatasetItem]) -> list[Unreadable]:
    """Encode one batch (same bucket, same control sizes) and write one cache file per item.

    Each file records its target image (``image_sha256``) and, in edit mode, its control images
    (``control_sha256``), hashed before they are read for encoding, so a file changed meanwhile shows up
    as outdated next time; text-to-image items encode no control image even when the dataset has a
    control_directory. Items whose images cannot be decoded are left out (their files untouched) and
    returned with why.
    """
    read, unreadable = read_items(batch, _read_item)
    if not read:
        return unreadable
    targets = encode_latents(vae, pixels([r.target for r in read]))
    n_controls = len(read[0].item.encoded_controls)
    controls = [encode_latents(vae, pixels([r.controls[c] for r in read])) for c in range(n_controls)]
    for b, r in enumerate(read):
        latent = targets[b]
        tensors = {latent_tensor_key(tuple(latent.shape[1:]), latent.dtype): latent}
        for c, ctrl in enumerate(controls):
            tensors[control_tensor_key(c, tuple(ctrl[b].shape[1:]), ctrl.dtype)] = ctrl[b]
        meta = latent_cache_metadata(r.item.size, r.control_fingerprint, r.image_fingerprint)
        save_cache_file(tensors, r.item.latent_cache_path, meta)
        log.debug("wrote %s", r.item.latent_cache_path)
    return unreadable


@dataclass
class _ReadItem:
    """One item's images decoded into their buckets, with the fingerprints taken before reading them."""

    item: DatasetItem
    image_fingerprint: str
    control_fingerprint: str | None
    target: Image.Image
    controls: list[Image.Image]


def _read_item(item: DatasetItem) -> _ReadItem:
    """Hash and decode one item's target (and edit-mode control) images; ImageReadError / OSError if not."""
    image_fingerprint = file_sha256(item.image_path)
    fingerprint = control_fingerprint(item.encoded_controls) if item.encoded_controls else None
    target = read_image_for_bucket(item.image_path, item.bucket)
    controls = [
        read_image_for_bucket(p, b) for p, b in zip(item.encoded_controls, item.control_buckets, strict=True)
    ]
    return _ReadItem(item, image_fingerprint, fingerprint, target, controls)
