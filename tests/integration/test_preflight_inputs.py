"""The pre-launch check reads every input a stage will read: prompt files, the dataset TOML, captions and
control images. What a stage would reject is reported before the first stage starts, naming file and line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen_image_studio.params.config_files import load_config
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import stage_problems
from qwen_image_studio.webui.app import create_app
from qwen_image_studio.webui.jobs.schema import JOB_KINDS

ORIGIN = {"Origin": "http://localhost"}
PIPELINE = JOB_KINDS["pipeline"]


def _problems(config, stages=PIPELINE) -> dict[str, str]:
    found: dict[str, str] = {}
    for stage in stages:
        for p in stage_problems(config, stage):
            found.setdefault(p.field, p.message)
    return found


@pytest.mark.parametrize("name", ["demo-t2i", "demo-edit"])
def test_both_demo_configurations_pass_every_stage_check(demo: Path, name: str) -> None:
    config = load_config(demo / "configs" / f"{name}.json")
    assert _problems(config) == {}
    assert Path(config.sample_prompts).name == f"sample_prompts_{name.removeprefix('demo-')}.txt"


def test_sample_prompts_without_control_images_are_refused_for_an_edit_model(demo: Path) -> None:
    edit = load_config(demo / "configs" / "demo-edit.json")
    wrong = edit.model_copy(update={"sample_prompts": str(demo / "sample_prompts_t2i.txt")})
    problems = _problems(wrong)
    assert list(problems) == ["sample_prompts"]
    assert problems["sample_prompts"] == (
        f"--sample_prompts: {demo / 'sample_prompts_t2i.txt'} line 1: --model_version edit-2509 needs a "
        "control image (--ci PATH on the line, or --control_image_path)"
    )
    t2i = load_config(demo / "configs" / "demo-t2i.json")
    other = t2i.model_copy(update={"sample_prompts": str(demo / "sample_prompts_edit.txt")})
    assert "line 1: control images need an edit --model_version" in _problems(other)["sample_prompts"]


def test_a_bad_prompt_line_is_named_by_file_and_line(demo: Path, tmp_path: Path) -> None:
    t2i = load_config(demo / "configs" / "demo-t2i.json")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# my prompts\na cat --w 64 --h 64\na dog --s abc\n", encoding="utf-8")
    problems = _problems(t2i.model_copy(update={"sample_prompts": str(prompts)}))
    assert problems == {"sample_prompts": f"--sample_prompts: {prompts} line 3: --s 'abc' is not a whole number"}
    prompts.write_text("a cat --ci missing.png\n", encoding="utf-8")
    found = _problems(t2i.model_copy(update={"sample_prompts": str(prompts)}))["sample_prompts"]
    assert found == f"--sample_prompts: {prompts} line 1: control image not found: missing.png"
    gen = t2i.model_copy(update={"from_file": str(prompts), "output_dir": str(tmp_path)})
    assert "line 1: control image not found" in _problems(gen, (Stage.GENERATE,))["from_file"]


def _copy_dataset(demo: Path, tmp_path: Path) -> Path:
    root = tmp_path / "dataset"
    shutil.copytree(demo / "dataset" / "images", root / "images")
    shutil.copytree(demo / "dataset" / "controls", root / "controls")
    return root


def test_dataset_problems_a_stage_would_refuse(demo: Path, tmp_path: Path) -> None:
    t2i = load_config(demo / "configs" / "demo-t2i.json")
    root = _copy_dataset(demo, tmp_path)
    toml = tmp_path / "dataset.toml"
    toml.write_text("[general]\nresolution = [64, 64\n", encoding="utf-8")  # a TOML syntax error
    found = _problems(t2i.model_copy(update={"dataset_config": str(toml)}), PIPELINE[:1])
    assert found["dataset_config"].startswith(f"--dataset_config: {toml}: not valid TOML")

    for caption in (root / "images").glob("*.txt"):
        caption.unlink()  # no image has a caption: every stage refuses "no usable images"
    toml.write_text(
        f'[general]\nresolution = [64, 64]\n\n[[datasets]]\nimage_directory = "{root / "images"}"\n'
        f'cache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    found = _problems(t2i.model_copy(update={"dataset_config": str(toml)}))
    assert list(found) == ["dataset_config"]  # once for the three stages
    message = found["dataset_config"]
    assert message.startswith(f"--dataset_config: {toml} has no usable images: ")
    assert "6 image(s) lack caption files (.txt) beside them" in message and "demo_00.png" in message


def test_edit_dataset_without_matching_control_images(demo: Path, tmp_path: Path) -> None:
    edit = load_config(demo / "configs" / "demo-edit.json")
    root = _copy_dataset(demo, tmp_path)
    for control in (root / "controls").iterdir():
        control.rename(control.with_name("other_" + control.name))  # no control image pairs with a target
    toml = tmp_path / "edit.toml"
    toml.write_text(
        f'[general]\nresolution = [64, 64]\n\n[[datasets]]\nimage_directory = "{root / "images"}"\n'
        f'control_directory = "{root / "controls"}"\ncache_directory = "{tmp_path / "cache"}"\n',
        encoding="utf-8",
    )
    message = _problems(edit.model_copy(update={"dataset_config": str(toml)}))["dataset_config"]
    assert message.startswith(f"--dataset_config: {toml} has no usable images: ") and "control" in message


def test_the_form_and_the_job_report_input_problems_before_any_stage(demo: Path, tmp_path: Path) -> None:
    app = create_app(tmp_path / "ws", allow_dirs=(demo, tmp_path))
    client = app.test_client()
    params = json.loads((demo / "configs" / "demo-edit.json").read_text())["params"]
    params["sample_prompts"] = str(demo / "sample_prompts_t2i.txt")
    params["output_dir"] = str(tmp_path / "out")
    check = client.post("/api/validate", json={"params": params, "stage": list(PIPELINE)}, headers=ORIGIN)
    body = check.get_json()
    assert not body["ok"] and [p["field"] for p in body["stage_problems"]] == ["sample_prompts"]
    assert "sample_prompts_t2i.txt line 1" in body["stage_problems"][0]["message"]
    res = client.post("/api/jobs", json={"kind": "pipeline", "params": params}, headers=ORIGIN)
    assert res.status_code == 400
    refused = res.get_json()
    assert "sample_prompts_t2i.txt line 1" in json.dumps(refused)
    assert client.get("/api/jobs").get_json()["jobs"] == []  # nothing started
    assert not (tmp_path / "out").exists()
