"""The UI's strings of the validation loss (chart, LoRA list, progress) and the Chinese of its schema rule."""

from __future__ import annotations

EN_VALIDATION: dict[str, str] = {
    "chart.validation": "validation loss",
    "phase.validate": "validation loss",
    "files.validation_loss": "validation loss {value}",
    "files.best_validation": "lowest validation loss",
}

ZH_VALIDATION: dict[str, str] = {
    "chart.validation": "验证损失",
    "phase.validate": "计算验证损失",
    "files.validation_loss": "验证损失 {value}",
    "files.best_validation": "验证损失最低",
    "rule.validation_timesteps": "请给出 1 到 100 个时间步，每个都大于 0 且小于 1（当前为 {value}）",
}
