"""The gallery's thumbnail cache stays within its size: the least recently used thumbnails go first, a use
refreshes a thumbnail's place, and nothing but thumbnails is ever removed."""

from __future__ import annotations

import os
import time
from pathlib import Path

from PIL import Image

from qwen_image_studio.data.thumbnails import USED_EVERY_S, ensure_thumbnail, prune_thumbnails


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for i in range(count):
        path = folder / f"img_{i}.png"
        Image.effect_noise((96, 64), 40 + i).convert("RGB").save(path)
        out.append(path)
    return out


def test_the_least_recently_used_thumbnails_are_removed_beyond_the_limit(tmp_path: Path) -> None:
    cache = tmp_path / ".thumbs"
    images = _images(tmp_path / "images", 6)
    thumbs = [ensure_thumbnail(cache, image, 128) for image in images]
    now = time.time()
    for age, thumb in zip(range(6, 0, -1), thumbs, strict=True):  # thumbs[0] is the oldest
        os.utime(thumb, (now - age * 2 * USED_EVERY_S, now - age * 2 * USED_EVERY_S))
    ensure_thumbnail(cache, images[0], 128)  # used again now: it becomes the newest
    other = cache / "notes.txt"
    other.write_text("not a thumbnail", encoding="utf-8")
    sizes = {t: t.stat().st_size for t in thumbs}
    total = sum(sizes.values())
    assert prune_thumbnails(cache, total) == 0  # within the limit: nothing goes

    limit = total - 1
    removed = prune_thumbnails(cache, limit, target=0.5)
    kept = [t for t in thumbs if t.exists()]
    assert removed == len(thumbs) - len(kept) > 0
    assert sum(sizes[t] for t in kept) <= limit * 0.5
    order = [thumbs[0], *reversed(thumbs[1:])]  # newest first
    assert set(kept) == set(order[: len(kept)])  # the newest ones stay
    assert thumbs[0] in kept and thumbs[1] not in kept
    assert other.read_text(encoding="utf-8") == "not a thumbnail"
    assert ensure_thumbnail(cache, images[1], 128).is_file()  # a removed one is simply made again
