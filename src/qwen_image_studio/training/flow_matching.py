"""The flow-matching objective as pure functions: timestep draws, loss weights, noisy inputs, 2x2 packing.

Conventions (facts §4): ``x_t = (1 - t) x0 + t noise`` with ``t`` in [0, 1] (1 is pure noise), the target
is ``noise - x0`` and the DiT takes ``t`` itself as its timestep.

Timestep sampling follows the reference trainer (musubi-tuner): ``uniform`` t ~ U(0, 1); ``sigmoid``
t = sigmoid(s N(0, 1)); ``shift`` the sigmoid draw then t' = k t / (1 + (k - 1) t) with
k = ``discrete_flow_shift``; ``qwen_shift`` the same with k = exp(mu), mu linear in the image-token count
(0.5 at 256 tokens, 0.9 at 8192: the Qwen-Image pipeline scheduler's dynamic shift); ``logsnr``
t = sigmoid(-lambda / 2), lambda ~ N(logit_mean, logit_std). The draw is then mapped linearly onto
[min_timestep, max_timestep] / 1000, as the reference trainer does (the shape is kept, the range narrowed).

``sigma`` (the reference trainer's own default) draws an index of its 1000-step training schedule
(sigma_i = (1000 - i) / 1000, i = 0 .. 999): u from the weighting's density (``logit_normal``,
``mode``; uniform otherwise), i = floor(u (max_timestep - min_timestep) + min_timestep), t = sigma_i. So
there, as in the reference, min/max_timestep bound the index, which counts from t = 1 down.

Weighting follows the reference trainer: ``logit_normal`` and ``mode`` shape only the ``sigma`` draw
(diffusers' ``compute_density_for_timestep_sampling``); with any other sampling they change nothing, as
there (`ignored_weighting` gives the note the trainer logs). ``sigma_sqrt`` (sigma^-2) and ``cosmap`` are
loss weights (diffusers' ``compute_loss_weighting_for_sd3``) of the schedule sigma nearest to the
reference's timestep: sigma_i itself for ``sigma``; for the other samplings the reference's timestep is
1000 t + 1, so the weight's sigma is round(1000 t + 1) / 1000, capped at 1 (t = 0 weighs 1e6, not inf).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SAMPLINGS: tuple[str, ...] = ("sigma", "uniform", "sigmoid", "shift", "qwen_shift", "logsnr")
WEIGHTINGS: tuple[str, ...] = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
DENSITY_WEIGHTINGS: tuple[str, ...] = ("logit_normal", "mode")

# The Qwen-Image pipeline scheduler's dynamic shift (scheduler_config.json of the release).
QWEN_BASE_SEQ_LEN, QWEN_MAX_SEQ_LEN = 256, 8192
QWEN_BASE_SHIFT, QWEN_MAX_SHIFT = 0.5, 0.9
SCHEDULE_STEPS = 1000  # the reference trainer's training schedule: sigma_i = (1000 - i) / 1000, i = 0 .. 999


@dataclass(frozen=True)
class TimestepConfig:
    """The parameters of the timestep draw and the loss weighting (the StudioConfig fields of the same names)."""

    sampling: str = "shift"
    weighting: str = "none"
    discrete_flow_shift: float = 2.2
    sigmoid_scale: float = 1.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    min_timestep: int = 0
    max_timestep: int = 1000

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"timestep sampling must be one of {SAMPLINGS}, not {self.sampling!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting scheme must be one of {WEIGHTINGS}, not {self.weighting!r}")
        if not 0 <= self.min_timestep < self.max_timestep <= 1000:
            raise ValueError("need 0 <= min_timestep < max_timestep <= 1000")

    @classmethod
    def from_config(cls, config: Any) -> TimestepConfig:
        """Read the fields from a StudioConfig (or anything with the same attribute names)."""
        return cls(
            sampling=config.timestep_sampling,
            weighting=config.weighting_scheme,
            discrete_flow_shift=config.discrete_flow_shift,
            sigmoid_scale=config.sigmoid_scale,
            logit_mean=config.logit_mean,
            logit_std=config.logit_std,
            mode_scale=config.mode_scale,
            min_timestep=config.min_timestep,
            max_timestep=config.max_timestep,
        )


def qwen_shift_mu(image_tokens: int) -> float:
    """mu of the Qwen-Image dynamic shift: linear from 0.5 at 256 image tokens to 0.9 at 8192."""
    slope = (QWEN_MAX_SHIFT - QWEN_BASE_SHIFT) / (QWEN_MAX_SEQ_LEN - QWEN_BASE_SEQ_LEN)
    return QWEN_BASE_SHIFT + slope * (image_tokens - QWEN_BASE_SEQ_LEN)


def time_shift(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = k t / (1 + (k - 1) t): moves the draw towards noise for k > 1 (monotone, fixes 0 and 1)."""
    return t * shift / (1 + (shift - 1) * t)


