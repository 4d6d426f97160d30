"""The flow-matching objective as pure functions: timestep draws, loss weights, noisy inputs, 2x2 packing.

Conventions (facts §4): ``x_t = (1 - t) x0 + t noise`` with ``t`` in [0, 1] (1 is pure noise), the target
is ``noise - x0`` and the DiT takes ``t`` itself as its timestep.

Timestep sampling follows the reference trainer (musubi-tuner): ``uniform`` t ~ U(0, 1); ``sigmoid``
t = sigmoid(s N(0, 1)); ``shift`` the sigmoid draw then t' = k t / (1 + (k - 1) t) with
k = ``discrete_flow_shift``; ``qwen_shift`` the same with k = exp(mu), mu linear in the image-token count
(0.5 at 256 tokens, 0.9 at 8192: the Qwen-Image pipeline scheduler's dynamic shift); ``logsnr``
t = sigmoid(-lambda / 2), lambda ~ N(logit_mean, logit_std). The draw is then mapped linearly onto
[min_timestep, max_timestep] / 1000, as the reference trainer does (the shape is kept, the range narrowed).

Weighting: ``sigma_sqrt`` and ``cosmap`` are loss weights (diffusers' ``compute_loss_weighting_for_sd3``);
``logit_normal`` and ``mode`` change the draw instead (diffusers' ``compute_density_for_timestep_sampling``,
SD3 style): their density replaces the base draw u of the sampling method, and ``shift`` / ``qwen_shift``
still apply their shift to u, as the SD3 recipe shifts its logit-normal draw; their loss weight is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

SAMPLINGS: tuple[str, ...] = ("uniform", "sigmoid", "shift", "qwen_shift", "logsnr")
WEIGHTINGS: tuple[str, ...] = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
DENSITY_WEIGHTINGS: tuple[str, ...] = ("logit_normal", "mode")

# The Qwen-Image pipeline scheduler's dynamic shift (scheduler_config.json of the release).
QWEN_BASE_SEQ_LEN, QWEN_MAX_SEQ_LEN = 256, 8192
QWEN_BASE_SHIFT, QWEN_MAX_SHIFT = 0.5, 0.9
WEIGHT_MIN_SIGMA = 1e-3
"""sigma_sqrt weights use max(t, 1/1000): the reference trainer's smallest discrete sigma, so no weight is inf."""


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


def _base_draw(
    cfg: TimestepConfig, n: int, generator: torch.Generator | None, device: torch.device
) -> torch.Tensor:
    """The unshifted draw in [0, 1] of the sampling method (or of the weighting's density)."""
    if cfg.weighting in DENSITY_WEIGHTINGS:
        from diffusers.training_utils import compute_density_for_timestep_sampling

        u = compute_density_for_timestep_sampling(
            cfg.weighting,
            n,
            logit_mean=cfg.logit_mean,
            logit_std=cfg.logit_std,
            mode_scale=cfg.mode_scale,
            device=device,
            generator=generator,
        )
        return u.float().clamp(0.0, 1.0)  # the mode density leaves [0, 1] for large mode_scale
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
    """Draw one t per sample in [min_timestep, max_timestep] / 1000 (float32, shape (batch_size,))."""
    device = torch.device(device)
    t = _base_draw(cfg, batch_size, generator, device)
    shift = shift_for(cfg, image_tokens)
    if shift is not None:
        t = time_shift(t, shift)
    lo, hi = cfg.min_timestep / 1000.0, cfg.max_timestep / 1000.0
    return (t * (hi - lo) + lo).clamp(lo, hi).float()


def loss_weights(weighting: str, t: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weight for sigma = t: sigma^-2 (sigma_sqrt), 2 / (pi (1 - 2s + 2s^2)) (cosmap), else 1."""
    if weighting not in ("sigma_sqrt", "cosmap"):
        return torch.ones_like(t, dtype=torch.float32)
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    sigmas = t.float().clamp(min=WEIGHT_MIN_SIGMA) if weighting == "sigma_sqrt" else t.float()
    return compute_loss_weighting_for_sd3(weighting, sigmas=sigmas).float()


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
