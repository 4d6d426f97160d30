"""The schema's rules (field validators and cross-field checks): one English template per message key.

The schema raises them with `rule_error`, a pydantic custom error that carries the key and its values;
validation turns it into a structured message that the CLI prints in English and the web UI renders in
the page's language (the Chinese templates sit under the same keys in the UI's tables).
"""

from __future__ import annotations

import re

from pydantic_core import PydanticCustomError

PATH_MAX = 4096  # Linux's PATH_MAX; NAME_MAX below
NAME_MAX = 255
FILE_STEM_MAX = 200
_NAME_CHAR = r"[^/\\:*?\"<>|\x00-\x1f]"
FILE_STEM = re.compile(rf"[^-/\\:*?\"<>|\x00-\x1f]{_NAME_CHAR}{{0,{FILE_STEM_MAX - 1}}}")

RULES: dict[str, str] = {
    "rule.needs": "{flag} needs {other}",
    "rule.need_three": "{first}, {second} and {third} need {other}",
    "rule.one_kernel_of_three": "choose one attention kernel, not {first} and {second} and {third}",
    "rule.one_kernel": "choose one attention kernel, not {first} and {second}",
    "rule.below": "{flag} ({value}) must be below {other} ({other_value})",
    "rule.at_most": "{flag} ({value}) must be at most {other} ({other_value})",
    "rule.per_file": "{flag}: {count} values for {files} {other} files; give one value, or one per file",
    "rule.not_both": "give {first} or {second}, not both",
    "rule.one_of_or_class": "must be one of {choices} or a module.Class path (got {value})",
    "rule.two_numbers": "give two numbers, height and width (got {count})",
    "rule.multiple_of_16": "{height} {width}: height and width must be multiples of 16 from 16 to 8192",
    "rule.key_value": "{flag}: {item} is not key=value",
    "rule.unknown_key": "unknown key {key}; allowed: {keys}",
    "rule.lora_ratio": "loraplus_lr_ratio must be a number from above 0 to 64 (got {value})",
    "rule.nul": "a value cannot contain a NUL byte",
    "rule.path_too_long": "the path is too long ({length} characters; at most {limit}, and {part_limit} per name)",
    "rule.file_stem": (
        '{value} is not a file-name prefix: no folders, none of / \\ : * ? " < > | or control characters, '
        "not starting with '-', 1 to {limit} characters"
    ),
    "rule.dropout_rate": "{key} must be a number from 0 to below 1 (got {value})",
    "rule.lora_targets": "targets must be one of {choices} (got {value})",
    "rule.validation_timesteps": "give 1 to 100 timesteps, each above 0 and below 1 (got {value})",
}


def rule_error(rule: str, /, **values: object) -> PydanticCustomError:
    """The error for `rule` with its values (a ValueError; pydantic reports it under the rule's key)."""
    return PydanticCustomError(rule, RULES[rule], {name: str(value) for name, value in values.items()})


def check_path_text(value: str) -> None:
    """Raise the rule error when `value` cannot be a path: a NUL byte, or longer than the OS allows."""
    if "\x00" in value:
        raise rule_error("rule.nul")
    longest = max(
        (len(part.encode("utf-8", "surrogateescape")) for part in re.split(r"[/\\]", value)), default=0
    )
    if len(value.encode("utf-8", "surrogateescape")) >= PATH_MAX or longest > NAME_MAX:
        raise rule_error("rule.path_too_long", length=len(value), limit=PATH_MAX - 1, part_limit=NAME_MAX)
