"""A new user's first hour, in headless Debian Chromium on a fresh workspace (issue 10's acceptance walk).

A first visit opens on the demo with the first-run guide; the edit demo's full pipeline ends ✅ ✅ ✅; the
text-to-image demo's pipeline run twice leaves the first job's LoRA download byte-identical; the clocks
advance while a stage runs; the job's progress never goes down (sampled every 200 ms); a refused run
lists each problem once. Screenshots of the landing, run and samples views go to artifacts/screenshots/.
"""

from __future__ import annotations

import hashlib
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from test_studio_browser import Studio, english_tab, running_studio, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright import sync_api  # noqa: E402

PIPELINE_TIMEOUT_MS = 300_000
# Watches the job's progress bar from inside the page: every value it shows, every 200 ms.
WATCH_PROGRESS = """() => {
  window.__progress = [];
  window.__progressTimer = setInterval(() => {
    const bar = document.querySelector('#progress-bar');
    const job = document.querySelector('#job-summary');
    if (bar && job && job.dataset.status === 'running') window.__progress.push(Number(bar.getAttribute('aria-valuenow')));
  }, 200);
}"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("first-hour") / "ws", "--no-tensorboard") as server:
        yield server


@pytest.fixture(scope="module")
def page(studio: Studio) -> Iterator[Any]:
    with english_tab(studio.url) as tab:
        yield tab


def download(studio: Studio, href: str) -> bytes:
    with urllib.request.urlopen(studio.url.rstrip("/") + href, timeout=30) as res:
        return res.read()


def run_pipeline(page: Any) -> int:
    """Press "Full pipeline" and return the new job's number once it has ended (progress watched)."""
    page.click("#tab-btn-jobs")
    before = page.locator("#history li").count()
    page.evaluate(WATCH_PROGRESS)
    page.click("[data-run='pipeline']")
    sync_api.expect(page.locator("#history li")).to_have_count(before + 1)
    job = int(page.locator("#history li").first.get_attribute("data-job"))
    page.wait_for_function(
        "id => { const s = document.querySelector('#job-summary');"
        " return s && s.textContent.includes('#' + id) && ['done','failed','stopped','lost'].includes(s.dataset.status); }",
        arg=job,
        timeout=PIPELINE_TIMEOUT_MS,
    )
    return job


def progress_seen(page: Any) -> list[float]:
    return page.evaluate("() => { clearInterval(window.__progressTimer); return window.__progress; }")


def stage_statuses(page: Any) -> list[str]:
    return page.eval_on_selector_all("#job-stages li", "items => items.map(li => li.dataset.status)")


def lora_links(page: Any) -> dict[str, str]:
    sync_api.expect(page.locator("#files a").first).to_be_visible()
    return page.eval_on_selector_all(
        "#files a", "links => Object.fromEntries(links.map(a => [a.textContent, a.getAttribute('href')]))"
    )


def test_a_first_visit_opens_on_the_demo_with_a_guide(page: Any) -> None:
    sync_api.expect(page.locator("#config-list")).to_have_value("demo-t2i")
    sync_api.expect(page.locator("#config-name")).to_have_value("demo-t2i")
    sync_api.expect(page.locator("#guide")).to_be_visible()
    sync_api.expect(page.locator("#form-summary .summary-ok")).to_be_visible()
    assert "is required" not in page.inner_text("#tab-config")
    # the basic fields come first; the others fold under their section's "more options"
    sync_api.expect(page.locator("#f-dit")).to_be_visible()
    sync_api.expect(page.locator("#f-discrete_flow_shift")).to_be_hidden()
    shot(page, "first-hour-landing")
    page.click("[data-guide='run']")
    sync_api.expect(page.locator("#tab-jobs")).to_be_visible()
    page.click("[data-guide='models']")
    sync_api.expect(page.locator("#f-dit")).to_be_focused()


def test_a_refused_run_lists_each_problem_once(page: Any) -> None:
    page.click("#btn-reset")  # the defaults: no models, no dataset
    sync_api.expect(page.locator("#config-name")).to_have_value("")
    page.click("#tab-btn-jobs")
    page.click("[data-run='pipeline']")
    problems = page.locator("#run-problems")
    sync_api.expect(problems).to_contain_text("--dit")
    text = page.inner_text("#tab-jobs")
    for line in {line.strip() for line in page.inner_text("#run-problems").splitlines() if "--" in line}:
        assert text.count(line) == 1, line
    assert "nothing was saved" not in text.lower()
    shot(page, "first-hour-refused-run")


