"""Configuration management over the JSON API, stored in a real SQLite file in the workspace."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from qwen_image_studio.params.config_files import save_config
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.webui.app import create_app, studio_of

ORIGIN = {"Origin": "http://localhost"}
UPLOAD = {**ORIGIN, "X-Studio-Upload": "1"}
CUSTOM = {
    "network_dim": 16,
    "learning_rate": 1e-4,
    "fp8_base": True,
    "fp8_scaled": True,
    "output_name": "my lora",
    "network_args": ["loraplus_lr_ratio=8"],
    "model_version": "edit-2509",
    "max_train_steps": 500,
}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return create_app(tmp_path / "ws")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, url: str, body: object) -> object:
    return client.post(url, json=body, headers=ORIGIN)


def names(client: FlaskClient) -> list[str]:
    return [c["name"] for c in client.get("/api/configs").get_json()["configs"]]


def params_of(client: FlaskClient, name: str) -> dict:
    res = client.get(f"/api/configs/{name}")
    assert res.status_code == 200, res.get_json()
    return res.get_json()["params"]


def custom_params() -> dict:
    return StudioConfig(**CUSTOM).model_dump(mode="json")


def upload(client: FlaskClient, data: bytes, filename: str, **form: str) -> object:
    return client.post(
        "/api/configs/import",
        headers=UPLOAD,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(data), filename), **form},
    )


def test_save_list_load_rename_delete(client: FlaskClient, tmp_path: Path) -> None:
    assert names(client) == []
    res = post(client, "/api/configs", {"name": "第一 run", "params": CUSTOM})
    assert res.status_code == 200 and res.get_json()["config"]["name"] == "第一 run"
    assert names(client) == ["第一 run"]
    assert params_of(client, "第一 run") == custom_params()
    # the state is a real SQLite file in the workspace
    with sqlite3.connect(tmp_path / "ws" / "studio.sqlite3") as db:
        assert db.execute("SELECT name FROM configs").fetchall() == [("第一 run",)]
    res = post(client, "/api/configs/第一 run/rename", {"new_name": "second"})
    assert res.status_code == 200 and names(client) == ["second"]
    assert params_of(client, "second") == custom_params()
    assert client.get("/api/configs/第一 run").status_code == 404
    res = client.delete("/api/configs/second", json={}, headers=ORIGIN)
    assert res.status_code == 200 and names(client) == []
    assert client.delete("/api/configs/second", json={}, headers=ORIGIN).status_code == 404


def test_saved_configurations_survive_a_restart(tmp_path: Path) -> None:
    first = create_app(tmp_path / "ws").test_client()
    post(first, "/api/configs", {"name": "kept", "params": CUSTOM})
    again = create_app(tmp_path / "ws").test_client()
    assert names(again) == ["kept"] and params_of(again, "kept") == custom_params()


def test_invalid_or_taken_names_overwrite_nothing(client: FlaskClient) -> None:
    post(client, "/api/configs", {"name": "a", "params": CUSTOM})
    bad = post(client, "/api/configs", {"name": "a", "params": {"mode_scale": 11}, "overwrite": True})
    assert bad.status_code == 400
    assert [(p["field"], p["message"]) for p in bad.get_json()["problems"]] == [
        ("mode_scale", "--mode_scale: 11 is out of range; allowed 0 to 10.0")
    ]
    taken = post(client, "/api/configs", {"name": "a", "params": {}})
    assert taken.status_code == 409 and taken.get_json()["code"] == "exists"
    assert params_of(client, "a") == custom_params()
    for name in ("", "   ", "a/b", "x" * 101, "..", "tab\there"):
        res = post(client, "/api/configs", {"name": name, "params": {}})
        assert res.status_code == 400 and res.get_json()["code"] == "bad_name", name
    post(client, "/api/configs", {"name": "b", "params": {}})
    assert post(client, "/api/configs/b/rename", {"new_name": "a"}).status_code == 409
    assert post(client, "/api/configs/nope/rename", {"new_name": "c"}).status_code == 404
    assert sorted(names(client)) == ["a", "b"] and params_of(client, "a") == custom_params()
    res = post(client, "/api/configs", {"name": "a", "params": {}, "overwrite": True})
    assert res.status_code == 200 and params_of(client, "a") == StudioConfig().model_dump(mode="json")


def test_export_then_import_round_trips(client: FlaskClient) -> None:
    post(client, "/api/configs", {"name": "orig", "params": CUSTOM})
    res = client.get("/api/configs/orig/export")
    assert res.status_code == 200 and "attachment" in res.headers["Content-Disposition"]
    doc = json.loads(res.data)
    assert (doc["format"], doc["version"], doc["name"]) == ("qwen-image-studio-config", 2, "orig")
    assert doc["params"] == custom_params()
    res = upload(client, res.data, "orig.json", name="copy")
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["config"]["name"] == "copy"
    assert params_of(client, "copy") == params_of(client, "orig") == custom_params()
    # without a name the document's own name is used, and it is taken: nothing overwritten
    again = upload(client, client.get("/api/configs/copy/export").data, "whatever.json")
    assert again.status_code == 409 and names(client) == ["copy", "orig"]


def test_import_accepts_older_versions_and_toml(client: FlaskClient) -> None:
    seed_v1 = {
        "dit_path": "/m/qwen_image_bf16.safetensors",
        "network_dim": 16,
        "edit_mode": True,
        "network_args": "loraplus_lr_ratio=4",
        "output_name": "seed",
    }
    res = upload(client, json.dumps(seed_v1).encode(), "seed-ui.json")
    assert res.status_code == 200, res.get_json()
    params = params_of(client, "seed-ui")
    assert (params["dit"], params["network_dim"], params["model_version"]) == (
        "/m/qwen_image_bf16.safetensors",
        16,
        "edit",
    )
    toml = b'dit = "/m/dit.safetensors"\nnetwork_dim = 32\n[train]\nlearning_rate = 1e-4\nedit_plus = true\n'
    res = upload(client, toml, "args.toml")
    assert res.status_code == 200, res.get_json()
    params = params_of(client, "args")
    assert (params["network_dim"], params["learning_rate"], params["model_version"]) == (
        32,
        1e-4,
        "edit-2509",
    )
    assert not list((client.application.extensions["qwen_image_studio"].scratch).glob("*"))


@pytest.mark.parametrize(
    ("data", "filename", "expected"),
    [
        (b"{not json", "bad.json", "bad.json is not valid JSON"),
        (b"[1, 2]", "list.json", "list.json: expected a JSON object"),
        (
            json.dumps({"format": "qwen-image-studio-config", "version": 99, "params": {}}).encode(),
            "future.json",
            "configuration version 99 is not supported",
        ),
        (
            json.dumps(
                {"format": "qwen-image-studio-config", "version": 2, "params": {"network_dim": 0}}
            ).encode(),
            "range.json",
            "--network_dim: 0 is out of range; allowed at least 1",
        ),
        (
            json.dumps({"mystery_key": 1}).encode(),
            "v1.json",
            "unknown parameter(s) in the configuration: mystery_key",
        ),
        (b"\xff\xfe\x00garbage", "binary.json", "binary.json: the file is not UTF-8 text"),
        (b"network_dim = [", "bad.toml", "bad.toml is not valid TOML"),
        (b"no_such_flag = 1", "unknown.toml", "unknown parameter 'no_such_flag'"),
    ],
)
def test_bad_import_overwrites_nothing(
    client: FlaskClient, data: bytes, filename: str, expected: str
) -> None:
    post(client, "/api/configs", {"name": "target", "params": CUSTOM})
    res = upload(client, data, filename, name="target", overwrite="1")
    assert res.status_code == 400
    body = res.get_json()
    assert expected in body["error"] + " ".join(p["message"] for p in body.get("problems", []))
    assert names(client) == ["target"] and params_of(client, "target") == custom_params()


def test_import_needs_a_file(client: FlaskClient) -> None:
    res = client.post("/api/configs/import", headers=UPLOAD, content_type="multipart/form-data", data={})
    assert res.status_code == 400 and "choose a configuration file" in res.get_json()["error"]


REFERENCE_COMMAND = r"""accelerate launch --num_cpu_threads_per_process 1 --mixed_precision bf16 \
  src/musubi_tuner/qwen_image_train_network.py \
  --dit /models/qwen_image_bf16.safetensors --vae /models/qwen_image_vae.safetensors \
  --text_encoder /models/qwen_2.5_vl_7b.safetensors --dataset_config "/data/my set.toml" \
  --sdpa --mixed_precision bf16 --timestep_sampling shift --weighting_scheme none --discrete_flow_shift 2.2 \
  --optimizer_type adamw8bit --learning_rate 5e-5 --gradient_checkpointing \
  --max_data_loader_n_workers 2 --persistent_data_loader_workers \
  --network_module networks.lora_qwen_image --network_dim 16 --network_args loraplus_lr_ratio=4 \
  --max_train_epochs 8 --save_every_n_epochs 1 --seed 42 --fp8_base --fp8_scaled --blocks_to_swap 16 \
  --output_dir /out --output_name my-lora --edit
