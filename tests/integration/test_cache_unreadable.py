"""The caching stages on a dataset whose files turn unreadable: the real cause is reported per item, the
items are skipped and counted, the stage exits 0 (as the reference trainer goes on) and their earlier
cache files are never deleted as stale."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import train_support as ts
from PIL import Image

from qwen_image_studio.data.inspect import format_report, inspect_dataset
from qwen_image_studio.events import read_events
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.stages.runner import main as run_stage


def _snapshot(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(cache.iterdir())}


def _stages(demo: Path, toml: Path, events: Path) -> tuple[list[str], list[str]]:
    m = ts.models(demo)
    common = ["--dataset_config", str(toml), "--device", "cpu", "--events_file", str(events)]
    return [*common, "--vae", str(m["vae"])], [*common, "--text_encoder", str(m["te"])]


def _metrics(events: Path) -> list[dict]:
    return [e for e in read_events(events)[0] if e["type"] == "metric"]


def test_unreadable_caption_and_images_are_skipped_and_keep_their_caches(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "ws" / "dataset" / "images"
    shutil.copytree(demo / "dataset", tmp_path / "ws" / "dataset")
    with Image.open(images / "demo_03.png") as im:  # a JPEG: a truncated one passes the header check
        im.convert("RGB").save(images / "demo_03.jpg", quality=95)
    (images / "demo_03.png").unlink()
    toml = ts.dataset_toml(tmp_path / "ws", tmp_path, edit=False, batch_size=2)
    cache = tmp_path / "cache"
    events = tmp_path / "events.jsonl"
    latents, text = _stages(demo, toml, events)
    assert run_stage(Stage.CACHE_LATENTS, latents) == 0
    assert run_stage(Stage.CACHE_TEXT, text) == 0
    before = _snapshot(cache)
    assert len(before) == 12

    caption = images / "demo_01.txt"
    caption.write_bytes(b"\xff\xfe bad")
    png = images / "demo_02.png"
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    jpg = images / "demo_03.jpg"
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    corrupt = [n for n in before if n.startswith(("demo_01_", "demo_02_", "demo_03_"))]
    assert len(corrupt) == 6

    for flags in ([], ["--skip_existing"]):
        capsys.readouterr()
        assert run_stage(Stage.CACHE_LATENTS, [*latents, *flags]) == 0
        assert run_stage(Stage.CACHE_TEXT, [*text, *flags]) == 0
        log = capsys.readouterr().err
        after = _snapshot(cache)
        assert sorted(after) == sorted(before), "no cache file is deleted (nor added)"
        for name in corrupt:
            if name != "demo_03_qi_te.safetensors":  # its caption is fine: the text stage encodes it again
                assert after[name] == before[name], name
        assert f"caption {caption} is not UTF-8 text (byte 0xff at offset 0)" in log
        assert "lack caption" not in log
        assert f"image {png} cannot be read (" in log
        assert f"image {jpg} cannot be read (image file is truncated" in log
        written = (0, 0) if flags else (3, 4)
        summary = "item(s) skipped as unreadable (see the warnings above; their cache files are kept)"
        assert f"latent caches: {written[0]} written, 3 {summary}, 0 stale removed" in log, log
        assert f"text caches: {written[1]} written, 2 {summary}, 0 stale removed" in log, log
        latent_metric, text_metric = _metrics(events)[-2:]
        assert latent_metric["skipped"] == 3 and text_metric["skipped"] == 2
        assert latent_metric["removed"] == text_metric["removed"] == 0
        assert (latent_metric["written"], text_metric["written"]) == written
        warnings = [e["message"] for e in read_events(events)[0] if e["type"] == "warning"]
        assert any(str(jpg) in w and w.endswith("skipped, its cache files are kept") for w in warnings)

    # inspect shows the same causes and calls none of the kept files stale
    report = inspect_dataset(toml)
    (s,) = report.datasets
    assert s.captions_missing == [] and [u.path for u in s.captions_unreadable] == [str(caption)]
    assert [u.path for u in s.unreadable] == [str(png)]
    assert s.stale_cache_files == [] and s.kept_cache_keys == ["demo_01", "demo_02"]
    assert not any("belong to no current image" in p or "lack caption" in p for p in report.problems)
    text_report = format_report(report)
    assert f"unreadable caption: caption {caption} is not UTF-8 text (byte 0xff at offset 0)" in text_report
    deep = inspect_dataset(toml, decode=True).datasets[0]
    assert sorted(u.path for u in deep.unreadable) == [str(png), str(jpg)]

    # once the files are fixed, --skip_existing finds the kept caches current
    shutil.copy(demo / "dataset" / "images" / "demo_01.txt", caption)
    shutil.copy(demo / "dataset" / "images" / "demo_02.png", png)
    assert run_stage(Stage.CACHE_TEXT, [*text, "--skip_existing"]) == 0
    assert _metrics(events)[-1]["written"] == 0 and _metrics(events)[-1]["skipped"] == 0


def test_jsonl_with_an_unreadable_line_removes_no_cache_file(
    demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = sorted((demo / "dataset" / "images").glob("*.png"))[:3]
    lines = [json.dumps({"image_path": str(p), "caption": f"caption {p.stem}"}) for p in images]
    listing = tmp_path / "list.jsonl"
    listing.write_text("\n".join(lines) + "\n", encoding="utf-8")
    toml = tmp_path / "jsonl.toml"
    toml.write_text(
        f"[general]\nresolution = [64, 64]\nenable_bucket = true\n[[datasets]]\n"
        f'image_jsonl_file = "{listing}"\ncache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    events = tmp_path / "events.jsonl"
    _, text = _stages(demo, toml, events)
    assert run_stage(Stage.CACHE_TEXT, text) == 0
    before = _snapshot(tmp_path / "cache")
    assert len(before) == 3
    raw = lines[1].encode().replace(b"caption ", b"caption \xff")  # not UTF-8
    listing.write_bytes(b"\n".join([lines[0].encode(), raw, b"{oops", lines[2].encode()]) + b"\n")
    capsys.readouterr()
    assert run_stage(Stage.CACHE_TEXT, [*text, "--skip_existing"]) == 0
    log = capsys.readouterr().err
    assert f"{listing} line 2: not UTF-8 text (byte 0xff at offset " in log
    assert f"{listing} line 3: not valid JSON" in log
    assert "not removing 1 text cache file(s) that match no image: 2 entry(ies)" in log
    assert _snapshot(tmp_path / "cache") == before
    assert _metrics(events)[-1]["skipped"] == 2 and _metrics(events)[-1]["removed"] == 0
    report = inspect_dataset(toml)
    assert any("may belong to the entries that cannot be read" in p for p in report.problems)
