"""Issue 14's gallery figures: the first screen of a 2,000-image dataset, thumbnail time, server memory.

Generates N photo-sized JPEGs (default 2,000 at 768x512, captions beside 90% of them) in a temporary
workspace, starts the web UI app in this process (Flask's test client: no network in the figures) and
measures:

* first screen: ``GET /api/gallery/items?limit=40`` on a cold server (the listing is built: every image
  header probed, every cache state checked) plus the first 40 thumbnails, made on first request;
* the same screen again (listing kept, thumbnails cached in WORKSPACE/.thumbs);
* a scroll step: the next page of 40 items and their (new) thumbnails;
* thumbnail generation time per image (mean and max over the thumbnails made);
* the process's resident memory (VmRSS now and its peak) after these requests.

Usage: python bench/gallery_bench.py [--images 2000] [--size 768x512] [--keep DIR]   (prints Markdown)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from PIL import Image, ImageDraw  # noqa: E402

PAGE = 40


def make_dataset(root: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` JPEGs with shapes on a gradient and captions beside most; returns the TOML."""
    images = root / "images"
    images.mkdir(parents=True)
    rng = random.Random(0)
    base = Image.linear_gradient("L").resize(size).convert("RGB")
    for i in range(count):
        w, h = size if i % 3 else (size[1], size[0])
        image = base.resize((w, h))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.randrange(w), rng.randrange(h)
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse((x, y, x + w // 5, y + h // 5), fill=colour)
        image.save(images / f"photo_{i:05d}.jpg", quality=88)
        if i % 10:
            (images / f"photo_{i:05d}.txt").write_text(f"a photo of shapes number {i}", encoding="utf-8")
    toml = root / "bench.toml"
    toml.write_text(
        "[general]\nresolution = [1024, 1024]\nenable_bucket = true\n"
        '[[datasets]]\nimage_directory = "images"\ncache_directory = "cache"\n',
        encoding="utf-8",
    )
    return toml


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def screen(client, toml: Path, offset: int) -> tuple[float, float, list[float]]:  # type: ignore[no-untyped-def]
    """(items seconds, total seconds, per-thumbnail seconds) of one screen of PAGE items."""
    start = time.perf_counter()
    res = client.get("/api/gallery/items", query_string={"path": str(toml), "offset": offset, "limit": PAGE})
    assert res.status_code == 200, res.get_json()
    listed = time.perf_counter() - start
    thumbs = []
    for item in res.get_json()["items"]:
        t = time.perf_counter()
        got = client.get(item["thumb"])
        assert got.status_code == 200
        thumbs.append(time.perf_counter() - t)
    return listed, time.perf_counter() - start, thumbs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--keep", help="build the dataset here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    w, h = (int(v) for v in args.size.lower().split("x"))
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gallery-bench-"))
    try:
        t = time.perf_counter()
        toml = make_dataset(root / "ws" / "data", args.images, (w, h))
        made = time.perf_counter() - t
        rss_before = rss_mib()[0]
        from qwen_image_studio.webui.app import create_app, studio_of

        app = create_app(root / "ws")
        client = app.test_client()
        cold_items, cold_total, cold_thumbs = screen(client, toml, 0)
        warm_items, warm_total, _ = screen(client, toml, 0)
        next_items, next_total, next_thumbs = screen(client, toml, PAGE)
        rss, peak = rss_mib()
        studio_of(app).close()
        made_thumbs = cold_thumbs + next_thumbs
        print(f"### Gallery, {args.images} images ({w}x{h} JPEG), {os.cpu_count()} cores, one process\n")
        print(f"(dataset generated in {made:.1f} s; Flask test client, so no network time)\n")
        print("| measure | value |\n|---|---|")
        print(f"| first screen, cold: items (listing built) | {cold_items * 1000:.0f} ms |")
        print(f"| first screen, cold: items + {PAGE} thumbnails made | {cold_total * 1000:.0f} ms |")
        print(
            f"| first screen again (listing kept, thumbnails cached) | {warm_total * 1000:.0f} ms "
            f"(items {warm_items * 1000:.0f} ms) |"
        )
        print(
            f"| next screen: items + {PAGE} new thumbnails | {next_total * 1000:.0f} ms "
            f"(items {next_items * 1000:.0f} ms) |"
        )
        mean = sum(made_thumbs) / len(made_thumbs)
        print(
            f"| thumbnail generation per image (256 px WebP) | {mean * 1000:.1f} ms mean, "
            f"{max(made_thumbs) * 1000:.1f} ms max |"
        )
        print(
            f"| server RSS after these requests | {rss:.0f} MiB (peak {peak:.0f} MiB; "
            f"{rss_before:.0f} MiB before the app was imported) |"
        )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
