"""The web form: generated from the parameter schema, validated with the schema's messages, in two languages."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from node_support import node

from qwen_image_studio.params.json_schema import form_schema
from qwen_image_studio.params.schema import EDIT_VERSIONS, switch_needs
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.webui.app import create_app
from qwen_image_studio.webui.i18n import LANG_HEADER, TABLE
from qwen_image_studio.webui.jobs.schema import JOB_KINDS, UI_STAGES

WEBUI = Path(__file__).resolve().parents[2] / "src" / "qwen_image_studio" / "webui"
STATIC_JS = WEBUI / "static" / "js"
ORIGIN = {"Origin": "http://localhost"}


@pytest.fixture
def client(tmp_path: Path) -> FlaskClient:
    return create_app(tmp_path / "ws").test_client()


MODEL_SCRIPT = f"""
import {{ readFileSync }} from "node:fs";
import {{ badgeStages, buildFormModel }} from "{(STATIC_JS / "form-model.js").as_uri()}";
const model = buildFormModel(JSON.parse(readFileSync(0, "utf8")));
console.log(JSON.stringify({{
  sections: model.sections.map((s) => ({{ name: s.name, collapsed: s.collapsed,
    fields: s.fields.map((f) => ({{ name: f.name, kind: f.kind, flag: f.flag, default: f.default,
                                    requiredFor: f.requiredFor, enumValues: f.enumValues,
                                    badge: badgeStages(model, f) }})) }})),
  hidden: model.fields.filter((f) => f.hidden).map((f) => f.name),
  all: model.fields.map((f) => f.name),
  needs: Object.fromEntries(model.fields.filter((f) => f.needs).map((f) => [f.name, f.needs])),
  editSwitch: model.editSwitch,
}}));
"""


def test_schema_is_served_with_ui_metadata(client: FlaskClient) -> None:
    res = client.get("/api/schema")
    assert res.status_code == 200
    schema = res.get_json()
    served = {
        name: {k: v for k, v in prop.items() if k != "x-hidden"}
        for name, prop in schema["properties"].items()
    }
    assert served == json.loads(json.dumps(form_schema()["properties"]))
    assert schema["x-groups"] == [
        "models",
        "dataset",
        "training",
        "network",
        "memory",
        "logging",
        "samples",
        "caching",
        "captioning",
        "generation",
        "advanced",
    ]
    prop = schema["properties"]["mode_scale"]
    assert (prop["x-flag"], prop["x-kind"], prop["minimum"], prop["maximum"], prop["default"]) == (
        "--mode_scale",
        "float",
        0.0,
        10.0,
        1.29,
    )
    assert prop["x-help-zh"] and prop["description"] and prop["x-allowed"] == "0 to 10.0"
    shift = schema["properties"]["discrete_flow_shift"]  # the seed's range is a recommendation
    assert (shift["exclusiveMinimum"], shift["x-allowed"], shift["x-recommended"]) == (
        0.0,
        "above 0",
        [1.0, 5.0],
    )
    assert schema["x-edit-switch"]["edit-values"] == list(EDIT_VERSIONS)
    assert schema["x-edit-switch"]["field"] in schema["properties"]


def test_form_fields_equal_the_schema(client: FlaskClient) -> None:
    schema = client.get("/api/schema").get_json()
    model = node(MODEL_SCRIPT, json.dumps(schema))
    props = schema["properties"]
    names = [f["name"] for s in model["sections"] for f in s["fields"]]
    shown = [name for name, prop in props.items() if not prop.get("x-hidden")]
    assert sorted(names) == sorted(shown)  # every shown property present, none invented, none twice
    assert sorted(model["all"]) == sorted(props)  # the hidden ones are in the model (their values carried)
    assert sorted(model["hidden"]) == sorted(set(props) - set(shown))
    assert [s["name"] for s in model["sections"]] == schema["x-groups"]
    assert [s["name"] for s in model["sections"] if s["collapsed"]] == ["advanced"]
    for section in model["sections"]:
        orders = [props[f["name"]]["x-order"] for f in section["fields"]]
        assert orders == sorted(orders)
        for f in section["fields"]:
            prop = props[f["name"]]
            assert prop["x-group"] == section["name"]
            assert (f["kind"], f["flag"], f["default"]) == (
                prop["x-kind"],
                prop["x-flag"],
                prop.get("default"),
            )
            assert f["requiredFor"] == prop.get("x-required-for", [])
            assert f["badge"] == [s for s in f["requiredFor"] if s in schema["x-ui-stages"]]
            if f["kind"] == "choice":  # a select offering exactly the schema's values
                main = next(b for b in prop.get("anyOf", [prop]) if b.get("type") != "null")
                assert f["enumValues"] == main.get("enum", [main.get("const")])
    assert model["editSwitch"]["field"] == schema["x-edit-switch"]["field"]
    # switches that need another one (the form turns that one on with them), as the schema's rules say
    assert model["needs"] == switch_needs() and switch_needs()["fp8_scaled"] == "fp8_base"


def test_the_form_hides_the_fields_of_stages_it_cannot_launch(client: FlaskClient) -> None:
    """The UI runs every stage (cache, training, captioning, generation): a parameter gets no input only
    when it is declared cli_only (the reference scripts' file-mode flags and what the UI's jobs set
    themselves), derived from the schema's stage sets and the jobs the UI runs (no list of names anywhere
    but this test)."""
    schema = client.get("/api/schema").get_json()
    launched = {s.value for stages in JOB_KINDS.values() for s in stages}
    assert schema["x-ui-stages"] == [s.value for s in UI_STAGES] and set(schema["x-ui-stages"]) == launched
    assert Stage.GENERATE.value in launched and Stage.CAPTION.value in launched
    props = schema["properties"]
    hidden = sorted(n for n, p in props.items() if p.get("x-hidden"))
    assert hidden == sorted(
        n for n, p in props.items() if p.get("x-cli-only") or not set(p["x-stages"]) & launched
    )
    assert hidden == sorted(
        [
            "from_file",
            "save_merged_model",
            # captioning's folder mode (caption_images_by_qwen_vl.py --image_dir) and what the UI's
            # captioning jobs set (the workspace's caption history, the preview count)
            "image_dir",
            "output_file",
            "output_format",
            "caption_history",
            "preview_count",
            # the rest of the reference generation script's flags (issue 13, item 6)
            "output_type",
            "latent_path",
            "no_metadata",
            "append_original_name",
            "embedded_cfg_scale",
            "num_layers",
            "attn_mode",
            "text_encoder_cpu",
            "vae_enable_tiling",
            "use_pinned_memory_for_block_swap",
            "disable_numpy_memmap",
            "bell",
        ]
    )
    # captioning's settings are a form section of their own (shown in the Dataset tab)
    captioning = [n for n, p in props.items() if p["x-group"] == "captioning" and not p.get("x-hidden")]
    assert captioning == [
        "caption_model",
        "max_new_tokens",
        "max_size",
        "caption_template",
        "edit_pairs",
        "overwrite_captions",
        "trigger_word",
    ]
    # generation's are the Generate tab's form (the prompt is generation's; captioning uses its templates)
    generation = [n for n, p in props.items() if p["x-group"] == "generation" and not p.get("x-hidden")]
    assert generation[:8] == [
        "prompt",
        "negative_prompt",
        "image_size",
        "infer_steps",
        "guidance_scale",
        "control_image_path",
        "lora_weight",
        "lora_multiplier",
    ]
    assert {"grid_loras", "grid_strengths", "save_path"} <= set(generation)
    # a parameter shared with generation stays in its own section (e.g. --dit, also required for training)
    assert props["dit"]["x-group"] == "models" and props["seed"].get("x-also") == ["generation"]


def test_no_field_list_is_typed_into_the_page() -> None:
    names = set(form_schema()["properties"])
    texts = {
        p.name: p.read_text(encoding="utf-8") for p in [*STATIC_JS.glob("*.js"), *WEBUI.glob("templates/*")]
    }
    for file, text in texts.items():
        quoted = set(re.findall(r"""["'`]([a-z0-9_]+)["'`]""", text))
        assert not (quoted & names), f"{file} names parameters: {sorted(quoted & names)}"


def plain(problems: list[dict[str, object]]) -> list[tuple[object, object]]:
    """Problems as (field, message) pairs (without their structured form)."""
    return [(p["field"], p["message"]) for p in problems]


RENDER_SCRIPT = f"""
import {{ readFileSync }} from "node:fs";
import {{ buildFormModel, checkValue }} from "{(STATIC_JS / "form-model.js").as_uri()}";
import {{ fill, render }} from "{(STATIC_JS / "messages.js").as_uri()}";
const input = JSON.parse(readFileSync(0, "utf8"));
const model = buildFormModel(input.schema);
const out = {{}};
for (const [lang, cases] of Object.entries(input.cases)) {{
  const tables = [input.table[lang], input.table.en];
  out[lang] = cases.map(([name, value, server]) => {{
    const p = checkValue(model.byName[name], value);
    return [fill(tables, p.key, p.vars), render(tables, server)];
  }});
}}
console.log(JSON.stringify(out));
"""


def test_client_messages_match_the_servers(client: FlaskClient) -> None:
    """In both languages the form's own checks word a value as the server does, and the page renders the
    server's structured message to the server's text."""
    schema = client.get("/api/schema").get_json()
    cases = [
        ("mode_scale", 11),
        ("network_dim", 0),
        ("learning_rate", -0.5),
        ("blocks_to_swap", 60),
        ("network_dropout", 1),
        ("network_alpha", 0),
        ("mixed_precision", "fp64"),
    ]
    server: dict[str, list[tuple[str, object, dict[str, object]]]] = {}
    texts: dict[str, list[str]] = {}
    for lang in TABLE:
        server[lang], texts[lang] = [], []
        for name, value in cases:
            res = client.post(
                "/api/validate", json={"params": {name: value}}, headers={**ORIGIN, LANG_HEADER: lang}
            )
            [problem] = res.get_json()["problems"]
            assert problem["field"] == name
            server[lang].append((name, value, problem["message_i18n"]))
            texts[lang].append(problem["message"])
    rendered = node(RENDER_SCRIPT, json.dumps({"schema": schema, "table": TABLE, "cases": server}))
    for lang in TABLE:
        assert [client_text for client_text, _ in rendered[lang]] == texts[lang], lang
        assert [page_text for _, page_text in rendered[lang]] == texts[lang], lang
    assert texts["zh-CN"][0] == "--mode_scale：11 超出范围；允许 0 到 10.0"
    assert texts["zh-CN"][4] == "--network_dropout：1 超出范围；允许 0 到 1.0（不含 1.0）"


def test_validation_returns_the_schemas_messages(client: FlaskClient) -> None:
    res = client.post("/api/validate", json={"params": {"mode_scale": 11}}, headers=ORIGIN)
    body = res.get_json()
    assert res.status_code == 200 and body["ok"] is False
    assert plain(body["problems"]) == [("mode_scale", "--mode_scale: 11 is out of range; allowed 0 to 10.0")]
    res = client.post("/api/validate", json={"params": {"fp8_scaled": True}}, headers=ORIGIN)
    assert plain(res.get_json()["problems"]) == [("", "--fp8_scaled needs --fp8_base")]
    res = client.post(
        "/api/validate", json={"params": {"fp8_scaled": True, "fp8_base": True}}, headers=ORIGIN
    )
    assert res.get_json() == {"ok": True, "problems": [], "stage_problems": [], "warnings": []}
    res = client.post("/api/validate", json={"params": {"bogus": 1}}, headers=ORIGIN)
    assert plain(res.get_json()["problems"]) == [("bogus", "unknown parameter 'bogus'")]


def test_stage_checks_name_missing_fields_and_files(client: FlaskClient, tmp_path: Path) -> None:
    params = {"dit": str(tmp_path / "missing_dit.safetensors"), "mode_scale": 11}
    res = client.post("/api/validate", json={"params": params, "stage": "train_network"}, headers=ORIGIN)
    body = res.get_json()
    needs = {p["field"]: p["message"] for p in body["stage_problems"]}
    assert needs["dit"] == f"--dit: not found: {tmp_path / 'missing_dit.safetensors'}"
    assert needs["output_name"] == "--output_name is required"
    assert "mode_scale" not in needs and body["problems"][0]["field"] == "mode_scale"
    both = client.post(
        "/api/validate",
        headers=ORIGIN,
        json={"params": {}, "stage": ["cache_latents", "cache_text_encoder_outputs"]},
    )
    fields = [p["field"] for p in both.get_json()["stage_problems"]]
    assert sorted(fields) == ["dataset_config", "text_encoder", "vae"]  # each once
    bad = client.post("/api/validate", json={"params": {}, "stage": "nope"}, headers=ORIGIN)
    assert bad.status_code == 400 and "unknown stage" in bad.get_json()["error"]


def test_defaults_are_the_schemas(client: FlaskClient) -> None:
    params = client.get("/api/config/defaults").get_json()["params"]
    schema = form_schema()["properties"]
    assert params == {name: prop.get("default") for name, prop in schema.items()}
    assert (params["discrete_flow_shift"], params["optimizer_type"], params["network_args"]) == (
        2.2,
        "adamw8bit",
        ["loraplus_lr_ratio=4"],
    )


def test_i18n_tables_have_the_same_keys_and_cover_the_page(client: FlaskClient) -> None:
    assert set(TABLE["en"]) == set(TABLE["zh-CN"])
    assert all(TABLE["en"][k] and TABLE["zh-CN"][k] for k in TABLE["en"])
    for key in TABLE["en"]:  # placeholders agree between the languages
        assert set(re.findall(r"\{\w+\}", TABLE["en"][key])) == set(
            re.findall(r"\{\w+\}", TABLE["zh-CN"][key])
        )
    used: set[str] = set()
    for path in [*STATIC_JS.glob("*.js"), *WEBUI.glob("templates/*.html")]:
        text = path.read_text(encoding="utf-8")
        used |= set(re.findall(r"""\bt\(\s*["']([\w.-]+)["']""", text))
        used |= set(re.findall(r"""data-i18n(?:-title|-placeholder)?=["']([\w.-]+)["']""", text))
    used |= {f"group.{g}" for g in form_schema()["x-groups"]}
    used |= {f"stage.{s}" for s in ("cache_latents", "cache_text_encoder_outputs", "train_network")}
    assert used - set(TABLE["en"]) == set()
    assert client.get("/api/i18n").get_json() == TABLE


def test_page_is_rendered_in_the_remembered_language(client: FlaskClient) -> None:
    zh = client.get("/")
    assert (
        zh.status_code == 200
        and '<html lang="zh-CN">' in zh.text
        and TABLE["zh-CN"]["toolbar.save"] in zh.text
    )
    client.set_cookie("studio_lang", "en")
    en = client.get("/")
    assert '<html lang="en">' in en.text and TABLE["en"]["jobs.title"] in en.text
    assert 'id="i18n-table"' in en.text and "<script>" not in en.text  # no inline script (CSP)
    assert client.get("/static/js/app.js").status_code == 200


def test_the_page_reads_each_job_kinds_stages_from_the_server(client: FlaskClient) -> None:
    kinds = client.get("/api/schema").get_json()["x-job-kinds"]
    assert kinds == {kind: [s.value for s in stages] for kind, stages in JOB_KINDS.items()}
    assert kinds["pipeline"] == ["cache_latents", "cache_text_encoder_outputs", "train_network"]
    assert "train_network" not in (STATIC_JS / "app.js").read_text(encoding="utf-8")  # no copy in the page
