"""Caption images with Qwen2.5-VL (``caption_images_by_qwen_vl.py``): a folder as the reference does, or
every image of a dataset TOML; edit pairs get the instruction that turns the control image(s) into the target.

Existing captions are kept unless ``--overwrite``. Each caption is announced as an ``artifact`` event
(kind ``caption``: ``path`` written, ``image``, ``caption``, the generated ``tokens``; with ``--preview N``
kind ``caption_preview`` and nothing written); progress as the caching stages report it (phase "caption
images"). A dataset's captions are written as the gallery writes them (see `CaptionStore`), so the web UI's
captioning job can be undone from the gallery.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from PIL import Image

from ..captioning.prompts import caption_prompt, with_trigger
from ..captioning.targets import JsonlDoc, Plan, Target, plan_dataset_config, plan_folder
from ..captioning.vlm import Caption, Captioner, generate_captions, load_captioner
from ..data.caption_history import CaptionHistory
from ..data.captions import CaptionConflict, CaptionEdit, CaptionWriteError, apply_edits
from ..data.images import ImageReadError, read_image
from ..devices import model_dtype, resolve_device
from ..errors import ConfigError, DatasetError
from ..events import EventWriter, ProgressTracker
from ..params.schema import StudioConfig

log = logging.getLogger(__name__)


def plan_for(config: StudioConfig) -> Plan:
    """The images to caption and where their captions go, from ``--image_dir`` or ``--dataset_config``."""
    if config.image_dir and config.dataset_config:
        raise ConfigError("--image_dir and --dataset_config: give one of them, not both")
    if config.dataset_config:
        if config.output_file:
            raise ConfigError(
                "--output_file: not used with --dataset_config (captions go where the dataset TOML keeps "
                "them: caption_extension files beside the images, or its image_jsonl_file)"
            )
        return plan_dataset_config(Path(config.dataset_config).expanduser(), config.edit_pairs)
    if not config.image_dir:
        raise ConfigError("--image_dir is required (a folder of images), or --dataset_config")
    if config.edit_pairs:
        raise ConfigError(
            "--edit_pairs needs --dataset_config: the dataset TOML names the control images "
            "(control_directory or control_path entries)"
        )
    if config.output_format == "jsonl" and not config.output_file:
        raise ConfigError("--output_file is required with --output_format jsonl (the default); or use text")
    output = Path(config.output_file).expanduser() if config.output_file else None
    return plan_folder(Path(config.image_dir).expanduser(), config.output_format, output)


def run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None:
    """Caption every image of the folder or dataset that has no caption yet (all with --overwrite); with
    --preview N only the first N of them, writing nothing."""
    plan = plan_for(config)
    for problem in plan.problems:
        events.warning(problem)
    todo = plan.todo(config.overwrite_captions)
    kept = len(plan.targets) - len(todo)
    if kept:
        log.info("%d image(s) keep their caption (--overwrite replaces them)", kept)
    if not plan.targets:
        events.warning("no images to caption")
    if config.preview_count:
        todo = todo[: config.preview_count]
    store = CaptionStore(config, events)
    written = skipped = 0
    if todo:
        device = resolve_device(config.device)
        captioner = load_captioner(
            config.caption_model or config.text_encoder,  # type: ignore[arg-type]
            device=device,
            dtype=model_dtype(device),
            fp8_vl=config.fp8_vl,
            tokenizer=config.tokenizer,
            max_new_tokens=config.max_new_tokens,
            max_size=config.max_size,
            flag="--model_path" if config.caption_model else "--text_encoder",
        )
        prompt = caption_prompt(config.prompt, config.caption_template, config.edit_pairs)
        tracker = ProgressTracker(events, total=len(todo), phase="caption images", unit="image")
        size = config.cache_batch_size or 1
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            done = store.put(_caption_batch(captioner, batch, prompt, config.trigger_word, events))
            written += done
            skipped += len(batch) - done
            tracker.advance(len(batch))
        tracker.close()
    store.close()
    if config.preview_count:
        log.info("preview: %d caption(s) made, nothing written", written)
    else:
        log.info("captions: %d written, %d kept, %d skipped", written, kept, skipped)
    events.emit("metric", step=written, written=written, kept=kept, skipped=skipped)


def _read(target: Target) -> list[Image.Image]:
    """The control images (edit pairs) then the image, decoded and oriented."""
    return [read_image(p) for p in (*target.controls, target.image)]


def _caption_batch(
    captioner: Captioner, batch: list[Target], prompt: str, trigger_word: str | None, events: EventWriter
) -> list[tuple[Target, Caption, str]]:
    """Caption one batch: (target, generated caption, text to store) of each readable image (unreadable
    ones are skipped with a warning)."""
    readable: list[tuple[Target, list[Image.Image]]] = []
    for target in batch:
        try:
            readable.append((target, _read(target)))
        except (ImageReadError, OSError) as exc:
            events.warning(f"{getattr(exc, 'path', None) or target.image} cannot be read ({exc}); skipped")
    if not readable:
        return []
    captions = generate_captions(captioner, [images for _, images in readable], prompt)
    return [
        (target, caption, with_trigger(caption.text.strip(), trigger_word))
        for (target, _), caption in zip(readable, captions, strict=True)
    ]


class CaptionStore:
    """Where captions go: nowhere with --preview (announced only); a dataset's captions as the gallery
    writes them (a caption changed on disk since the run read it is kept; with --caption_history every
    previous text is recorded as one change of this run); a folder's as the reference writes them."""

    def __init__(self, config: StudioConfig, events: EventWriter) -> None:
        self.events = events
        self.preview = bool(config.preview_count)
        self.dataset = Path(config.dataset_config).expanduser().resolve() if config.dataset_config else None
        history = config.caption_history
        self.history = CaptionHistory(Path(history).expanduser()) if history and not self.preview else None
        self.label = f"auto-captions ({'own prompt' if config.prompt else config.caption_template})"
        self.batch: int | None = None

    def put(self, results: list[tuple[Target, Caption, str]]) -> int:
        """Store (or, previewing, announce) the captions; how many were stored."""
        docs: dict[Path, JsonlDoc] = {}
        stored = 0
        for target, caption, text in results:
            if self.preview:
                log.info("%s: %s", target.image, text)
            elif target.place is not None and self.dataset is not None:
                if not self._write_dataset_caption(target, text):
                    continue
            else:
                target.write(text)
                if target.doc is not None:
                    docs[target.doc.path] = target.doc
            kind = "caption_preview" if self.preview else "caption"
            where = target.image if self.preview else target.destination
            self.events.artifact(
                kind, where, image=str(target.image), caption=text, tokens=list(caption.tokens)
            )
            stored += 1
        for doc in docs.values():
            doc.save()
        return stored

    def _write_dataset_caption(self, target: Target, text: str) -> bool:
        assert target.place is not None and self.dataset is not None
        edit = CaptionEdit(target.place, target.expected, text)
        try:
            batch = apply_edits([edit], self.history, self.dataset, self.label, self.batch)
        except CaptionConflict:
            self.events.warning(f"{target.image}: its caption changed on disk since this run read it; kept")
            return False
        except CaptionWriteError as exc:
            raise DatasetError(f"--dataset_config: {exc}") from None
        self.batch = batch if batch is not None else self.batch
        return True

    def close(self) -> None:
        """Forget a history change that recorded nothing."""
        if self.history is not None and self.batch is not None:
            self.history.drop_unwritten(self.batch)
