"""The web UI's dataset panel marks images turned by their EXIF orientation, from the inspect report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from node_support import node
from PIL import Image

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import TABLE

STATIC_JS = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui" / "static" / "js"
ORIGIN = {"Origin": "http://localhost"}

REPORT_SCRIPT = f"""
import {{ readFileSync }} from "node:fs";
const input = JSON.parse(readFileSync(0, "utf8"));
globalThis.document = {{
  getElementById: () => ({{ textContent: JSON.stringify(input.table) }}),
  documentElement: {{ lang: input.lang }},
}};
const {{ reportLines }} = await import("{(STATIC_JS / "dataset-panel.js").as_uri()}");
console.log(JSON.stringify(reportLines(input.report).map((line) => line.text)));
"""


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    app = create_app(tmp_path / "ws")
    yield app.test_client()
    studio_of(app).close()


def test_the_panel_marks_an_exif_rotated_photo(client: FlaskClient, tmp_path: Path) -> None:
    """A JPEG stored 96x64 with orientation 6 is shown as trained at 64x96, with the reference's 96x64."""
    pics = tmp_path / "ws" / "pics"
    pics.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (96, 64), (20, 90, 160)).save(pics / "phone.jpg", exif=exif.tobytes())
    Image.new("RGB", (96, 64), (20, 90, 160)).save(pics / "flat.png")
    for name in ("phone", "flat"):
        (pics / f"{name}.txt").write_text("a photo", encoding="utf-8")
    (tmp_path / "ws" / "ds.toml").write_text(
        '[general]\nresolution = [64, 64]\n[[datasets]]\nimage_directory = "pics"\n', encoding="utf-8"
    )
    res = client.post("/api/dataset/inspect", json={"path": "ds.toml"}, headers=ORIGIN)
    assert res.status_code == 200, res.get_json()
    report = res.get_json()["report"]
    (rotated,) = report["datasets"][0]["rotated"]
    assert (rotated["path"], rotated["orientation"]) == (str(pics / "phone.jpg"), 6)
    assert (rotated["size"], rotated["stored_size"]) == ([64, 96], [96, 64])
    assert report["problems"] == []

    lines = {
        lang: node(REPORT_SCRIPT, json.dumps({"table": TABLE, "report": report, "lang": lang}))
        for lang in ("en", "zh-CN")
    }
    phone = str(pics / "phone.jpg")
    assert (
        f"{phone}: rotated by EXIF orientation 6: trained as 64×96, as viewers show it; "
        "the reference trainer ignores EXIF and would use the stored 96×64 pixels"
    ) in lines["en"]
    assert any(line.startswith(f"{phone}：按 EXIF 方向 6 旋转") and "96×64" in line for line in lines["zh-CN"])
    assert not any("flat.png" in line for line in lines["en"])
