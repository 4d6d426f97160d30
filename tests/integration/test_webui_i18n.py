"""The API words its messages in the page's language: Chinese for a Chinese page (the X-Studio-Lang header
the page sends, or its remembered choice), English for a request that names none."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from qwen_image_studio.params.validate import Message
from qwen_image_studio.webui.app import create_app, studio_of
from qwen_image_studio.webui.i18n import LANG_HEADER, TABLE
from qwen_image_studio.webui.store import DB_NAME, MIGRATIONS

ORIGIN = {"Origin": "http://localhost"}
ZH = {**ORIGIN, LANG_HEADER: "zh-CN"}


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(tmp_path / "ws").test_client()


def post(client: FlaskClient, url: str, body: dict[str, Any], headers: dict[str, str] = ZH) -> Any:
    return client.post(url, json=body, headers=headers)


def test_an_invalid_value_is_named_with_its_range_in_chinese(client: FlaskClient) -> None:
    res = post(client, "/api/validate", {"params": {"mode_scale": 11}})
    assert res.status_code == 200
    [problem] = res.get_json()["problems"]
    assert problem["field"] == "mode_scale"
    assert problem["message"] == "--mode_scale：11 超出范围；允许 0 到 10.0"
    assert problem["message_i18n"] == {
        "key": "v.range",
        "vars": {
            "flag": "--mode_scale",
            "value": "11",
            "allowed": {"key": "allowed.range", "vars": {"low": "0", "high": "10.0"}},
        },
    }
    english = post(client, "/api/validate", {"params": {"mode_scale": 11}}, ORIGIN)
    assert english.get_json()["problems"][0]["message"] == (
        "--mode_scale: 11 is out of range; allowed 0 to 10.0"
    )
    client.set_cookie("studio_lang", "zh-CN")  # the page's remembered language, without the header
    remembered = post(client, "/api/validate", {"params": {"mode_scale": 11}}, ORIGIN)
    assert remembered.get_json()["problems"][0]["message"] == problem["message"]


def test_saving_invalid_values_is_refused_in_chinese(client: FlaskClient) -> None:
    res = post(client, "/api/configs", {"name": "a", "params": {"network_dim": 0, "fp8_scaled": True}})
    body = res.get_json()
    assert res.status_code == 400 and body["code"] == "invalid"
    assert [(p["field"], p["message"]) for p in body["problems"]] == [
        ("network_dim", "--network_dim：0 超出范围；允许 至少 1")
    ]
    assert body["error"] == "--network_dim：0 超出范围；允许 至少 1"
    rule = post(client, "/api/validate", {"params": {"fp8_scaled": True}}).get_json()["problems"]
    assert [(p["field"], p["message"]) for p in rule] == [("", "--fp8_scaled 需要 --fp8_base")]


def test_what_a_stage_needs_in_chinese(client: FlaskClient, tmp_path: Path) -> None:
    params = {"dit": str(tmp_path / "missing_dit.safetensors")}
    res = post(client, "/api/validate", {"params": params, "stage": "train_network"})
    needs = {p["field"]: p["message"] for p in res.get_json()["stage_problems"]}
    assert needs["dit"] == f"--dit：找不到 {tmp_path / 'missing_dit.safetensors'}"
    assert needs["output_name"] == "--output_name 为必填项"
    job = post(client, "/api/jobs", {"kind": "train_network", "params": params})
    body = job.get_json()
    assert job.status_code == 400 and body["code"] == "not_ready"
    assert {p["field"]: p["message"] for p in body["problems"]}["dit"] == needs["dit"]
    assert needs["dit"] in body["error"] and "；" in body["error"]


def test_other_errors_the_page_shows_in_chinese(client: FlaskClient) -> None:
    missing = client.get("/api/configs/nope", headers=ZH)
    assert missing.status_code == 404 and missing.get_json()["error"] == "没有名为 'nope' 的配置"
    assert client.get("/api/configs/nope").get_json()["error"] == "no configuration named 'nope'"
    bad_name = post(client, "/api/configs", {"name": "a/b", "params": {}})
    assert bad_name.get_json()["error"] == "配置名称不能包含 / \\ 或控制字符"
    empty = post(client, "/api/config/from-command", {"text": "   "})
    assert empty.get_json()["error"] == "命令行为空"
    assert empty.get_json()["error_i18n"] == {"key": "cmdline.empty", "vars": {}}
    no_images = post(client, "/api/dataset/create", {"name": "d"})
    assert no_images.get_json()["error"] == "请选择图片文件夹"
    assert no_images.get_json()["problems"] == ["image_directory：必填"]
    no_file = client.post(
        "/api/configs/import",
        data={"name": "x"},
        content_type="multipart/form-data",
        headers={**ZH, "X-Studio-Upload": "1"},
    )
    assert (
        no_file.status_code == 400
        and no_file.get_json()["error"] == "请选择要导入的配置文件（.json 或 .toml）"
    )


def test_startup_notices_are_structured(client: FlaskClient) -> None:
    state = studio_of(client.application)
    state.notices.append(Message("notice.demo_not_imported", {"detail": Message("cmdline.empty")}))
    zh = client.get("/api/status", headers=ZH).get_json()
    assert zh["notices"] == ["演示配置未导入：命令行为空"]
    assert zh["notices_i18n"][0]["key"] == "notice.demo_not_imported"
    assert client.get("/api/status").get_json()["notices"] == [
        "demo configuration not imported: the command line is empty"
    ]


def test_every_message_key_has_chinese() -> None:
    from qwen_image_studio.params.validate import MESSAGES

    assert set(MESSAGES) <= set(TABLE["zh-CN"])
    assert all(TABLE["en"][k] == MESSAGES[k] for k in MESSAGES)  # one English text per key


def test_a_database_from_before_structured_reasons_is_upgraded(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    with sqlite3.connect(workspace / DB_NAME) as db:  # the two steps that came before
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        db.execute(
            "INSERT INTO jobs (id, kind, status, params, created_at) VALUES (1, 'cache_latents', 'failed', '{}', 0)"
        )
        db.execute(
            "INSERT INTO job_stages (job_id, idx, stage, argv, status, exit_code, reason) "
            "VALUES (1, 0, 'cache_latents', '[]', 'failed', 1, 'exited with code 1')"
        )
    client = create_app(workspace).test_client()
    try:
        [stage] = client.get("/api/jobs/1").get_json()["job"]["stages"]
        assert (stage["reason"], stage["reason_i18n"]) == ("exited with code 1", None)  # shown as it is
    finally:
        studio_of(client.application).close()
