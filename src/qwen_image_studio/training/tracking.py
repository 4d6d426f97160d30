"""What training reports per step: events (progress with loss/lr/ETA, metrics) and TensorBoard scalars.

TensorBoard (``--log_with tensorboard``) gets ``loss/current``, ``loss/average`` (moving average over the
last epoch's worth of steps), ``loss/epoch``, ``lr/<group>`` for every parameter group and a ``timesteps``
histogram (t x 1000) every :data:`HISTOGRAM_EVERY` steps, in ``{logging_dir}/{output_name}_{time}``; with
a validation dataset also ``loss/validation`` and ``validation/t_<t>`` (the mean at each fixed timestep) at
the steps it was evaluated (see ``validation``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

import torch

from ..events import EventWriter, ProgressTracker

log = logging.getLogger(__name__)

HISTOGRAM_EVERY = 10


def tensorboard_dir(logging_dir: str | Path, output_name: str) -> Path:
    """A fresh run folder under ``--logging_dir``."""
    return Path(logging_dir) / f"{output_name}_{time.strftime('%Y%m%d-%H%M%S')}"


class TrainTracker:
    """Per-step reporting on the main process (the other processes keep only the moving average)."""

    def __init__(
        self,
        events: EventWriter,
        total_steps: int,
        window: int,
        enabled: bool,
        tensorboard: Path | None = None,
        start_step: int = 0,
        loss_window: list[float] | None = None,
    ) -> None:
        self.events = events
        self.enabled = enabled
        self.window: deque[float] = deque(loss_window or [], maxlen=max(window, 1))
        self.epoch_losses: list[float] = []
        self.timesteps: list[torch.Tensor] = []
        self.progress: ProgressTracker | None = None
        self.writer: Any = None
        if enabled:
            self.progress = ProgressTracker(
                events, total=total_steps, phase="train", unit="step", done=start_step
            )
            if tensorboard is not None:
                from torch.utils.tensorboard import SummaryWriter

                tensorboard.mkdir(parents=True, exist_ok=True)
                self.writer = SummaryWriter(log_dir=str(tensorboard))
                log.info("TensorBoard logs: %s", tensorboard)

    @property
    def loss_avg(self) -> float:
        """Mean of the recent losses."""
        return sum(self.window) / len(self.window) if self.window else math.nan

    def step(self, step: int, epoch: int, loss: float, lrs: dict[str, float], t: torch.Tensor) -> None:
        """Record one optimizer step."""
        self.window.append(loss)
        self.epoch_losses.append(loss)
        if not self.enabled:
            return
        first_lr = next(iter(lrs.values()))
        extra = {f"lr_{name}": lr for name, lr in lrs.items()} if len(lrs) > 1 else {}
        self.events.emit(
            "metric", step=step, epoch=epoch, loss=loss, loss_avg=self.loss_avg, lr=first_lr, **extra
        )
        assert self.progress is not None
        self.progress.advance(1, loss=round(loss, 6), lr=first_lr, epoch=epoch)
        if self.writer is not None:
            self.writer.add_scalar("loss/current", loss, step)
            self.writer.add_scalar("loss/average", self.loss_avg, step)
            for name, lr in lrs.items():
                self.writer.add_scalar(f"lr/{name}", lr, step)
            self.timesteps.append(t.detach().float().cpu())
            if step % HISTOGRAM_EVERY == 0:
                self._flush_histogram(step)

    def _flush_histogram(self, step: int) -> None:
        if self.writer is not None and self.timesteps:
            self.writer.add_histogram("timesteps", torch.cat(self.timesteps) * 1000, step)
            self.timesteps = []

    def validation(self, result: Any, epoch: int) -> None:
        """Record a validation result (``validation.ValidationResult``): a ``metric`` event with
        ``validation_loss`` (and the per-timestep means) and the TensorBoard scalars."""
        if not self.enabled:
            return
        self.events.emit(
            "metric",
            step=result.step,
            epoch=epoch,
            validation_loss=result.loss,
            validation_timesteps=list(result.timesteps),
            validation_losses=list(result.per_timestep),
        )
        if self.writer is not None:
            self.writer.add_scalar("loss/validation", result.loss, result.step)
            for t, value in zip(result.timesteps, result.per_timestep, strict=True):
                self.writer.add_scalar(f"validation/t_{t:g}", value, result.step)

    def end_epoch(self, step: int, epoch: int) -> None:
        """Record the mean loss of the epoch just finished (epoch numbers from 1)."""
        if self.enabled and self.epoch_losses:
            mean = sum(self.epoch_losses) / len(self.epoch_losses)
            self.events.emit("metric", step=step, epoch=epoch, epoch_loss=mean)
            if self.writer is not None:
                self.writer.add_scalar("loss/epoch", mean, epoch)
        self.epoch_losses = []

    def close(self, step: int) -> None:
        """Flush and close TensorBoard and the progress bar."""
        if self.writer is not None:
            self._flush_histogram(step)
            self.writer.flush()
            self.writer.close()
        if self.progress is not None:
            self.progress.close()
