"""Messages of the dataset gallery's API (images, thumbnails, caption edits, bulk actions, undo)."""

from __future__ import annotations

EN_GALLERY: dict[str, str] = {
    "gallery.no_path": "'path': give the dataset TOML (a relative path is taken from the workspace)",
    "gallery.bad_int": "'{name}': must be a whole number from {low} to {high} (got {value})",
    "gallery.bad_choice": "'{name}': must be one of {choices} (got {value})",
    "gallery.bad_bucket": "'bucket': must be WIDTHxHEIGHT, e.g. 1024x768 (got {value})",
    "gallery.bad_text": "'{name}': must be a text of at most {limit} characters",
    "gallery.bad_list": '\'{name}\': must be a list of objects with "image" and "before" (what the preview showed)',
    "gallery.not_served": (
        "{image} is not served: only images in the folders that {path} names (or that its JSON-lines list "
        "names) are"
    ),
    "gallery.no_image": "'image': {image} is not an image of {path}",
    "gallery.unreadable": "{image} cannot be read ({reason})",
    "gallery.read_only": (
        "the captions of {dataset} are read-only here: {where} is outside the workspace and the allowed "
        "folders ({roots}); to edit them, start the web UI with --allow_dir {suggest}"
    ),
    "gallery.changed": (
        "the caption of {image} changed on disk since it was loaded (now: {now}); reload it — nothing was "
        "written"
    ),
    "gallery.changed_many": (
        "{count} caption(s) changed on disk since they were loaded ({images}); reload and preview again — "
        "nothing was written"
    ),
    "gallery.no_caption": "(none)",
    "gallery.not_writable": "cannot write captions in {path}: {detail}; nothing was changed there",
    "gallery.not_writable_some": (
        "cannot write captions in {path}: {detail}; {written} caption(s) were written before it (undo "
        "puts them back)"
    ),
    "gallery.nothing_to_undo": "nothing to undo for {path}",
    "gallery.no_batch": "there is no caption change #{batch} of {path}",
    "gallery.undone_already": "caption change #{batch} is already undone",
    "gallery.undo_changed": (
        "cannot undo #{batch}: the caption of {image} ({count} in all) changed again since; nothing was "
        "restored"
    ),
    "gallery.dataset_invalid": "{path} cannot be shown: {detail}",
    # the page's gallery panel
    "gal.title": "Images and captions",
    "gal.hint": "Every image of the dataset TOML above, with its caption, its bucket (the outline shows what "
    "training keeps after cropping) and its cache state. Edit a caption and leave the box (or press "
    "Ctrl+Enter) to save it; every change can be undone.",
    "gal.load": "Show images",
    "gal.filter": "Show",
    "gal.filter_all": "all images",
    "gal.filter_no_caption": "without a caption",
    "gal.filter_problem": "with a problem",
    "gal.filter_outdated": "with an outdated cache",
    "gal.filter_uncached": "not cached yet",
    "gal.bucket": "Bucket",
    "gal.bucket_all": "all buckets",
    "gal.search": "Search captions and names",
    "gal.undo": "Undo last change",
    "gal.bulk_title": "Change many captions",
    "gal.bulk_op": "Action",
    "gal.op_prepend": "add text before",
    "gal.op_append": "add text after",
    "gal.op_replace": "find and replace",
    "gal.op_strip": "remove a phrase",
    "gal.bulk_text": "Text (e.g. a trigger word)",
    "gal.bulk_find": "Find",
    "gal.bulk_replace": "Replace with",
    "gal.preview": "Preview",
    "gal.bulk_hint": "The action applies to the images the filters above show. Preview first: nothing is "
    "written until you apply.",
    "gal.preview_head": "{count} caption(s) would change ({unchanged} unchanged, {skipped} without a caption):",
    "gal.preview_more": "… and {count} more",
    "gal.apply": "Apply to {count} caption(s)",
    "gal.applied": "{count} caption(s) changed. Undo last change puts them back.",
    "gal.undone": "Undone: {count} caption(s) put back.",
    "gal.saved": "saved",
    "gal.failed": "the request failed (HTTP {status})",
    "gal.count": "{shown} of {matched} shown ({total} images in the dataset)",
    "gal.meta": "bucket {bucket} · cache: {cache}",
    "gal.cache_cached": "up to date",
    "gal.cache_missing": "not cached",
    "gal.cache_outdated": "outdated",
    "gal.cache_none": "not used",
    "gal.control": "control {index}: {name}",
    "gal.caption_of": "caption of {name}",
    "gal.no_caption": "no caption yet",
    "gal.crop_hint": "what training keeps after cropping to the bucket",
    "gal.missing_control": "no control image for {path}",
    "gal.unmatched_control": "control image without a target: {path}",
    "gal.mixed_controls": "images have different numbers of control images: {counts}",
    "gal.count_of": "{count} image(s) with {n}",
    "cap.title": "Automatic captions",
    "cap.hint": (
        "Qwen2.5-VL writes the captions of the dataset above, from the text encoder file you already have "
        "(nothing is downloaded). Try the preview first: it captions a few images and writes nothing. "
        '"Caption the dataset" writes a caption for every image that has none (all of them with '
        "--overwrite); every caption it replaces is kept, and the gallery's Undo takes the whole run back. "
        "An edit dataset can get edit instructions from its before/after pairs (--edit_pairs)."
    ),
    "cap.preview": "Preview on {count} images",
    "cap.run": "Caption the dataset",
    "cap.confirm": "Write captions for the images of {path}? Images that have a caption keep it unless --overwrite is on; Undo in the gallery takes the run back.",
    "cap.job": "Job #{id} ({what}): {status}",
    "cap.watch": "Show its log",
    "cap.preview_done": "Preview: {count} caption(s) made — nothing was written. Change the template or prompt and preview again, or caption the dataset.",
    "cap.run_done": "{count} caption(s) written. The gallery shows them; Undo takes the whole run back.",
    "cap.none": "No image needed a caption (images that have one keep it unless --overwrite is on).",
}

