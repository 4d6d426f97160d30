"""The training loop, top to bottom: load, prepare, for each step (sample t, noise, predict, step), log, save.

Gradient accumulation is explicit: the batches of one optimizer step are taken together, every one but the
last runs under ``no_sync`` (no all-reduce between processes), and the loss is divided by their number, so
the last, shorter group of an epoch is handled exactly and a resumed run lines up with an uninterrupted one.
The learning-rate schedule steps once per optimizer step (it is not handed to accelerate, which would step
it once per process). With a validation dataset, ``validation.Validator`` evaluates the live LoRA at its
cadence and before every save, so each file carries its validation loss.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import remove_stale_temp_files
from ..devices import model_dtype
from ..errors import ConfigError
from ..events import EventWriter, ProgressTracker
from ..memory.options import MemoryOptions
from ..memory.setup import configure_dit
from ..models.lora_info import VALIDATION_LOSS_KEY
from ..params.schema import StudioConfig
from . import flow_matching as fm
from .data import EpochBatchSampler, collect_items, groups_of, make_loader
from .ema import EMA_FILE, LoraEma
from .lora import SAVE_DTYPES, LoRANetwork, apply_lora, file_metadata
from .objective import weighted_loss
from .optim import create_optimizer, create_scheduler, current_lrs
from .state import Progress, finish, load_state, staging_dir, write_main_state, write_rank_rng
from .tracking import TrainTracker, tensorboard_dir
from .validation import Validator, collect_validation_items

log = logging.getLogger(__name__)


# ---- plan ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepPlan:
    """How many optimizer steps an epoch has, how many the run makes, and over how many epochs."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int
    epochs: int


def plan_steps(
    batches_per_epoch: int, grad_accum: int, max_train_steps: int | None, max_train_epochs: int
) -> StepPlan:
    """Steps per epoch = ceil(batches / accumulation); --max_train_steps wins over --max_train_epochs."""
    steps_per_epoch = max(1, math.ceil(batches_per_epoch / grad_accum))
    total = max_train_steps if max_train_steps else max_train_epochs * steps_per_epoch
    return StepPlan(batches_per_epoch, steps_per_epoch, total, math.ceil(total / steps_per_epoch))


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive groups of `size` items (the last one shorter)."""
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


# ---- one step ------------------------------------------------------------------------------------------
def flow_matching_loss(
    model: torch.nn.Module,
    batch: dict[str, Any],
    tcfg: fm.TimestepConfig,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted MSE between the DiT's velocity and noise - x0 for one batch at drawn t and noise; returns
    (loss, t). The forward and the loss are ``objective.weighted_loss``'s, which validation shares."""
    shape = batch["latents"].shape  # (B, 16, 1, h, w), already normalised
    b, _, _, h, w = shape
    t = fm.sample_timesteps(tcfg, b, fm.image_tokens(h, w), generator, device)
    noise = torch.randn(shape, generator=generator, device=device)
    return weighted_loss(model, batch, t, noise, tcfg, device, dtype), t


