"""Importing images into a new dataset from the Dataset tab in headless Debian Chromium (issue 14 item 4): one
PNG and its caption picked with the file picker, a second PNG dropped on the zone (a real drop event with a
DataTransfer), the import uploaded with progress, the result shown, and "Use this dataset" loading the new
dataset TOML into the form and the gallery. The screenshot goes to artifacts/screenshots/import-dataset.png.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import pytest
from PIL import Image
from test_studio_browser import Studio, english_tab, running_studio, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

from playwright import sync_api  # noqa: E402


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    with running_studio(tmp_path_factory.mktemp("import") / "ws", "--no-tensorboard") as server:
        yield server


def png(color: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


DROP = """([name, data]) => {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, { type: "image/png" }));
  return transfer;
}"""


def test_pick_and_drop_images_import_them_and_use_the_new_dataset(studio: Studio) -> None:
    with english_tab(studio.url) as page:
        page.click("#tab-btn-dataset")
        page.set_input_files(
            "#imp-files",
            [
                {"name": "red-square.png", "mimeType": "image/png", "buffer": png("#d6336c", (96, 96))},
                {"name": "red-square.txt", "mimeType": "text/plain", "buffer": b"a pink square"},
            ],
        )
        transfer = page.evaluate_handle(
            DROP, ["blue-wide.png", base64.b64encode(png("#1c7ed6", (128, 72))).decode()]
        )
        page.dispatch_event("#imp-drop", "drop", {"dataTransfer": transfer})
        sync_api.expect(page.locator("#imp-chosen .imp-count")).to_contain_text("3 file(s) chosen")
        sync_api.expect(page.locator("#imp-chosen li")).to_have_text(
            ["red-square.png", "red-square.txt", "blue-wide.png"]
        )

        page.click("#imp-start")  # no name yet: the page asks for one and sends nothing
        sync_api.expect(page.locator("#imp-status")).to_have_text("Give the new dataset a name.")
        page.fill("#imp-name", "my-shapes")
        page.fill("#imp-resolution", "512x512")
        page.click("#imp-start")
        folder = studio.workspace / "datasets" / "my-shapes"
        toml = folder / "dataset.toml"
        status = page.locator("#imp-status")
        sync_api.expect(status).to_have_text(
            f"2 image(s) imported into {folder}; dataset TOML written: {toml}", timeout=30_000
        )
        assert (folder / "images" / "red-square.txt").read_text(encoding="utf-8") == "a pink square"
        assert sorted(p.name for p in (folder / "images").iterdir()) == [
            "blue-wide.png",
            "red-square.png",
            "red-square.txt",
        ]
        sync_api.expect(page.locator("#imp-skipped")).to_be_empty()

        page.click("#imp-use")  # the form's dataset becomes the new TOML and the gallery shows it
        sync_api.expect(page.locator("#dataset-path")).to_have_value(str(toml))
        cards = page.locator("#gal-grid .gal-card")
        sync_api.expect(cards).to_have_count(2)
        captions = page.eval_on_selector_all("#gal-grid .gal-caption", "els => els.map(e => e.value)")
        assert captions == ["", "a pink square"]  # blue-wide.png has none yet, red-square.png its own
        page.wait_for_function(
            "() => [...document.querySelectorAll('#gal-grid img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        page.evaluate("document.getElementById('import-title').scrollIntoView(); window.scrollBy(0, -170)")
        shot(page, "import-dataset")

        page.set_input_files(
            "#imp-files", [{"name": "x.png", "mimeType": "image/png", "buffer": png("black", (32, 32))}]
        )
        page.click("#imp-start")  # the same name again: refused, nothing overwritten
        sync_api.expect(status).to_contain_text("a dataset named my-shapes exists already")
        assert not (folder / "images" / "x.png").exists()
        sync_api.expect(page.locator("#imp-use")).to_be_hidden()
