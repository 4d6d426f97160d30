"""Messages of the Generate tab and the generation worker (English and Chinese)."""

from __future__ import annotations

EN_GENERATE: dict[str, str] = {
    "tab.generate": "Generate",
    "gen.title": "Generate images",
    "gen.hint": (
        "Try a LoRA without leaving the studio. The models, model version and memory options (fp8, block "
        "swap) are the Configuration tab's; the settings below are this tab's own and stay in this browser. "
        "Each image is a job in the same queue as training. The first one loads the DiT, VAE and text "
        "encoder into a generation worker; the next ones reuse them (a new LoRA or strength re-applies only "
        'the LoRA), until 10 minutes without a request or "Free GPU". Images go to --save_path, or to '
        "generated/ in the workspace; every PNG carries its settings. To compare checkpoints, add LoRA files "
        "to --grid_loras (every checkpoint of a job at once) and strengths to --grid_strengths: one job then "
        "renders a labelled grid at one seed."
    ),
    "gen.lora_from_jobs": "LoRA of a finished job",
    "gen.lora_pick": "(choose a LoRA file)",
    "gen.lora_add": "Add to the LoRA list",
    "gen.grid_add": "Add to the compare grid",
    "gen.all_checkpoints": "every checkpoint of #{id} ({count} files)",
    "gen.count": "Images",
    "gen.random": "random seed",
    "gen.run": "Generate",
    "gen.release": "Free GPU",
    "gen.running": "{count} generation job(s) waiting or running (#{id} first)",
    "gen.none": "No image generated yet.",
    "gen.reuse": "Reuse these settings",
    "gen.reused": "The settings of that image are in the form again.",
    "generate.busy": "a generation is running: stop its job first (Stop in Run & monitor), then free the GPU",
    "generate.released": "the generation worker was ended: its GPU memory is free (the next image loads the models again)",
    "generate.not_loaded": "no generation worker is running: nothing holds GPU memory for generation",
}

ZH_GENERATE: dict[str, str] = {
    "tab.generate": "生成",
    "gen.title": "生成图像",
    "gen.hint": (
        "无需离开工作室即可试用 LoRA。模型、模型版本和显存选项（FP8、块交换）取自“配置”页；下面的设置属于本页，保存在此浏览器中。"
        "每张图像都是与训练同一队列中的任务。第一张图像会把 DiT、VAE 和文本编码器加载到生成进程中；之后的图像直接复用"
        "（更换 LoRA 或强度只重新应用 LoRA），直到 10 分钟没有请求或点击“释放显存”。图像保存到 --save_path，"
        "未设置时保存到工作区的 generated/；每个 PNG 都带有其生成参数。要对比检查点，把 LoRA 文件加入 --grid_loras"
        "（可一次加入某个任务的全部检查点），把强度加入 --grid_strengths：一个任务即可在同一种子下生成带标注的网格。"
    ),
    "gen.lora_from_jobs": "已完成任务的 LoRA",
    "gen.lora_pick": "（选择一个 LoRA 文件）",
    "gen.lora_add": "加入 LoRA 列表",
    "gen.grid_add": "加入对比网格",
    "gen.all_checkpoints": "#{id} 的全部检查点（{count} 个文件）",
    "gen.count": "图像数量",
    "gen.random": "随机种子",
    "gen.run": "生成",
    "gen.release": "释放显存",
    "gen.running": "{count} 个生成任务等待或运行中（首个为 #{id}）",
    "gen.none": "尚未生成图像。",
    "gen.reuse": "复用这些设置",
    "gen.reused": "该图像的设置已填回表单。",
    "generate.busy": "有生成任务正在运行：请先停止该任务（在“运行与监控”中点击停止），再释放显存",
    "generate.released": "生成进程已结束，其显存已释放（下一张图像会重新加载模型）",
    "generate.not_loaded": "没有运行中的生成进程：生成未占用显存",
}
