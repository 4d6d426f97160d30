"""Values reference-trainer users pass (issue 13, item 5): the seed's ranges are recommendations, shown in
help and form and warned about outside them; only what cannot work is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import train_support as ts
from flask.testing import FlaskClient

from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import ConfigProblems, recommendation_warnings, validate_config
from qwen_image_studio.webui.app import create_app
from qwen_image_studio.webui.i18n import LANG_HEADER

ORIGIN = {"Origin": "http://localhost"}


@pytest.mark.parametrize(
    "values",
    [
        {"timestep_sampling": "sigma"},  # the reference's default sampling
        {"learning_rate": 1e-2},
        {"learning_rate": 1.0, "optimizer_type": "prodigyopt.Prodigy"},  # adaptive optimizers take 1.0
        {"network_dim": 512},
        {"discrete_flow_shift": 7.0},
        {"max_train_epochs": 500, "save_every_n_epochs": 50},
    ],
)
def test_reference_values_are_accepted(values: dict[str, object]) -> None:
    config = validate_config(values)
    assert all(getattr(config, k) == v for k, v in values.items())


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"learning_rate": -1e-4}, "--learning_rate: -0.0001 is out of range; allowed above 0"),
        ({"learning_rate": 0}, "--learning_rate: 0 is out of range; allowed above 0"),
        ({"network_dim": 0}, "--network_dim: 0 is out of range; allowed at least 1"),
        ({"discrete_flow_shift": 0}, "--discrete_flow_shift: 0 is out of range; allowed above 0"),
    ],
)
def test_what_cannot_work_is_refused_in_one_line(values: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigProblems) as exc:
        validate_config(values)
    assert str(exc.value) == said


def test_values_outside_the_recommended_range_are_warned_about() -> None:
    config = validate_config({"learning_rate": 1e-2, "network_dim": 512, "discrete_flow_shift": 2.2})
    said = [p.message for p in recommendation_warnings(config, Stage.TRAIN)]
    assert said == [
        "--learning_rate 0.01 is outside the recommended range 1e-06 to 0.001",
        "--network_dim 512 is outside the recommended range 4 to 256",
    ]
    assert recommendation_warnings(validate_config({}), Stage.TRAIN) == []  # the defaults are recommended
    assert recommendation_warnings(config, Stage.CACHE_LATENTS) == []  # caching reads none of them


def test_training_says_so_and_trains(demo: Path, t2i: Path, tmp_path: Path) -> None:
    argv = ts.train_argv(demo, t2i, tmp_path, learning_rate=1e-2, timestep_sampling="sigma")
    assert ts.train(argv) == 0, ts.failure(tmp_path / "events.jsonl")
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert "--learning_rate 0.01 is outside the recommended range 1e-06 to 0.001" in warnings
    assert len(ts.losses(tmp_path / "events.jsonl")) == 3


def test_the_form_gets_the_warning_in_its_language(tmp_path: Path) -> None:
    client: FlaskClient = create_app(tmp_path / "ws").test_client()
    for lang, text in (
        ("en", "--network_dim 512 is outside the recommended range 4 to 256"),
        ("zh-CN", "--network_dim 512 超出推荐范围 4 到 256"),
    ):
        res = client.post(
            "/api/validate", json={"params": {"network_dim": 512}}, headers={**ORIGIN, LANG_HEADER: lang}
        )
        body = res.get_json()
        assert res.status_code == 200 and body["problems"] == []
        assert [(w["field"], w["message"]) for w in body["warnings"]] == [("network_dim", text)]
    schema = client.get("/api/schema").get_json()["properties"]
    assert (
        schema["learning_rate"]["x-recommended"] == [1e-6, 1e-3] and "maximum" not in schema["learning_rate"]
    )
