"""The real app in headless Debian Chromium (Playwright), on a demo workspace the server creates itself.

One server and one browser for the module; the tests run in order, as a user would: the form and its
validation, saving and re-loading a configuration, the full pipeline to ✅ ✅ ✅ with a reload mid-run,
stopping a job (no process left), TensorBoard, and Chinese. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from qwen_image_studio.webui.jobs import procs
from qwen_image_studio.webui.jobs.logtail import display_text

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "artifacts" / "screenshots"

if not Path(CHROMIUM).exists():
    message = "Debian's chromium is not installed: apt-get install -y chromium (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)  # CI must run the browser tests, never skip them
    pytest.skip(message, allow_module_level=True)
from playwright import sync_api  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as res:
        return json.loads(res.read())


class Studio:
    """`python qwen_webui.py` on a temporary workspace, as a user starts it."""

    def __init__(self, workspace: Path, *extra: str, host_name: str = "127.0.0.1") -> None:
        self.workspace = workspace
        self.port = free_port()
        self.tb_port = free_port()
        self.url = f"http://{host_name}:{self.port}/"
        self.log = open(workspace.parent / "server.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "qwen_webui.py"),
                "--workspace",
                str(workspace),
                "--port",
                str(self.port),
                "--tensorboard_port",
                str(self.tb_port),
                "--stop_timeout",
                "5",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def api(self, path: str) -> Any:
        return get_json(self.url.rstrip("/") + path)

    def wait_ready(self, timeout: float = 300) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, (self.workspace.parent / "server.log").read_text()
            try:
                if self.api("/api/status")["demo"]["state"] == "ready":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError("the demo workspace was not created in time")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@contextmanager
def running_studio(workspace: Path, *extra: str) -> Iterator[Studio]:
    """The web UI on `workspace` (demo created), stopped afterwards."""
    server = Studio(workspace, *extra)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@contextmanager
def english_tab(url: str) -> Iterator[Any]:
    """A Chromium tab on `url`, in English from the first load; an error in the page fails the test."""
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = chromium.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
        context.add_init_script("document.cookie = 'studio_lang=en; path=/'")
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        tab.on("dialog", lambda d: d.accept())
        tab.goto(url)
        ready(tab)
        yield tab
        assert errors == []
        chromium.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("browser") / "ws") as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Any, studio: Studio) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.on("dialog", lambda d: d.accept())
    tab.goto(studio.url)
    ready(tab)
    tab.select_option("#lang-select", "en")
    yield tab
    assert errors == []
    context.close()


def ready(page: Any) -> None:
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)


def shot(page: Any, name: str, full_page: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def load_config(page: Any, name: str) -> None:
    """Choose a saved configuration and wait until the form holds it (the page sets the name field last)."""
    page.select_option("#config-list", "")  # "not saved": loads nothing, so the next choice always loads
    page.fill("#config-name", "")
    page.select_option("#config-list", name)
    page.wait_for_function("n => document.querySelector('#config-name').value === n", arg=name)
    open_all(page)


def open_all(page: Any) -> None:
    """Unfold every section and its "more options" (the page remembers what was left open)."""
    page.evaluate(
        "() => document.querySelectorAll('#config-form details:not([open]) > summary').forEach(s => s.click())"
    )


def stage_status(page: Any, stage: str) -> str | None:
    return page.get_attribute(f"#job-stages li[data-stage='{stage}']", "data-status")


def test_the_form_shows_a_validation_error(page: Any) -> None:
    load_config(page, "demo-t2i")
    page.fill("#f-network_dim", "0")
    problem = page.locator("#p-network_dim")
    sync_api.expect(problem).to_have_text("--network_dim: 0 is out of range; allowed at least 1")
    sync_api.expect(page.locator("[data-row='network_dim']")).to_have_class(re.compile(r"\bhas-error\b"))
    sync_api.expect(page.locator("#form-summary .summary-errors")).to_be_visible()
    page.locator("[data-row='network_dim']").scroll_into_view_if_needed()
    shot(page, "01-form-validation-error")
    page.fill("#f-network_dim", "4")
    sync_api.expect(problem).to_have_text("")
    # a value that works but lies outside the seed's recommended range: accepted, and said
    row = page.locator("[data-row='discrete_flow_shift']")
    sync_api.expect(row.locator(".meta")).to_contain_text("recommended: 1.0 to 5.0")
    page.fill("#f-discrete_flow_shift", "9")
    warned = page.locator("#p-discrete_flow_shift")
    sync_api.expect(warned).to_have_text(
        "--discrete_flow_shift 9.0 is outside the recommended range 1.0 to 5.0"
    )
    sync_api.expect(row).to_have_class(re.compile(r"\bhas-warn\b"))
    sync_api.expect(page.locator("#form-summary .summary-warnings")).to_contain_text(
        "Accepted, but outside the recommended range:"
    )
    assert page.locator("#form-summary .summary-errors").count() == 0
    row.scroll_into_view_if_needed()
    shot(page, "01b-form-recommended-range-warning")
    page.fill("#f-discrete_flow_shift", "2.2")
    sync_api.expect(warned).to_have_text("")
    sync_api.expect(page.locator("#vram-value")).to_contain_text("GB")


def test_save_reload_and_load_a_configuration(page: Any) -> None:
    load_config(page, "demo-t2i")
    page.fill("#f-network_dim", "6")
    page.fill("#config-name", "browser run")
    page.click("#btn-save")
    sync_api.expect(page.locator("#config-list option[value='browser run']")).to_have_count(1)
    page.reload()
    ready(page)
    load_config(page, "demo-edit")
    sync_api.expect(page.locator("#f-network_dim")).to_have_value("4")
    load_config(page, "browser run")
    sync_api.expect(page.locator("#f-network_dim")).to_have_value("6")
    # an unsaved edit survives a reload (localStorage)
    page.fill("#f-max_grad_norm", "0.5")
    page.wait_for_timeout(400)
    page.reload()
    ready(page)
    sync_api.expect(page.locator("#f-max_grad_norm")).to_have_value("0.5")
    sync_api.expect(page.locator("#dirty-flag")).to_be_visible()
    page.fill("#f-max_grad_norm", "1")
    page.click("#btn-save")  # the name is still "browser run": confirm the overwrite (dialog accepted)
    sync_api.expect(page.locator("#dirty-flag")).to_be_hidden()
    shot(page, "02-configuration")


GENERATION_ONLY = {  # inputs of the Generate tab, none in the configuration form
    "negative_prompt": "blurry",
    "infer_steps": 24,
    "guidance_scale": 3.5,
    "image_size": [512, 768],
    "save_path": "generated",
}


def test_fp8_switches_go_together(page: Any) -> None:
    load_config(page, "demo-t2i")
    base, scaled = page.locator("#f-fp8_base"), page.locator("#f-fp8_scaled")
    page.uncheck("#f-fp8_base")
    sync_api.expect(scaled).not_to_be_checked()
    page.check("#f-fp8_scaled")  # --fp8_scaled needs --fp8_base: the form ticks it too
    sync_api.expect(base).to_be_checked()
    sync_api.expect(page.locator("#form-summary .summary-ok")).to_be_visible()
    sync_api.expect(page.locator("#form-summary .summary-errors")).to_have_count(0)
    page.uncheck("#f-fp8_base")  # and unticks it with --fp8_base
    sync_api.expect(scaled).not_to_be_checked()
    sync_api.expect(page.locator("#form-summary .summary-ok")).to_be_visible()
    page.check("#f-fp8_base")  # on its own: --fp8_scaled stays as it is
    sync_api.expect(scaled).not_to_be_checked()


def test_generation_values_live_in_the_generate_tab_and_survive_the_form(
    page: Any, studio: Studio, tmp_path: Path
) -> None:
    """Generation's parameters have their inputs in the Generate tab only (none in the configuration form,
    none at all for the CLI-only ones); a configuration that has them keeps them through import, load, edit
    and save, and the save writes WORKSPACE/configs/NAME.json."""
    for name in (*GENERATION_ONLY, "lora_weight", "lora_multiplier"):
        assert page.locator(f"#config-form [data-row='{name}']").count() == 0
        assert page.locator(f"#gen-f-{name}").count() == 1
    for name in ("from_file", "save_merged_model"):
        assert page.locator(f"[data-row='{name}']").count() == 0
    sync_api.expect(page.locator("[data-row='dit'] .badge")).to_have_text("required for Train LoRA · Generate")
    params = {**studio.api("/api/configs/demo-t2i")["params"], **GENERATION_ONLY}
    source = tmp_path / "with-prompt.json"
    source.write_text(
        json.dumps(
            {"format": "qwen-image-studio-config", "version": 2, "name": "with prompt", "params": params}
        ),
        encoding="utf-8",
    )
    page.click("#btn-import")
    page.set_input_files("#import-file", str(source))
    page.click("#import-upload")
    page.wait_for_function("() => document.querySelector('#config-name').value === 'with prompt'")
    page.fill("#f-network_dim", "5")
    page.click("#btn-save")  # the same name: the overwrite is confirmed (dialog accepted)
    sync_api.expect(page.locator("#dirty-flag")).to_be_hidden()
    sync_api.expect(page.locator("#status")).to_contain_text("configs/with prompt.json")
    saved = studio.api("/api/configs/with%20prompt")["params"]
    assert saved["network_dim"] == 5 and {k: saved[k] for k in GENERATION_ONLY} == GENERATION_ONLY
    mirror = json.loads((studio.workspace / "configs" / "with prompt.json").read_text(encoding="utf-8"))
    assert mirror["name"] == "with prompt" and mirror["params"] == saved


def test_dataset_panel_inspects_the_demo_dataset(page: Any) -> None:
    page.click("#tab-btn-dataset")
    page.click("#dataset-inspect")
    report = page.locator("#dataset-report")
    sync_api.expect(report).to_contain_text("images: 6 found, 6 usable")
    sync_api.expect(report).to_contain_text("No problems found.")
    shot(page, "03-dataset")


def rendered_lines(page: Any) -> list[tuple[int, str]]:
    return page.eval_on_selector_all(
        "#log .line:not(.partial)", "els => els.map(e => [Number(e.dataset.n), e.textContent])"
    )


def file_lines(studio: Studio, job_id: int) -> list[str]:
    raw = (studio.workspace / "jobs" / str(job_id) / "log.txt").read_bytes()
    return [display_text(line) for line in raw.split(b"\n")[:-1]]


def test_full_pipeline_to_three_checks_with_a_reload_mid_run(page: Any, studio: Studio) -> None:
    load_config(page, "browser run")
    page.click("#tab-btn-jobs")
    page.click("[data-run='pipeline']")
    page.wait_for_selector("#job-stages li[data-stage='cache_latents']")
    job_id = int(page.eval_on_selector("#history li.selected", "e => e.dataset.job"))
    page.wait_for_selector(
        "#job-stages li[data-stage='cache_latents'][data-status='running']", timeout=60_000
    )
    sync_api.expect(page.locator("#log .line").first).to_be_visible(timeout=30_000)
    page.wait_for_selector(
        "#job-stages li[data-stage='train_network'][data-status='running']", timeout=180_000
    )
    shot(page, "04-pipeline-running", full_page=True)
    page.reload()  # mid-run: the page picks the job up again and misses no line
    ready(page)
    page.wait_for_selector("#job-stages li[data-stage='train_network']", timeout=30_000)
    page.wait_for_selector(
        "#job-summary[data-status='done'], #job-summary[data-status='failed']", timeout=240_000
    )
    assert [
        stage_status(page, s) for s in ("cache_latents", "cache_text_encoder_outputs", "train_network")
    ] == ["done", "done", "done"], page.inner_text("#job-error")
    sync_api.expect(page.locator("#job-stages .icon")).to_have_text(["✅", "✅", "✅"])
    assert page.get_attribute("#progress-bar", "aria-valuenow") == "100"
    expected = file_lines(studio, job_id)
    page.wait_for_function(
        "n => document.querySelectorAll('#log .line:not(.partial)').length >= n",
        arg=len(expected),
        timeout=20_000,
    )
    lines = rendered_lines(page)
    assert [n for n, _ in lines] == list(range(1, len(expected) + 1))  # every line once, in order
    assert [text for _, text in lines] == expected
    # each stage's closing line starts with the seed's legend (✅ done) and is marked so
    closing = page.locator("#log .line[data-mark='done']")
    sync_api.expect(closing).to_have_count(3)
    sync_api.expect(closing.last).to_contain_text("✅ [train_network: exit code 0, done, ")
    sync_api.expect(page.locator("#loss-chart canvas").first).to_be_visible(timeout=20_000)
    sync_api.expect(page.locator("#samples img").first).to_be_visible(timeout=20_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#samples img')].some(i => i.naturalWidth > 0)"
    )
    sync_api.expect(page.locator("#files a").last).to_have_text("demo_t2i.safetensors")
    href = page.get_attribute("#files a >> nth=-1", "href")
    with urllib.request.urlopen(studio.url.rstrip("/") + href, timeout=10) as res:
        assert res.status == 200 and len(res.read()) > 100
    shot(page, "05-pipeline-done", full_page=True)


def test_the_trained_loras_details_and_its_two_download_forms(page: Any, studio: Studio) -> None:
    """After the pipeline above: the LoRA's details from its header, and its diffusers-form download."""
    item = page.locator("#files li").filter(has_text="demo_t2i.safetensors").last
    item.locator(".lora-toggle").click()
    panel = item.locator(".lora-details")
    facts = panel.locator(".lora-facts")
    sync_api.expect(facts).to_contain_text("ComfyUI / kohya (lora_unet_)", timeout=20_000)
    sync_api.expect(facts).to_contain_text("Modules24")  # dt and dd: 12 linears x 2 demo blocks
    sync_api.expect(facts).to_contain_text("Model versionoriginal")
    sync_api.expect(item.locator(".lora-toggle")).to_have_text("hide details")
    panel.locator("details.lora-more summary").first.click()
    sync_api.expect(panel.locator(".lora-settings")).to_contain_text("ss_network_dim")
    SHOTS.mkdir(parents=True, exist_ok=True)
    item.screenshot(path=str(SHOTS / "lora-details.png"))  # the file's line and its whole panel
    href = panel.locator("a[data-form='diffusers']").get_attribute("href")
    with urllib.request.urlopen(studio.url.rstrip("/") + href, timeout=120) as res:
        data = res.read()
    length = int.from_bytes(data[:8], "little")
    keys = [k for k in json.loads(data[8 : 8 + length]) if k != "__metadata__"]
    assert keys and all(k.startswith("transformer.") for k in keys)
    item.locator(".lora-toggle").click()
    sync_api.expect(panel).to_be_hidden()