ZH_GALLERY: dict[str, str] = {
    "gallery.no_path": "'path'：请给出数据集 TOML（相对路径从工作区文件夹算起）",
    "gallery.bad_int": "'{name}'：必须是 {low} 到 {high} 之间的整数（当前为 {value}）",
    "gallery.bad_choice": "'{name}'：必须是 {choices} 之一（当前为 {value}）",
    "gallery.bad_bucket": "'bucket'：必须是 宽x高 形式，例如 1024x768（当前为 {value}）",
    "gallery.bad_text": "'{name}'：必须是至多 {limit} 个字符的文本",
    "gallery.bad_list": '\'{name}\'：必须是含 "image" 和 "before" 的对象列表（预览所示内容）',
    "gallery.not_served": "不提供 {image}：只提供 {path} 所指定文件夹中的图片（或其 JSON-lines 列表中的文件）",
    "gallery.no_image": "'image'：{image} 不是 {path} 中的图片",
    "gallery.unreadable": "无法读取 {image}（{reason}）",
    "gallery.read_only": (
        "{dataset} 的标注在此为只读：{where} 不在工作区和允许的文件夹（{roots}）内；"
        "如需编辑，请以 --allow_dir {suggest} 启动网页界面"
    ),
    "gallery.changed": "{image} 的标注在载入后已在磁盘上被修改（现在为：{now}）；请重新载入——未写入任何内容",
    "gallery.changed_many": "{count} 条标注在载入后已在磁盘上被修改（{images}）；请重新载入并再次预览——未写入任何内容",
    "gallery.no_caption": "（无）",
    "gallery.not_writable": "无法在 {path} 中写入标注：{detail}；那里没有任何改动",
    "gallery.not_writable_some": "无法在 {path} 中写入标注：{detail}；此前已写入 {written} 条标注（撤销可恢复）",
    "gallery.nothing_to_undo": "{path} 没有可撤销的修改",
    "gallery.no_batch": "{path} 没有第 {batch} 号标注修改",
    "gallery.undone_already": "第 {batch} 号标注修改已撤销",
    "gallery.undo_changed": "无法撤销第 {batch} 号修改：{image} 的标注（共 {count} 条）此后又被修改；未恢复任何内容",
    "gallery.dataset_invalid": "无法显示 {path}：{detail}",
    # the page's gallery panel
    "gal.title": "图像与标注",
    "gal.hint": "上方数据集 TOML 中的每张图像，附标注、分桶（轮廓为裁剪后训练保留的区域）和缓存状态。"
    "编辑标注后离开输入框（或按 Ctrl+Enter）即保存；每次修改都可撤销。",
    "gal.load": "显示图像",
    "gal.filter": "显示",
    "gal.filter_all": "全部图像",
    "gal.filter_no_caption": "没有标注的",
    "gal.filter_problem": "有问题的",
    "gal.filter_outdated": "缓存过期的",
    "gal.filter_uncached": "尚未缓存的",
    "gal.bucket": "分桶",
    "gal.bucket_all": "全部分桶",
    "gal.search": "搜索标注和文件名",
    "gal.undo": "撤销上次修改",
    "gal.bulk_title": "批量修改标注",
    "gal.bulk_op": "操作",
    "gal.op_prepend": "在前面添加文字",
    "gal.op_append": "在后面添加文字",
    "gal.op_replace": "查找并替换",
    "gal.op_strip": "删除某个短语",
    "gal.bulk_text": "文字（如触发词）",
    "gal.bulk_find": "查找",
    "gal.bulk_replace": "替换为",
    "gal.preview": "预览",
    "gal.bulk_hint": "操作作用于上方筛选条件显示的图像。请先预览：点击应用之前不会写入任何内容。",
    "gal.preview_head": "将修改 {count} 条标注（{unchanged} 条不变，{skipped} 张没有标注）：",
    "gal.preview_more": "……另有 {count} 条",
    "gal.apply": "应用到 {count} 条标注",
    "gal.applied": "已修改 {count} 条标注。“撤销上次修改”可恢复。",
    "gal.undone": "已撤销：恢复了 {count} 条标注。",
    "gal.saved": "已保存",
    "gal.failed": "请求失败（HTTP {status}）",
    "gal.count": "显示 {shown} / {matched}（数据集共 {total} 张图像）",
    "gal.meta": "分桶 {bucket} · 缓存：{cache}",
    "gal.cache_cached": "最新",
    "gal.cache_missing": "未缓存",
    "gal.cache_outdated": "已过期",
    "gal.cache_none": "未使用",
    "gal.control": "控制图 {index}：{name}",
    "gal.caption_of": "{name} 的标注",
    "gal.no_caption": "尚无标注",
    "gal.crop_hint": "裁剪到分桶后训练保留的区域",
    "gal.missing_control": "{path} 没有控制图像",
    "gal.unmatched_control": "没有对应目标图像的控制图像：{path}",
    "gal.mixed_controls": "各图像的控制图像数量不同：{counts}",
    "gal.count_of": "{count} 张图像有 {n} 张控制图",
    "cap.title": "自动打标",
    "cap.hint": (
        "Qwen2.5-VL 使用你已有的文本编码器文件为上面的数据集生成描述（不下载任何内容）。先试试预览：只为几张图像生成描述，"
        "不写入任何文件。“为数据集打标”会为每张没有描述的图像写入描述（开启 --overwrite 时为全部图像）；被替换的描述都会保留，"
        "图库的“撤销”可以撤回整次打标。编辑数据集可以根据前后图像对生成编辑指令（--edit_pairs）。"
    ),
    "cap.preview": "预览 {count} 张图像",
    "cap.run": "为数据集打标",
    "cap.confirm": "为 {path} 的图像写入描述？已有描述的图像保持不变（除非开启 --overwrite）；可在图库中撤销整次打标。",
    "cap.job": "任务 #{id}（{what}）：{status}",
    "cap.watch": "查看日志",
    "cap.preview_done": "预览：已生成 {count} 条描述——未写入任何文件。可修改模板或提示词后再次预览，或为数据集打标。",
    "cap.run_done": "已写入 {count} 条描述。图库中可以看到；“撤销”可撤回整次打标。",
    "cap.none": "没有需要打标的图像（已有描述的图像保持不变，除非开启 --overwrite）。",
}
