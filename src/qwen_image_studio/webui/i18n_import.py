"""Messages of the dataset import (API answers and the page's import section), English and Chinese.

The English templates of the library's refusals and skip reasons are its own (``IMPORT_MESSAGES``); this
module adds the web UI's and every Chinese one under the same keys.
"""

from __future__ import annotations

from ..data.dataset_import import IMPORT_MESSAGES

EN_IMPORT: dict[str, str] = {
    **IMPORT_MESSAGES,
    "import.upload_too_large": "the upload is larger than {max}; split it into several imports",
    "import.done": "{count} image(s) imported into {folder}; dataset TOML written: {toml}",
    "import.done_edit": (
        "{count} image(s) and {controls} control image(s) imported into {folder}; "
        "dataset TOML written: {toml}"
    ),
    # the page's import section
    "imp.title": "Import images as a new dataset",
    "imp.hint": "Drop images, their captions (a .txt file named after each image) or a zip of them. Folders "
    "are flattened; images in a folder named control or controls become control images (edit datasets, "
    "name_0, name_1… pair with name). The dataset is written to datasets/NAME/ in the workspace with its "
    "dataset.toml; an existing dataset is never overwritten.",
    "imp.drop": "Drop images, captions or a zip here",
    "imp.pick": "or choose files…",
    "imp.name": "Name of the new dataset",
    "imp.resolution": "Resolution (W×H)",
    "imp.start": "Import",
    "imp.clear": "Clear",
    "imp.use": "Use this dataset",
    "imp.chosen": "{count} file(s) chosen ({size})",
    "imp.more": "… and {count} more",
    "imp.nothing": "Choose or drop files first.",
    "imp.no_name": "Give the new dataset a name.",
    "imp.uploading": "Uploading… {percent}%",
    "imp.working": "Checking and writing the images…",
    "imp.skipped": "{count} file(s) not imported:",
    "imp.missing_controls": "Without a control image: {names}",
    "imp.failed": "The import failed (HTTP {status}).",
    "imp.network": "The upload was interrupted; nothing was imported.",
    "imp.used": "The form now uses {path}.",
}

ZH_IMPORT: dict[str, str] = {
    "import.bad_name": "'name'：请使用 1 到 {max} 个字母、数字、'-'、'_' 或 '.'，以字母或数字开头，不能以 '.' 结尾（当前为 {value}）",
    "import.exists": "名为 {name} 的数据集已存在（{path}）；请换一个名称（不会覆盖任何内容）",
    "import.no_files": "'files'：请选择要导入的图像（或图像的 zip 压缩包）",
    "import.no_images": "给出的 {count} 个文件中没有可导入的图像；未写入任何内容",
    "import.bad_resolution": "'resolution'：{detail}（当前为 {value}）",
    "import.too_many_members": "{zip} 含 {count} 个条目；最多解压 {max} 个（防 zip 炸弹）；未写入任何内容",
    "import.too_many_files": "共给出 {count} 个文件；一次最多导入 {max} 个；未写入任何内容",
    "import.too_large": "这些文件解压后将超过 {max}（{zip}）；未写入任何内容——请分多次导入",
    "import.no_space": "{path} 剩余空间 {free}；导入需要 {need}；未写入任何内容",
    "import.duplicate": (
        "去掉文件夹后，两张{kind}图像同名 {name}：{first} 和 {second}；请重命名其中一张"
        "（标注、控制图像和缓存按名称配对）；未写入任何内容"
    ),
    "import.kind_target": "目标",
    "import.kind_control": "控制",
    "import.write_failed": "无法在 {path} 中写入数据集：{detail}；未留下任何内容",
    "import.invalid_result": "写入的数据集 TOML 无法载入：{detail}；未留下任何内容",
    "import.skip_unsafe": "zip 中的不安全路径（绝对路径、'..' 或盘符）：未解压",
    "import.skip_link": "符号链接：未解压",
    "import.skip_encrypted": "已加密：未解压",
    "import.skip_bad_name": "文件名含控制字符或过长",
    "import.skip_not_image": "不是图像或标注（图像：{allowed}；标注：.txt）",
    "import.skip_nested_zip": "zip 中的 zip：未解压",
    "import.skip_bad_zip": "不是可读取的 zip 文件（{detail}）",
    "import.skip_unreadable": "无法读取该图像（{detail}）",
    "import.skip_member_error": "无法解压（{detail}）",
    "import.skip_no_image": "对应的图像未被导入（{stem}）",
    "import.skip_caption_other": "已使用 {stem} 的另一个标注（{used}）",
    "import.skip_control_caption": "控制图像的标注不会被使用",
    "import.skip_caption_encoding": "该标注不是 UTF-8 文本",
    "import.skip_caption_large": "该标注大于 {max}",
    "import.skip_unmatched_control": "没有与之配对的已导入图像的控制图像（需与某张图像同名，或为 名称_0、名称_1…）",
    "import.upload_too_large": "上传内容大于 {max}；请分多次导入",
    "import.done": "已导入 {count} 张图像到 {folder}；已写入数据集 TOML：{toml}",
    "import.done_edit": "已导入 {count} 张图像和 {controls} 张控制图像到 {folder}；已写入数据集 TOML：{toml}",
    "imp.title": "导入图像为新数据集",
    "imp.hint": "拖放图像、其标注（与图像同名的 .txt 文件）或它们的 zip 压缩包。文件夹会被展平；名为 control 或 "
    "controls 的文件夹中的图像作为控制图像（编辑数据集，名称_0、名称_1… 与 名称 配对）。数据集写入工作区的 "
    "datasets/名称/ 并附 dataset.toml；不会覆盖已有的数据集。",
    "imp.drop": "将图像、标注或 zip 拖放到这里",
    "imp.pick": "或选择文件…",
    "imp.name": "新数据集的名称",
    "imp.resolution": "分辨率（宽×高）",
    "imp.start": "导入",
    "imp.clear": "清除",
    "imp.use": "使用此数据集",
    "imp.chosen": "已选择 {count} 个文件（{size}）",
    "imp.more": "……另有 {count} 个",
    "imp.nothing": "请先选择或拖放文件。",
    "imp.no_name": "请为新数据集命名。",
    "imp.uploading": "正在上传… {percent}%",
    "imp.working": "正在检查并写入图像…",
    "imp.skipped": "{count} 个文件未导入：",
    "imp.missing_controls": "没有控制图像：{names}",
    "imp.failed": "导入失败（HTTP {status}）。",
    "imp.network": "上传中断；未导入任何内容。",
    "imp.used": "表单现在使用 {path}。",
}
