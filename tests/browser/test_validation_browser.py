"""The validation loss in the web UI (headless Debian Chromium): the demo's pipeline draws the validation
curve beside the training loss, and the job's LoRA list marks the file with the lowest validation loss.

The demo's text-to-image configuration has a validation dataset (two images) evaluated every epoch and at
every save. Screenshot: artifacts/screenshots/validation-loss.png.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from test_studio_browser import Studio, english_tab, running_studio, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright import sync_api  # noqa: E402

PIPELINE_TIMEOUT_MS = 300_000


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("validation") / "ws", "--no-tensorboard") as server:
        yield server


def test_the_chart_shows_both_curves_and_the_best_lora_is_marked(studio: Studio) -> None:
    with english_tab(studio.url) as page:
        _run_demo(page)
        chart = page.locator("#loss-chart")
        sync_api.expect(chart).to_have_attribute("data-validation-points", "2", timeout=20_000)
        assert chart.get_attribute("data-points") == "12"  # 2 epochs of 6 steps; validated at steps 6, 12
        legend = page.locator("#loss-chart .u-legend .u-series")
        for label in ("loss", "average loss", "validation loss"):  # the legend names every curve
            sync_api.expect(legend.filter(has_text=label).first).to_be_visible()
        files = page.locator("#files li")
        sync_api.expect(files).to_have_count(3)
        values = {
            li.locator("a").inner_text(): float(li.get_attribute("data-validation-loss") or "nan")
            for li in files.all()
        }
        assert set(values) == {"demo_t2i-000001.safetensors", "demo_t2i-000002.safetensors", "demo_t2i.safetensors"}
        assert values["demo_t2i-000002.safetensors"] == values["demo_t2i.safetensors"]  # the same weights
        best = min(values.values())
        marked = page.locator("#files li.best-validation")
        expected = sorted(name for name, value in values.items() if value == best)
        assert sorted(li.locator("a").inner_text() for li in marked.all()) == expected
        sync_api.expect(marked.first).to_contain_text("lowest validation loss")
        for li in files.all():
            assert "validation loss " in li.inner_text()
        page.locator("#loss-chart").scroll_into_view_if_needed()
        shot(page, "validation-loss", full_page=True)
        page.select_option("#lang-select", "zh-CN")
        sync_api.expect(marked.first).to_contain_text("验证损失最低")
        sync_api.expect(legend.filter(has_text="验证损失")).to_have_count(1)
        page.select_option("#lang-select", "en")


def _run_demo(page: Any) -> None:
    """Load the text-to-image demo and run its full pipeline to the end (✅ ✅ ✅)."""
    page.click("[data-demo='demo-t2i']")
    sync_api.expect(page.locator("#config-name")).to_have_value("demo-t2i")
    page.click("#tab-btn-jobs")
    page.click("[data-run='pipeline']")
    page.wait_for_function(
        "() => { const s = document.querySelector('#job-summary');"
        " return s && ['done','failed','stopped','lost'].includes(s.dataset.status); }",
        timeout=PIPELINE_TIMEOUT_MS,
    )
    statuses = page.eval_on_selector_all("#job-stages li", "items => items.map(li => li.dataset.status)")
    assert statuses == ["done", "done", "done"], page.inner_text("#job-body")