def test_the_edit_demo_runs_its_whole_pipeline(page: Any) -> None:
    page.click("#tab-btn-config")
    page.click("[data-demo='demo-edit']")
    sync_api.expect(page.locator("#config-name")).to_have_value("demo-edit")
    sync_api.expect(page.locator("#form-summary .summary-ok")).to_be_visible()
    run_pipeline(page)
    assert stage_statuses(page) == ["done", "done", "done"], page.inner_text("#job-body")
    seen = progress_seen(page)
    assert seen and all(b >= a for a, b in zip(seen, seen[1:], strict=False)), seen
    sync_api.expect(page.locator("#samples img").first).to_be_visible()


def test_a_second_run_leaves_the_first_jobs_files_as_they_were(page: Any, studio: Studio) -> None:
    page.click("#tab-btn-config")
    page.click("[data-demo='demo-t2i']")
    sync_api.expect(page.locator("#config-name")).to_have_value("demo-t2i")
    first = run_pipeline(page)
    assert stage_statuses(page) == ["done", "done", "done"]
    links = lora_links(page)
    served = {name: hashlib.sha256(download(studio, href)).hexdigest() for name, href in links.items()}
    sync_api.expect(page.locator("#samples img").first).to_be_visible()
    shot(page, "first-hour-samples", full_page=True)
    # each prompt is a row, newest step first; a click enlarges, the arrows step through that prompt's steps
    page.locator("#samples img").first.click()
    dialog = page.locator("#sample-dialog")
    sync_api.expect(dialog).to_be_visible()
    sync_api.expect(page.locator("#sample-dialog-title")).to_have_text("a red square on a white background")
    sync_api.expect(page.locator("#sample-dialog-step")).to_have_text("step 12")
    shot(page, "first-hour-sample-enlarged")
    page.click("#sample-older")
    sync_api.expect(page.locator("#sample-dialog-step")).to_have_text("step 6")
    page.click("#sample-close")
    sync_api.expect(dialog).to_be_hidden()
    # the step slider marks that step in every prompt's row; the select shows one prompt's row
    rows = page.locator("#samples .sample-row").count()
    page.locator("#samples-step").fill("0")
    sync_api.expect(page.locator("#samples-step-value")).to_have_text("step 6 (1 of 2)")
    sync_api.expect(page.locator("#samples figure.at-step")).to_have_count(rows)
    assert set(page.locator("#samples figure.at-step").evaluate_all("els => els.map(e => e.dataset.step)")) == {"6"}
    if rows > 1:
        page.select_option("#samples-prompt", index=2)
        sync_api.expect(page.locator("#samples .sample-row")).to_have_count(1)
        sync_api.expect(page.locator("#samples figure.at-step")).to_have_count(1)  # the step is kept
        shot(page, "first-hour-samples-slider")
        page.select_option("#samples-prompt", index=0)
        sync_api.expect(page.locator("#samples .sample-row")).to_have_count(rows)

    # the second run: the clocks tick while a stage runs, the bar never goes down
    page.click("#tab-btn-jobs")
    page.evaluate(WATCH_PROGRESS)
    page.click("[data-run='pipeline']")
    page.wait_for_function("() => document.querySelector('#job-summary').dataset.status === 'running'")
    clocks = "() => [document.querySelector('#job-summary').textContent, document.querySelector('#job-stages li[data-status=\"running\"] .meta')?.textContent, document.querySelector('#history li .meta')?.textContent]"
    before = page.evaluate(clocks)
    page.wait_for_timeout(2_200)
    after = page.evaluate(clocks)
    if page.evaluate("() => document.querySelector('#job-summary').dataset.status") == "running":
        assert before[0] != after[0] and before[2] != after[2], (before, after)
        shot(page, "first-hour-run")
        page.select_option("#lang-select", "zh-CN")  # the live progress in Chinese too
        sync_api.expect(page.locator("#progress-text")).to_contain_text("阶段")
        page.select_option("#lang-select", "en")
    page.wait_for_function(
        "() => ['done','failed','stopped','lost'].includes(document.querySelector('#job-summary').dataset.status)",
        timeout=PIPELINE_TIMEOUT_MS,
    )
    assert stage_statuses(page) == ["done", "done", "done"]
    seen = progress_seen(page)
    assert seen and all(b >= a for a, b in zip(seen, seen[1:], strict=False)), seen

    # the first job's links still serve what they served when it finished
    page.click(f"#history li[data-job='{first}'] button")
    sync_api.expect(page.locator("#job-summary")).to_contain_text(f"#{first}")
    assert lora_links(page) == links
    sync_api.expect(page.locator("#files-folder")).to_contain_text(f"job-{first}")  # its own run folder
    again = {name: hashlib.sha256(download(studio, href)).hexdigest() for name, href in links.items()}
    assert again == served
