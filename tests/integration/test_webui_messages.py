"""Messages the page shows: each problem once, a headline that fits the action, one wording per rule, every
bad flag of a pasted command line, and a dataset-name clash named as a dataset (Flask's test client)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from node_support import node
from test_webui_form import RENDER_SCRIPT

from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import LANG_HEADER, TABLE

ORIGIN = {"Origin": "http://localhost"}
ZH = {**ORIGIN, LANG_HEADER: "zh-CN"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[FlaskClient]:
    app = create_app(tmp_path / "ws")
    yield app.test_client()
    studio_of(app).close()


def post(client: FlaskClient, url: str, body: object, headers: dict[str, str] = ORIGIN):
    return client.post(url, json=body, headers=headers)


def pairs(body: dict[str, object]) -> list[tuple[object, object]]:
    return [(p["field"], p["message"]) for p in body["problems"]]  # type: ignore[index, union-attr]


def test_a_refused_run_lists_each_problem_once(client: FlaskClient) -> None:
    """Required values missing (not_ready) or a bad value (invalid): every (field, message) once."""
    res = post(client, "/api/jobs", {"kind": "pipeline", "params": {"dit": None}})
    body = res.get_json()
    assert res.status_code == 400 and body["code"] == "not_ready"
    found = pairs(body)
    assert len(found) == len(set(found)) and found.count(("dit", "--dit is required")) == 1
    bad = post(client, "/api/jobs", {"kind": "pipeline", "params": {"network_dim": "abc", "dit": None}})
    assert bad.get_json()["code"] == "invalid"
    assert pairs(bad.get_json()) == [
        ("network_dim", "--network_dim: abc is not a whole number; allowed at least 1")
    ]


def test_run_save_and_command_headlines_fit_the_action() -> None:
    """A refused run is never "nothing was saved": Run and the command-line import have headlines of their own."""
    for lang in TABLE:
        assert TABLE[lang]["err.run_refused"] != TABLE[lang]["err.invalid"]
        assert TABLE[lang]["err.command_refused"] != TABLE[lang]["err.invalid"]
    assert TABLE["en"]["err.run_refused"] == "The run did not start: fix these first."
    assert "saved" not in TABLE["en"]["err.run_refused"] + TABLE["en"]["err.command_refused"]
    assert "nothing was saved" in TABLE["en"]["err.invalid"]  # Save keeps it


def test_bad_numbers_are_worded_as_the_server_words_them(client: FlaskClient) -> None:
    """The form's live check and Save/Run say the same: an int field "is not a whole number", a float field
    "is not a number", in both languages."""
    schema = client.get("/api/schema").get_json()
    cases = [("network_dim", "abc"), ("learning_rate", "banana"), ("network_dim", 1.5), ("seed", "x1")]
    server: dict[str, list[tuple[str, object, object]]] = {}
    texts: dict[str, list[str]] = {}
    for lang in TABLE:
        server[lang], texts[lang] = [], []
        for name, value in cases:
            headers = {**ORIGIN, LANG_HEADER: lang}
            saved = post(client, "/api/configs", {"name": "n", "params": {name: value}}, headers).get_json()
            [problem] = saved["problems"]
            server[lang].append((name, value, problem["message_i18n"]))
            texts[lang].append(problem["message"])
    rendered = node(RENDER_SCRIPT, json.dumps({"schema": schema, "table": TABLE, "cases": server}))
    for lang in TABLE:
        assert [client_text for client_text, _ in rendered[lang]] == texts[lang], lang
    assert texts["en"][:3] == [
        "--network_dim: abc is not a whole number; allowed at least 1",
        "--learning_rate: banana is not a number; allowed above 0",
        "--network_dim: 1.5 is not a whole number; allowed at least 1",
    ]
    assert texts["zh-CN"][0] == "--network_dim：abc 不是整数；允许 至少 1"


def test_a_pasted_command_line_reports_every_bad_flag(client: FlaskClient) -> None:
    """Unknown flags and bad values, each once, naming the flag and what is allowed."""
    text = "python qwen_image_train_network.py --learning_rate banana --foo 3 --lerning_rate 1 --foo=4 --fp8_base 2"
    res = post(client, "/api/config/from-command", {"text": text})
    body = res.get_json()
    assert res.status_code == 400 and body["code"] == "invalid"
    messages = [m for _, m in pairs(body)]
    assert messages == [
        "unrecognized arguments: --foo (not a flag of qwen_image_train_network.py)",
        "unrecognized arguments: --lerning_rate (not a flag of qwen_image_train_network.py; "
        "did you mean --learning_rate?)",
        "unrecognized arguments: '2' (--fp8_base is a switch and takes no value)",
        "--learning_rate: banana is not a number; allowed above 0",
    ]
    assert pairs(body)[3][0] == "learning_rate"
    zh = post(client, "/api/config/from-command", {"text": "--learning_rate banana --foo 3"}, ZH).get_json()
    assert [m for _, m in pairs(zh)] == [
        "无法识别的参数：--foo（不是 qwen_image_train_network.py 的参数）",
        "--learning_rate：banana 不是数字；允许 大于 0",
    ]
    cache = post(client, "/api/config/from-command", {"text": "qwen_image_cache_latents.py --network_dim 4"})
    assert [m for _, m in pairs(cache.get_json())] == [
        "unrecognized arguments: --network_dim (not a flag of qwen_image_cache_latents.py)"
    ]
    fine = post(client, "/api/config/from-command", {"text": "--seed -5 --network_dim 4"}).get_json()
    assert [m for _, m in pairs(fine)] == ["--seed: -5 is out of range; allowed 0 to 2147483647"]


def test_a_dataset_name_clash_names_the_dataset(client: FlaskClient, tmp_path: Path) -> None:
    """Creating a dataset TOML whose name is taken says a dataset file of that name exists, not a configuration."""
    from PIL import Image

    images = tmp_path / "ws" / "pics"
    images.mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(images / "a.png")
    (images / "a.txt").write_text("a", encoding="utf-8")
    body = {"name": "mine", "image_directory": str(images)}
    assert post(client, "/api/dataset/create", body).status_code == 200
    for headers, lang in ((ORIGIN, "en"), (ZH, "zh-CN")):
        again = post(client, "/api/dataset/create", body, headers)
        answer = again.get_json()
        assert again.status_code == 409 and answer["code"] == "exists"
        assert (answer["subject"], answer["name"]) == ("dataset", "mine")
        target = tmp_path / "ws" / "datasets" / "mine.toml"
        assert str(target) in answer["error"] and "configuration" not in answer["error"]
        assert TABLE[lang]["err.dataset_exists"].format(name="mine") in (
            "A dataset file named “mine” exists already.",
            "已存在名为“mine”的数据集文件。",
        )
