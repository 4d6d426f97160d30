"""Structured messages: each kind the server produces, rendered in English (as the CLI prints it) and in
Chinese (as the web UI shows it), from one key and its variables."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

import pytest
from flask import Flask

from qwen_image_studio.params.fields import all_fields
from qwen_image_studio.params.json_schema import form_schema
from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import (
    ConfigProblems,
    Join,
    Message,
    Problem,
    allowed_message,
    problems_of,
    stage_problems,
    validate_config,
)
from qwen_image_studio.stages.runner import oom_advice
from qwen_image_studio.webui.i18n import LANG_HEADER, TABLE, render, request_language
from qwen_image_studio.webui.jobs.outcome import english, outcome_of
from qwen_image_studio.webui.jobs.schema import FAILED, LOST, STOPPED
from qwen_image_studio.webui.store import BadName, check_name

EN, ZH = TABLE["en"], TABLE["zh-CN"]


def both(msg: Message) -> tuple[str, str]:
    """A message in English and in Chinese."""
    return msg.render(EN), msg.render(ZH, EN)


def problem(values: dict[str, object]) -> Problem:
    [found] = problems_of(values)
    assert found.i18n is not None and found.message == found.i18n.render()  # the English text is rendered
    return found


@pytest.mark.parametrize(
    ("values", "en", "zh"),
    [
        (
            {"mode_scale": 11},
            "--mode_scale: 11 is out of range; allowed 0 to 10.0",
            "--mode_scale：11 超出范围；允许 0 到 10.0",
        ),
        (
            {"network_dropout": 1},
            "--network_dropout: 1 is out of range; allowed 0 to below 1.0",
            "--network_dropout：1 超出范围；允许 0 到 1.0（不含 1.0）",
        ),
        (
            {"network_alpha": 0},
            "--network_alpha: 0 is out of range; allowed above 0 to 1024.0",
            "--network_alpha：0 超出范围；允许 大于 0 且至多 1024.0",
        ),
        (
            {"network_dim": "abc"},
            "--network_dim: abc is not a whole number; allowed at least 1",
            "--network_dim：abc 不是整数；允许 至少 1",
        ),
        (
            {"learning_rate": "x"},
            "--learning_rate: x is not a number; allowed above 0",
            "--learning_rate：x 不是数字；允许 大于 0",
        ),
        (
            {"fp8_base": "maybe"},
            "--fp8_base: 'maybe' is not true or false",
            "--fp8_base：'maybe' 不是 true 或 false",
        ),
        (
            {"mixed_precision": "fp64"},
            "--mixed_precision: 'fp64' is not allowed; choose one of no, fp16, bf16",
            "--mixed_precision：不允许 'fp64'；可选 no, fp16, bf16",
        ),
        ({"device": "tpu"}, "--device: 'tpu' is not a valid value", "--device：'tpu' 不是有效的值"),
        (
            {"output_name": "--dit"},
            "--output_name: '--dit' is not a file-name prefix: no folders, none of / \\ : * ? \" < > | or control "
            "characters, not starting with '-', 1 to 200 characters",
            "--output_name：'--dit' 不是有效的文件名前缀：不能包含目录，不能含 / \\ : * ? \" < > | 或控制字符，"
            "不能以 '-' 开头，长度 1 到 200 个字符",
        ),
        ({"dit": "a\x00b"}, "--dit: a value cannot contain a NUL byte", "--dit：参数值不能包含 NUL 字节"),
        ({"dit": 5}, "--dit: Input should be a valid string", "--dit：应为文本"),
        ({"bogus": 1}, "unknown parameter 'bogus'", "未知参数 'bogus'"),
    ],
)
def test_value_problems_in_both_languages(values: dict[str, object], en: str, zh: str) -> None:
    found = problem(values)
    assert found.i18n is not None and both(found.i18n) == (en, zh)


@pytest.mark.parametrize(
    ("values", "en", "zh"),
    [
        ({"fp8_scaled": True}, "--fp8_scaled needs --fp8_base", "--fp8_scaled 需要 --fp8_base"),
        (
            {"flash_attn": True, "xformers": True},
            "choose one attention kernel, not --flash_attn and --xformers",
            "只能选一种注意力内核，不能同时用 --flash_attn 和 --xformers",
        ),
        (
            {"min_timestep": 500, "max_timestep": 100},
            "--min_timestep (500) must be below --max_timestep (100)",
            "--min_timestep（500）必须小于 --max_timestep（100）",
        ),
        (
            {"sample_every_n_steps": 10},
            "--sample_every_n_epochs, --sample_every_n_steps and --sample_at_first need --sample_prompts",
            "--sample_every_n_epochs、--sample_every_n_steps 和 --sample_at_first 需要 --sample_prompts",
        ),
        (
            {"prompt": "a", "from_file": "b"},
            "give --prompt or --from_file, not both",
            "--prompt 和 --from_file 只能给一个",
        ),
        (
            {"optimizer_type": "bogus"},
            "--optimizer_type: must be one of adamw, adamw8bit, lion, sgd, adafactor or a module.Class path "
            "(got 'bogus')",
            "--optimizer_type：必须是 adamw, adamw8bit, lion, sgd, adafactor 之一，或 module.Class 路径"
            "（当前为 'bogus'）",
        ),
        (
            {"network_args": ["bad"]},
            "--network_args: 'bad' is not key=value",
            "--network_args：'bad' 不是 key=value 形式",
        ),
    ],
)
def test_rules_of_the_schema_in_both_languages(values: dict[str, object], en: str, zh: str) -> None:
    found = problem(values)
    assert found.i18n is not None and both(found.i18n) == (en, zh)
    assert found.i18n.key.startswith(("rule.", "v.detail"))


def test_the_cli_message_is_the_english_rendering() -> None:
    with pytest.raises(ConfigProblems) as err:
        validate_config({"mode_scale": 11, "network_dim": 0})
    assert str(err.value) == (
        "--mode_scale: 11 is out of range; allowed 0 to 10.0; "
        "--network_dim: 0 is out of range; allowed at least 1"
    )
    assert render(err.value.i18n, "en") == str(err.value)
    assert render(err.value.i18n, "zh-CN") == (
        "--mode_scale：11 超出范围；允许 0 到 10.0；--network_dim：0 超出范围；允许 至少 1"
    )


def test_stage_problems_in_both_languages(tmp_path: Path) -> None:
    afile, adir = tmp_path / "a.safetensors", tmp_path / "folder"
    afile.write_bytes(b"x")
    adir.mkdir()
    config = StudioConfig.model_construct(
        **{
            **StudioConfig().model_dump(),
            "dit": str(tmp_path / "missing.safetensors"),
            "dataset_config": str(adir),
            "tokenizer": str(afile),
            "output_dir": str(afile / "out"),
        }
    )
    found = {p.field: p for p in stage_problems(config, Stage.TRAIN)}
    texts = {name: both(p.i18n) for name, p in found.items() if p.i18n}
    assert texts["dit"] == (
        f"--dit: not found: {tmp_path / 'missing.safetensors'}",
        f"--dit：找不到 {tmp_path / 'missing.safetensors'}",
    )
    assert texts["dataset_config"] == (
        f"--dataset_config: {adir} is a folder; a file is expected",
        f"--dataset_config：{adir} 是文件夹；这里需要文件",
    )
    assert texts["tokenizer"] == (
        f"--tokenizer: {afile} is a file; a folder is expected",
        f"--tokenizer：{afile} 是文件；这里需要文件夹",
    )
    assert texts["output_dir"][1] == f"--output_dir：{afile / 'out'} 位于一个文件之下，不是文件夹"
    assert texts["output_name"] == ("--output_name is required", "--output_name 为必填项")
    assert all(p.message == p.i18n.render() for p in found.values() if p.i18n)


def test_allowed_values_text_is_the_fields_own_in_english_and_translated() -> None:
    schema = form_schema()["properties"]
    for name, spec in all_fields().items():
        message = allowed_message(spec)
        text = message.render(EN) if isinstance(message, Message) else message
        assert text == spec.allowed(), name
        if isinstance(message, Message):
            assert schema[name]["x-allowed-i18n"] == message.as_json()
            zh = message.render(ZH, EN)
            assert zh != text and not re.search(r"\b(to|above|below|at least|at most)\b", zh), (name, zh)
    assert allowed_message(all_fields()["mode_scale"]).render(ZH) == "0 到 10.0"  # type: ignore[union-attr]
    assert allowed_message(all_fields()["learning_rate"]).render(ZH) == "大于 0"  # type: ignore[union-attr]


def test_messages_travel_as_json_and_come_back() -> None:
    msg = Message(
        "reason.oom",
        {
            "tips": Join(
                ("--gradient_checkpointing", Message("tip.lower", {"flag": "--network_dim", "value": 16}))
            )
        },
    )
    data = json.loads(json.dumps(msg.as_json()))
    assert data == {
        "key": "reason.oom",
        "vars": {
            "tips": {
                "join": [
                    "--gradient_checkpointing",
                    {"key": "tip.lower", "vars": {"flag": "--network_dim", "value": "16"}},
                ],
                "sep": "sep.list",
            }
        },
    }
    assert Message.from_json(data) == msg
    assert Message.from_json("not a message") is None
    assert Message("v.nothing_like_it").render() == "v.nothing_like_it"  # an unknown key shows itself


def test_every_rule_reaches_the_page_with_its_key() -> None:
    """The schema's rules raise their own key and values (no English is read back)."""
    for data in ({"fp8_scaled": True}, {"image_size": [1000, 1024]}, {"optimizer_type": "bogus"}):
        [problem] = problems_of(data)
        assert problem.i18n is not None and '"rule.' in json.dumps(problem.i18n.as_json()), data
        assert problem.i18n.render() == problem.message


