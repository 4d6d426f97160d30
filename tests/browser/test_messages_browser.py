"""Messages in headless Debian Chromium: a refused Run lists each problem once under its own headline, a bad
number reads the same next to its field and after Save, a pasted command line reports every bad flag, and a
dataset-name clash names the dataset. Reuses the server, browser and page of test_studio_browser.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_studio_browser as base
from playwright import sync_api
from test_studio_browser import Studio, load_config, shot

# The same module-scoped fixtures: one server on a demo workspace, one browser, one page.
studio, browser, page = base.studio, base.browser, base.page

pytestmark = pytest.mark.browser

RUN_HEAD = "The run did not start: fix these first."


def visible_count(page: Any, text: str) -> int:
    """How often `text` shows on the page (hidden tabs and dialogs do not count)."""
    return page.inner_text("body").count(text)


def run_pipeline(page: Any) -> Any:
    page.click("#tab-btn-jobs")
    box = page.locator("#run-problems")
    page.evaluate("() => document.querySelector('#run-problems').replaceChildren()")
    page.click("[data-run='pipeline']")
    sync_api.expect(box).not_to_be_empty()
    return box


def test_a_refused_run_shows_each_problem_once(page: Any) -> None:
    load_config(page, "demo-t2i")
    page.fill("#f-dit", "")
    sync_api.expect(page.locator("#p-dit")).to_have_text("--dit is required")
    box = run_pipeline(page)
    lines = box.inner_text().split("\n")
    assert [line for line in lines if line] == [RUN_HEAD, "--dit is required"]
    assert visible_count(page, "--dit is required") == 1
    assert "nothing was saved" not in page.inner_text("body")
    shot(page, "msg-refused-run")
    box.locator(".goto").click()  # leads to the field: its own message, and the form's summary once
    sync_api.expect(page.locator("#tab-config")).to_be_visible()
    assert page.inner_text("#form-summary").count("--dit is required") == 1
    assert visible_count(page, "--dit is required") == 2  # the field's message and the summary


def test_a_bad_number_reads_the_same_at_the_field_after_save_and_run(page: Any) -> None:
    load_config(page, "demo-t2i")
    said = "--network_dim: abc is not a whole number; allowed at least 1"
    page.fill("#f-network_dim", "abc")
    sync_api.expect(page.locator("#p-network_dim")).to_have_text(said)  # the form's own check, instantly
    page.fill("#config-name", "msg bad number")
    page.click("#btn-save")
    status = page.locator("#status")
    sync_api.expect(status).to_have_text("The values have problems; nothing was saved.")
    assert page.inner_text("#form-summary").count(said) == 1
    assert visible_count(page, said) == 2  # the field and the summary; the banner does not repeat it
    assert page.locator("#config-list option[value='msg bad number']").count() == 0
    box = run_pipeline(page)
    assert [line for line in box.inner_text().split("\n") if line] == [RUN_HEAD, said]
    assert visible_count(page, said) == 1
    page.click("#tab-btn-config")
    page.fill("#f-learning_rate", "banana")
    sync_api.expect(page.locator("#p-learning_rate")).to_have_text(
        "--learning_rate: banana is not a number; allowed above 0"
    )
    load_config(page, "demo-t2i")


def test_a_pasted_command_reports_every_bad_flag(page: Any) -> None:
    page.click("#btn-import")
    page.fill("#import-cli", "python qwen_image_train_network.py --learning_rate banana --foo 3")
    page.click("#import-cli-load")
    error = page.locator("#import-error")
    sync_api.expect(error).not_to_be_empty()
    assert error.inner_text().split("\n") == [
        "The command line was not loaded: fix these first.",
        "unrecognized arguments: --foo (not a flag of qwen_image_train_network.py)",
        "--learning_rate: banana is not a number; allowed above 0",
    ]
    shot(page, "msg-pasted-command")
    page.click("#import-dialog button[value='close']")
    sync_api.expect(page.locator("#import-dialog")).not_to_be_visible()


def test_a_dataset_name_clash_names_the_dataset(page: Any, studio: Studio) -> None:
    page.click("#tab-btn-dataset")
    images = studio.workspace / "demo" / "dataset" / "images"
    result = page.locator("#ds-create-result")
    for _ in range(2):
        page.fill("#ds-name", "msg-clash")
        page.fill("#ds-images", str(images))
        page.click("#ds-create")
        sync_api.expect(result).not_to_be_empty()
    target = studio.workspace / "datasets" / "msg-clash.toml"
    sync_api.expect(result).to_contain_text("A dataset file named “msg-clash” exists already.")
    sync_api.expect(result).to_contain_text(f"{target} exists already")
    assert "configuration" not in result.inner_text()