"""


def test_command_line_import(client: FlaskClient) -> None:
    res = post(client, "/api/config/from-command", {"text": REFERENCE_COMMAND})
    assert res.status_code == 200, res.get_json()
    body = res.get_json()
    p = body["params"]
    assert body["stage"] == "train_network"
    assert (p["dit"], p["dataset_config"], p["network_dim"], p["blocks_to_swap"], p["model_version"]) == (
        "/models/qwen_image_bf16.safetensors",
        "/data/my set.toml",
        16,
        16,
        "edit",
    )
    assert p["fp8_base"] and p["fp8_scaled"] and p["output_name"] == "my-lora"
    assert names(client) == []  # loaded into the form, not saved
    cache = post(
        client,
        "/api/config/from-command",
        {"text": "python qwen_image_cache_text_encoder_outputs.py --dataset_config d.toml --batch_size 4"},
    )
    assert cache.get_json()["stage"] == "cache_text_encoder_outputs"
    assert cache.get_json()["params"]["cache_batch_size"] == 4
    flags_only = post(client, "/api/config/from-command", {"text": "--network_dim 4"})
    assert flags_only.get_json()["params"]["network_dim"] == 4


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("python -m musubi_tuner.qwen_image_train_network --network_dim 4", "train_network"),
        (
            "python3.11 /opt/musubi/src/musubi_tuner/qwen_image_cache_latents.py --vae v.safetensors",
            "cache_latents",
        ),
        ("qwen-image-studio cache-text --text_encoder te.safetensors", "cache_text_encoder_outputs"),
        (
            "python qwen_image_train_network.py ^\r\n  --network_dim 4 `\n --seed 1  # a comment",
            "train_network",
        ),
        ("C:\\venv\\python.exe qwen_image_train_network.py --network_dim 4", "train_network"),
    ],
)
def test_command_line_forms(client: FlaskClient, text: str, stage: str) -> None:
    res = post(client, "/api/config/from-command", {"text": text})
    assert res.status_code == 200, res.get_json()
    assert res.get_json()["stage"] == stage


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "python qwen_image_train_network.py --mode_scale 11",
            "--mode_scale: 11 is out of range; allowed 0 to 10.0",
        ),
        ("python qwen_image_train_network.py --no_such_flag", "unrecognized arguments: --no_such_flag"),
        ("python qwen_image_train_network.py --fp8_scaled", "--fp8_scaled needs --fp8_base"),
        ("python other_script.py --network_dim 4", "no training or caching script found"),
        ("rm -rf /", "should start with python, accelerate or a flag"),
        ("python qwen_image_train_network.py --dit 'unclosed", "cannot be read"),
        ("   ", "the command line is empty"),
    ],
)
def test_command_line_import_errors(client: FlaskClient, text: str, expected: str) -> None:
    res = post(client, "/api/config/from-command", {"text": text})
    assert res.status_code == 400
    body = res.get_json()
    assert expected in body["error"] + " ".join(p["message"] for p in body.get("problems", []))


def test_command_lines_of_the_three_stages(client: FlaskClient) -> None:
    res = post(client, "/api/config/argv", {"params": {**CUSTOM, "dataset_config": "/d/x.toml"}})
    commands = {c["stage"]: c for c in res.get_json()["commands"]}
    assert list(commands) == ["cache_latents", "cache_text_encoder_outputs", "train_network"]
    train = commands["train_network"]
    assert train["script"] == "qwen_image_train_network.py"
    assert train["command"].startswith("python qwen_image_train_network.py ")
    assert "--network_dim 16" in train["command"] and "'my lora'" in train["command"]
    for c in commands.values():
        assert c["argv"][c["argv"].index("--model_version") + 1] == "edit-2509"
    assert "--network_dim" not in commands["cache_latents"]["argv"]
    invalid = post(client, "/api/config/argv", {"params": {"network_dim": 0}})
    assert invalid.status_code == 400 and invalid.get_json()["problems"][0]["field"] == "network_dim"
    post(client, "/api/configs", {"name": "saved", "params": CUSTOM})
    saved = client.get("/api/config/argv?name=saved").get_json()["commands"]
    assert saved == post(client, "/api/config/argv", {"params": CUSTOM}).get_json()["commands"]
    assert client.get("/api/config/argv").status_code == 200
    # relative paths are taken from the workspace, as the jobs run them
    relative = post(client, "/api/config/argv", {"params": {"dataset_config": "data/x.toml"}}).get_json()
    argv = relative["commands"][0]["argv"]
    workspace = Path(studio_of(client.application).workspace)
    assert argv[argv.index("--dataset_config") + 1] == str(workspace / "data" / "x.toml")


def test_demo_configurations_are_imported_once(tmp_path: Path) -> None:
    configs = tmp_path / "ws" / "demo" / "configs"
    t2i = StudioConfig(network_dim=4, output_name="demo_t2i")
    edit = StudioConfig(network_dim=4, output_name="demo_edit", model_version="edit-2509")
    save_config(t2i, configs / "demo-t2i.json", name="demo-t2i")
    save_config(edit, configs / "demo-edit.json", name="demo-edit")
    client = create_app(tmp_path / "ws").test_client()
    assert names(client) == ["demo-edit", "demo-t2i"]
    assert params_of(client, "demo-t2i") == t2i.model_dump(mode="json")
    assert params_of(client, "demo-edit")["model_version"] == "edit-2509"
    client.delete("/api/configs/demo-t2i", json={}, headers=ORIGIN)
    again = create_app(tmp_path / "ws").test_client()
    assert names(again) == ["demo-edit"]  # a deleted demo configuration does not come back
    assert [p.name for p in (tmp_path / "ws" / "configs").iterdir()] == ["demo-edit.json"]


def test_stored_document_that_no_longer_validates_loads_with_its_problems(
    app: Flask, client: FlaskClient
) -> None:
    store = app.extensions["qwen_image_studio"].store
    store.save_config(
        "old", {"format": "qwen-image-studio-config", "version": 2, "params": {"network_dim": 0}}
    )
    body = client.get("/api/configs/old").get_json()
    assert body["params"] == {"network_dim": 0}
    assert body["problems"][0]["message"] == "--network_dim: 0 is out of range; allowed at least 1"


GENERATION_ONLY = {  # parameters of the generate stage only: no input in the form, kept in configurations
    "prompt": "a cat in a hat",
    "negative_prompt": "blurry",
    "image_size": [512, 768],
    "infer_steps": 30,
    "guidance_scale": 5.5,
    "lora_weight": ["output/a.safetensors", "output/b.safetensors"],
    "lora_multiplier": [0.8, 0.5],
    "save_path": "generated",
}


def mirror_file(tmp_path: Path, stem: str) -> Path:
    return tmp_path / "ws" / "configs" / f"{stem}.json"


def test_configurations_are_mirrored_as_json_files(client: FlaskClient, tmp_path: Path) -> None:
    """Every save, rename and delete is mirrored in WORKSPACE/configs/<name>.json, the export's bytes."""
    folder = tmp_path / "ws" / "configs"
    params = {**CUSTOM, **GENERATION_ONLY}
    res = post(client, "/api/configs", {"name": "第一 run", "params": params})
    assert res.status_code == 200 and res.get_json()["file"] == "configs/第一 run.json"
    first = mirror_file(tmp_path, "第一 run")
    assert first.read_bytes() == client.get("/api/configs/第一 run/export").data
    doc = json.loads(first.read_text(encoding="utf-8"))
    assert doc["name"] == "第一 run" and doc["params"] == StudioConfig(**params).model_dump(mode="json")
    assert {k: doc["params"][k] for k in GENERATION_ONLY} == GENERATION_ONLY
    # an overwrite rewrites the file
    res = post(client, "/api/configs", {"name": "第一 run", "params": {"network_dim": 8}, "overwrite": True})
    assert res.status_code == 200
    assert json.loads(first.read_text(encoding="utf-8"))["params"]["network_dim"] == 8
    assert first.read_bytes() == client.get("/api/configs/第一 run/export").data
    # a rename moves it (the name inside follows)
    res = post(client, "/api/configs/第一 run/rename", {"new_name": "second"})
    assert res.status_code == 200 and res.get_json()["file"] == "configs/second.json"
    second = mirror_file(tmp_path, "second")
    assert not first.exists() and json.loads(second.read_text(encoding="utf-8"))["name"] == "second"
    assert second.read_bytes() == client.get("/api/configs/second/export").data
    # an import is a save too
    assert upload(client, second.read_bytes(), "x.json", name="imported").status_code == 200
    assert mirror_file(tmp_path, "imported").read_bytes() == client.get("/api/configs/imported/export").data
    # a delete removes it; nothing else is left in the folder (no temporary files)
    assert client.delete("/api/configs/second", json={}, headers=ORIGIN).status_code == 200
    assert not second.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["imported.json"]
    # refused changes touch no file
    assert post(client, "/api/configs", {"name": "imported", "params": {}}).status_code == 409
    assert post(client, "/api/configs", {"name": "bad", "params": {"network_dim": 0}}).status_code == 400
    assert sorted(p.name for p in folder.iterdir()) == ["imported.json"]


