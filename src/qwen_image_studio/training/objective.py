"""The training objective for given timesteps and noise: the DiT's forward and the weighted flow-matching MSE.

Training draws ``t`` and the noise (``loop.flow_matching_loss``); validation passes fixed ones
(``validation``). Both go through :func:`weighted_loss`, so they see the same inputs (edit mode's clean
control latents after the target tokens, the text mask), the same forward (block swap, fp8, compile hooks
live on the model) and the same loss weighting.
"""

from __future__ import annotations

from typing import Any

import torch

from . import flow_matching as fm


def weighted_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    t: torch.Tensor,
    noise: torch.Tensor,
    tcfg: fm.TimestepConfig,
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Weighted MSE between the DiT's velocity and noise - x0 at timesteps `t` (one per sample), batch mean."""
    x0 = batch["latents"].to(device, torch.float32)  # (B, 16, 1, h, w), already normalised
    b, _, _, h, w = x0.shape
    tokens = [fm.pack_latents(fm.noisy_latents(x0, noise, t))]
    shapes = [(1, h // 2, w // 2)]
    for control in batch["controls"]:  # edit: clean control latents after the target, never noised
        tokens.append(fm.pack_latents(control.to(device, torch.float32)))
        shapes.append((1, control.shape[-2] // 2, control.shape[-1] // 2))
    n_target = tokens[0].shape[1]
    mask = batch["mask"].to(device)
    pred = model(
        hidden_states=torch.cat(tokens, dim=1).to(dtype),
        encoder_hidden_states=batch["text"].to(device, dtype),
        encoder_hidden_states_mask=None if bool(mask.all()) else mask,
        timestep=t.to(dtype),  # t in [0, 1]; 2511 (zero_cond_t) adds the t = 0 copy for controls itself
        img_shapes=[shapes] * b,
        return_dict=False,
    )[0]
    pred = pred[:, :n_target].float()  # the prediction for the target tokens only
    target = fm.pack_latents(fm.flow_target(x0, noise))  # packed like pred (a permutation of the latents)
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2))
    return (per_sample * fm.loss_weights(tcfg, t)).mean()
