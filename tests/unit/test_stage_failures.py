"""What a stage command says when it fails: out-of-memory advice that fits the stage, and every runner
reason written to the events file both as English text and as a message the web UI translates."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from qwen_image_studio.params.schema import StudioConfig
from qwen_image_studio.params.spec import Stage
from qwen_image_studio.params.validate import MESSAGES, Message
from qwen_image_studio.reasons import REASONS
from qwen_image_studio.stages.runner import main, oom_advice
from qwen_image_studio.webui.i18n import TABLE
from qwen_image_studio.webui.jobs.outcome import outcome_of

EN, ZH = TABLE["en"], TABLE["zh-CN"]
LEAN = {  # every memory option of every stage already turned down
    "fp8_base": True,
    "fp8_scaled": True,
    "fp8_vl": True,
    "blocks_to_swap": 45,
    "gradient_checkpointing": True,
    "network_dim": 4,
    "cache_batch_size": 1,
    "device": "cpu",
    "image_size": [256, 256],
}


def advice(stage: Stage, **values: Any) -> tuple[str, str]:
    msg = oom_advice(StudioConfig(**values), stage)
    return msg.render(), msg.render(ZH, EN)


@pytest.mark.parametrize(
    ("stage", "values", "en", "zh"),
    [
        (
            Stage.CACHE_TEXT,
            {},
            "out of GPU memory; try --fp8_vl, --batch_size 1, --device cpu as a last resort (much slower)",
            "显存不足；请尝试 --fp8_vl、--batch_size 1、--device cpu（最后的办法，速度慢很多）",
        ),
        (
            Stage.CACHE_TEXT,
            {"fp8_vl": True, "cache_batch_size": 8, "device": "cuda:1"},
            "out of GPU memory; try a lower --batch_size (now 8), --device cpu as a last resort (much slower)",
            "显存不足；请尝试 更小的 --batch_size（当前 8）、--device cpu（最后的办法，速度慢很多）",
        ),
        (
            Stage.CACHE_LATENTS,
            {"fp8_base": False, "fp8_vl": False, "gradient_checkpointing": False},  # no training tips here
            "out of GPU memory; try --batch_size 1, --device cpu as a last resort (much slower)",
            "显存不足；请尝试 --batch_size 1、--device cpu（最后的办法，速度慢很多）",
        ),
        (
            Stage.CACHE_LATENTS,
            {"cache_batch_size": 4},
            "out of GPU memory; try a lower --batch_size (now 4), --device cpu as a last resort (much slower)",
            "显存不足；请尝试 更小的 --batch_size（当前 4）、--device cpu（最后的办法，速度慢很多）",
        ),
        (
            Stage.TRAIN,
            {"gradient_checkpointing": False, "network_dim": 32, "fp8_vl": False},
            "out of GPU memory; try --fp8_base --fp8_scaled, --blocks_to_swap 16, --gradient_checkpointing, "
            "a lower --network_dim (now 32), a lower resolution in the dataset config",
            "显存不足；请尝试 --fp8_base --fp8_scaled、--blocks_to_swap 16、--gradient_checkpointing、"
            "更小的 --network_dim（当前 32）、数据集配置中更低的分辨率",
        ),
        (
            Stage.TRAIN,
            {"fp8_base": True, "fp8_scaled": True, "blocks_to_swap": 20, "network_dim": 4},
            "out of GPU memory; try --blocks_to_swap 36, a lower resolution in the dataset config",
            "显存不足；请尝试 --blocks_to_swap 36、数据集配置中更低的分辨率",
        ),
        (
            Stage.GENERATE,
            {"gradient_checkpointing": False, "network_dim": 32},  # no training tips here
            "out of GPU memory; try --fp8_base --fp8_scaled, --blocks_to_swap 16, "
            "a smaller --image_size (now 1024 1024)",
            "显存不足；请尝试 --fp8_base --fp8_scaled、--blocks_to_swap 16、更小的 --image_size（当前 1024 1024）",
        ),
        (
            Stage.GENERATE,
            {"fp8_base": True, "blocks_to_swap": 50, "image_size": [768, 1360]},
            "out of GPU memory; try a smaller --image_size (now 768 1360)",
            "显存不足；请尝试 更小的 --image_size（当前 768 1360）",
        ),
    ],
)
def test_out_of_memory_advice_fits_the_stage(stage: Stage, values: dict[str, Any], en: str, zh: str) -> None:
    assert advice(stage, **values) == (en, zh)
    msg = oom_advice(StudioConfig(**values), stage)  # what the failed event carries as reason_i18n
    assert Message.from_json(json.loads(json.dumps(msg.as_json()))) == msg


@pytest.mark.parametrize("stage", [Stage.CACHE_TEXT, Stage.CACHE_LATENTS, Stage.GENERATE])
def test_nothing_left_to_turn_down_is_said_too(stage: Stage) -> None:
    en, zh = advice(stage, **LEAN)
    assert en == (
        "out of memory with this stage's memory-saving options already on; "
        "close other programs that use the GPU or memory"
    )
    assert zh == "内存不足，且该阶段的省显存选项都已启用；请关闭其他占用显卡或内存的程序"
    assert advice(Stage.TRAIN, **LEAN)[0] == "out of GPU memory; try a lower resolution in the dataset config"


def test_the_english_has_one_home_and_every_key_chinese() -> None:
    for key, template in REASONS.items():
        assert EN[key] == MESSAGES[key] == template, key  # the UI takes the runner's English as it is
        assert key in ZH and ZH[key] != template, key


# ---- the runner in process: the failed event carries the reason as text and as a message ----------


def _inputs(tmp_path: Path) -> list[str]:
    """A VAE file and a dataset of one captioned image: the stage's own checks pass."""
    from PIL import Image

    (tmp_path / "vae.safetensors").write_bytes(b"x")
    Image.new("RGB", (64, 64)).save(tmp_path / "one.png")
    (tmp_path / "one.txt").write_text("a black square", encoding="utf-8")
    toml = tmp_path / "dataset.toml"
    toml.write_text(f'[[datasets]]\nimage_directory = "{tmp_path}"\n', encoding="utf-8")
    return ["--dataset_config", str(toml), "--vae", str(tmp_path / "vae.safetensors")]


