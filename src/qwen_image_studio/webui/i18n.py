"""The translation table: every visible UI string in zh-CN and en (field help comes from the schema).

Messages the server produces are structured (`params.validate.Message`: a key of this table plus its
variables). Their English templates live where they are produced (validation: `params.validate.MESSAGES`,
which the CLI prints; jobs: `i18n_run`); this table adds the Chinese ones under the same keys. The API
renders them in the request's language (`request_language`) and also sends them as ``X_i18n``
({"key", "vars"}) beside each text ``X``, so that the page renders them again after a language switch.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import request

from ..params.validate import MESSAGES, Message, register_messages
from .i18n_gallery import EN_GALLERY, ZH_GALLERY
from .i18n_generate import EN_GENERATE, ZH_GENERATE
from .i18n_import import EN_IMPORT, ZH_IMPORT
from .i18n_lora import EN_LORA, ZH_LORA
from .i18n_run import EN_RUN, ZH_RUN
from .i18n_validation import EN_VALIDATION, ZH_VALIDATION

DEFAULT_LANGUAGE = "zh-CN"
API_LANGUAGE = "en"  # the API's language when a request names none (scripts, curl)
LANG_HEADER = "X-Studio-Lang"  # the page sends its language with every API request
LANG_COOKIE = "studio_lang"

EN: dict[str, str] = {
    "app.title": "Qwen-Image Studio",
    "app.subtitle": "LoRA training for Qwen-Image and Qwen-Image-Edit",
    "lang.label": "Language",
    "lang.zh-CN": "中文",
    "lang.en": "English",
    "toolbar.label": "Configurations",
    "toolbar.saved": "Saved",
    "toolbar.none": "— not saved —",
    "toolbar.name": "Name",
    "toolbar.name_placeholder": "configuration name",
    "toolbar.save": "Save",
    "toolbar.rename": "Rename",
    "toolbar.delete": "Delete",
    "toolbar.reset": "Reset to defaults",
    "toolbar.export": "Export",
    "toolbar.export_title": "Download the saved version as a JSON file",
    "toolbar.import": "Import…",
    "toolbar.unsaved": "unsaved changes",
    "mode.label": "Edit mode (Qwen-Image-Edit)",
    "mode.hint_edit": "Edit mode: the dataset TOML must name control images (control_directory); "
    "all three stages get the edit flags.",
    "mode.hint_t2i": "Text-to-image mode.",
    "check.label": "Check for",
    "check.pipeline": "full pipeline (3 stages)",
    "check.none": "values only",
    "stage.cache_latents": "Cache latents",
    "stage.cache_text_encoder_outputs": "Cache text-encoder outputs",
    "stage.train_network": "Train LoRA",
    "stage.caption_images": "Caption images",
    "stage.caption_preview": "Caption preview",
    "stage.generate": "Generate",
    "group.models": "Model paths",
    "group.dataset": "Dataset",
    "group.training": "Training",
    "group.network": "Network (LoRA)",
    "group.memory": "Memory and speed",
    "group.logging": "Logging and output",
    "group.samples": "Sample images",
    "group.caching": "Caching",
    "group.captioning": "Automatic captions",
    "group.generation": "Generation",
    "group.advanced": "Advanced",
    "group.other": "Other",
    "form.loading": "Loading the parameter schema…",
    "form.load_failed": "The parameter schema could not be loaded.",
    "form.default": "default",
    "form.allowed": "allowed",
    "form.recommended": "recommended",
    "form.required_for": "required for",
    "form.path.file": "file path",
    "form.path.dir": "folder",
    "form.path.file_or_dir": "file or folder",
    "form.path.out_dir": "output folder (created when missing)",
    "form.path.out_file": "output file (its folder is created when missing)",
    "form.list_hint": "one key=value per line",
    "form.list_hint_items": "one {metavar} per line",
    "form.on": "on",
    "form.off": "off",
    "form.empty": "(empty)",
    "form.advanced_hint": "Rarely changed; the defaults suit most runs.",
    "form.more": "More options ({count})",
    "guide.title": "First run: three steps",
    "guide.models": "Models: point --dit, --vae and --text_encoder at your files.",
    "guide.dataset": "Dataset: choose a dataset TOML and check it in the Dataset tab.",
    "guide.run": "Run: start the full pipeline and watch progress, loss and samples.",
    "guide.demo": "Nothing to hand yet? The demo's tiny models and dataset run on this computer in about a minute.",
    "guide.demo_t2i": "Try the demo (text-to-image)",
    "guide.demo_edit": "Try the edit demo",
    "guide.hide": "Hide this guide",
    "guide.show": "First-run guide",
    "msg.demo_opened": "Opened the demo configuration “{name}”. Next: the Run & monitor tab → Full pipeline.",
    "form.valid": "All values are valid.",
    "form.problems": "Fix these first:",
    "form.needs": "Still needed to run the checked stages:",
    "form.warnings": "Accepted, but outside the recommended range:",
    "v.too_long": "{flag}: at most {max} characters",
    "cmd.title": "Command lines",
    "cmd.hint": "What each stage runs with these values.",
    "cmd.invalid": "Fix the problems in the form to see the command lines.",
    "cmd.copy": "Copy",
    "cmd.copied": "Copied",
    "jobs.title": "Jobs",
    "import.title": "Import a configuration",
    "import.file": "JSON configuration (any version) or --config_file TOML",
    "import.name": "Save as (optional)",
    "import.overwrite": "Replace a configuration of that name",
    "import.upload": "Import file",
    "import.cli": "Or paste a reference-trainer command line",
    "import.cli_load": "Load into the form",
    "import.cli_placeholder": "accelerate launch … qwen_image_train_network.py --dit … --network_dim 16 …",
    "import.close": "Close",
    "msg.saved": "Saved “{name}”.",
    "msg.saved_file": "Saved “{name}” (also as the file {file} in the workspace).",
    "msg.loaded": "Loaded “{name}”.",
    "msg.renamed": "Renamed to “{name}”.",
    "msg.deleted": "Deleted “{name}”.",
    "msg.reset": "Defaults restored (not saved yet).",
    "msg.imported": "Imported “{name}”.",
    "msg.imported_cli": "Loaded the command line of “{stage}” into the form (not saved yet).",
    "msg.load_problems": "“{name}” no longer validates; see the marked fields.",
    "confirm.overwrite": "A configuration named “{name}” exists. Replace it?",
    "confirm.delete": "Delete the configuration “{name}”?",
    "confirm.discard": "Discard the unsaved changes?",
    "prompt.rename": "New name for “{name}”:",
    "err.no_selection": "Choose a saved configuration first.",
    "err.no_name": "Enter a name first.",
    "err.no_file": "Choose a file first.",
    "err.network": "The server did not answer.",
    "err.invalid": "The values have problems; nothing was saved.",
    "err.command_refused": "The command line was not loaded: fix these first.",
    "err.bad_config": "The configuration was not accepted.",
    "err.bad_name": "That name cannot be used.",
    "err.not_found": "No such configuration.",
    "err.exists": "A configuration of that name exists.",
    "err.cross_origin": "Refused: the request did not come from this page.",
    "err.json_required": "Refused: the request was not JSON.",
    "err.upload_header": "Refused: the upload was not sent by this page.",
    "err.token_required": "This server needs its access token: open the address printed when it started.",
    "err.bad_token": "Wrong access token.",
    "err.bad_host": "Refused: this server answers loopback host names only.",
    "err.request_entity_too_large": "The file is too large.",
    "err.other": "The request failed.",
    "store.no_name": "a configuration needs a name",
    "store.name_too_long": "a configuration name has at most {max} characters",
    "store.name_chars": "a configuration name may not contain / \\ or control characters",
    "store.name_dots": "a configuration name cannot be only dots",
    "store.not_found": "no configuration named {name}",
    "store.exists": "a configuration named {name} exists already",
    "store.no_job": "no job {id}",
    "config.no_file": "choose a configuration file (.json or .toml) to import",
    "config.too_large": "{filename}: the file is larger than {kib} KiB",
    "config.not_utf8": "{filename}: the file is not UTF-8 text",
    "config.bad_json": "{filename} is not valid JSON: {detail}",
    "cmdline.too_long": "the command line is longer than {max} characters",
    "cmdline.unreadable": "the command line cannot be read: {detail}",
    "cmdline.empty": "the command line is empty",
    "cmdline.no_script": "no training or caching script found in the command line (expected one of {scripts})",
    "cmdline.bad_start": "the command line should start with python, accelerate or a flag, not {token}",
    "cmdline.not_accepted": "the command line was not accepted",
    "cmdline.unknown_flag": "unrecognized arguments: {flag} (not a flag of {script})",
    "cmdline.unknown_flag_near": "unrecognized arguments: {flag} (not a flag of {script}; did you mean {near}?)",
    "cmdline.stray": "unrecognized arguments: {token} (a value without a flag)",
    "cmdline.stray_after": "unrecognized arguments: {token} ({flag} is a switch and takes no value)",
    "notice.demo_not_imported": "demo configuration not imported: {detail}",
    "notice.db_rebuilt": (
        "The database {path} was damaged ({problem}). It was kept as {kept} and a new one was made: "
        "{jobs} jobs rebuilt from the job folders, {configs} saved configurations from {configs_dir}."
    ),
    "notice.db_missing": (
        "The database {path} was missing although job folders exist. A new one was made: "
        "{jobs} jobs rebuilt from the job folders, {configs} saved configurations from {configs_dir}."
    ),
    "notice.db_jobs_left": "{count} job folders had no readable job.json and are not listed: {folders}.",
    "db.missing": "the file is missing",
    "db.empty": "the file is empty although the workspace has jobs or configurations",
    "db.not_sqlite": "the file is not an SQLite database",
    "db.check_failed": "SQLite's check found errors: {detail}",
    "db.unreadable": "SQLite cannot read it: {detail}",
    "db.no_table": "its table {table} is missing",
    "db.columns": "its table {table} is not the studio's",
    "err.database": (
        "The database {path} cannot be read ({detail}). Restart the web UI: it checks the file at start "
        "and rebuilds it from the job folders."
    ),
    "err.database_busy": "The database {path} is busy ({detail}); try again in a moment.",
    "demo.creating": "Creating the demo workspace (tiny models and a small dataset)…",
    "demo.ready": "The demo workspace is ready; its configurations are listed.",
    "demo.failed": "The demo workspace could not be created:",
    "notice.title": "Notes from the start-up",
    "footer.workspace": "Workspace",
    "footer.allowed": "jobs may also write in (--allow_dir)",
    "footer.version": "version",
}

ZH: dict[str, str] = {
    "app.title": "Qwen-Image Studio",
    "app.subtitle": "Qwen-Image / Qwen-Image-Edit LoRA 训练",
    "lang.label": "语言",
    "lang.zh-CN": "中文",
    "lang.en": "English",
    "toolbar.label": "配置",
    "toolbar.saved": "已保存",
    "toolbar.none": "— 未保存 —",
    "toolbar.name": "名称",
    "toolbar.name_placeholder": "配置名称",
    "toolbar.save": "保存",
    "toolbar.rename": "重命名",
    "toolbar.delete": "删除",
    "toolbar.reset": "恢复默认",
    "toolbar.export": "导出",
    "toolbar.export_title": "下载已保存版本的 JSON 文件",
    "toolbar.import": "导入…",
    "toolbar.unsaved": "有未保存的修改",
    "mode.label": "编辑模式（Qwen-Image-Edit）",
    "mode.hint_edit": "编辑模式：数据集 TOML 需要配置控制图像（control_directory）；三个阶段都会使用编辑模式参数。",
    "mode.hint_t2i": "文生图模式。",
    "check.label": "检查",
    "check.pipeline": "完整流程（3 个阶段）",
    "check.none": "仅检查取值",
    "stage.cache_latents": "预缓存 VAE Latents",
    "stage.cache_text_encoder_outputs": "预缓存文本编码器输出",
    "stage.train_network": "LoRA 训练",
    "stage.caption_images": "图像打标",
    "stage.caption_preview": "打标预览",
    "stage.generate": "生成图像",
    "group.models": "模型路径",
    "group.dataset": "数据集",
    "group.training": "训练参数",
    "group.network": "网络配置（LoRA）",
    "group.memory": "显存与速度",
    "group.logging": "日志与输出",
    "group.samples": "样例图",
    "group.caching": "缓存",
    "group.captioning": "自动打标",
    "group.generation": "生成",
    "group.advanced": "高级",
    "group.other": "其他",
    "form.loading": "正在加载参数表…",
    "form.load_failed": "无法加载参数表。",
    "form.default": "默认",
    "form.allowed": "允许",
    "form.recommended": "推荐",
    "form.required_for": "必需于",
    "form.path.file": "文件路径",
    "form.path.dir": "文件夹",
    "form.path.file_or_dir": "文件或文件夹",
    "form.path.out_dir": "输出文件夹（不存在时自动创建）",
    "form.path.out_file": "输出文件（其文件夹不存在时自动创建）",
    "form.list_hint": "每行一个 key=value",
    "form.list_hint_items": "每行一个 {metavar}",
    "form.on": "开",
    "form.off": "关",
    "form.empty": "（空）",
    "form.advanced_hint": "很少需要修改；默认值适合大多数情况。",
    "form.more": "更多选项（{count}）",
    "guide.title": "首次使用：三步",
    "guide.models": "模型：把 --dit、--vae 和 --text_encoder 指向你的模型文件。",
    "guide.dataset": "数据集：选择数据集 TOML，并在“数据集”页检查。",
    "guide.run": "运行：启动完整训练流程，查看进度、损失和样例图。",
    "guide.demo": "手头还没有模型？演示的微型模型和数据集在本机约一分钟即可跑完。",
    "guide.demo_t2i": "试用演示（文生图）",
    "guide.demo_edit": "试用编辑演示",
    "guide.hide": "隐藏本指南",
    "guide.show": "首次使用指南",
    "msg.demo_opened": "已打开演示配置“{name}”。下一步：“运行与监控”页 → 完整训练流程。",
    "form.valid": "所有参数有效。",
    "form.problems": "请先修正：",
    "form.needs": "运行所选阶段还需要：",
    "form.warnings": "可以使用，但超出推荐范围：",
    "v.empty_number": "{flag}：需要填写数字",
    "v.too_long": "{flag}：最多 {max} 个字符",
    "cmd.title": "命令行",
    "cmd.hint": "按当前参数，各阶段将运行的命令。",
    "cmd.invalid": "修正表单中的问题后显示命令行。",
    "cmd.copy": "复制",
    "cmd.copied": "已复制",
    "jobs.title": "任务",
    "import.title": "导入配置",
    "import.file": "JSON 配置文件（任意版本）或 --config_file TOML",
    "import.name": "保存为（可选）",
    "import.overwrite": "覆盖同名配置",
    "import.upload": "导入文件",
    "import.cli": "或粘贴参考训练脚本的命令行",
    "import.cli_load": "载入表单",
    "import.cli_placeholder": "accelerate launch … qwen_image_train_network.py --dit … --network_dim 16 …",
    "import.close": "关闭",
    "msg.saved": "已保存“{name}”。",
    "msg.saved_file": "已保存“{name}”（同时保存为工作区中的 JSON 文件 {file}）。",
    "msg.loaded": "已载入“{name}”。",
    "msg.renamed": "已重命名为“{name}”。",
    "msg.deleted": "已删除“{name}”。",
    "msg.reset": "已恢复默认值（尚未保存）。",
    "msg.imported": "已导入“{name}”。",
    "msg.imported_cli": "已将“{stage}”的命令行载入表单（尚未保存）。",
    "msg.load_problems": "“{name}”未通过校验，请查看标出的字段。",
    "confirm.overwrite": "已存在名为“{name}”的配置，是否覆盖？",
    "confirm.delete": "删除配置“{name}”？",
    "confirm.discard": "放弃未保存的修改？",
    "prompt.rename": "“{name}”的新名称：",
    "err.no_selection": "请先选择一个已保存的配置。",
    "err.no_name": "请先输入名称。",
    "err.no_file": "请先选择文件。",
    "err.network": "服务器无响应。",
    "err.invalid": "参数有误，未保存任何内容。",
    "err.command_refused": "命令行未载入：请先修正以下问题。",
    "err.bad_config": "配置未被接受。",
    "err.bad_name": "该名称不可用。",
    "err.not_found": "没有该配置。",
    "err.exists": "已存在同名配置。",
    "err.cross_origin": "已拒绝：请求并非来自本页面。",
    "err.json_required": "已拒绝：请求不是 JSON。",
    "err.upload_header": "已拒绝：上传并非由本页面发出。",
    "err.token_required": "此服务器需要访问令牌：请打开启动时打印的地址。",
    "err.bad_token": "访问令牌错误。",
    "err.bad_host": "已拒绝：此服务器只接受本机地址。",
    "err.request_entity_too_large": "文件太大。",
    "err.other": "请求失败。",
    "store.no_name": "配置需要一个名称",
    "store.name_too_long": "配置名称最多 {max} 个字符",
    "store.name_chars": "配置名称不能包含 / \\ 或控制字符",
    "store.name_dots": "配置名称不能只由点组成",
    "store.not_found": "没有名为 {name} 的配置",
    "store.exists": "名为 {name} 的配置已存在",
    "store.no_job": "没有任务 {id}",
    "config.no_file": "请选择要导入的配置文件（.json 或 .toml）",
    "config.too_large": "{filename}：文件大于 {kib} KiB",
    "config.not_utf8": "{filename}：文件不是 UTF-8 文本",
    "config.bad_json": "{filename} 不是有效的 JSON：{detail}",
    "cmdline.too_long": "命令行超过 {max} 个字符",
    "cmdline.unreadable": "无法解析命令行：{detail}",
    "cmdline.empty": "命令行为空",
    "cmdline.no_script": "命令行中没有训练或缓存脚本（应为 {scripts} 之一）",
    "cmdline.bad_start": "命令行应以 python、accelerate 或参数开头，而不是 {token}",
    "cmdline.not_accepted": "命令行未被接受",
    "cmdline.unknown_flag": "无法识别的参数：{flag}（不是 {script} 的参数）",
    "cmdline.unknown_flag_near": "无法识别的参数：{flag}（不是 {script} 的参数；是否想用 {near}？）",
    "cmdline.stray": "无法识别的参数：{token}（没有对应参数的值）",
    "cmdline.stray_after": "无法识别的参数：{token}（{flag} 是开关，不接受值）",
    "notice.demo_not_imported": "演示配置未导入：{detail}",
    "notice.db_rebuilt": (
        "数据库 {path} 已损坏（{problem}）。旧文件保留为 {kept}，并已新建数据库："
        "从任务文件夹重建了 {jobs} 个任务，从 {configs_dir} 恢复了 {configs} 个已保存的配置。"
    ),
    "notice.db_missing": (
        "数据库 {path} 不存在，但工作区中有任务文件夹。已新建数据库："
        "从任务文件夹重建了 {jobs} 个任务，从 {configs_dir} 恢复了 {configs} 个已保存的配置。"
    ),
    "notice.db_jobs_left": "{count} 个任务文件夹没有可读的 job.json，未列入任务记录：{folders}。",
    "db.missing": "文件不存在",
    "db.empty": "文件为空，但工作区中有任务或配置",
    "db.not_sqlite": "文件不是 SQLite 数据库",
    "db.check_failed": "SQLite 检查发现错误：{detail}",
    "db.unreadable": "SQLite 无法读取：{detail}",
    "db.no_table": "缺少数据表 {table}",
    "db.columns": "数据表 {table} 的结构不是本工具的",
    "err.database": "无法读取数据库 {path}（{detail}）。请重启 Web 界面：启动时会检查该文件，并从任务文件夹重建。",
    "err.database_busy": "数据库 {path} 正忙（{detail}），请稍后再试。",
    "demo.creating": "正在创建演示工作区（微型模型与小数据集）…",
    "demo.ready": "演示工作区已就绪，其配置已列出。",
    "demo.failed": "无法创建演示工作区：",
    "notice.title": "启动时的提示",
    "footer.workspace": "工作区",
    "footer.allowed": "任务还可写入（--allow_dir）",
    "footer.version": "版本",
}

# Chinese for the messages of params.validate (English: MESSAGES there).
ZH_MESSAGES: dict[str, str] = {
    "v.range": "{flag}：{value} 超出范围；允许 {allowed}",
    "v.choice": "{flag}：不允许 {value}；可选 {allowed}",
    "v.not_int": "{flag}：{value} 不是整数",
    "v.not_number": "{flag}：{value} 不是数字",
    "v.not_bool": "{flag}：{value} 不是 true 或 false",
    "v.with_allowed": "{problem}；允许 {allowed}",
    "v.pattern": "{flag}：{value} 不是有效的值",
    "v.string_type": "{flag}：应为文本",
    "v.list_type": "{flag}：应为列表",
    "v.string_too_long": "{flag}：最多 {max_length} 个字符",
    "v.unknown": "未知参数 {name}",
    "v.detail": "{flag}：{detail}",
    "v.text": "{text}",
    "v.problems": "{problems}",
    "v.required": "{flag} 为必填项",
    "v.caption_input": "{flag} 为必填项（要打标图像的数据集 TOML），或填写 --image_dir",
    "v.caption_model": "{flag} 为必填项（Qwen2.5-VL 文件），或填写 --text_encoder（同一个文件）",
    "v.not_found": "{flag}：找不到 {path}",
    "v.inside_file": "{flag}：{path} 位于一个文件之下，不是文件夹",
    "v.is_folder": "{flag}：{path} 是文件夹；这里需要文件",
    "v.is_file": "{flag}：{path} 是文件；这里需要文件夹",
    "v.needs_control": "{flag} {version} 需要控制图像：{path} 中的 {dataset} 没有 control_directory",
    "v.no_usable": "{flag}：{path} 中没有可用的图像：{detail}",
    "v.outside_recommended": "{flag} {value} 超出推荐范围 {low} 到 {high}",
    "allowed.range": "{low} 到 {high}",
    "allowed.range_gt": "大于 {low} 且至多 {high}",
    "allowed.range_lt": "{low} 到 {high}（不含 {high}）",
    "allowed.range_gt_lt": "大于 {low} 且小于 {high}",
    "allowed.min": "至少 {low}",
    "allowed.min_gt": "大于 {low}",
    "allowed.max": "至多 {high}",
    "allowed.max_lt": "小于 {high}",
    "allowed.or_class": "{choices}，或 module.Class 路径",
    "sep.list": "、",
    "sep.semi": "；",
    "rule.needs": "{flag} 需要 {other}",
    "rule.need_three": "{first}、{second} 和 {third} 需要 {other}",
    "rule.one_kernel_of_three": "只能选一种注意力内核，不能同时用 {first}、{second} 和 {third}",
    "rule.one_kernel": "只能选一种注意力内核，不能同时用 {first} 和 {second}",
    "rule.below": "{flag}（{value}）必须小于 {other}（{other_value}）",
    "rule.at_most": "{flag}（{value}）不能大于 {other}（{other_value}）",
    "rule.per_file": "{flag}：{count} 个值对应 {files} 个 {other} 文件；请给一个值，或每个文件一个值",
    "rule.not_both": "{first} 和 {second} 只能给一个",
    "rule.one_of_or_class": "必须是 {choices} 之一，或 module.Class 路径（当前为 {value}）",
    "rule.two_numbers": "请给两个数：高度和宽度（当前 {count} 个）",
    "rule.multiple_of_16": "{height} {width}：高度和宽度必须是 16 的倍数，范围 16 到 8192",
    "rule.key_value": "{flag}：{item} 不是 key=value 形式",
    "rule.unknown_key": "未知的键 {key}；允许：{keys}",
    "rule.nul": "参数值不能包含 NUL 字节",
    "rule.path_too_long": "路径过长（{length} 个字符；最多 {limit} 个，每一级名称最多 {part_limit} 个）",
    "rule.file_stem": (
        '{value} 不是有效的文件名前缀：不能包含目录，不能含 / \\ : * ? " < > | 或控制字符，'
        "不能以 '-' 开头，长度 1 到 {limit} 个字符"
    ),
    "rule.lora_ratio": "loraplus_lr_ratio 必须是大于 0 且至多 64 的数（当前为 {value}）",
    "rule.dropout_rate": "{key} 必须是 0 到小于 1 之间的数（当前为 {value}）",
    "rule.lora_targets": "targets 必须是 {choices} 之一（当前为 {value}）",
}

EN.update(MESSAGES)
EN.update(EN_RUN)
EN.update(EN_GALLERY)
EN.update(EN_GENERATE)
EN.update(EN_IMPORT)
EN.update(EN_LORA)
EN.update(EN_VALIDATION)
ZH.update(ZH_MESSAGES)
ZH.update(ZH_RUN)
ZH.update(ZH_GALLERY)
ZH.update(ZH_GENERATE)
ZH.update(ZH_IMPORT)
ZH.update(ZH_LORA)
ZH.update(ZH_VALIDATION)
TABLE: dict[str, dict[str, str]] = {"zh-CN": ZH, "en": EN}
register_messages(EN)  # the UI's own messages (jobs, store, dataset) render in English like validation's


def pick_language(*candidates: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """The first candidate the table has (e.g. the remembered cookie, then the browser's), else `default`."""
    for lang in candidates:
        if lang in TABLE:
            return lang
    return default


def page_language() -> str:
    """The language a page is rendered in: the remembered choice, else the browser's, else zh-CN."""
    return pick_language(request.cookies.get(LANG_COOKIE), request.accept_languages.best_match(list(TABLE)))


def request_language() -> str:
    """The language of an API answer: the page's (the X-Studio-Lang header it sends, or ?lang=), else the
    remembered choice or the browser's; a request that names none (a script) gets English."""
    return pick_language(
        request.headers.get(LANG_HEADER),
        request.args.get("lang"),
        request.cookies.get(LANG_COOKIE),
        request.accept_languages.best_match(list(TABLE)),
        default=API_LANGUAGE,
    )


def translator(lang: str) -> Callable[[str], str]:
    """A lookup for one language that shows the key itself when a string is missing."""
    table = TABLE.get(lang, TABLE[DEFAULT_LANGUAGE])
    return lambda key: table.get(key, key)


def render(msg: Message, lang: str | None = None) -> str:
    """A message in a language (the request's when not given), English where a template is missing."""
    table = TABLE[lang if lang in TABLE else request_language()]
    return msg.render(table, TABLE["en"])
