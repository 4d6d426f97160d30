"""The dataset gallery in headless Debian Chromium (issue 14): the demo dataset's images with their captions
and crop outlines; a caption edited inline survives a reload and is undone; a trigger word added to every
caption with a preview, then undone; an edit pair shown side by side. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_studio_browser import Studio, english_tab, ready, running_studio, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("gallery") / "ws", "--no-tensorboard") as server:
        yield server


@pytest.fixture(scope="module")
def page(studio: Studio) -> Iterator[Any]:
    with english_tab(studio.url) as tab:
        yield tab


def open_gallery(page: Any, toml: Path) -> Any:
    page.click("#tab-btn-dataset")
    page.fill("#dataset-path", str(toml))
    page.click("#gal-load")
    cards = page.locator("#gal-grid .gal-card")
    sync_api.expect(cards).to_have_count(6)
    return cards


def captions(page: Any) -> list[str]:
    return page.eval_on_selector_all("#gal-grid .gal-caption", "els => els.map(e => e.value)")


def test_edit_a_caption_reload_and_undo(page: Any, studio: Studio) -> None:
    toml = studio.workspace / "demo" / "dataset" / "dataset_t2i.toml"
    cards = open_gallery(page, toml)
    sync_api.expect(page.locator("#gal-status")).to_have_text("6 of 6 shown (6 images in the dataset)")
    first = cards.first
    name = first.get_attribute("data-image")
    assert name is not None
    caption_file = Path(name).with_suffix(".txt")
    original = caption_file.read_text(encoding="utf-8").strip()
    assert first.locator(".gal-caption").input_value() == original
    assert first.locator(".gal-crop").count() == 1  # the crop training keeps, outlined
    sync_api.expect(first.locator(".gal-meta")).to_contain_text("cache:")
    page.wait_for_function(  # every thumbnail is a real image the server made
        "() => [...document.querySelectorAll('#gal-grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.evaluate("document.getElementById('gallery-title').scrollIntoView()")
    shot(page, "gallery-01-dataset")

    first.locator(".gal-caption").fill("a hand-written caption")
    first.locator(".gal-caption").press("Control+Enter")
    sync_api.expect(first.locator(".gal-saved")).to_have_text("saved")
    assert caption_file.read_text(encoding="utf-8").strip() == "a hand-written caption"

    page.reload()
    ready(page)
    cards = open_gallery(page, toml)
    sync_api.expect(cards.first.locator(".gal-caption")).to_have_value("a hand-written caption")
    page.click("#gal-undo")
    sync_api.expect(page.locator("#gal-status")).to_have_text("Undone: 1 caption(s) put back.")
    sync_api.expect(page.locator("#gal-grid .gal-card").first.locator(".gal-caption")).to_have_value(original)
    assert caption_file.read_text(encoding="utf-8").strip() == original


def test_a_trigger_word_for_every_caption_with_preview_and_undo(page: Any, studio: Studio) -> None:
    toml = studio.workspace / "demo" / "dataset" / "dataset_t2i.toml"
    open_gallery(page, toml)
    before = captions(page)
    page.click("#gal-bulk summary")
    page.select_option("#gal-bulk-op", "prepend")
    page.fill("#gal-bulk-text", "sks")
    page.click("#gal-bulk-preview")
    result = page.locator("#gal-bulk-result")
    sync_api.expect(result).to_contain_text("6 caption(s) would change (0 unchanged, 0 without a caption):")
    assert result.locator("li").count() == 6
    assert captions(page) == before  # a preview writes nothing
    apply = page.locator("#gal-bulk-apply")
    sync_api.expect(apply).to_have_text("Apply to 6 caption(s)")
    shot(page, "gallery-02-bulk-preview")
    apply.click()
    sync_api.expect(result).to_contain_text("6 caption(s) changed.")
    sync_api.expect(page.locator("#gal-grid .gal-card")).to_have_count(6)
    assert captions(page) == [f"sks, {c}" for c in before]
    page.click("#gal-undo")
    sync_api.expect(page.locator("#gal-status")).to_have_text("Undone: 6 caption(s) put back.")
    sync_api.expect(page.locator("#gal-grid .gal-card")).to_have_count(6)
    assert captions(page) == before


def test_an_edit_pair_is_shown_side_by_side(page: Any, studio: Studio) -> None:
    cards = open_gallery(page, studio.workspace / "demo" / "dataset" / "dataset_edit.toml")
    first = cards.first
    controls = first.locator(".gal-pic.control")
    assert controls.count() >= 1
    sync_api.expect(controls.first.locator("figcaption")).to_contain_text("control 0:")
    # every thumbnail is a real image the server made
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gal-grid img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)"
    )
    first.scroll_into_view_if_needed()
    shot(page, "gallery-03-edit-pairs")


def test_automatic_captions_preview_then_the_whole_dataset_then_undo(page: Any, studio: Studio) -> None:
    """The captioning section of the Dataset tab (the form's own fields): a preview on three images writes
    nothing; captioning the dataset (the demo's text encoder is the VLM) writes every caption with the
    trigger word, the gallery shows them, and one Undo puts every previous caption back byte for byte."""
    toml = studio.workspace / "demo" / "dataset" / "dataset_t2i.toml"
    open_gallery(page, toml)
    files = sorted((studio.workspace / "demo" / "dataset" / "images").glob("*.txt"))
    before = {p: p.read_bytes() for p in files}
    panel = page.locator("#caption-panel")
    template = panel.locator("#f-caption_template")
    assert template.locator("option").all_inner_texts() == ["detailed", "short", "tags", "style_neutral"]
    template.select_option("tags")
    panel.locator("#f-trigger_word").fill("sks")
    panel.locator("#f-overwrite_captions").check()
    preview = panel.locator("#cap-preview")
    sync_api.expect(preview).to_have_text("Preview on 3 images")
    preview.click()
    sync_api.expect(page.locator("#cap-job")).to_have_attribute("data-status", "done", timeout=120_000)
    cards = panel.locator("#cap-results .cap-card")
    sync_api.expect(cards).to_have_count(3)
    sync_api.expect(panel.locator("#cap-results")).to_contain_text("nothing was written")
    assert all(text.startswith("sks") for text in cards.locator(".cap-text").all_inner_texts())
    assert {p: p.read_bytes() for p in files} == before  # a preview writes nothing
    page.wait_for_function(
        "() => [...document.querySelectorAll('#cap-results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    page.evaluate("document.getElementById('caption-title').scrollIntoView()")
    shot(page, "captions-01-preview")

    page.once("dialog", lambda dialog: dialog.accept())
    panel.locator("#cap-run").click()
    sync_api.expect(page.locator("#cap-job")).to_contain_text("Caption images", timeout=10_000)
    sync_api.expect(page.locator("#cap-job")).to_have_attribute("data-status", "done", timeout=120_000)
    sync_api.expect(panel.locator("#cap-results")).to_contain_text("6 caption(s) written")
    page.wait_for_function(  # the gallery reloads with the new captions
        "() => [...document.querySelectorAll('#gal-grid .gal-caption')].length === 6 && "
        "[...document.querySelectorAll('#gal-grid .gal-caption')].every(e => e.value.startsWith('sks'))"
    )
    assert all(p.read_text(encoding="utf-8").startswith("sks") for p in files)
    shot(page, "captions-02-written")
    page.click("#gal-undo")
    sync_api.expect(page.locator("#gal-status")).to_have_text("Undone: 6 caption(s) put back.")
    assert {p: p.read_bytes() for p in files} == before
