"""Compare-grid composition (`stages.generate_grid.compose`): labels grow with the cells, so a grid of
1024-pixel images shown a few hundred pixels wide still has readable names; the lowest-validation column
is framed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from qwen_image_studio.stages.generate_grid import BEST, FRAME, LABEL_H, LABEL_W, MIN_CELL, compose


def _cells(tmp_path: Path, size: int) -> list[list[Path]]:
    cells = []
    for r in range(2):
        row = []
        for c in range(2):
            path = tmp_path / f"{size}_{r}{c}.png"
            Image.new("RGB", (size, size), (90 + 60 * c, 120, 80 + 50 * r)).save(path)
            row.append(path)
        cells.append(row)
    return cells


def _ink_rows(band: np.ndarray) -> int:
    """How many pixel rows of a label band hold dark text."""
    return int((band.min(axis=2) < 128).any(axis=1).sum())


def test_labels_scale_with_the_cells(tmp_path: Path) -> None:
    names, rows = ["lora-000001", "lora-000002"], ["strength 0.5", "strength 1"]
    small = np.asarray(compose(_cells(tmp_path, 48), names, rows))
    assert small.shape == (LABEL_H + 2 * 48, LABEL_W + 2 * 48, 3)  # small cells: the fixed minimum
    big = np.asarray(compose(_cells(tmp_path, 1024), names, rows, losses=[0.5, 0.25], best=1))
    scale = 1024 / MIN_CELL
    label_h, label_w = round(LABEL_H * scale), round(LABEL_W * scale)
    assert big.shape == (label_h + 2 * 1024, label_w + 2 * 1024, 3)
    text_rows = _ink_rows(big[:label_h, label_w : label_w + 1024])  # the first column's name and value
    assert text_rows >= 2 * _ink_rows(small[:LABEL_H, LABEL_W : LABEL_W + 48]) > 0
    x0, frame = label_w + 1024, round(FRAME * scale)
    assert (big[label_h:, x0 : x0 + frame] == BEST).all()  # the lowest-validation column's frame
    assert not (big[label_h:, label_w : label_w + frame] == BEST).all()