@pytest.mark.parametrize(
    ("msg", "reason", "zh"),
    [
        (
            oom_advice(StudioConfig(network_dim=16, gradient_checkpointing=False), Stage.TRAIN),
            "out of GPU memory; try --fp8_base --fp8_scaled, --blocks_to_swap 16, --gradient_checkpointing, "
            "a lower --network_dim (now 16), a lower resolution in the dataset config",
            "显存不足；请尝试 --fp8_base --fp8_scaled、--blocks_to_swap 16、--gradient_checkpointing、"
            "更小的 --network_dim（当前 16）、数据集配置中更低的分辨率",
        ),
        (
            Message("v.not_found", {"flag": "--text_encoder", "path": "/models/te.safetensors"}),
            "--text_encoder: not found: /models/te.safetensors",
            "--text_encoder：找不到 /models/te.safetensors",
        ),
        (
            ConfigProblems(
                [
                    Problem.of("vae", Message("v.is_folder", {"flag": "--vae", "path": "/m/vae"})),
                    Problem.of("dit", Message("v.required", {"flag": "--dit"})),
                ]
            ).i18n,
            "--vae: /m/vae is a folder; a file is expected; --dit is required",
            "--vae：/m/vae 是文件夹；这里需要文件；--dit 为必填项",
        ),
        (
            Message("reason.not_available", {"stage": "train_network"}),
            "the train_network stage is not available in this version yet",
            "此版本尚未提供 train_network 阶段",
        ),
        (
            Message("reason.unexpected_debug", {"error": "RuntimeError", "detail": "boom"}),
            "unexpected RuntimeError: boom (run with --debug for details)",
            "意外错误 RuntimeError：boom（加 --debug 运行可查看详情）",
        ),
        (Message("reason.interrupted"), "interrupted", "已中断"),
    ],
)
def test_stage_failure_reasons_in_both_languages(msg: Message, reason: str, zh: str) -> None:
    """What a stage's failed event carries (reason_i18n) renders as its English reason and in Chinese."""
    sent = Message.from_json(json.loads(json.dumps(msg.as_json())))
    assert sent is not None and english(sent) == reason and sent.render(ZH, EN) == zh