def test_mirror_file_names_are_safe_and_distinct(client: FlaskClient, tmp_path: Path) -> None:
    names_ = [
        "a:b",
        "a%3Ab",
        "a_b",
        "a?b",
        ".hidden",
        "-dash",
        "end.",
        "a b",
        "~x",
        "😀" * 100,
        "😀" * 99 + "🙂",
    ]
    for name in names_:
        assert post(client, "/api/configs", {"name": name, "params": {}}).status_code == 200, name
    folder = tmp_path / "ws" / "configs"
    files = sorted(p.name for p in folder.iterdir())
    assert len(files) == len(names_)  # one file each: no two names share one
    assert {"a%3Ab.json", "a%253Ab.json", "a_b.json", "a%3Fb.json", "%2Ehidden.json", "%2Ddash.json"} <= set(
        files
    )
    assert {"end%2E.json", "a b.json", "%7Ex.json"} <= set(files)
    for file in files:
        assert not file.startswith(".") and len(file.encode()) <= 255
        assert json.loads((folder / file).read_text(encoding="utf-8"))["name"] in names_
    long_files = [f for f in files if "~" in f]
    assert len(long_files) == 2 and all(len(f.encode()) <= 205 for f in long_files)


def test_configurations_saved_before_the_mirror_get_their_files(tmp_path: Path) -> None:
    first = create_app(tmp_path / "ws").test_client()
    post(first, "/api/configs", {"name": "kept", "params": CUSTOM})
    file = mirror_file(tmp_path, "kept")
    expected = file.read_bytes()
    file.unlink()
    again = create_app(tmp_path / "ws").test_client()  # a workspace from before the files were kept
    assert file.read_bytes() == expected == again.get("/api/configs/kept/export").data


def test_a_mirror_that_cannot_be_written_does_not_fail_the_save(
    client: FlaskClient, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "ws" / "configs").write_text("not a folder")
    assert post(client, "/api/configs", {"name": "x", "params": {}}).status_code == 200
    assert names(client) == ["x"] and "cannot write" in caplog.text


def test_generation_only_values_round_trip(client: FlaskClient) -> None:
    """The form has no input for them, but a configuration keeps them through import, load and export."""
    doc = {"format": "qwen-image-studio-config", "version": 2, "name": "gen", "params": GENERATION_ONLY}
    res = upload(client, json.dumps(doc).encode(), "gen.json")
    assert res.status_code == 200, res.get_json()
    loaded = params_of(client, "gen")
    assert {k: loaded[k] for k in GENERATION_ONLY} == GENERATION_ONLY
    exported = json.loads(client.get("/api/configs/gen/export").data)["params"]
    assert exported == loaded
    assert (
        post(client, "/api/configs", {"name": "gen", "params": loaded, "overwrite": True}).status_code == 200
    )
    assert params_of(client, "gen") == loaded
