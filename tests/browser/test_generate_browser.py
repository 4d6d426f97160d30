"""The Generate tab in headless Debian Chromium (issue 15 items 1-2): an image with a LoRA, then another
with another strength from the same worker (the job log says the DiT was reused), the PNG's settings read
back with Pillow, and "Reuse these settings" puts them into the form. Screenshot in artifacts/screenshots/."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_studio_browser import Studio, english_tab, running_studio, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("generate") / "ws", "--no-tensorboard") as server:
        yield server


def _lora(studio: Studio) -> Path:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
    from test_generate import _tiny_lora

    return _tiny_lora(studio.workspace / "demo", studio.workspace / "my_lora.safetensors")


def _text(url: str) -> str:
    with urllib.request.urlopen(url) as res:  # noqa: S310 - the test's own server on loopback
        return res.read().decode("utf-8")


def test_generate_twice_with_one_worker_then_reuse_the_settings(studio: Studio) -> None:
    from PIL import Image

    lora = _lora(studio)
    with english_tab(studio.url) as page:
        page.click("#tab-btn-generate")
        form = page.locator("#gen-form")
        form.locator("#gen-f-prompt").fill("a red square on white")
        form.locator("#gen-f-image_size").fill("48\n48")
        form.locator("#gen-f-infer_steps").fill("3")
        form.locator("#gen-f-lora_weight").fill(str(lora))
        form.locator("#gen-f-lora_multiplier").fill("0.8")
        sync_api.expect(form.locator("#gen-f-seed")).to_be_visible()  # the seed is this tab's too
        page.click("#gen-run")
        first = page.locator(".gen-card[data-status='done']")
        sync_api.expect(first).to_have_count(1, timeout=180_000)
        form.locator("#gen-f-lora_multiplier").fill("0.3")
        page.click("#gen-run")
        sync_api.expect(page.locator(".gen-card[data-status='done']")).to_have_count(2, timeout=180_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.gen-card img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        jobs = json.loads(_text(f"{studio.url}/api/jobs"))["jobs"]
        generated = sorted((j for j in jobs if j["kind"] == "generate"), key=lambda j: j["id"])
        logs = [_text(f"{studio.url}/api/jobs/{j['id']}/log") for j in generated]
        assert "DiT loaded" in logs[0] and "DiT reused" in logs[1] and "DiT loaded" not in logs[1]
        details = json.loads(_text(f"{studio.url}/api/jobs/{generated[0]['id']}"))["job"]
        (png,) = [f["name"] for f in details["files"] if f["kind"] == "image"]
        with Image.open(Path(details["output_folder"]) / png) as im:
            assert "a red square on white" in im.text["parameters"]
        shot(page, "generate-01-results", full_page=True)

        oldest = page.locator(f".gen-card[data-job='{generated[0]['id']}']")
        oldest.locator(".gen-reuse").click()
        sync_api.expect(form.locator("#gen-f-lora_multiplier")).to_have_value("0.8")
        sync_api.expect(form.locator("#gen-f-prompt")).to_have_value("a red square on white")


def test_a_two_by_two_compare_grid_opens(studio: Studio) -> None:
    """Two LoRA files (two "epochs") x two strengths in one job: the labelled grid is shown and opens."""
    from safetensors.torch import load_file, save_file

    first = _lora(studio)
    second = studio.workspace / "my_lora_epoch2.safetensors"
    save_file({k: v * 1.5 for k, v in load_file(str(first)).items()}, str(second))
    with english_tab(studio.url) as page:
        page.click("#tab-btn-generate")
        form = page.locator("#gen-form")
        form.locator("#gen-f-prompt").fill("a blue circle")
        form.locator("#gen-f-image_size").fill("48\n48")
        form.locator("#gen-f-infer_steps").fill("3")
        form.locator("#gen-f-lora_weight").fill("")
        form.locator("#gen-f-lora_multiplier").fill("")
        form.locator("details.more summary").first.click()
        form.locator("#gen-f-grid_loras").fill(f"{first}\n{second}")
        form.locator("#gen-f-grid_strengths").fill("0.5\n1")
        page.click("#gen-run")
        card = page.locator(".gen-card.gen-grid[data-status='done']")
        sync_api.expect(card).to_have_count(1, timeout=180_000)
        link = card.locator("a.gen-grid-link")
        page.wait_for_function(
            "() => { const i = document.querySelector('.gen-grid img'); return i && i.naturalWidth > 0; }"
        )
        size = page.evaluate(
            "() => { const i = document.querySelector('.gen-grid img'); return [i.naturalWidth, i.naturalHeight]; }"
        )
        assert size == [180 + 2 * 48, 28 + 2 * 48]
        card.scroll_into_view_if_needed()
        shot(page, "generate-02-grid")
        with page.context.expect_page() as opened:
            link.click()
        grid = opened.value
        grid.wait_for_load_state()
        assert grid.url.endswith(".png") and "/samples/grid_" in grid.url
        grid.close()


def test_a_refused_request_names_the_field(studio: Studio) -> None:
    """A LoRA path that does not exist: no job starts, the tab lists the problem with the flag and the path."""
    with english_tab(studio.url) as page:
        page.click("#tab-btn-generate")
        page.locator("#gen-f-prompt").fill("a red square on white")
        page.locator("#gen-f-lora_weight").fill("models/no_such_lora.safetensors")
        before = len(json.loads(_text(f"{studio.url}/api/jobs"))["jobs"])
        page.click("#gen-run")
        problem = page.locator("#gen-problems .problem.goto")
        sync_api.expect(problem.first).to_contain_text("--lora_weight")
        sync_api.expect(problem.first).to_contain_text("no_such_lora.safetensors")
        assert len(json.loads(_text(f"{studio.url}/api/jobs"))["jobs"]) == before
        beside = page.locator("#gen-p-lora_weight")  # also beside the field itself
        sync_api.expect(beside).to_contain_text("not found")
        problem.first.click()  # the problem is a link to its field
        sync_api.expect(page.locator("#gen-f-lora_weight")).to_be_focused()
        shot(page, "generate-03-refused", full_page=True)