def test_job_outcomes_in_both_languages(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    cases = [
        (outcome_of(1, None, False, log), FAILED, "exited with code 1", "以退出码 1 结束"),
        (outcome_of(-signal.SIGKILL, None, False, log), FAILED, "killed by SIGKILL", "被信号 SIGKILL 终止"),
        (outcome_of(-15, None, True, log), STOPPED, "stopped by the user", "已由你停止"),
        (
            outcome_of(None, None, False, log),
            LOST,
            "the process ended while the web UI was not running and left no result",
            "进程在 Web UI 未运行期间结束，且没有留下结果",
        ),
        (
            outcome_of(
                2,
                {
                    "type": "failed",
                    "reason": "--vae: not found: /m/vae",
                    "reason_i18n": {"key": "v.not_found", "vars": {"flag": "--vae", "path": "/m/vae"}},
                    "field": "vae",
                },
                False,
                log,
            ),
            FAILED,
            "--vae: not found: /m/vae",
            "--vae：找不到 /m/vae",
        ),
        (  # a stage that sends its reason structured is taken at its word
            outcome_of(
                2,
                {
                    "type": "failed",
                    "reason": "x",
                    "reason_i18n": {"key": "v.required", "vars": {"flag": "--dit"}},
                },
                False,
                log,
            ),
            FAILED,
            "x",
            "--dit 为必填项",
        ),
    ]
    for outcome, status, en, zh in cases:
        assert outcome.status == status and outcome.reason == en and outcome.i18n is not None
        assert outcome.i18n.render(ZH, EN) == zh
    unknown = outcome_of(2, {"type": "failed", "reason": "the DiT file is truncated"}, False, log)
    assert unknown.reason == "the DiT file is truncated" and unknown.i18n is None  # shown as it is


def test_store_errors_in_both_languages() -> None:
    with pytest.raises(BadName) as err:
        check_name("a/b")
    assert str(err.value) == "a configuration name may not contain / \\ or control characters"
    assert err.value.i18n is not None and both(err.value.i18n)[1] == "配置名称不能包含 / \\ 或控制字符"


def test_the_request_names_the_language() -> None:
    app = Flask(__name__)
    cases = [
        ({}, "en"),  # a script that names none
        ({"headers": {"Accept-Language": "zh-CN,zh;q=0.9"}}, "zh-CN"),
        ({"headers": {"Cookie": "studio_lang=zh-CN", "Accept-Language": "en"}}, "zh-CN"),
        ({"query_string": {"lang": "zh-CN"}, "headers": {"Cookie": "studio_lang=en"}}, "zh-CN"),
        ({"headers": {LANG_HEADER: "en", "Cookie": "studio_lang=zh-CN"}}, "en"),  # the page's own choice
        ({"headers": {LANG_HEADER: "fr"}}, "en"),
    ]
    for kwargs, lang in cases:
        with app.test_request_context("/api/validate", **kwargs):  # type: ignore[arg-type]
            assert request_language() == lang, kwargs