def many_images(studio: Studio, count: int) -> Path:
    """A folder of `count` captioned copies of the demo images (a dataset that takes a while to cache)."""
    source = studio.workspace / "demo" / "dataset" / "images"
    target = studio.workspace / "many"
    target.mkdir(exist_ok=True)
    images = sorted(p for p in source.iterdir() if p.suffix == ".png")
    for i in range(count):
        image = images[i % len(images)]
        shutil.copy(image, target / f"img_{i:04d}.png")
        (target / f"img_{i:04d}.txt").write_text(f"picture {i}", encoding="utf-8")
    return target


def job_processes(studio: Studio, job_id: int) -> list[int]:
    """Processes whose command line names this job's events file."""
    marker = str(studio.workspace / "jobs" / str(job_id)).encode()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_stopping_a_job_leaves_no_process(page: Any, studio: Studio) -> None:
    many_images(studio, 300)
    page.click("#tab-btn-dataset")
    page.fill("#ds-name", "many")
    page.fill("#ds-images", "many")
    page.fill("#ds-resolution", "256")
    page.click("#ds-create")
    sync_api.expect(page.locator("#ds-create-result")).to_contain_text("images: 300 found, 300 usable")
    sync_api.expect(page.locator("#dataset-path")).to_have_value(
        str(studio.workspace / "datasets" / "many.toml")
    )
    page.click("#ds-create")  # the same name again: refused, the file is kept
    sync_api.expect(page.locator("#ds-create-result")).to_contain_text("exists already")
    page.click("#tab-btn-jobs")
    page.click("[data-run='cache_latents']")
    page.wait_for_selector("#job-summary[data-status='running']", timeout=60_000)
    job_id = int(page.eval_on_selector("#history li.selected", "e => e.dataset.job"))
    # the 300 images plus the two validation images of the demo configuration's --validation_dataset_config
    sync_api.expect(page.locator("#progress-text")).to_contain_text("/ 302", timeout=120_000)
    sync_api.expect(page.locator("#progress-text")).to_contain_text("ETA")
    pid = studio.api(f"/api/jobs/{job_id}")["job"]["stages"][0]["pid"]
    assert job_processes(studio, job_id) and procs.tree_of(pid)
    page.click("#job-stop")
    page.wait_for_selector("#job-summary[data-status='stopped']", timeout=30_000)
    sync_api.expect(page.locator("#job-stages .icon")).to_have_text(["⏰"])
    sync_api.expect(page.locator("#job-error")).to_contain_text("Stopped by you.")
    sync_api.expect(page.locator("#log .line[data-mark='warning']").last).to_contain_text(
        "⏰ [cache_latents: exit code"
    )
    assert procs.tree_of(pid) == [] and job_processes(studio, job_id) == []
    shot(page, "06-job-stopped", full_page=True)


