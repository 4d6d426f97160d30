"""Compare grids for `generate`: one column per LoRA file (``--grid_loras``, e.g. every epoch of a run), one
row per strength (``--grid_strengths``) or else per prompt, every cell at the same seed.

The DiT is loaded once with no LoRA merged; each cell applies its one LoRA as output hooks
(`models.lora_hooks`), so a grid of N cells costs N renders, not N model loads. The cells are written as
usual (``..._r{row}_c{col}.png``, artifact kind ``image``) and composed into ``grid_{time}.png`` with the
column (file name) and row (strength or prompt) labels (artifact kind ``grid``; its PNG text chunks list
the rows and columns). When the LoRA files carry a validation loss (training with
``--validation_dataset_config`` writes it into each file's header), each column label shows it and the
column with the lowest one is marked (a star before its name and a green frame).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from ..atomic import atomic_write
from ..errors import ConfigError
from ..events import EventWriter
from ..models.lora_apply import read_lora
from ..models.lora_hooks import LoraHooks
from ..models.lora_info import read_header, validation_loss_of
from ..params.schema import StudioConfig
from ..training.sampling import GenerationOutput, PreparedSamples, generate_images

log = logging.getLogger(__name__)

LABEL_H = 28  # the label band's height and the row labels' width for cells up to MIN_CELL pixels wide
LABEL_W = 180
MIN_CELL = 256  # wider cells scale the labels with them, so they stay readable when the grid is shown small
FONT_PX = 10
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
BEST = (22, 140, 60)
FRAME = 4  # pixels of the lowest-validation column's frame


def grid_rows(config: StudioConfig, prompts: int) -> list[tuple[str, float | None, int]]:
    """(label, strength or None, prompt index) per row: the strengths with the first prompt, else every
    prompt at the --lora_multiplier (1.0 when none)."""
    if config.grid_strengths:
        return [(f"strength {m:g}", m, 0) for m in config.grid_strengths]
    return [(f"prompt {i + 1}", None, i) for i in range(prompts)]


def render_grid(
    config: StudioConfig,
    prepared: PreparedSamples,
    dit: Any,
    vae: Any,
    events: EventWriter,
    device: Any,
    dtype: Any,
    hooks: LoraHooks | None = None,
) -> list[Path]:
    """Render every cell and the composed grid; returns the files written (cells, then the grid)."""
    loras = [read_lora(p, flag="--grid_loras") for p in config.grid_loras]
    rows = grid_rows(config, len(prepared.prompts))
    sizes = {(p.width, p.height) for p in prepared.prompts}
    if len(sizes) > 1:
        raise ConfigError(
            "--grid_loras: every prompt of a grid needs the same size (--w/--h or --image_size)"
        )
    if config.output_type == "latent":
        raise ConfigError("--grid_loras: a compare grid is made of images; --output_type latent writes none")
    hooks = hooks or LoraHooks(dit, device, dtype)
    default = config.lora_multiplier[0] if config.lora_multiplier else 1.0
    save_path = Path(config.save_path).expanduser()  # type: ignore[arg-type]
    save_path.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    cells: list[list[Path]] = []
    written: list[Path] = []
    for r, (_, strength, index) in enumerate(rows):
        item = prepared.prompts[index]
        row = []
        for c, lora in enumerate(loras):
            multiplier = default if strength is None else strength
            hooks.set([lora], [multiplier])
            path = _free(save_path / f"{stamp}_{item.seed}_r{r}_c{c}.png")
            one = PreparedSamples(prepared.model_version, [item])
            output = GenerationOutput(  # the run's schedule and metadata choices; the cell's LoRA in its PNG
                metadata=not config.no_metadata,
                flow_shift=config.flow_shift,
                embedded_cfg_scale=config.embedded_cfg_scale,
                loras=((str(lora.path), multiplier),),
            )
            files = generate_images(
                dit, vae, one, [path], events, device, dtype, artifact_kind="image", phase="generate",
                output=output,
            )  # fmt: skip
            row.append(files[-1])
            written += files
        cells.append(row)
    hooks.clear()
    losses = [validation_loss_of(read_header(lora.path)[1]) for lora in loras]
    best = lowest(losses)
    labels = [lora.path.stem for lora in loras]
    grid = compose(cells, labels, [label for label, _, _ in rows], losses=losses, best=best)
    target = _free(save_path / f"grid_{stamp}.png")
    info: dict[str, Any] = {"columns": [str(lora.path) for lora in loras], "rows": [label for label, _, _ in rows]}
    info["prompts"] = [prepared.prompts[i].prompt for _, _, i in rows]
    info["validation_losses"], info["lowest_validation"] = losses, best
    _save(grid, target, info)
    marked = {} if best is None else {"lowest_validation": best}
    events.artifact("grid", target, rows=len(rows), columns=len(loras), **marked)
    log.info("compare grid (%d rows x %d columns) written to %s", len(rows), len(loras), target)
    return [*written, target]


def _free(path: Path) -> Path:
    n, out = 1, path
    while out.exists():
        out = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return out


def lowest(losses: list[float | None]) -> int | None:
    """The column with the lowest validation loss (the first of equal ones); None when no file has one."""
    known = [(v, i) for i, v in enumerate(losses) if v is not None]
    return min(known)[1] if known else None


def compose(
    cells: list[list[Path]],
    columns: list[str],
    rows: list[str],
    losses: list[float | None] | None = None,
    best: int | None = None,
) -> Image.Image:
    """The cell images in a grid with the column labels on top (with each file's validation loss when
    known, the lowest one starred and framed) and the row labels on the left."""
    images = [[Image.open(p).convert("RGB") for p in row] for row in cells]
    w, h = images[0][0].size
    scale = max(1.0, w / MIN_CELL)
    label_w, label_h, pad = round(LABEL_W * scale), round(LABEL_H * scale), round(4 * scale)
    grid = Image.new("RGB", (label_w + w * len(columns), label_h + h * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default(size=round(FONT_PX * scale))
    losses = losses or [None] * len(columns)
    for c, name in enumerate(columns):
        x, ink = label_w + c * w + pad, BEST if c == best else INK
        title = f"* {name}" if c == best else name
        if losses[c] is None:
            draw.text((x, 2 * pad), _fit(draw, title, w - 2 * pad, font), fill=ink, font=font)
            continue
        draw.text((x, pad // 2), _fit(draw, title, w - 2 * pad, font), fill=ink, font=font)
        note = f"val {losses[c]:.4g}" + (" (lowest)" if c == best else "")
        draw.text((x, round(15 * scale)), _fit(draw, note, w - 2 * pad, font), fill=ink, font=font)
    for r, name in enumerate(rows):
        draw.text((pad, label_h + r * h + pad), _fit(draw, name, label_w - 2 * pad, font), fill=INK, font=font)
        for c, image in enumerate(images[r]):
            grid.paste(image, (label_w + c * w, label_h + r * h))
    if best is not None:
        x0, frame = label_w + best * w, round(FRAME * scale)
        draw.rectangle((x0, label_h, x0 + w - 1, label_h + h * len(rows) - 1), outline=BEST, width=frame)
    return grid


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """The text, cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _save(image: Image.Image, path: Path, info: dict[str, Any]) -> None:
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    meta.add_text("qis_grid", json.dumps(info, ensure_ascii=False))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=meta))