def shift_for(cfg: TimestepConfig, image_tokens: int) -> float | None:
    """The shift k that `cfg.sampling` applies for an image of `image_tokens` packed tokens, if any."""
    if cfg.sampling == "shift":
        return cfg.discrete_flow_shift
    if cfg.sampling == "qwen_shift":
        return math.exp(qwen_shift_mu(image_tokens))
    return None


def _density(
    cfg: TimestepConfig, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """u of the ``sigma`` draw: the weighting's density (logit_normal, mode) or uniform."""
    if cfg.weighting in DENSITY_WEIGHTINGS:
        from diffusers.training_utils import compute_density_for_timestep_sampling

        return compute_density_for_timestep_sampling(
            cfg.weighting,
            n,
            logit_mean=cfg.logit_mean,
            logit_std=cfg.logit_std,
            mode_scale=cfg.mode_scale,
            device=device,
            generator=generator,
        ).float()
    return torch.rand(n, generator=generator, device=device)


def _base_draw(
    cfg: TimestepConfig, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """The unshifted draw in [0, 1] of a continuous sampling method (every one but ``sigma``)."""
    if cfg.sampling == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if cfg.sampling == "logsnr":
        lam = torch.randn(n, generator=generator, device=device) * cfg.logit_std + cfg.logit_mean
        return torch.sigmoid(-lam / 2)
    return torch.sigmoid(cfg.sigmoid_scale * torch.randn(n, generator=generator, device=device))


def sample_timesteps(
    cfg: TimestepConfig,
    batch_size: int,
    image_tokens: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Draw one t per sample (float32, shape (batch_size,)): in [min_timestep, max_timestep] / 1000, or for
    ``sigma`` a schedule sigma whose index lies in [min_timestep, max_timestep)."""
    device = torch.device(device)
    if cfg.sampling == "sigma":
        u = _density(cfg, batch_size, generator, device)
        index = (u * (cfg.max_timestep - cfg.min_timestep) + cfg.min_timestep).floor()
        index = index.clamp(cfg.min_timestep, cfg.max_timestep - 1)  # a large mode_scale leaves [0, 1]
        return ((SCHEDULE_STEPS - index) / SCHEDULE_STEPS).float()
    t = _base_draw(cfg, batch_size, generator, device)
    shift = shift_for(cfg, image_tokens)
    if shift is not None:
        t = time_shift(t, shift)
    lo, hi = cfg.min_timestep / 1000.0, cfg.max_timestep / 1000.0
    return (t * (hi - lo) + lo).clamp(lo, hi).float()


def ignored_weighting(cfg: TimestepConfig) -> str | None:
    """The note for a weighting scheme that shapes only the ``sigma`` draw, given with another sampling."""
    if cfg.weighting in DENSITY_WEIGHTINGS and cfg.sampling != "sigma":
        return (
            f"--weighting_scheme {cfg.weighting} shapes only the draw of --timestep_sampling sigma; with "
            f"--timestep_sampling {cfg.sampling} it changes nothing (as in the reference trainer)"
        )
    return None


def weight_sigmas(cfg: TimestepConfig, t: torch.Tensor) -> torch.Tensor:
    """The schedule sigma the reference trainer weighs a draw t by (see the module docstring)."""
    if cfg.sampling == "sigma":
        return t.float().clamp(min=1 / SCHEDULE_STEPS)  # its draws are schedule sigmas already
    steps = torch.round(t.double() * SCHEDULE_STEPS + 1).clamp(1, SCHEDULE_STEPS)
    return (steps / SCHEDULE_STEPS).float()


def loss_weights(cfg: TimestepConfig, t: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weight: sigma^-2 (sigma_sqrt), 2 / (pi (1 - 2s + 2s^2)) (cosmap), else 1."""
    if cfg.weighting not in ("sigma_sqrt", "cosmap"):
        return torch.ones_like(t, dtype=torch.float32)
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    return compute_loss_weighting_for_sd3(cfg.weighting, sigmas=weight_sigmas(cfg, t)).float()


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t noise, with t broadcast over all but the batch dimension."""
    tt = _expand(t, x0)
    return (1 - tt) * x0 + tt * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity the DiT learns to predict: noise - x0."""
    return noise - x0


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, H, W) or (B, C, H, W) latents to (B, H/2 * W/2, 4C) tokens of 2x2 patches (diffusers' layout)."""
    if latents.ndim == 5:
        if latents.shape[2] != 1:
            raise ValueError(f"expected one frame, got latents of shape {tuple(latents.shape)}")
        latents = latents[:, :, 0]
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H/2 * W/2, 4C) tokens back to (B, C, 1, H, W) latents; `height`/`width` are latent sizes."""
    b, _, d = tokens.shape
    x = tokens.reshape(b, height // 2, width // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, 1, height, width)


def image_tokens(latent_height: int, latent_width: int) -> int:
    """Packed tokens of one latent image: (H/2) * (W/2)."""
    return (latent_height // 2) * (latent_width // 2)