@dataclass
class Trainer:
    """The objects one optimizer step needs."""

    accelerator: Any
    model: torch.nn.Module
    network: LoRANetwork
    optimizer: Any
    scheduler: Any
    tcfg: fm.TimestepConfig
    generator: torch.Generator
    dtype: torch.dtype
    max_grad_norm: float
    device: torch.device
    ema: LoraEma | None = None  # --ema_decay: updated after every optimizer step

    def step(self, micro_batches: list[dict[str, Any]]) -> tuple[float, torch.Tensor]:
        """Forward/backward every batch of the group, clip, step; returns the mean loss over processes and t."""
        acc, n = self.accelerator, len(micro_batches)
        total = torch.zeros((), device=self.device)
        ts = []
        for i, batch in enumerate(micro_batches):
            sync = i == n - 1
            with contextlib.nullcontext() if sync else acc.no_sync(self.model), acc.autocast():
                loss, t = flow_matching_loss(
                    self.model, batch, self.tcfg, self.generator, self.device, self.dtype
                )
            acc.backward(loss / n)
            total += loss.detach()
            ts.append(t)
        if self.max_grad_norm > 0:
            acc.clip_grad_norm_(self.network.parameters(), self.max_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        mean = acc.reduce(total / n, reduction="mean") if acc.num_processes > 1 else total / n
        return float(mean), torch.cat(ts)


# ---- saving --------------------------------------------------------------------------------------------
@dataclass
class Checkpointer:
    """Writes LoRA files (main process) and, with --save_state, state folders (all processes take part)."""

    config: StudioConfig
    accelerator: Any
    trainer: Trainer
    events: EventWriter
    started_at: float

    @property
    def output_dir(self) -> Path:
        """``--output_dir``."""
        return Path(self.config.output_dir)  # type: ignore[arg-type]

    def save(self, stem: str, progress: Progress, epoch: int, validation_loss: float | None = None) -> Path:
        """Write ``{stem}.safetensors`` (and ``{stem}-state``) atomically; returns the LoRA path. The file's
        validation loss, when known, goes into its header and its ``artifact`` event."""
        acc, cfg = self.accelerator, self.config
        path = self.output_dir / f"{stem}.safetensors"
        saving = None
        if acc.is_main_process:
            within = {"sub": True, "step": progress.step}  # a sub-phase of training (see ``events``)
            saving = ProgressTracker(self.events, total=1, phase="save", unit="file", extra=within)
            meta = file_metadata(
                cfg,
                epoch=epoch,
                step=progress.step,
                started_at=self.started_at,
                alpha=self.trainer.network.file_alpha,
            )
            known = {} if validation_loss is None else {"validation_loss": validation_loss}
            ema, on_ema = self.trainer.ema, bool(cfg.ema_for_eval)  # the value is of the weights evaluated
            plain_meta = {**meta, VALIDATION_LOSS_KEY: repr(validation_loss)} if known and not on_ema else meta
            self.trainer.network.save(path, SAVE_DTYPES[cfg.save_precision], plain_meta)
            self.events.artifact("checkpoint", path, **({} if on_ema else known))
            log.info("saved %s", path)
            if ema is not None:
                ema_meta = {**meta, VALIDATION_LOSS_KEY: repr(validation_loss)} if known and on_ema else meta
                ema_file = ema.save(path, SAVE_DTYPES[cfg.save_precision], ema_meta)
                self.events.artifact("checkpoint", ema_file, ema=True, **(known if on_ema else {}))
                log.info("saved %s (EMA, decay %g)", ema_file, ema.decay)
        if cfg.save_state:
            self._save_state(self.output_dir / f"{stem}-state", progress)
        if saving is not None:
            saving.advance()
            saving.close()
        acc.wait_for_everyone()
        return path

    def _save_state(self, final: Path, progress: Progress) -> None:
        acc, tr = self.accelerator, self.trainer
        staging = staging_dir(final)
        if acc.is_main_process:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        acc.wait_for_everyone()
        write_rank_rng(staging, acc.process_index, tr.generator)
        acc.wait_for_everyone()
        if acc.is_main_process:
            scaler = getattr(acc, "scaler", None)
            extra = {
                "output_name": self.config.output_name,
                "world_size": acc.num_processes,
                "saved_at": time.time(),
            }
            write_main_state(staging, tr.network, tr.optimizer, tr.scheduler, scaler, progress, extra)
            if tr.ema is not None:
                from safetensors.torch import save_file

                save_file(tr.ema.state_dict(), str(staging / EMA_FILE))
            finish(staging, final)
            self.events.artifact("state", final)
            log.info("saved state %s", final)


# ---- samples -------------------------------------------------------------------------------------------
class SampleHook:
    """Sample images with the live model (``training.sampling``) at first / every n epochs / every n steps."""

    def __init__(
        self,
        config: StudioConfig,
        accelerator: Any,
        events: EventWriter,
        transformer: torch.nn.Module,
        dtype: torch.dtype,
    ) -> None:
        self.config, self.accelerator, self.events = config, accelerator, events
        self.transformer, self.dtype = transformer, dtype
        self.device = next(transformer.parameters()).device
        self.enabled = bool(config.sample_prompts)
        self.prepared: Any = None
        self.vae: Any = None
        self.last_step = -1
        self.weights: Any = contextlib.nullcontext  # e.g. the EMA's swapped_in (--ema_for_eval)
        if self.enabled and accelerator.is_main_process:
            from ..data.prompt_files import parse_sample_prompts
            from ..models.loading import load_vae
            from . import sampling

            prompts = parse_sample_prompts(config.sample_prompts)  # type: ignore[arg-type]
            self.prepared = sampling.prepare_sample_embeddings(config, prompts)
            self.vae = load_vae(config.vae, dtype=dtype, device="cpu")  # type: ignore[arg-type]
        accelerator.wait_for_everyone()

    def maybe(self, step: int, *, first: bool = False, epoch_end: int | None = None) -> None:
        """Sample if this point is due (every process must call it at the same points)."""
        cfg = self.config
        due = (
            self.enabled
            and step != self.last_step
            and (
                (first and cfg.sample_at_first)
                or (
                    epoch_end is not None
                    and cfg.sample_every_n_epochs
                    and epoch_end % cfg.sample_every_n_epochs == 0
                )
                or (
                    not first
                    and epoch_end is None
                    and cfg.sample_every_n_steps
                    and step % cfg.sample_every_n_steps == 0
                )
            )
        )
        if not due:
            return
        self.last_step = step
        if self.accelerator.is_main_process:
            from . import sampling

            with self.weights():
                sampling.sample_images(
                    self.transformer,
                    self.vae,
                    self.prepared,
                    sampling.sample_dir(cfg.output_dir),
                    cfg.output_name,
                    step,
                    self.events,
                    self.device,
                    self.dtype,
                )
        self.accelerator.wait_for_everyone()


# ---- the run -------------------------------------------------------------------------------------------
def make_accelerator(config: StudioConfig) -> Any:
    """accelerate's Accelerator for --mixed_precision (DDP when launched with several processes)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    if config.mixed_precision == "fp16" and not cuda:
        raise ConfigError(
            "--mixed_precision fp16 needs a CUDA GPU; use --mixed_precision no (or bf16) on the CPU"
        )
    # The last block's text-stream outputs do not reach the loss, so their LoRA layers get no gradient; the
    # buffers (fp8 weights, alphas, RoPE tables) never change, so DDP need not re-broadcast them every step.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    from accelerate.state import AcceleratorState, PartialState

    if AcceleratorState._shared_state and PartialState().num_processes == 1:
        # A second run in one process (tests, notebooks) may use another precision: start afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=config.mixed_precision, cpu=not cuda, kwargs_handlers=[ddp])


def train(config: StudioConfig, events: EventWriter) -> dict[str, Any]:
    """Train a LoRA as `config` says; returns a summary (steps, final loss average, final file)."""
    from accelerate.utils import set_seed

    started_at = time.time()
    acc = make_accelerator(config)
    main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes
    device = torch.device("cpu") if acc.device.type == "cpu" else acc.device  # DDP on CPUs says "cpu:N"
    if not main:
        events.close()  # one process reports; the others only train
    set_seed(config.seed)
    output_dir = Path(config.output_dir)  # type: ignore[arg-type]
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        for stale in remove_stale_temp_files(output_dir, config.output_name or ""):
            log.info("removed %s left by an interrupted save", stale)

    # data: cached latents and text embeddings, bucketed batches in a seeded order
    items = collect_items(config, events)
    held_out = collect_validation_items(config, events) if config.validation_dataset_config else []
    sampler = EpochBatchSampler(groups_of(items), config.seed, rank, world)
    workers = config.max_data_loader_n_workers
    loader = make_loader(items, sampler, config.is_edit, workers, config.persistent_data_loader_workers)
    ga = config.gradient_accumulation_steps
    plan = plan_steps(len(sampler), ga, config.max_train_steps, config.max_train_epochs)
    log.info(
        "%d images, %d batches and %d steps per epoch, %d steps over %d epochs, %d process(es)",
        len(items),
        plan.batches_per_epoch,
        plan.steps_per_epoch,
        plan.total_steps,
        plan.epochs,
        world,
    )

    if held_out:
        log.info("%d validation images, %d timesteps each", len(held_out), len(config.validation_timesteps))

    # model: frozen DiT with LoRA layers on its block linears
    dtype = model_dtype(device, config.mixed_precision)
    from ..memory.placement import load_placed_dit

    options = MemoryOptions.from_config(config)
    dit, blocks = load_placed_dit(config.dit, config.model_version, options, device, dtype)
    args = config.network_arg_dict()
    network = apply_lora(
        dit,
        config.network_dim,
        config.network_alpha,
        config.network_dropout,
        args.get("include_patterns"),
        args.get("exclude_patterns"),
        rank_dropout=float(args.get("rank_dropout", 0)),
        module_dropout=float(args.get("module_dropout", 0)),
        target_set=args.get("targets"),
    )
    if args.get("verbose", "").lower() in ("1", "true", "yes"):
        log.info("LoRA modules: %s", ", ".join(network.layers))
    if config.network_weights:
        network.load_weights(config.network_weights)
    memory = configure_dit(dit, blocks, options, device, training=True)  # checkpointing, attention, swap, compile
    dit.train()

    ratio = float(args["loraplus_lr_ratio"]) if "loraplus_lr_ratio" in args else None
    optimizer = create_optimizer(
        config.optimizer_type,
        network.param_groups(config.learning_rate, ratio),
        config.learning_rate,
        config.optimizer_arg_dict(),
    )
    scheduler = create_scheduler(
        config.lr_scheduler,
        optimizer,
        plan.total_steps,
        config.lr_warmup_steps,
        config.lr_scheduler_num_cycles,
        config.lr_scheduler_power,
    )
    model, optimizer = memory.prepare(acc, dit, optimizer)  # swapped weights stay where `blocks` says
    generator = torch.Generator(device).manual_seed(config.seed + 1_000_003 * rank)  # t and noise
    timesteps = fm.TimestepConfig.from_config(config)
    if (note := fm.ignored_weighting(timesteps)) and main:
        events.warning(note)
    trainer = Trainer(
        acc,
        model,
        network,
        optimizer,
        scheduler,
        timesteps,
        generator,
        dtype,
        config.max_grad_norm,
        device,
        LoraEma(network, config.ema_decay, config.ema_on_cpu) if config.ema_decay is not None else None,
    )

    progress = Progress()
    if config.resume:
        progress, saved = load_state(
            config.resume, network, optimizer, scheduler, getattr(acc, "scaler", None), generator, rank
        )
        log.info("resumed from %s at step %d (epoch %d)", config.resume, progress.step, progress.epoch + 1)
        if trainer.ema is not None:
            resume_ema(trainer.ema, Path(config.resume), events)
        if saved.get("world_size", 1) != world:
            events.warning(
                f"--resume: the state was saved by {saved.get('world_size')} process(es), this run "
                f"has {world}; the data order of the current epoch differs from an uninterrupted run"
            )
    tb = None
    if config.log_with == "tensorboard" and config.logging_dir:
        tb = tensorboard_dir(config.logging_dir, config.output_name or "run")
    tracker = TrainTracker(
        events, plan.total_steps, plan.steps_per_epoch, main, tb, progress.step, progress.loss_window
    )
    saver = Checkpointer(config, acc, trainer, events, started_at)
    samples = SampleHook(config, acc, events, dit, dtype)
    validation = Validator(config, acc, dit, held_out, timesteps, device, dtype, events, tracker.validation)
    if trainer.ema is not None and config.ema_for_eval:  # samples and validation see the averaged weights
        validation.weights = samples.weights = trainer.ema.swapped_in
    name = config.output_name

    def checkpoint(stem: str, epoch: int) -> Path:
        progress.loss_window = list(tracker.window)  # a resumed run continues the moving average
        value = validation.at(progress.step, epoch)  # each LoRA file gets its own value (None: no data)
        return saver.save(stem, progress, epoch, value)

    if progress.step == 0:
        samples.maybe(0, first=True)
    for epoch in range(progress.epoch, plan.epochs):
        sampler.set_epoch(epoch, skip_batches=progress.step_in_epoch * ga)
        for micro_batches in chunked(loader, ga):
            if progress.step >= plan.total_steps:  # also when resuming a finished run
                break
            loss, t = trainer.step(micro_batches)
            progress.step += 1
            progress.step_in_epoch += 1
            tracker.step(progress.step, epoch + 1, loss, current_lrs(optimizer), t)
            if config.save_every_n_steps and progress.step % config.save_every_n_steps == 0:
                checkpoint(f"{name}-step{progress.step:08d}", epoch + 1)
            validation.maybe(progress.step, epoch + 1)
            samples.maybe(progress.step)
        if progress.step_in_epoch >= plan.steps_per_epoch:  # the epoch ran to its end
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            tracker.end_epoch(progress.step, epoch + 1)
            if config.save_every_n_epochs and (epoch + 1) % config.save_every_n_epochs == 0:
                checkpoint(f"{name}-{epoch + 1:06d}", epoch + 1)
            validation.maybe(progress.step, epoch + 1, epoch_end=epoch + 1)
            samples.maybe(progress.step, epoch_end=epoch + 1)
        if progress.step >= plan.total_steps:
            break

    final = checkpoint(str(name), progress.epoch)
    memory.close()
    if world > 1:  # equal on every process when DDP kept the replicas in step
        checksum = sum(float(p.double().sum()) for p in network.parameters())
        log.info("process %d: LoRA weights checksum %.10e", rank, checksum)
    tracker.close(progress.step)
    return {"steps": progress.step, "loss_avg": tracker.loss_avg, "lora": str(final)}


def resume_ema(ema: LoraEma, folder: Path, events: EventWriter) -> None:
    """Continue the EMA of a state folder; a state saved without one starts the average at the resumed weights."""
    from safetensors.torch import load_file

    file = folder.expanduser() / EMA_FILE
    if not file.is_file():
        events.warning(f"--resume: {folder} holds no EMA; the average starts again from the resumed weights")
        ema.shadow = [p.detach().to(s.device, torch.float32, copy=True) for s, p in zip(ema.shadow, ema.params, strict=True)]
        return
    ema.load_state_dict(load_file(str(file)))