def _failed(events_file: Path) -> dict[str, Any]:
    events = [json.loads(line) for line in events_file.read_text(encoding="utf-8").splitlines()]
    assert events[-1]["type"] == "failed"
    return events[-1]


class OutOfMemoryError(RuntimeError):
    """Named as torch's (torch.cuda.OutOfMemoryError), which the runner knows by name."""


def _stage_raising(monkeypatch: pytest.MonkeyPatch, stage: Stage, exc: BaseException) -> None:
    def run(config: StudioConfig, args: Any, events: Any) -> None:
        raise exc

    module = types.ModuleType(f"qwen_image_studio.stages.{stage.value}")
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)


@pytest.mark.parametrize(
    ("exc", "flags", "code", "key", "en", "zh"),
    [
        (
            OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            ["--batch_size", "2"],
            4,
            "reason.oom",
            "out of GPU memory; try a lower --batch_size (now 2), --device cpu as a last resort (much slower)",
            "显存不足；请尝试 更小的 --batch_size（当前 2）、--device cpu（最后的办法，速度慢很多）",
        ),
        (
            RuntimeError("boom"),
            [],
            1,
            "reason.unexpected_debug",
            "unexpected RuntimeError: boom (run with --debug for details)",
            "意外错误 RuntimeError：boom（加 --debug 运行可查看详情）",
        ),
        (
            ValueError("bad {flag} value"),  # braces in the detail are the detail's own
            ["--debug"],
            1,
            "reason.unexpected",
            "unexpected ValueError: bad {flag} value",
            "意外错误 ValueError：bad {flag} value",
        ),
        (KeyboardInterrupt(), [], 130, "reason.interrupted", "interrupted", "已中断"),
    ],
)
def test_failures_reach_the_events_file_as_text_and_message(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    flags: list[str],
    code: int,
    key: str,
    en: str,
    zh: str,
) -> None:
    _stage_raising(monkeypatch, Stage.CACHE_LATENTS, exc)
    events_file = tmp_path / "events.jsonl"
    argv = [*_inputs(tmp_path), *flags, "--events_file", str(events_file)]
    assert main(Stage.CACHE_LATENTS, argv) == code
    failed = _failed(events_file)
    assert (failed["reason"], failed["exit_code"], failed["reason_i18n"]["key"]) == (en, code, key)
    if key != "reason.interrupted":
        assert capsys.readouterr().err.splitlines()[-1] == f"error: {en}"
    outcome = outcome_of(code, failed, False, tmp_path / "log.txt")  # as the web UI reads it
    assert outcome.reason == en and outcome.i18n is not None and outcome.i18n.render(ZH, EN) == zh


def test_a_stage_missing_from_this_version_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "qwen_image_studio.stages.cache_latents", None)  # cannot be imported
    events_file = tmp_path / "events.jsonl"
    assert main(Stage.CACHE_LATENTS, [*_inputs(tmp_path), "--events_file", str(events_file)]) == 3
    failed = _failed(events_file)
    assert failed["reason"] == "the cache_latents stage is not available in this version yet"
    msg = Message.from_json(failed["reason_i18n"])
    assert msg is not None and msg.render(ZH, EN) == "此版本尚未提供 cache_latents 阶段"


def test_a_user_error_carries_its_message_and_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    events_file = tmp_path / "events.jsonl"
    assert (
        main(Stage.CACHE_LATENTS, ["--vae", str(tmp_path / "nope"), "--events_file", str(events_file)]) == 2
    )
    failed = _failed(events_file)
    printed = capsys.readouterr().err.strip()
    assert printed == f"error: {failed['reason']}"  # the command line prints the English as before
    msg = Message.from_json(failed["reason_i18n"])
    assert msg is not None and msg.render(EN) == failed["reason"]
    assert msg.key == "v.problems" and failed["field"] == "vae"  # not found --vae; --dataset_config is required
    assert "找不到" in msg.render(ZH, EN)
