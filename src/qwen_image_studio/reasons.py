"""What a stage says when it fails, in English: the templates of the `failed` event's ``reason``.

`stages.runner` renders them into the text it prints and writes as ``reason``; the event also carries the
message itself (``reason_i18n``: key and values), which the web UI shows in the page's language (the
Chinese lives under the same keys in `webui.i18n_run`, which takes this English from here). Below the
stages and the web UI alike, so that neither imports the other for it.
"""

from __future__ import annotations

from .params.validate import register_messages

REASONS: dict[str, str] = {
    "reason.oom": "out of GPU memory; try {tips}",
    "reason.oom_no_tips": "out of memory with this stage's memory-saving options already on; "
    "close other programs that use the GPU or memory",
    "reason.not_available": "the {stage} stage is not available in this version yet",
    "reason.interrupted": "interrupted",
    "reason.unexpected_debug": "unexpected {error}: {detail} (run with --debug for details)",
    "reason.unexpected": "unexpected {error}: {detail}",
    # the tips of reason.oom (a tip that is only flags stays plain text: flags are not translated)
    "tip.lower": "a lower {flag} (now {value})",
    "tip.smaller": "a smaller {flag} (now {value})",
    "tip.lower_resolution": "a lower resolution in the dataset config",
    "tip.device_cpu": "--device cpu as a last resort (much slower)",
}
register_messages(REASONS)  # so that Message.render() gives this English anywhere (the CLI, the events file)