def test_the_tensorboard_link_opens_tensorboard(page: Any, studio: Studio) -> None:
    sync_api.expect(page.locator("#tb-state")).to_have_attribute("data-state", "running", timeout=60_000)
    with page.context.expect_page() as popup:
        page.click("#tb-link")
    board = popup.value
    board.wait_for_load_state()
    assert board.url.startswith(f"http://127.0.0.1:{studio.tb_port}/")
    sync_api.expect(board).to_have_title("TensorBoard", timeout=30_000)
    board.wait_for_timeout(1500)
    shot(board, "09-tensorboard")
    board.close()
    # opened from this machine the page also links to TensorBoard through the UI's own port
    via_ui = page.locator("#tb-link-ui")
    sync_api.expect(via_ui).to_be_visible()
    sync_api.expect(via_ui).to_have_attribute("href", f"{studio.url}tensorboard/")
    with page.context.expect_page() as popup:
        via_ui.click()
    board = popup.value
    sync_api.expect(board).to_have_title("TensorBoard", timeout=30_000)
    sync_api.expect(board.locator("tb-webapp")).to_have_count(1)
    board.close()


def test_a_remote_browser_gets_tensorboard_through_the_ui(browser: Any, tmp_path: Path) -> None:
    """Started with a token and opened by another machine's name: the link goes through the UI's port,
    and TensorBoard's page, scripts and data load with the token cookie the address set."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "ws" / "logs" / "run1"))
    for step in range(5):
        writer.add_scalar("loss/current", 1.0 / (step + 1), step)
    writer.close()
    token = "remote-token"
    server = Studio(tmp_path / "ws", "--no-demo", "--token", token, host_name="gpu-server.test")
    remote = browser.browser_type.launch(
        executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP gpu-server.test 127.0.0.1"]
    )
    try:
        tab = remote.new_context(locale="en-US").new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda e: errors.append(str(e)))
        end = time.monotonic() + 60
        while True:  # the server starts (the page answers 401 without the cookie, so load the token address)
            assert server.proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if tab.goto(f"{server.url}?token={token}").ok:
                    break
            except sync_api.Error:
                assert time.monotonic() < end, "the server did not start"
                time.sleep(0.5)
        ready(tab)
        sync_api.expect(tab.locator("#tb-state")).to_have_attribute("data-state", "running", timeout=30_000)
        link = tab.locator("#tb-link")
        sync_api.expect(link).to_have_attribute("href", f"{server.url}tensorboard/")
        sync_api.expect(tab.locator("#tb-link-ui")).to_be_hidden()
        with tab.context.expect_page() as popup:
            link.click()
        board = popup.value
        refused: list[str] = []
        board.on("pageerror", lambda e: errors.append(str(e)))
        board.on("response", lambda r: r.status in (401, 403, 502) and refused.append(f"{r.status} {r.url}"))
        assert board.url == f"{server.url}tensorboard/"
        sync_api.expect(board).to_have_title("TensorBoard", timeout=30_000)
        sync_api.expect(board.get_by_text("loss/current").first).to_be_visible(timeout=30_000)
        shot(board, "10-tensorboard-through-the-ui")
        assert refused == [] and errors == []
    finally:
        remote.close()
        server.stop()


def test_switching_to_chinese_is_remembered(page: Any) -> None:
    page.select_option("#lang-select", "zh-CN")
    sync_api.expect(page.locator("#tab-btn-config")).to_have_text("配置")
    sync_api.expect(page.locator("#tab-btn-jobs")).to_have_text("运行与监控")
    sync_api.expect(page.locator("#run-title")).to_have_text("启动")
    page.reload()
    ready(page)
    assert page.get_attribute("html", "lang") == "zh-CN"
    sync_api.expect(page.locator("#history-title")).to_have_text("历史记录")
    sync_api.expect(page.locator("#job-summary")).to_contain_text("已停止")
    sync_api.expect(page.locator("#job-stages")).to_contain_text("已由你停止")  # not "exit code -15"
    shot(page, "07-chinese-jobs", full_page=True)
    page.click("#tab-btn-config")
    sync_api.expect(page.locator("details[data-group='models'] > summary")).to_have_text("模型路径")
    shot(page, "08-chinese-form")
    # validation messages in Chinese: an out-of-range value (the form's check and the server's agree) ...
    load_config(page, "demo-t2i")
    page.fill("#f-network_dim", "0")
    sync_api.expect(page.locator("#p-network_dim")).to_have_text("--network_dim：0 超出范围；允许 至少 1")
    sync_api.expect(page.locator("[data-row='network_dim'] .meta")).to_contain_text("允许: 至少 1")
    sync_api.expect(page.locator("[data-row='network_dim'] .meta")).to_contain_text("推荐: 4 到 256")
    page.locator("[data-row='network_dim']").scroll_into_view_if_needed()
    shot(page, "10-chinese-validation")
    page.fill("#f-network_dim", "4")
    sync_api.expect(page.locator("#p-network_dim")).to_have_text("")
    page.fill("#f-discrete_flow_shift", "9")
    sync_api.expect(page.locator("#p-discrete_flow_shift")).to_have_text(
        "--discrete_flow_shift 9.0 超出推荐范围 1.0 到 5.0"
    )
    page.fill("#f-discrete_flow_shift", "2.2")
    sync_api.expect(page.locator("#p-discrete_flow_shift")).to_have_text("")
    # ... a value only the server judges, and a rule over two fields (in the summary), ...
    page.fill("#f-optimizer_type", "bogus")
    sync_api.expect(page.locator("#p-optimizer_type")).to_have_text(
        "--optimizer_type：必须是 adamw, adamw8bit, lion, sgd, adafactor 之一，或 module.Class 路径（当前为 'bogus'）"
    )
    page.fill("#f-optimizer_type", "adamw")
    page.check("#f-flash_attn")
    page.check("#f-xformers")
    summary = page.locator("#form-summary .summary-errors")
    sync_api.expect(summary).to_contain_text("只能选一种注意力内核，不能同时用 --flash_attn 和 --xformers")
    # ... re-worded at once when the language changes
    page.select_option("#lang-select", "en")
    sync_api.expect(summary).to_contain_text("choose one attention kernel, not --flash_attn and --xformers")
    page.uncheck("#f-xformers")
    page.uncheck("#f-flash_attn")
    sync_api.expect(summary).to_be_hidden()
