"""The page's running side without a browser: translations of every state it shows, the log buffer's
rules (each line once, the last N kept), and nothing loaded from outside the server."""

from __future__ import annotations

import re
from pathlib import Path

from node_support import node

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import TABLE
from qwen_image_studio.webui.jobs import schema

WEBUI = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui"
STATIC = WEBUI / "static"


def test_every_state_the_page_shows_is_translated() -> None:
    statuses = {
        schema.QUEUED,
        schema.RUNNING,
        schema.DONE,
        schema.FAILED,
        schema.STOPPED,
        schema.LOST,
        schema.PENDING,
        schema.SKIPPED,
    }
    board = {"off", "starting", "running", "restarting", "port_busy", "failed", "stopped"}
    keys = (
        {f"status.{s}" for s in statuses}
        | {f"tb.state.{s}" for s in board}
        | {"vram.source.dataset", "vram.source.default"}
        | {f"stage.{k}" for k in schema.JOB_KINDS if k != schema.PIPELINE}
        | {"jobs.kind.pipeline"}
        | {"err.not_ready", "err.dataset_invalid", "err.exists"}
    )
    for lang in TABLE:
        assert keys - set(TABLE[lang]) == set(), lang
    source = (WEBUI / "tensorboard.py").read_text()
    assert set(re.findall(r'self\.state(?:, self\.message)? = "(\w+)"', source)) <= board


def test_the_log_buffer_keeps_each_line_once_and_the_last_n() -> None:
    script = f"""
import {{ LogBuffer }} from "{(STATIC / "js" / "log-model.js").as_uri()}";
const b = new LogBuffer(3);
const out = [];
out.push(b.apply({{ lines: [[1, "a"], [2, "b"]], partial: [3, "c 10%"] }}));
out.push(b.partial);
out.push(b.apply({{ lines: [[2, "b"], [3, "c"], [4, "d"], [5, "e"]] }}));   // 2 again: not doubled
out.push(b.partial, b.lines, b.hidden(), b.last);
b.reset();
out.push(b.apply({{ lines: [], skipped: [1, 97] }}));
out.push(b.apply({{ lines: [[98, "x"], [99, "y"]], partial: null }}));
out.push(b.hidden(), b.lines);
console.log(JSON.stringify(out));
"""
    out = node(script)
    assert out[0] == {"added": [[1, "a"], [2, "b"]], "dropped": 0}
    assert out[1] == [3, "c 10%"]
    assert out[2] == {"added": [[3, "c"], [4, "d"], [5, "e"]], "dropped": 2}
    assert out[3] is None and out[4] == [[3, "c"], [4, "d"], [5, "e"]] and out[5] == 2 and out[6] == 5
    assert out[7] == {"added": [], "dropped": 0} and out[8]["added"] == [[98, "x"], [99, "y"]]
    assert out[9] == 97 and out[10] == [[98, "x"], [99, "y"]]


def test_nothing_is_loaded_from_another_server(tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws")
    client = app.test_client()
    try:
        page = client.get("/").text
        urls = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert urls and all(u.startswith(("/", "#", "data:")) for u in urls), urls
        for url in (u for u in urls if u.startswith("/static/")):
            assert client.get(url).status_code == 200, url
        assert "uPlot" in client.get("/static/vendor/uPlot.iife.min.js").text
        for text in (p.read_text(encoding="utf-8") for p in (STATIC / "js").glob("*.js")):
            assert not re.search(r"https?://(?!\$\{)", text.replace("http://${", "")), "a hard-coded URL"
        assert "MIT License" in (STATIC / "vendor" / "uPlot.LICENSE.txt").read_text()
    finally:
        studio_of(app).close()
